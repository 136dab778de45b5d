"""The report's vocabulary in one place: which metrics it shows, their labels and directions, the
intervals' level, and the files it writes (every module of services.report and submit.py read them here)."""

from __future__ import annotations

from colormamba.vocabulary import HIGHER_IS_BETTER, METRIC_NAMES

METRICS = METRIC_NAMES  # the order of every table and file
LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "ae": "AE (deg, angular)", "mae": "MAE (0-255)",
          "lpips": "LPIPS (AlexNet)"}  # fmt: skip
DIGITS = {"ssim": 4}  # decimals shown per metric (others: 2)
ALPHA = 0.05  # the verdicts' level: family-wise (Holm) over the question, per row when exploratory
CI_LEVEL = 1 - ALPHA  # the intervals' level
MAX_PLOTTED_VARIANTS = 8  # curves, scatter and the sample grid show the best-ranked variants (plus baseline)
# The trivial predictions every evaluation scores on the reporting split (colormamba.evaluate.score_trivial),
# in the order the report shows them, with the names it shows them under.
TRIVIAL_LABELS = {"nir": "NIR copy", "train_mean": "training mean"}
# A configuration beats a trivial reference when its mean is better than the reference's on each of these
# (in HIGHER_IS_BETTER's direction): PSNR whatever the study's question, because the training mean is the
# best prediction that ignores the input on PSNR, so beating it on PSNR takes using the input. SHOWN_METRICS
# are compared too and shown beside the verdict, not part of it: the NIR copy keeps the scene's structure,
# and at small sizes or short training every configuration may stay below it on SSIM (docs/evaluation.md,
# "Trivial references").
BEAT_METRICS = ("psnr",)
SHOWN_METRICS = ("ssim",)
REPORT_FILES = ("report.json", "report.csv", "runs.csv", "per_image.csv", "differences.csv", "curves.png",
                "scatter.png", "samples.png", "report.md", "report.html")  # fmt: skip
__all__ = ["ALPHA", "BEAT_METRICS", "CI_LEVEL", "DIGITS", "HIGHER_IS_BETTER", "LABELS",
           "MAX_PLOTTED_VARIANTS", "METRICS", "REPORT_FILES", "SHOWN_METRICS", "TRIVIAL_LABELS"]  # fmt: skip
