#!/usr/bin/env bash
# The GPU measurements of the speed work (device tool), in two parts that each fit one 10-minute call:
#   a: build mamba-ssm's scan kernel from its sdist sources (third_party/mamba_csrc/selective_scan, ~95 s),
#      the CUDA tests, the scans (triton vs mamba vs torch) at the three SS2D sizes, and the paper preset's
#      training step: fp32 path vs fast path with the mamba kernel, and the fast path with the triton scan.
#   b: throughput of 1 and 2 runs sharing the GPU, the fp32 vs fast loss curve, and the compiled fast step
#      (its first step compiles for minutes, so it comes last).
# Measured 2026-11-30 on an H200 (benchmarks/results/2026-11-30_h200): part a 215 s, part b 429 s of
# command time, plus about 30 s to start the machine: both fit one 15-minute device budget, back to back.
# Usage: bash benchmarks/gpu_session.sh OUT_DIR a|b      Results: OUT_DIR/*.jsonl and OUT_DIR/log.txt.
# Part b uses the kernel part a built in build/ssc (same warm machine) if it is there, else the triton scan.
# The device image has torch, triton, numpy, pillow, pytest, pyyaml but not pytorch-msssim (the losses, so
# train() and the loss-curve benchmark, import it): carry its wheel in .whl (ignored by git):
#   pip download --no-deps -d .whl pytorch-msssim==1.0.0
# and the scan kernel's sources (the sdist's metadata step needs torch, so fetch the archive itself):
#   curl -sLO "$(curl -s https://pypi.org/simple/mamba-ssm/ | grep -o 'https://[^"#]*mamba_ssm-2.3.2.post1.tar.gz')"
#   tar xzf mamba_ssm-2.3.2.post1.tar.gz && mkdir -p third_party/mamba_csrc \
#     && cp -r mamba_ssm-2.3.2.post1/csrc/selective_scan third_party/mamba_csrc/
# and name both .whl and third_party/mamba_csrc in the device call's `carry` (both are git-ignored).
set -uo pipefail
out=${1:-${OUT:-/tmp/gpu_out}}
part=${2:-a}
mkdir -p "$out"
export PYTHONPATH="$PWD:$PWD/build/ssc${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
step() { echo "== $* ($(date +%T))" | tee -a "$out/log.txt"; }
py=${PYTHON:-$(command -v python3 || command -v python)}  # the device image's python3 holds torch
paper=(--preset paper --batch 8 --size 256 --device cuda)
if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
"$py" -c "import pytorch_msssim" 2>/dev/null || echo "warning: pytorch_msssim missing: the loss-curve step will fail" \
    | tee -a "$out/log.txt"

if [[ $part == a ]]; then
    step env
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
    "$py" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
        | tee -a "$out/gpu.txt"
    step build mamba kernel
    timeout 200 "$py" benchmarks/build_mamba_kernel.py third_party/mamba_csrc/selective_scan --arch 9.0 \
        --build-dir build/ssc 2>&1 | tail -5 | tee "$out/build.txt"
    step cuda tests
    timeout 90 "$py" -m pytest -q -p no:cacheprovider tests/colormamba/ops tests/colormamba/data/test_batches.py \
        -k "cuda or mamba or triton or gpu" 2>&1 | tee "$out/tests.txt" | tail -12
    step scan
    timeout 120 "$py" benchmarks/bench_triton_gpu.py --configs 16:16:4,32:8:4,8:16:4,16:16:8,32:16:8 --torch-repeat 1 2>&1 \
        | tee "$out/scan.jsonl"
    step train step
    timeout 90 "$py" benchmarks/bench_train_step.py "${paper[@]}" --scan-backend mamba --steps 10 --warmup 3 \
        --reference-ms 265 --compare-fast 2>&1 | tee -a "$out/train_step.jsonl"
    timeout 45 "$py" benchmarks/bench_train_step.py "${paper[@]}" --scan-backend triton --steps 10 --warmup 3 \
        --reference-ms 265 --fast 2>&1 | tee -a "$out/train_step.jsonl"
else
    step runs per gpu
    timeout 150 "$py" benchmarks/bench_runs_per_gpu.py "${paper[@]}" --precision bf16 --steps 10 --warmup 3 \
        --runs-per-device 1,2 --timeout 140 2>&1 | tee "$out/runs_per_gpu.jsonl"
    step loss curve
    timeout 150 "$py" benchmarks/bench_loss_curve.py --preset small --size 256 --batch 8 --steps 120 \
        --window 20 --train-images 64 --device cuda 2>&1 | tee "$out/loss_curve.jsonl"
    step compiled step
    timeout 240 "$py" benchmarks/bench_train_step.py "${paper[@]}" --steps 10 --warmup 3 --reference-ms 265 \
        --fast --compile 2>&1 | tee -a "$out/train_step_compiled.jsonl"
fi
step finished
