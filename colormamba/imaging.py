"""Image conversions shared by the model, the losses, the metrics and the data readers.

Kept in one module so that the per-image normalisation, the HSV conversion and the Laplacian mean the
same thing everywhere (training targets, model inputs and the `colormamba` evaluation protocol).
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from PIL import Image

# The reference normalises 8-bit values X in 0..255 as (X - min) / (max - min + 1e-3). Our images are
# x = X / 255, and (x - min) / (max - min + 1e-3 / 255) is the same number: the epsilon scales with them.
NORM_EPS = 1e-3 / 255


def normalize_per_image(x: torch.Tensor) -> torch.Tensor:
    """The reference's per-image min-max normalisation, `(x - min) / (max - min + eps)`.

    The published code writes it `img -= min(img); img = img / (max(img) + 1e-3)` on the 0-255 scale: the
    max is taken after the shift, so the denominator is the range. With our [0, 1] images the epsilon is
    1e-3 / 255 (NORM_EPS), which gives the reference's numbers exactly. Min and max are taken over all
    channels and pixels of each image (so a grey image read as HSV, whose H and S are 0, keeps min 0).
    A constant image maps to 0.

    Args:
        x: (B, C, H, W) in [0, 1] (X / 255 of 8-bit values, or the same scale after augmentation).
    Returns:
        (B, C, H, W) in [0, 1), same dtype.
    """
    flat = x.flatten(1)
    lo = flat.amin(dim=1).view(-1, 1, 1, 1)
    hi = flat.amax(dim=1).view(-1, 1, 1, 1)
    return (x - lo) / (hi - lo + NORM_EPS)


def rgb_to_hsv(rgb: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """RGB in [0, 1] to HSV with every channel in [0, 1] (hue as a fraction of a turn).

    Differentiable almost everywhere, so it can be used on predictions inside a loss.

    Args:
        rgb: (B, 3, H, W).
    Returns:
        (B, 3, H, W) with channels (h, s, v).
    """
    r, g, b = rgb.unbind(dim=1)
    v, argmax = rgb.max(dim=1)
    c = v - rgb.min(dim=1).values
    safe_c = c + eps
    h_r = torch.remainder((g - b) / safe_c, 6.0)
    h_g = (b - r) / safe_c + 2.0
    h_b = (r - g) / safe_c + 4.0
    h = torch.where(argmax == 0, h_r, torch.where(argmax == 1, h_g, h_b)) / 6.0
    h = torch.where(c > eps, h, torch.zeros_like(h))
    s = torch.where(v > eps, c / (v + eps), torch.zeros_like(v))
    return torch.stack([h, s, v], dim=1)


def gray_to_hsv(gray: torch.Tensor) -> torch.Tensor:
    """HSV of a grey image read as RGB: hue 0, saturation 0, value = the grey level.

    Args:
        gray: (B, 1, H, W).
    Returns:
        (B, 3, H, W).
    """
    zeros = torch.zeros_like(gray)
    return torch.cat([zeros, zeros, gray], dim=1)


_LAPLACIAN_8 = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]])


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """8-neighbour Laplacian of each channel of each image, zero padding: G_B's edge map.

    The reference computes this one in torch, as a fixed 3x3 convolution, exactly like this (its other
    Laplacian, G_A's `seg` map, is `normalized_laplacian`).

    Args:
        x: (B, C, H, W).
    Returns:
        (B, C, H, W).
    """
    c = x.shape[1]
    kernel = _LAPLACIAN_8.to(device=x.device, dtype=x.dtype).expand(c, 1, 3, 3)
    return F.conv2d(x, kernel, padding=1, groups=c)


_LAPLACIAN_4 = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def normalized_laplacian(x: torch.Tensor) -> torch.Tensor:
    """The `seg` map that conditions G_A's last SPADE block: the reference's formula, per image.

    The reference quantises the normalised NIR to 8 bits as `uint8(x * 255)` (truncation), takes
    OpenCV's `Laplacian(.., CV_64F)` with its defaults (ksize 1: the 4-neighbour kernel
    [0 1 0; 1 -4 1; 0 1 0], border BORDER_REFLECT_101, which is torch's "reflect" padding), and rescales
    it signed, `(L - min) / (max - min)`. It does that on the whole batch at once, which mixes the images
    (docs/architecture.md, "Deviations"); here each image gets its own 2-D Laplacian and its own min and
    max. A constant image (max = min, where the reference divides 0 by 0) maps to 0.

    Args:
        x: (B, C, H, W) in [0, 1] (the normalised NIR, C = 1), H and W >= 2.
    Returns:
        (B, C, H, W) in [0, 1], same dtype; min and max over all channels of each image.
    """
    quantised = (x * 255).floor().clamp(0, 255)  # what uint8(x * 255) keeps of x in [0, 1]
    c = x.shape[1]
    kernel = _LAPLACIAN_4.to(device=x.device, dtype=x.dtype).expand(c, 1, 3, 3)
    # exact integer arithmetic: bf16 autocast would round Laplacian values above 256
    with torch.autocast(x.device.type, enabled=False):
        lap = F.conv2d(F.pad(quantised, (1, 1, 1, 1), mode="reflect"), kernel, groups=c)
    flat = lap.flatten(1)
    lo = flat.amin(dim=1).view(-1, 1, 1, 1)
    span = flat.amax(dim=1).view(-1, 1, 1, 1) - lo
    return (lap - lo) / span.clamp_min(1)  # span is an integer: >= 1 unless the image is constant


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad H and W up to the next multiple, so that any frame size fits the network's strides.

    Returns:
        The padded tensor and the original (H, W) to crop back to.
    """
    h, w = x.shape[-2:]
    ph = math.ceil(h / multiple) * multiple - h
    pw = math.ceil(w / multiple) * multiple - w
    if ph == 0 and pw == 0:
        return x, (h, w)
    # reflect needs pad < size; replicate handles the rest (tiny images padded a lot)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


# The most pixels (width x height) of an image a user gives us (dataset files, `predict` inputs), checked on
# the header before any pixel is decoded. VCIP2020's frames are 256x256 (0.07 MP) and camera frames are at
# most a few tens of MP (8K UHD: 33 MP); 40 MP read as RGB is 120 MB of bytes and 480 MB as float32, which
# any worker holds. PIL's own guard is far above it (a warning only up to 179 MP: a 12000x12000 frame was
# decoded at 4.2 GB before the reader failed) and is an exception type nobody here catches.
MAX_IMAGE_PIXELS = 40_000_000


class ImageTooLarge(ValueError):
    """An image whose header claims more than MAX_IMAGE_PIXELS pixels: refused before decoding (its
    message names the file, its size and the limit). A ValueError, like every unreadable image."""


def _too_large(path: Path, size: str) -> ImageTooLarge:
    return ImageTooLarge(
        f"{path}: {size} pixels is above the limit of {MAX_IMAGE_PIXELS:,} pixels "
        f"(colormamba.imaging.MAX_IMAGE_PIXELS; VCIP2020's frames are 256x256); refused before decoding"
    )


@contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """The one way user images are opened: PIL's `Image.open` (which reads the header only), then the size
    checked against MAX_IMAGE_PIXELS before the caller decodes anything.

    Raises:
        ImageTooLarge: more pixels than MAX_IMAGE_PIXELS (also where PIL's own decompression-bomb guard
            fires first, far above it; its warning is not shown).
        OSError, SyntaxError: PIL's for a missing, truncated or corrupt file (load_image names the file).
    """
    from PIL import Image  # imported here: the model (and GPU images) need no imaging library

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our lower limit says more
            img = Image.open(path)
    except Image.DecompressionBombError as exc:  # PIL says how many pixels, not the width and height
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(claimed[1]):,}" if claimed else f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,}"
        raise _too_large(path, pixels) from None
    with img:
        width, height = img.size
        if width * height > MAX_IMAGE_PIXELS:
            raise _too_large(path, f"{width}x{height} = {width * height:,}")
        yield img


