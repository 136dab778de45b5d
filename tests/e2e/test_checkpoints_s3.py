"""A run's checkpoint straight from the store: `predict --checkpoint s3://...` and
`submit.py checkpoint download`, on the real SeaweedFS S3 server."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from minio import Minio
from PIL import Image

from colormamba.cli import main
from colormamba.predict import load_generator
from colormamba.storage import RunLocation
from tests.support.servers import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.submit import submit

RUN = RunLocation("study-a", "tiny-seed0")
TARGET = f"{RUN.study}/{RUN.run}"


@pytest.fixture
def stored_run(s3_store, tiny_checkpoint: Path):
    """A run whose best.pt (the tiny checkpoint) is in the test's bucket."""
    s3_store.put_bytes(RUN.checkpoint("best"), tiny_checkpoint.read_bytes())
    return s3_store


def url(store, key: str) -> str:
    return f"s3://{store.bucket}/{key}"


def frames(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = [folder / "a.png", folder / "b.png"]
    Image.new("L", (12, 10), 70).save(paths[0])
    Image.new("L", (9, 9), 200).save(paths[1])
    return paths


def test_predict_from_an_s3_checkpoint(stored_run, tiny_checkpoint: Path, tmp_path: Path) -> None:
    source = url(stored_run, RUN.checkpoint("best"))
    from_store = load_generator(source, torch.device("cpu")).state_dict()
    from_file = load_generator(tiny_checkpoint, torch.device("cpu")).state_dict()
    assert from_store.keys() == from_file.keys()
    assert all(torch.equal(from_store[k], from_file[k]) for k in from_file)
    out = tmp_path / "out"
    inputs = frames(tmp_path / "in")
    args = ["--checkpoint", source, *map(str, inputs), "-o", str(out), "--device", "cpu"]
    assert main(["predict", *args]) == 0
    for path in inputs:
        with Image.open(out / path.name) as written, Image.open(path) as given:
            assert (written.size, written.mode) == (given.size, "RGB")


def test_a_missing_object_or_bucket_is_named_and_no_bucket_is_created(
    s3_store, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    image = frames(tmp_path / "in")[0]
    missing = url(s3_store, "checkpoints/study-a/nope/best.pt")
    s3_store.put_bytes("studies/x/spec.json", b"{}")  # the bucket exists
    assert main(["predict", "--checkpoint", missing, str(image), "-o", str(tmp_path / "o")]) == 2
    assert f"{missing}: no such checkpoint in the store" in capsys.readouterr().err
    bucket = f"{s3_store.bucket}-typo"
    assert main(["predict", "--checkpoint", f"s3://{bucket}/best.pt", str(image), "-o", str(tmp_path)]) == 3
    assert f"bucket {bucket!r} does not exist" in capsys.readouterr().err
    client = Minio(s3_store.endpoint, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, secure=False)
    assert not client.bucket_exists(bucket), "reading must not create a bucket"
    assert main(["predict", "--checkpoint", "s3://just-a-bucket", str(image), "-o", str(tmp_path)]) == 2
    assert "expected an object URL s3://bucket/key" in capsys.readouterr().err


def test_checkpoint_download(stored_run, s3_env: dict[str, str], tmp_path: Path) -> None:
    stored_run.put_bytes(RUN.checkpoint("last"), b"PK\x03\x04 the last one")
    best = stored_run.get_bytes(RUN.checkpoint("best"))
    out = submit("checkpoint", "download", TARGET, "-o", str(tmp_path / "x" / "m.pt"), env=s3_env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "x" / "m.pt").read_bytes() == best
    assert "python -m colormamba predict --checkpoint" in out.stdout
    out = submit("checkpoint", "download", TARGET, "--last", "-o", str(tmp_path), env=s3_env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / f"{RUN.run}-last.pt").read_bytes() == b"PK\x03\x04 the last one"
    assert not list(tmp_path.rglob("*.part")), "no partial file left behind"


def test_checkpoint_download_of_a_run_without_one_says_what_there_is(
    s3_store, s3_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    s3_store.put_bytes(RUN.checkpoint("last"), b"PK\x03\x04 only last")
    out = submit("checkpoint", "download", TARGET, "-o", str(tmp_path / "m.pt"), env=s3_env)
    assert out.returncode == 4, out.stderr
    assert f"run {RUN.study}/{RUN.run} has no best.pt" in out.stderr and "--last" in out.stderr
    assert not (tmp_path / "m.pt").exists()

    from jobs.submit import main as submit_main  # in this process: the refusal needs no store

    assert submit_main(["checkpoint", "download", "no-slash", "-o", str(tmp_path / "m.pt")]) == 2
    assert "expected STUDY/RUN, got 'no-slash'" in capsys.readouterr().err
