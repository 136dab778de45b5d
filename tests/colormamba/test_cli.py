"""The library's command line: `predict` on frames of any size."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from rich.console import Console

from colormamba.cli import main
from colormamba.imaging import load_image
from colormamba.predict import PROGRESS_MIN_FILES, load_generator, predict_files


def _write_gray(path: Path, w: int, h: int, mode: str = "L") -> None:
    Image.new(mode, (w, h), color=(90,) * len(mode) if mode != "L" else 90).save(path)


def predict(checkpoint: Path | str, *inputs: Path, out: Path) -> int:
    """`python -m colormamba predict` in this process."""
    args = ["--checkpoint", str(checkpoint), *map(str, inputs), "-o", str(out), "--device", "cpu"]
    return main(["predict", *args])


def test_predict_keeps_each_frame_size(tiny_checkpoint: Path, tmp_path: Path) -> None:
    frames = tmp_path / "in"
    frames.mkdir()
    _write_gray(frames / "a.png", 50, 37)
    _write_gray(frames / "b.png", 33, 33, mode="RGB")  # grey frames saved as RGB are converted
    out = tmp_path / "out"
    assert predict(tiny_checkpoint, frames, out=out) == 0
    with Image.open(out / "a.png") as a, Image.open(out / "b.png") as b:
        assert (a.size, a.mode) == ((50, 37), "RGB")
        assert (b.size, b.mode) == ((33, 33), "RGB")


def test_predict_output_matches_the_model(tiny_checkpoint: Path, tmp_path: Path) -> None:
    _write_gray(tmp_path / "x.png", 40, 24)
    assert predict(tiny_checkpoint, tmp_path / "x.png", out=tmp_path / "o") == 0
    model = load_generator(tiny_checkpoint, torch.device("cpu"))
    with torch.no_grad():
        rgb, _ = model(load_image(tmp_path / "x.png", 1).unsqueeze(0))
    written = load_image(tmp_path / "o" / "x.png", 3)
    assert (written - rgb[0].clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only


def test_every_input_is_tried_and_the_unreadable_ones_are_listed_at_the_end(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    frames = tmp_path / "in"
    frames.mkdir()
    _write_gray(frames / "a.png", 12, 9)
    (frames / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # sorted between two good frames
    _write_gray(frames / "c.png", 10, 10)
    Image.new("I;16", (8, 8)).save(frames / "d.png")
    missing = tmp_path / "missing.png"
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    assert predict(tiny_checkpoint, frames, missing, empty, out=out) == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    captured = capsys.readouterr()
    assert "wrote 2 image(s)" in captured.out
    listed = captured.err.splitlines()
    start = listed.index("could not read 4 input(s):")
    assert len(listed) == start + 5, "the list closes the output"
    reasons = dict(line.strip().split(": ", 1) for line in listed[start + 1 :])
    assert set(reasons) == {str(frames / "b.png"), str(frames / "d.png"), str(missing), str(empty)}
    assert reasons[str(frames / "b.png")].startswith("cannot read image")
    assert reasons[str(frames / "d.png")] == "16-bit images are not supported (expected 8-bit)"
    assert reasons[str(missing)] == "no such file or folder"
    assert reasons[str(empty)].startswith("folder holds no image files")
    assert "Traceback" not in captured.err


def test_all_inputs_readable_is_exit_0(tiny_checkpoint: Path, tmp_path: Path) -> None:
    _write_gray(tmp_path / "x.png", 8, 8)
    assert predict(tiny_checkpoint, tmp_path / "x.png", out=tmp_path / "o") == 0


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda ckpt: _png_bytes(), "not a checkpoint: it is a PNG image"),
        (lambda ckpt: ckpt[: len(ckpt) // 2], "truncated or corrupt checkpoint"),
        (lambda ckpt: b"", "not a checkpoint: the file is empty"),
        (lambda ckpt: b"not a checkpoint", "not a checkpoint: it does not start like a zip archive"),
    ],
    ids=["png", "truncated", "empty", "text"],
)
def test_a_file_that_is_not_a_checkpoint_is_named_with_what_it_is(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, content, message: str
) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content(tiny_checkpoint.read_bytes()))
    _write_gray(tmp_path / "x.png", 8, 8)
    assert predict(bad, tmp_path / "x.png", out=tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: {message}"), err
    assert "weights_only" not in err and "Traceback" not in err  # torch's advice to unpickle is not ours
    assert not (tmp_path / "o").exists()


def test_a_missing_checkpoint_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write_gray(tmp_path / "x.png", 8, 8)
    assert predict(tmp_path / "nope.pt", tmp_path / "x.png", out=tmp_path / "o") == 2
    assert f"{tmp_path / 'nope.pt'}: checkpoint file not found" in capsys.readouterr().err


def _terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=100, color_system=None), buf


class GreyToRgb(torch.nn.Module):
    """Stands in for the generator where only the loop around it is tested (the bar): the tiny network
    costs seconds per frame on two busy cores."""

    def forward(self, nir: torch.Tensor) -> tuple[torch.Tensor, None]:
        return nir.expand(-1, 3, -1, -1), None


def test_a_progress_bar_for_many_files_on_a_terminal_only(tmp_path: Path) -> None:
    files = []
    for i in range(PROGRESS_MIN_FILES):
        _write_gray(tmp_path / f"f{i}.png", 8, 8)
        files.append(tmp_path / f"f{i}.png")
    cpu = torch.device("cpu")
    console, buf = _terminal()
    result = predict_files(GreyToRgb(), files, tmp_path / "o", cpu, console=console)
    assert len(result.written) == len(files) and not result.failed
    n = len(files)
    assert f"{n}/{n}" in buf.getvalue() and "colorizing" in buf.getvalue()
    console, buf = _terminal()
    predict_files(GreyToRgb(), files[:-1], tmp_path / "o", cpu, console=console)
    assert buf.getvalue() == "", "a few files: a log line each, no bar"
    plain = io.StringIO()  # not a terminal (a log file, a pipe): no bar whatever the count
    predict_files(GreyToRgb(), files, tmp_path / "p", cpu, console=Console(file=plain))
    assert plain.getvalue() == ""
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [f.name for f in files]


def test_module_entry_point_reports_usage_errors() -> None:
    proc = subprocess.run([sys.executable, "-m", "colormamba", "predict"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--checkpoint" in proc.stderr


def test_an_image_above_the_pixel_limit_is_listed_and_the_inputs_after_it_are_written(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from colormamba.imaging import MAX_IMAGE_PIXELS
    from tests.support.images import png_claiming

    _write_gray(tmp_path / "first.png", 12, 9)
    bomb = png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    _write_gray(tmp_path / "last.png", 10, 10)
    out = tmp_path / "out"
    assert predict(tiny_checkpoint, tmp_path / "first.png", bomb, tmp_path / "last.png", out=out) == 1
    assert sorted(p.name for p in out.iterdir()) == ["first.png", "last.png"]
    captured = capsys.readouterr()
    assert "wrote 2 image(s)" in captured.out
    listed = captured.err.splitlines()
    assert listed[-2] == "could not read 1 input(s):", captured.err
    assert listed[-1].startswith(f"  {bomb}: 10,000,000,000 pixels is above the limit")
    assert f"limit of {MAX_IMAGE_PIXELS:,} pixels" in listed[-1]
    assert "Traceback" not in captured.err and "DecompressionBomb" not in captured.err
