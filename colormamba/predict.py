"""Colorize NIR frames of any size with a trained checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch

from colormamba import checkpoint
from colormamba.data import IMAGE_SUFFIXES
from colormamba.imaging import load_image, save_image
from colormamba.models import build_model_from_config

log = logging.getLogger(__name__)


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders as their image files (sorted); anything else is an error naming it."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"{item}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise ValueError(f"{item}: no such file or folder")
    return files


def load_generator(
    path: str | Path, device: torch.device, scan_backend: str | None = None
) -> torch.nn.Module:
    """Rebuild the generator from the configuration stored in the checkpoint, then load its weights."""
    state = checkpoint.load_file(path)
    model_config = dict(state["model_config"])
    if scan_backend is not None:
        model_config["scan_backend"] = scan_backend
    model = build_model_from_config(model_config)
    checkpoint.load_weights(model, state["model"], str(path))
    return model.to(device).eval()


def predict_files(
    model: torch.nn.Module, files: list[Path], out_dir: Path, device: torch.device
) -> list[Path]:
    """Write `<out_dir>/<stem>.png` for every input; returns the written paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = [f.stem for f in files]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(
            f"several inputs share the name stem(s) {duplicates}; outputs would overwrite each other"
        )
    written = []
    with torch.no_grad():
        for i, path in enumerate(files, 1):
            nir = load_image(path, 1, convert=True).unsqueeze(0).to(device)  # (1, 1, H, W)
            rgb, _ = model(nir)
            target = out_dir / f"{path.stem}.png"
            save_image(rgb[0].float(), target)
            written.append(target)
            log.info("[%d/%d] %s -> %s (%dx%d)", i, len(files), path, target, nir.shape[-1], nir.shape[-2])
    return written
