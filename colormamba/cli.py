"""`python -m colormamba {demo,predict}`: the library's own command line (jobs/submit.py drives studies)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from colormamba.demo import DEMO_LOSSES, format_table, run_demo


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m colormamba", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train + evaluate a tiny model on a generated dataset, print metrics")
    demo.add_argument("--out", type=Path, default=Path("demo_output"), help="folder for dataset and runs")
    demo.add_argument("--losses", default=",".join(DEMO_LOSSES), help="comma-separated loss presets")
    demo.add_argument("--epochs", type=int, default=4)
    demo.add_argument("--size", type=int, default=64, help="side of the generated images")
    demo.add_argument("--preset", default="tiny", help="model preset")
    demo.add_argument("--device", default="auto")

    pred = sub.add_parser("predict", help="colorize NIR images with a trained checkpoint")
    pred.add_argument("--checkpoint", required=True, type=Path, help="best.pt or last.pt of a run")
    pred.add_argument("inputs", nargs="+", help="NIR image files or folders of them (any size)")
    pred.add_argument("-o", "--out", required=True, type=Path, help="output folder (one PNG per input)")
    pred.add_argument("--device", default="auto")
    pred.add_argument("--scan-backend", default=None, help="override the checkpoint's scan backend")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        if args.command == "demo":
            losses = tuple(s.strip() for s in args.losses.split(",") if s.strip())
            rows = run_demo(
                args.out,
                losses=losses,
                epochs=args.epochs,
                size=args.size,
                preset=args.preset,
                device=args.device,
            )
            print(format_table(rows))
            print(f"runs, checkpoints and samples under {args.out.resolve() / 'store'}")
        else:
            from colormamba.predict import expand_inputs, load_generator, predict_files
            from colormamba.train import resolve_device

            device = resolve_device(args.device)
            model = load_generator(args.checkpoint, device, args.scan_backend)
            written = predict_files(model, expand_inputs(args.inputs), args.out, device)
            print(f"wrote {len(written)} image(s) to {args.out}")
    except ValueError as exc:  # bad input: a clear message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
