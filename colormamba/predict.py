"""Colorize NIR frames of any size with a trained checkpoint.

Every input is tried: an unreadable one (missing, corrupt, 16-bit, above the pixel limit that
`colormamba.imaging.open_image` checks on the header, too large for the device's memory) is recorded
with its reason and the others are still written, so that one bad frame in a folder of
thousands costs that frame only; the caller lists the failures at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from colormamba import checkpoint
from colormamba.data import IMAGE_SUFFIXES
from colormamba.imaging import load_image, save_image
from colormamba.models import build_model_from_config

log = logging.getLogger(__name__)

PROGRESS_MIN_FILES = 4  # fewer inputs: a log line each says as much as a bar


@dataclass
class Prediction:
    """What `predict_files` did: the PNGs written and the inputs it could not read, with the reason."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def expand_inputs(inputs: Iterable[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files as given, folders as their image files (sorted).

    Returns:
        (files, problems): a path that is neither a file nor a folder of images is a problem
        (path, reason), not an error, so that the other inputs are still processed.
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append((str(item), f"folder holds no image files ({', '.join(IMAGE_SUFFIXES)})"))
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            problems.append((str(item), "no such file or folder"))
    return files, problems


def load_generator(
    source: str | Path, device: torch.device, scan_backend: str | None = None
) -> torch.nn.Module:
    """Rebuild the generator from the configuration stored in the checkpoint, then load its weights.

    Args:
        source: a checkpoint file or an `s3://bucket/key` URL (see `checkpoint.load_source`).
    Raises:
        ValueError: not a checkpoint of a ColorMamba generator, named by `source`.
    """
    state = checkpoint.load_source(source)
    if not isinstance(state.get("model"), dict) or not isinstance(state.get("model_config"), dict):
        raise ValueError(f"{source}: a checkpoint without generator weights (no 'model'/'model_config')")
    model_config = dict(state["model_config"])
    if scan_backend is not None:
        model_config["scan_backend"] = scan_backend
    model = build_model_from_config(model_config)
    checkpoint.load_weights(model, state["model"], str(source))
    return model.to(device).eval()


def predict_files(
    model: torch.nn.Module,
    files: list[Path],
    out_dir: Path,
    device: torch.device,
    console: Console | None = None,
) -> Prediction:
    """Write `<out_dir>/<stem>.png` for every readable input.

    Args:
        console: where the progress bar goes (shown for PROGRESS_MIN_FILES inputs or more when the
            console is a terminal); None: stderr.
    Raises:
        ValueError: several inputs share a name stem (outputs would overwrite each other); checked
            before anything is written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = [f.stem for f in files]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(
            f"several inputs share the name stem(s) {duplicates}; outputs would overwrite each other"
        )
    console = console if console is not None else Console(stderr=True)
    show = len(files) >= PROGRESS_MIN_FILES and console.is_terminal
    result = Prediction()
    columns = (TextColumn("colorizing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.description}"))  # fmt: skip
    with torch.no_grad(), Progress(*columns, console=console, disable=not show) as bar:
        task = bar.add_task("", total=len(files))
        for i, path in enumerate(files, 1):
            bar.update(task, description=path.name)
            target = out_dir / f"{path.stem}.png"
            try:
                nir = load_image(path, 1, convert=True).unsqueeze(0).to(device)  # (1, 1, H, W)
                rgb, _ = model(nir)
            except (ValueError, torch.OutOfMemoryError) as exc:
                reason = str(exc).removeprefix(f"{path}: ")
                result.failed.append((str(path), reason))
                log.debug("[%d/%d] %s: %s", i, len(files), path, reason)
            else:
                save_image(rgb[0].float(), target)
                result.written.append(target)
                log.log(logging.DEBUG if show else logging.INFO, "[%d/%d] %s -> %s (%dx%d)",
                        i, len(files), path, target, nir.shape[-1], nir.shape[-2])  # fmt: skip
            bar.advance(task)
    return result