def load_image(path: str | Path, channels: int, convert: bool = False) -> torch.Tensor:
    """Read an 8-bit image file as a float tensor in [0, 1] (opened by `open_image`: size checked first).

    Args:
        path: image file.
        channels: 1 (grey) or 3 (RGB); a file with another channel count is an error naming the file.
        convert: accept any colour mode and convert it (for `predict`, where NIR frames are often saved
            as 3-channel grey); datasets stay strict so that a swapped NIR/RGB pair is caught.
    Returns:
        (channels, H, W) float32.
    Raises:
        ValueError: unreadable file, a channel count that does not match, or ImageTooLarge.
    """
    import numpy as np

    path = Path(path)
    try:
        with open_image(path) as img:
            img.load()
            mode = img.mode
            if mode in ("I;16", "I;16B", "I"):
                raise ValueError(f"{path}: 16-bit images are not supported (expected 8-bit)")
            if channels == 1:
                if mode not in ("L", "P", "1", "LA") and not convert:
                    raise ValueError(f"{path}: expected a 1-channel grey NIR image, found mode {mode!r}")
                arr = np.asarray(img.convert("L"))
            elif channels == 3:
                if mode not in ("RGB", "RGBA", "P") and not convert:
                    raise ValueError(f"{path}: expected a 3-channel RGB image, found mode {mode!r}")
                arr = np.asarray(img.convert("RGB"))
            else:
                raise ValueError(f"channels must be 1 or 3, got {channels}")
    except (OSError, SyntaxError) as exc:  # PIL raises these for truncated/corrupt files
        raise ValueError(f"{path}: cannot read image ({exc})") from exc
    tensor = torch.from_numpy(arr.copy()).float().div_(255.0)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def encode_png(tensor: torch.Tensor) -> bytes:
    """A (C, H, W) tensor in [0, 1] (C = 1 or 3) as the bytes of an 8-bit PNG (for any storage)."""
    from PIL import Image

    arr = tensor.detach().float().clamp(0, 1).mul(255).round().byte().cpu()
    arr = arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def save_image(tensor: torch.Tensor, path: str | Path) -> None:
    """Write a (C, H, W) tensor in [0, 1] (C = 1 or 3) as an 8-bit PNG file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(encode_png(tensor))
