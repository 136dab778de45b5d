"""A generated NIR/RGB dataset in the VCIP2020 (or plain) layout, for tests and demos.

The real VCIP2020 set cannot be downloaded on this project's machines. These scenes imitate its outdoor
landscapes with a learnable, physically plausible relation: each pixel belongs to a material with an RGB
colour and an NIR reflectance (vegetation green and bright in NIR, sky blue and dark, water very dark,
soil/road/buildings brown or grey and mid-grey in NIR); a smooth shading field (the light) and a texture
field multiply both images alike, and independent sensor noise is added to each. Like the real task, the
mapping is not a per-pixel function: soil, road and buildings share NIR levels and need context.

Four choices keep the relation learnable at the small sizes of tests and demos (docs/evaluation.md, "The
demo"): every scene is a ground-level view with sky above a horizon (a frame without sky gives a small
network no cue where the ground starts, and it paints sky over soil); each pixel averages SUPERSAMPLE^2
samples, so edges are partial pixels as a camera records them; crop rows are never finer than
MIN_ROW_PERIOD_PX pixels (finer stripes would alias into noise); and one instance of a material varies
its colour per channel by at most HUE_JITTER (hue is what the NIR cannot tell), its brightness more.

Every image is drawn from its own generator seeded from (seed, split, index): the same seed gives
byte-identical files, and changing one split's count leaves the other splits' images unchanged.

    python -m colormamba.data.synthetic OUT --n-train 32 --n-val 8 --n-test 8 --size 64 --seed 0
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from colormamba.data.layouts import LAYOUTS, SPLITS
from colormamba.imaging import save_image

MIN_SIZE = 8  # smaller images cannot hold a scene (nor the network's strides)
SENSOR_NOISE = 0.015  # std of the independent per-channel noise
HUE_JITTER = 0.05  # per-channel relative colour variation of a material instance
BRIGHTNESS_JITTER = 0.10  # its relative brightness variation (all three channels alike)
MIN_ROW_PERIOD_PX = 6  # crop rows: period of the stripes, at least this many pixels
SUPERSAMPLE = 2  # samples per pixel side: edges are area-averaged, not aliased


@dataclass(frozen=True)
class Material:
    """Mean RGB colour, NIR reflectance, and texture strength (relative modulation of both)."""

    rgb: tuple[float, float, float]
    nir: float
    texture: float


MATERIALS = {
    "sky": Material((0.50, 0.68, 0.92), 0.15, 0.02),
    "vegetation": Material((0.18, 0.42, 0.12), 0.85, 0.25),
    "soil": Material((0.52, 0.40, 0.27), 0.45, 0.12),
    "road": Material((0.42, 0.42, 0.44), 0.35, 0.05),
    "building": Material((0.68, 0.64, 0.60), 0.55, 0.05),
    "water": Material((0.08, 0.18, 0.32), 0.05, 0.04),
}


@dataclass(frozen=True)
class SceneRecipe:
    """How often each element appears in a scene kind (named after VCIP2020's four categories)."""

    horizon_wobble: float  # amplitude of the skyline, as a fraction of the height (mountains: large)
    vegetation_blobs: tuple[int, int]  # inclusive range of the number of vegetation patches
    buildings: tuple[int, int]
    road_p: float
    water_p: float
    crop_rows_p: float  # striped field of crop rows on soil


SCENES = {
    "country": SceneRecipe(0.04, (2, 5), (1, 3), 0.6, 0.3, 0.2),
    "field": SceneRecipe(0.03, (0, 2), (0, 1), 0.3, 0.1, 0.8),
    "forest": SceneRecipe(0.06, (6, 12), (0, 0), 0.1, 0.2, 0.0),
    "mountain": SceneRecipe(0.20, (1, 4), (0, 1), 0.2, 0.3, 0.1),
}


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Value noise in [-1, 1]: a (cells+1)^2 random grid, smoothstep-interpolated to (h, w)."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1))

    def axis(n: int) -> tuple[np.ndarray, np.ndarray]:
        pos = np.linspace(0.0, cells, n)
        i0 = np.minimum(pos.astype(int), cells - 1)
        f = pos - i0
        return i0, f * f * (3.0 - 2.0 * f)

    y0, fy = axis(h)
    x0, fx = axis(w)
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


class _Canvas:
    """Per-pixel material properties (r, g, b, nir, texture) painted region by region."""

    def __init__(self, rng: np.random.Generator, h: int, w: int) -> None:
        self.rng = rng
        self.props = np.zeros((h, w, 5))
        # normalised coordinates in [0, 1], so scenes look alike at every size
        self.yy, self.xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")

    def paint(self, mask: np.ndarray, material: str) -> None:
        """Fill `mask` with one instance of `material` (its colour and reflectance varied a little)."""
        m = MATERIALS[material]
        brightness = self.rng.uniform(1 - BRIGHTNESS_JITTER, 1 + BRIGHTNESS_JITTER)
        rgb = np.array(m.rgb) * brightness * self.rng.uniform(1 - HUE_JITTER, 1 + HUE_JITTER, 3)
        nir = m.nir * self.rng.uniform(0.9, 1.1)
        self.props[mask] = [*rgb, nir, m.texture]

    def blob(self, radius: tuple[float, float], y_range: tuple[float, float]) -> np.ndarray:
        """An irregular ellipse: the distance to its centre perturbed by smooth noise."""
        cy, cx = self.rng.uniform(*y_range), self.rng.uniform(0, 1)
        ry, rx = self.rng.uniform(*radius, 2)
        wobble = 0.5 * _smooth_noise(self.rng, *self.yy.shape, cells=4)
        return ((self.yy - cy) / ry) ** 2 + ((self.xx - cx) / rx) ** 2 + wobble < 1.0


def _compose(canvas: _Canvas, recipe: SceneRecipe) -> None:
    """Paint a scene back to front: ground, fields, water, road, vegetation, buildings, sky."""
    rng, yy, xx = canvas.rng, canvas.yy, canvas.xx
    canvas.paint(np.ones_like(yy, dtype=bool), "soil")
    horizon = rng.uniform(0.2, 0.45) + recipe.horizon_wobble * _smooth_noise(rng, 1, yy.shape[1], 3)[0]
    if rng.random() < recipe.crop_rows_p:
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.04, 0.1)
        period = max(period, MIN_ROW_PERIOD_PX * SUPERSAMPLE / min(yy.shape))  # canvas pixels
        rows = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period) > 0
        canvas.paint(rows & canvas.blob((0.4, 0.8), (0.6, 1.0)), "vegetation")
    if rng.random() < recipe.water_p:
        canvas.paint(canvas.blob((0.08, 0.2), (0.6, 0.95)), "water")
    if rng.random() < recipe.road_p:
        y0, slope, half_width = rng.uniform(0.5, 0.95), rng.uniform(-0.6, 0.6), rng.uniform(0.015, 0.04)
        canvas.paint(np.abs(yy - (y0 + slope * (xx - 0.5))) < half_width, "road")
    for _ in range(rng.integers(recipe.vegetation_blobs[0], recipe.vegetation_blobs[1] + 1)):
        canvas.paint(canvas.blob((0.06, 0.25), (0.3, 1.0)), "vegetation")
    for _ in range(rng.integers(recipe.buildings[0], recipe.buildings[1] + 1)):
        top, left = rng.uniform(0.35, 0.8), rng.uniform(0, 0.85)
        height, width = rng.uniform(0.08, 0.25, 2)
        canvas.paint((yy >= top) & (yy < top + height) & (xx >= left) & (xx < left + width), "building")
    canvas.paint(yy < horizon[None, :], "sky")


