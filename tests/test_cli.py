"""The library's command line: `predict` on frames of any size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from colormamba import checkpoint
from colormamba.cli import main
from colormamba.models import build_model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("tiny")
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    from dataclasses import asdict

    path.write_bytes(
        checkpoint.to_bytes(
            {"model": model.state_dict(), "model_config": asdict(model.config), "epoch": 1, "config": {}}
        )
    )
    return path


def _write_gray(path: Path, w: int, h: int, mode: str = "L") -> None:
    Image.new(mode, (w, h), color=(90,) * len(mode) if mode != "L" else 90).save(path)


def test_predict_keeps_each_frame_size(tiny_checkpoint: Path, tmp_path: Path) -> None:
    frames = tmp_path / "in"
    frames.mkdir()
    _write_gray(frames / "a.png", 50, 37)
    _write_gray(frames / "b.png", 33, 33, mode="RGB")  # grey frames saved as RGB are converted
    out = tmp_path / "out"
    assert (
        main(
            ["predict", "--checkpoint", str(tiny_checkpoint), str(frames), "-o", str(out), "--device", "cpu"]
        )
        == 0
    )
    with Image.open(out / "a.png") as a, Image.open(out / "b.png") as b:
        assert (a.size, a.mode) == ((50, 37), "RGB")
        assert (b.size, b.mode) == ((33, 33), "RGB")


def test_predict_output_matches_the_model(tiny_checkpoint: Path, tmp_path: Path) -> None:
    _write_gray(tmp_path / "x.png", 40, 24)
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(tiny_checkpoint),
                str(tmp_path / "x.png"),
                "-o",
                str(tmp_path / "o"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    from colormamba.imaging import load_image
    from colormamba.predict import load_generator

    model = load_generator(tiny_checkpoint, torch.device("cpu"))
    with torch.no_grad():
        rgb, _ = model(load_image(tmp_path / "x.png", 1).unsqueeze(0))
    written = load_image(tmp_path / "o" / "x.png", 3)
    assert (written - rgb[0].clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only


def test_predict_errors_name_the_path(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "missing.png"
    assert main(["predict", "--checkpoint", str(tiny_checkpoint), str(missing), "-o", str(tmp_path)]) == 2
    assert str(missing) in capsys.readouterr().err
    bad_ckpt = tmp_path / "bad.pt"
    bad_ckpt.write_bytes(b"not a checkpoint")
    _write_gray(tmp_path / "x.png", 8, 8)
    assert main(["predict", "--checkpoint", str(bad_ckpt), str(tmp_path / "x.png"), "-o", str(tmp_path)]) == 2
    assert str(bad_ckpt) in capsys.readouterr().err


def test_module_entry_point_reports_usage_errors() -> None:
    proc = subprocess.run([sys.executable, "-m", "colormamba", "predict"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--checkpoint" in proc.stderr
