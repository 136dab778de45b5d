"""`python -m colormamba predict`: colorize NIR frames with a trained checkpoint.

The checkpoint is a file or an object of the job suite's store, `s3://BUCKET/checkpoints/STUDY/RUN/best.pt`
(endpoint and credentials: COLORMAMBA_S3_ENDPOINT, COLORMAMBA_S3_ACCESS_KEY, COLORMAMBA_S3_SECRET_KEY).
Exit codes: 0 every input written; 1 some inputs could not be read (listed at the end, the others are
written); 2 invalid arguments or not a checkpoint; 3 the store is unreachable.
Studies (training and evaluation of several configurations) are driven by `jobs/submit.py`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m colormamba", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    pred = sub.add_parser("predict", help="colorize NIR images with a trained checkpoint")
    pred.add_argument(
        "--checkpoint",
        required=True,
        help="best.pt or last.pt of a run: a file, or s3://BUCKET/checkpoints/STUDY/RUN/best.pt",
    )
    pred.add_argument("inputs", nargs="+", help="NIR image files or folders of them (any size)")
    pred.add_argument("-o", "--out", required=True, type=Path, help="output folder (one PNG per input)")
    pred.add_argument("--device", default="auto")
    pred.add_argument("--scan-backend", default=None, help="override the checkpoint's scan backend")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    from colormamba.config import resolve_device
    from colormamba.predict import expand_inputs, load_generator, predict_files
    from colormamba.storage import StorageError

    try:
        device = resolve_device(args.device)
        model = load_generator(args.checkpoint, device, args.scan_backend)
        files, failed = expand_inputs(args.inputs)
        result = predict_files(model, files, args.out, device)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:  # bad input: a clear message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed += result.failed
    print(f"wrote {len(result.written)} image(s) to {args.out}")
    if failed:
        print(f"could not read {len(failed)} input(s):", file=sys.stderr)
        for path, reason in failed:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0
