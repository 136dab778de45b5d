"""Pretrained torchvision weight files that nothing here downloads: where they are looked up, and what a
missing one's error says.

The VGG-19 loss term and the LPIPS metric (AlexNet) need ImageNet weights that cannot be downloaded on
the project's machines: the images bake them into torch hub's checkpoint folder (docker/*.Dockerfile),
and elsewhere the user puts them there. One lookup serves every file, so that they are all found (and
reported missing) the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch


class WeightsNotFoundError(FileNotFoundError):
    """A pretrained weights file is not on this machine; the message says where to put it."""


@dataclass(frozen=True)
class PretrainedFile:
    """One torchvision weights file and who needs it (for the error message).

    Plain text, not torchvision's enum member: importing torchvision.models costs about 2 s (it pulls
    in torch._dynamo), paid by every run process, which needs only the name and the URL.
    tests/colormamba/test_pretrained.py checks both against torchvision's enums.

    Args:
        weights: the torchvision enum member's name, e.g. "VGG19_Weights.IMAGENET1K_V1".
        url: where torchvision downloads it from (`weights.url`).
        label: what the file holds, e.g. "VGG-19 ImageNet weights".
        needed_by: who asks for it, e.g. "The 'vgg' loss term".
        without: what happens without it (the last sentence of the error).
    """

    weights: str
    url: str
    label: str
    needed_by: str
    without: str

    @property
    def filename(self) -> str:
        """The file's name in torch hub's checkpoint folder (the URL's last part, with its hash)."""
        return Path(urlparse(self.url).path).name

    def hub_path(self) -> Path:
        """Where torchvision would have saved it: `torch.hub.get_dir()/checkpoints/<filename>`."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename


def find_weights_file(
    spec: PretrainedFile,
    path: str | os.PathLike[str] | None = None,
    env: tuple[str, str | None] | None = None,
) -> Path:
    """Locate a weights file without downloading it.

    Order: `path` if given, else the environment variable `env = (name, value)` if its value is set,
    else torch hub's checkpoint folder. A location that is named (argument or environment) but empty is
    an error, not a reason to look on. The caller reads the variable (through `colormamba.env`, where
    every variable the library reads is declared).

    Raises:
        WeightsNotFoundError: with where to put the file and how to get it.
    """
    hub_file = spec.hub_path()
    if path is not None:
        candidate, source = Path(path), "the path given in the configuration"
    elif env is not None and env[1]:
        candidate, source = Path(env[1]), f"${env[0]}"
    else:
        candidate, source = hub_file, "torch hub's checkpoint folder"
    if candidate.is_file():
        return candidate
    env_hint = f", or set {env[0]} to its path" if env is not None else ""
    raise WeightsNotFoundError(
        f"{spec.label} not found at {candidate} ({source}). {spec.needed_by} needs torchvision's "
        f"{spec.weights} file {spec.filename} and never downloads it. Put the file at {hub_file}{env_hint}, "
        f"or pass its path in the configuration. To get it, on a machine with internet access run "
        f"`curl -L -o {spec.filename} {spec.url}` (torchvision saves it under $TORCH_HOME/hub/checkpoints/ "
        f"when it downloads it) and copy it over. {spec.without}"
    )


def load_weights(path: Path, what: str) -> dict:
    """A pretrained `what` state dict from `path`, loaded with the weights-only unpickler. A file it
    refuses holds more than tensors: the error says so and that it was not unpickled, never torch's advice
    to load it again unsafely (the one step not to take with a file of unknown origin)."""
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: not a {what} weights file: it holds more than tensors and plain values, "
                         "or is damaged; it was not unpickled") from None  # fmt: skip
    except Exception as exc:  # torch raises several types for a damaged archive
        raise ValueError(f"{path}: not a readable {what} weights file ({type(exc).__name__})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a {what} state dict")
    return state
