"""A Ray Tune function trainable whose metric is a known function of its params (tests/test_warm_start.py).

Cheap and deterministic, so a sweep's course depends only on its searcher: ``score`` peaks at x=7, y=3 (0 there,
negative elsewhere). Written as a user would: no raysweep import.
"""

from __future__ import annotations

from ray import tune


def train_peak(config):
    """Report one score: minus the squared distance from (7, 3)."""
    tune.report({"score": float(-((config["x"] - 7) ** 2) - (config["y"] - 3) ** 2)})
