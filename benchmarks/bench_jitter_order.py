"""What the order of the contrast jitter and the crop changes, on the real VCIP2020 training pairs.

    python benchmarks/bench_jitter_order.py [DATASET] [--items 200] [--seed 0]

DATASET defaults to the environment variable COLORMAMBA_VCIP2020 (a folder holding `NIR/*_nir.png` and
`RGB-Registered/*_rgb_reg.png`); without either the script says so and exits 0. Each of the first
`--items` training pairs gets the default AugmentConfig draws (seed, epoch 0, its index) with the contrast
jitter forced on (contrast_p 1). One JSON line per comparison, differences in 8-bit levels:
- order: `augment_batch` (jitter on the full-size images, then flip, crop, resize; the reference's order)
  against the other order (flip, crop, resize, then `pil_contrast` on the crop), for the target RGB and
  for G_B's NIR (`hsv_nir`): mean and 99th percentile of the absolute difference, and the mean absolute
  difference of PIL's mean luma (the rounded mean `pil_contrast` blends with: the crop's vs the whole
  image's).
- vs_reference: each order against the reference's own PIL pipeline (mirror, ImageEnhance.Contrast,
  crop, resize BICUBIC, 8-bit; G_B's NIR as the V band of its HSV conversion of the jittered NIR read as
  RGB): mean, 99th percentile and maximum of the absolute difference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's colormamba

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from colormamba.data import AugmentConfig, list_pairs
from colormamba.data.augment import AugmentParams, augment_batch, item_generator, pil_contrast, sample_params


def reference(nir: Image.Image, rgb: Image.Image, p: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    """The reference's data_loader.py for one pair: (V of G_B's NIR (H, W), target (H, W, 3)), uint8."""
    outs = []
    for image in (nir.convert("RGB"), rgb):
        image = ImageOps.mirror(image) if p.flip else image
        image = ImageEnhance.Contrast(image).enhance(p.contrast)
        top, left, h, w = p.crop
        outs.append(image.crop((left, top, left + w, top + h)).resize(image.size, Image.BICUBIC))
    return np.asarray(outs[0].convert("HSV"))[..., 2], np.asarray(outs[1])


def stats(diffs: list[np.ndarray], with_max: bool = False) -> dict:
    d = np.concatenate([x.ravel() for x in diffs])
    out = {"mean": round(float(d.mean()), 3), "p99": round(float(np.percentile(d, 99)), 3)}
    return out | ({"max": round(float(d.max()), 3)} if with_max else {})


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("dataset", nargs="?", default=os.environ.get("COLORMAMBA_VCIP2020"))
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.dataset or not Path(args.dataset).is_dir():
        print(f"skipped: no VCIP2020 dataset (argument or COLORMAMBA_VCIP2020; got {args.dataset!r})")
        return
    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = AugmentConfig(contrast_p=1.0)
    pairs = list_pairs(args.dataset, "train")[: args.items]
    diffs: dict[str, list[np.ndarray]] = {k: [] for k in ("rgb", "nir", "luma", "nir_mean")}
    vs_ref: dict[str, list[np.ndarray]] = {f"{o}_{k}": [] for o in ("new", "old") for k in ("rgb", "nir")}
    for index, pair in enumerate(pairs):
        nir_img, rgb_img = Image.open(pair.nir).convert("L"), Image.open(pair.rgb).convert("RGB")
        nir = torch.from_numpy(np.array(nir_img)).float().div(255)[None, None]
        rgb = torch.from_numpy(np.array(rgb_img)).float().div(255).permute(2, 0, 1)[None]
        p = sample_params(cfg, nir.shape[-2], nir.shape[-1], item_generator(args.seed, 0, index))
        factor, flat = torch.tensor([p.contrast]), torch.zeros(1)
        new = augment_batch(nir, rgb, [p])
        geometry = augment_batch(nir, rgb, [dataclasses.replace(p, contrast=None)])
        old_rgb, old_nir = pil_contrast(geometry.rgb, factor), pil_contrast(geometry.nir, factor)
        diffs["rgb"].append(((new.rgb - old_rgb).abs() * 255).numpy())
        diffs["nir"].append(((new.hsv_nir - old_nir).abs() * 255).numpy())
        for key, whole, crop in (("luma", rgb, geometry.rgb), ("nir_mean", nir, geometry.nir)):
            # factor 0 gives PIL's flat image of the rounded mean luma
            means = [pil_contrast(x, flat)[0, 0, 0, 0].item() * 255 for x in (whole, crop)]
            diffs[key].append(np.array([abs(means[0] - means[1])]))
        ref_nir, ref_rgb = reference(nir_img, rgb_img, p)
        ref_rgb_t = torch.from_numpy(ref_rgb.astype(np.float32)).permute(2, 0, 1)[None]
        ref_nir_t = torch.from_numpy(ref_nir.astype(np.float32))[None, None]
        for order, out_rgb, out_nir in (("new", new.rgb, new.hsv_nir), ("old", old_rgb, old_nir)):
            vs_ref[f"{order}_rgb"].append((out_rgb * 255 - ref_rgb_t).abs().numpy())
            vs_ref[f"{order}_nir"].append((out_nir * 255 - ref_nir_t).abs().numpy())
    common = {"bench": "jitter_order", "items": len(pairs), "seed": args.seed, "unit": "8-bit levels"}
    order = {
        "rgb_absdiff": stats(diffs["rgb"]),
        "hsv_nir_absdiff": stats(diffs["nir"]),
        "rgb_mean_luma_absdiff": round(float(np.mean(diffs["luma"])), 3),
        "nir_mean_absdiff": round(float(np.mean(diffs["nir_mean"])), 3),
    }
    print(json.dumps({**common, "case": "order", **order}))
    for name in ("new", "old"):
        rgb_stats, nir_stats = stats(vs_ref[f"{name}_rgb"], True), stats(vs_ref[f"{name}_nir"], True)
        line = {"case": "vs_reference", "order": name, "rgb_absdiff": rgb_stats, "hsv_nir_absdiff": nir_stats}
        print(json.dumps({**common, **line}))


if __name__ == "__main__":
    main()
