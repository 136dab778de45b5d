"""Vocabularies that specs and run configurations check, apart from the torch code that gives them meaning:
the metrics' names and directions (colormamba.metrics computes them) and the histogram loss's distances
(colormamba.losses.histogram), so that the job suite's light commands validate a spec without torch."""

from __future__ import annotations

METRIC_NAMES = ("psnr", "ssim", "ae", "mae", "lpips")  # the order of every table and file
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "ae": False, "mae": False, "lpips": False}
# the `histogram` term's distances: W1 between soft CDFs (the default), the seed's KL and chi-squared
HISTOGRAM_DISTANCES = ("w1", "kl", "chi2")
