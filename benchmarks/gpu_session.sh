#!/usr/bin/env bash
# One GPU session (device tool): build mamba-ssm's scan kernel from the sdist sources, run the CUDA tests
# of the scan backends, time triton/mamba/torch scans at the SS2D sizes and the paper preset's training
# step (fp32/TF32 path and the fast path), and the throughput of 1, 2, 4 tiny runs sharing the GPU. Results
# go to OUT_DIR as text and JSON lines.
# Usage: bash benchmarks/gpu_session.sh [OUT_DIR]   (expects third_party/mamba_csrc/selective_scan)
set -uo pipefail
out=${1:-${OUT:-/tmp/gpu_out}}
mkdir -p "$out"
export PYTHONPATH="$PWD:$PWD/build/ssc${PYTHONPATH:+:$PYTHONPATH}"
step() { echo "== $* ($(date +%T))" | tee -a "$out/log.txt"; }

step env
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
    | tee -a "$out/gpu.txt"
step build mamba kernel
timeout 240 python benchmarks/build_mamba_kernel.py third_party/mamba_csrc/selective_scan --arch 9.0 \
    --build-dir build/ssc 2>&1 | tail -5 | tee "$out/build.txt"
step cuda tests
timeout 120 python -m pytest -q -p no:cacheprovider tests/ops -k "cuda or mamba or triton" 2>&1 | tail -12 \
    | tee "$out/tests.txt"
step train step
timeout 120 python benchmarks/bench_train_step.py --preset paper --batch 8 --size 256 --device cuda \
    --scan-backend mamba --steps 10 --warmup 3 --reference-ms 265 --compare-fast 2>&1 | tee -a "$out/train_step.jsonl"
timeout 60 python benchmarks/bench_train_step.py --preset paper --batch 8 --size 256 --device cuda \
    --scan-backend triton --steps 10 --warmup 3 --reference-ms 265 --fast 2>&1 | tee -a "$out/train_step.jsonl"
step runs per gpu
timeout 180 python benchmarks/bench_runs_per_gpu.py --preset tiny --batch 8 --size 256 --device cuda \
    --scan-backend triton --steps 20 --warmup 3 --runs-per-device 1,2,4 --timeout 150 2>&1 \
    | tee "$out/runs_per_gpu.jsonl"
step scan
timeout 150 python benchmarks/bench_triton_gpu.py --configs 8:32:4,16:16:4,4:64:4 --torch-repeat 1 2>&1 \
    | tee "$out/triton_scan.jsonl"
step done
