"""LPIPS (Zhang et al., 2018) beside PSNR, SSIM and AE: the `lpips` package's AlexNet variant.

LPIPS needs two sets of weights: the linear layers calibrated on human judgements, which the `lpips`
package ships (`lpips/weights/v0.1/alex.pth`), and the AlexNet backbone's ImageNet weights, which
torchvision would download (`alexnet-owt-7be5be79.pth`) and which cannot be downloaded here. The backbone
file is looked up like VGG-19's (colormamba.pretrained): the images bake it into torch hub's checkpoint
folder. Nothing in this module downloads: the package's network is always built with a random backbone
(no download path is taken) and the file found is loaded into it.

Without the file, the metric is missing, never a number from random weights: `LPIPSScore.reason` says
why, its values are NaN, and the evaluation carries the reason into metrics.json and the report. Random
backbone weights are used only when asked for by name (`weights="random"`, for tests of the plumbing).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from colormamba.pretrained import PretrainedFile, WeightsNotFoundError, find_weights_file, load_weights

log = logging.getLogger(__name__)

ALEXNET_FILE = PretrainedFile(
    "AlexNet_Weights.IMAGENET1K_V1",
    "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    label="AlexNet ImageNet weights",
    needed_by="The LPIPS metric",
    without="Without them LPIPS is reported as missing (never computed with random weights).",
)
LPIPS_VERSION = "0.1"  # the linear layers' version shipped with the lpips package (the published one)
# AlexNet's first convolution (11x11, stride 4, padding 2) and two 3x3 stride-2 max-pools leave no
# pixel for a smaller frame.
LPIPS_MIN_SIZE = 31


class LPIPSScore:
    """LPIPS per image, lower is better; 0 for identical images.

    Build it with `LPIPSScore.load`; an instance without a network (`reason` set) scores NaN.

    Args:
        net: the `lpips.LPIPS` module, or None when unavailable.
        reason: why the metric is unavailable (None when it is available).
    """

    def __init__(self, net: nn.Module | None, reason: str | None = None) -> None:
        if (net is None) == (reason is None):
            raise ValueError("LPIPSScore needs either a network or the reason there is none")
        self.net = net
        self.reason = reason

    @classmethod
    def load(cls, weights: str | os.PathLike[str] = "pretrained") -> LPIPSScore:
        """The AlexNet LPIPS of the `lpips` package, with backbone weights that are never downloaded.

        Args:
            weights: "pretrained" (look the AlexNet file up in torch hub's checkpoint folder), a path to
                `alexnet-owt-7be5be79.pth`, or "random" (a random backbone: tests of the plumbing only).
        Returns:
            An available score, or an unavailable one whose `reason` names the missing file.
        Raises:
            ValueError: the file exists but is not a torchvision AlexNet state dict.
        """
        if weights == "random":
            return cls(_build_lpips())
        try:
            path = find_weights_file(ALEXNET_FILE, None if weights == "pretrained" else weights)
        except WeightsNotFoundError as exc:
            # INFO, not WARNING: every run of a study would repeat it; metrics.json and the report say why
            log.info("LPIPS unavailable: %s", exc)
            return cls(None, f"LPIPS not computed: {exc}")
        net = _build_lpips()
        _load_backbone(net, path)
        return cls(net)

    @property
    def available(self) -> bool:
        return self.net is not None

    def to(self, device: torch.device) -> LPIPSScore:
        if self.net is not None:
            self.net.to(device)
        return self

    def reason_for(self, height: int, width: int) -> str | None:
        """Why frames of this size get no LPIPS value (None when they get one)."""
        if self.reason is not None:
            return self.reason
        if min(height, width) < LPIPS_MIN_SIZE:
            size = f"{LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE}"
            return f"LPIPS not computed: frames of {height}x{width} are smaller than AlexNet's minimum {size}"
        return None

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """LPIPS distance of each pair.

        Args:
            pred, gt: (N, 3, H, W) RGB in [0, 1] (mapped to the [-1, 1] that LPIPS expects).
        Returns:
            (N,) float64 on the inputs' device; NaN when `reason_for(H, W)` gives a reason.
        """
        if self.reason_for(*pred.shape[-2:]) is not None:
            return torch.full((pred.shape[0],), math.nan, dtype=torch.float64, device=pred.device)
        with torch.no_grad():
            dist = self.net(pred.float(), gt.float(), normalize=True)  # (N, 1, 1, 1)
        return dist.flatten().double()


def _build_lpips() -> nn.Module:
    """`lpips.LPIPS` for AlexNet with a random backbone (no download) and the shipped linear layers."""
    import lpips  # imported here: it pulls in SciPy, and only evaluation needs it

    with warnings.catch_warnings():
        # lpips asks torchvision for `alexnet(pretrained=False)`, a deprecated spelling of weights=None
        warnings.simplefilter("ignore", UserWarning)
        net = lpips.LPIPS(pretrained=False, net="alex", version=LPIPS_VERSION, pnet_rand=True, verbose=False)
    linear = Path(lpips.__file__).parent / "weights" / f"v{LPIPS_VERSION}" / "alex.pth"
    state = torch.load(linear, map_location="cpu", weights_only=True)
    net.lins.load_state_dict({k.replace("lin", "", 1): v for k, v in state.items()}, strict=True)
    return net.eval().requires_grad_(False)


def _load_backbone(net: nn.Module, path: Path) -> None:
    """Load torchvision's AlexNet state dict into the LPIPS network's slices (`sliceK.<i>` holds
    torchvision's `features.<i>`)."""
    state = load_weights(path, "torchvision AlexNet")
    wanted = {}
    for key in net.net.state_dict():
        index_and_name = key.split(".", 1)[1]  # "slice2.3.weight" -> "3.weight"
        source = f"features.{index_and_name}"
        if source not in state:
            raise ValueError(f"{path}: not a torchvision AlexNet state dict (no {source})")
        wanted[key] = state[source]
    try:
        net.net.load_state_dict(wanted, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: not a torchvision AlexNet state dict ({exc})") from exc