def render_scene(
    rng: np.random.Generator, height: int, width: int, scene: str
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic scene.

    Args:
        rng: the image's own generator.
        height, width: image size.
        scene: a key of SCENES.
    Returns:
        rgb (H, W, 3) and nir (H, W), float64 in [0, 1].
    """
    k = SUPERSAMPLE
    canvas = _Canvas(rng, height * k, width * k)
    _compose(canvas, SCENES[scene])
    shading = 0.78 + 0.22 * _smooth_noise(rng, height * k, width * k, cells=3)  # the light, shared by both
    texture = 0.6 * _smooth_noise(rng, height * k, width * k, cells=max(2, min(height, width) // 6))
    texture += 0.4 * rng.uniform(-1, 1, (height * k, width * k))
    light = shading * (1.0 + canvas.props[..., 4] * texture)  # (kH, kW)
    radiance = canvas.props[..., :4] * light[..., None]
    # each pixel integrates k x k samples: material edges are partial pixels, as a camera sees them
    image = radiance.reshape(height, k, width, k, 4).mean(axis=(1, 3))
    image = np.clip(image + rng.normal(0.0, SENSOR_NOISE, (height, width, 4)), 0.0, 1.0)
    return image[..., :3], image[..., 3]


def _as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else size
    if min(height, width) < MIN_SIZE:
        raise ValueError(f"synthetic images need at least {MIN_SIZE}x{MIN_SIZE} pixels, got {height}x{width}")
    return height, width


def make_synthetic_dataset(
    root: str | Path,
    n_train: int = 32,
    n_val: int = 8,
    n_test: int = 8,
    size: int | tuple[int, int] = 64,
    seed: int = 0,
    layout: str = "vcip2020",
) -> Path:
    """Write a synthetic NIR/RGB dataset.

    Args:
        root: a new or empty folder (an existing dataset is never mixed with generated files).
        n_train, n_val, n_test: pairs per split (train, val: `Validation/`, test: `Testing/` in the VCIP2020
            layout); a split with 0 pairs gets no folder. A study selects its checkpoint on val and reports
            test, so the default writes all three.
        size: side, or (H, W), of every image.
        seed: non-negative; the same seed gives byte-identical files.
        layout: "vcip2020" or "plain".
    Returns:
        The dataset root.
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {sorted(LAYOUTS)}")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root}: exists and is not an empty folder; synthetic data goes into a new one")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if min(counts.values()) < 0 or seed < 0:
        raise ValueError(f"counts and seed must be non-negative, got {counts} and seed {seed}")
    height, width = _as_size(size)
    scenes = sorted(SCENES)
    root.mkdir(parents=True, exist_ok=True)
    for split_index, split in enumerate(SPLITS):
        for i in range(counts[split]):
            rng = np.random.default_rng(np.random.SeedSequence([seed, split_index, i]))
            scene = scenes[rng.integers(len(scenes))]
            rgb, nir = render_scene(rng, height, width, scene)
            nir_path, rgb_path = LAYOUTS[layout].pair_paths(root, split, f"{scene}_{split}_{i:04d}")
            save_image(torch.from_numpy(nir)[None], nir_path)
            save_image(torch.from_numpy(rgb).permute(2, 0, 1), rgb_path)
    return root


def _parse_size(text: str) -> int | tuple[int, int]:
    """'64' or '48x64' (H x W)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from exc
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def main(argv: list[str] | None = None) -> int:
    """Command line: write a synthetic dataset and print where it went."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="new or empty output folder")
    parser.add_argument("--n-train", type=int, default=32)
    parser.add_argument("--n-val", type=int, default=8)
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--size", type=_parse_size, default=64, help="N or HxW (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="vcip2020")
    args = parser.parse_args(argv)
    try:
        root = make_synthetic_dataset(
            args.out, args.n_train, args.n_val, args.n_test, args.size, args.seed, args.layout
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(f"{root}: {args.n_train} train, {args.n_val} val, {args.n_test} test pairs ({args.layout} layout)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
