"""Build mamba-ssm's selective-scan CUDA extension (`selective_scan_cuda`) from its sdist sources.

For GPU machines without a prebuilt mamba-ssm wheel (measured on an H200: 107 s for sm_90). Get the
sources once, where there is network access (`pip download` of the sdist runs its metadata step, which
needs torch and `wheel`; fetching the archive from the package index needs neither):

    curl -sLO "$(curl -s https://pypi.org/simple/mamba-ssm/ | grep -o 'https://[^"#]*mamba_ssm-2.3.2.post1.tar.gz')"
    tar xzf mamba_ssm-2.3.2.post1.tar.gz && mkdir -p third_party/mamba_csrc
    cp -r mamba_ssm-2.3.2.post1/csrc/selective_scan third_party/mamba_csrc/

then `python benchmarks/build_mamba_kernel.py third_party/mamba_csrc/selective_scan --arch 9.0
--build-dir build/ssc` and put the build folder on PYTHONPATH: the `mamba` scan backend imports
`selective_scan_cuda`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

SOURCES = [
    "selective_scan.cpp",
    *(f"selective_scan_fwd_{t}.cu" for t in ("fp32", "fp16", "bf16")),
    *(f"selective_scan_bwd_{t}_{k}.cu" for t in ("fp32", "fp16", "bf16") for k in ("real", "complex")),
]
# the flags of mamba-ssm's setup.py, less -lineinfo/ptxas verbosity
NVCC_FLAGS = [
    "-O3",
    "-std=c++17",
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__",
    "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr",
    "--expt-extended-lambda",
    "--use_fast_math",
]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("csrc", type=Path, help="folder with selective_scan.cpp and the .cu files")
    parser.add_argument("--arch", default="9.0", help="compute capability, e.g. 9.0 for H100/H200")
    parser.add_argument("--build-dir", type=Path, default=Path("build/selective_scan_cuda"))
    args = parser.parse_args()
    missing = [s for s in SOURCES if not (args.csrc / s).is_file()]
    if missing:
        print(f"error: {args.csrc} lacks {missing}", file=sys.stderr)
        return 2
    os.environ["TORCH_CUDA_ARCH_LIST"] = args.arch
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    from torch.utils.cpp_extension import load

    args.build_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load(
        name="selective_scan_cuda",
        sources=[str(args.csrc / s) for s in SOURCES],
        extra_cflags=["-O3", "-std=c++17"],
        extra_cuda_cflags=[*NVCC_FLAGS, "--threads", "4"],
        extra_include_paths=[str(args.csrc.resolve())],
        build_directory=str(args.build_dir),
        verbose=False,
    )
    print(
        json.dumps(
            {
                "case": "build_mamba_kernel",
                "arch": args.arch,
                "seconds": round(time.perf_counter() - started, 1),
                "build_dir": str(args.build_dir),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
