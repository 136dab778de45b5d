"""The `vgg` term: VGG-19 perceptual loss with frozen ImageNet weights read from a local file.

The weights are torchvision's `VGG19_Weights.IMAGENET1K_V1` (file `vgg19-dcbb9e9d.pth`). Nothing here
downloads: the file is looked up (colormamba.pretrained) at an explicit path, then
`$COLORMAMBA_VGG_WEIGHTS`, then torch hub's checkpoint folder (`$TORCH_HOME/hub/checkpoints/`), and its
absence is an error that says where to put it. Random weights are used only when asked for by name
(`weights="random"`).

Only the convolutional trunk up to the deepest requested layer is built. Its weights are stored as
non-persistent buffers: they follow `.to(device)`, are not parameters (an optimiser built from the loss
module gets nothing to train) and are not in `state_dict()` (checkpoints do not carry 80 MB of VGG).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from colormamba.env import VGG_WEIGHTS
from colormamba.losses.terms import check_pair
from colormamba.pretrained import PretrainedFile, WeightsNotFoundError, find_weights_file, load_weights

VGG_WEIGHTS_ENV = VGG_WEIGHTS.name
VGG19_FILE = PretrainedFile(
    "VGG19_Weights.IMAGENET1K_V1",
    "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    label="VGG-19 ImageNet weights",
    needed_by="The 'vgg' loss term",
    without="Random VGG weights are used only when the configuration asks for vgg_weights='random'.",
)
VGG_WEIGHTS_FILENAME = VGG19_FILE.filename  # vgg19-dcbb9e9d.pth
# the input normalisation of VGG19_Weights.IMAGENET1K_V1.transforms() (tests/colormamba/test_pretrained.py)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_VGG_LAYERS = ("relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4")

# VGG-19 ("configuration E"): output channels of each 3x3 convolution, "M" a 2x2 max-pool.
_VGG19_TRUNK = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


class VGGWeightsNotFoundError(WeightsNotFoundError):
    """The pretrained VGG-19 weights file the `vgg` term needs is not on this machine."""


def vgg19_layer_names() -> list[str]:
    """Names of the VGG-19 trunk's modules in order (conv1_1, relu1_1, conv1_2, ..., pool5).

    Position i in this list is module `features.<i>` of torchvision's vgg19, so state-dict keys line up.
    """
    names: list[str] = []
    block, conv = 1, 0
    for item in _VGG19_TRUNK:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:
            conv += 1
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
    return names


def _build_trunk(depth: int) -> nn.Sequential:
    """The first `depth` modules of the VGG-19 trunk (torchvision's `features[:depth]`)."""
    modules: list[nn.Module] = []
    in_ch = 3
    for item in _VGG19_TRUNK:
        if item == "M":
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            # not in-place: an intermediate output we return must not be overwritten by the next layer
            modules += [nn.Conv2d(in_ch, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_ch = int(item)
    return nn.Sequential(*modules[:depth])


def find_vgg_weights(path: str | os.PathLike[str] | None = None) -> Path:
    """Locate `vgg19-dcbb9e9d.pth` without downloading it.

    Order: `path` if given, else `$COLORMAMBA_VGG_WEIGHTS` if set, else
    `torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth` (where torchvision keeps downloaded weights).
    A location that is named (argument or environment) but empty is an error, not a reason to look on.

    Raises:
        VGGWeightsNotFoundError: with where to put the file and how to get it.
    """
    try:
        return find_weights_file(VGG19_FILE, path, env=(VGG_WEIGHTS_ENV, VGG_WEIGHTS.read()))
    except WeightsNotFoundError as exc:
        raise VGGWeightsNotFoundError(str(exc)) from None


def _freeze_as_buffers(trunk: nn.Sequential) -> None:
    """Turn every parameter into a non-persistent buffer (see the module docstring)."""
    for module in trunk.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            delattr(module, name)
            module.register_buffer(name, param.detach().requires_grad_(False), persistent=False)


class VGGPerceptualLoss(nn.Module):
    """Sum over layers of the mean squared difference of VGG-19 features of prediction and target.

    Args:
        weights: "pretrained" (look the file up with `find_vgg_weights`), "random" (torchvision's
            initialisation, for tests only), or a path to the weights file.
        layers: layer names from `vgg19_layer_names()`, e.g. "relu3_4".
    """

    def __init__(self, weights: str | os.PathLike[str] = "pretrained",
                 layers: Sequence[str] = DEFAULT_VGG_LAYERS) -> None:
        super().__init__()
        names = vgg19_layer_names()
        if not layers:
            raise ValueError("layers must name at least one VGG-19 layer")
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise ValueError(f"layers: unknown VGG-19 layer(s) {unknown}; known: {names}")
        self.layers = tuple(layers)
        self._taps = {names.index(name): name for name in self.layers}  # module index -> layer name
        self.trunk = _build_trunk(max(self._taps) + 1)
        if weights == "random":
            self._init_random()
        else:
            self._load(find_vgg_weights(None if weights == "pretrained" else weights))
        _freeze_as_buffers(self.trunk)
        self.trunk.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _init_random(self) -> None:
        # torchvision's VGG initialisation, so that deep features of a random net do not fade to zero
        for module in self.trunk:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def _load(self, path: Path) -> None:
        state = load_weights(path, "torchvision VGG-19")
        prefix = "features."
        wanted = {
            key.removeprefix(prefix): value for key, value in state.items()
            if key.startswith(prefix) and int(key.split(".")[1]) < len(self.trunk)
        }
        try:
            self.trunk.load_state_dict(wanted, strict=True)
        except RuntimeError as exc:
            raise RuntimeError(f"{path} is not a torchvision VGG-19 state dict: {exc}") from exc

    def train(self, mode: bool = True) -> VGGPerceptualLoss:
        """Keep the frozen trunk in eval mode whatever the surrounding module's mode."""
        super().train(mode)
        self.trunk.eval()
        return self

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """VGG features of RGB images in [0, 1] at the requested layers.

        Args:
            x: (B, 3, H, W).
        Returns:
            Layer name -> (B, C_l, H_l, W_l).
        """
        out: dict[str, torch.Tensor] = {}
        h = (x - self.mean) / self.std
        for index, module in enumerate(self.trunk):
            h = module(h)
            if index in self._taps:
                out[self._taps[index]] = h
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Perceptual loss.

        Args:
            pred, target: (B, 3, H, W) RGB in [0, 1]; H, W >= 16 for the default layers (4 pools).
        Returns:
            Scalar; 0 for identical images. No gradient flows to `target`.
        """
        check_pair(pred, target)
        with torch.no_grad():
            target_features = self.features(target)
        pred_features = self.features(pred)
        return sum(
            (F.mse_loss(pred_features[name], target_features[name]) for name in self.layers),
            start=pred.new_zeros(()),
        )
