"""The metrics' names and directions, apart from the torch code that computes them (colormamba.metrics), so
that a study spec can name its primary metric and the job suite's light commands check it without torch."""

from __future__ import annotations

METRIC_NAMES = ("psnr", "ssim", "ae", "mae", "lpips")  # the order of every table and file
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "ae": False, "mae": False, "lpips": False}
