"""The one rule for "better" in a sweep's metric direction, used wherever raysweep compares two values.

Registry (does a sweep's best beat the champion?), promotion gate (challenger against champion), the sweep's
metric-threshold stopper and the torch trainer's checkpoint choice all ask it, so equal values and NaN are
treated the same everywhere: equal is never better, NaN never wins.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable

MODES = ("max", "min")


def is_better(candidate: float, reference: float, mode: str, margin: float = 0.0) -> bool:
    """Whether ``candidate`` beats ``reference`` by more than ``margin`` in the metric's direction.

    Args:
        candidate: The new value (a challenger, a trial's result).
        reference: The value to beat (the champion, a threshold).
        mode: ``max`` (higher is better) or ``min``.
        margin: How much better the candidate must be (>= 0, in the metric's units).

    Raises:
        ValueError: A negative margin or an unknown mode.
    """
    if margin < 0 or mode not in MODES:
        raise ValueError(f"margin must be >= 0 and mode max or min, got {margin!r}, {mode!r}")
    if math.isnan(candidate) or math.isnan(reference):
        return False
    gain = candidate - reference if mode == "max" else reference - candidate
    return gain > margin


def reaches(value: float, target: float, mode: str) -> bool:
    """Whether ``value`` is at least as good as ``target`` (a stop threshold): not beaten by it, and not NaN."""
    return not math.isnan(value) and not math.isnan(target) and not is_better(target, value, mode)


def best_index(values: Iterable[float], mode: str) -> int | None:
    """Position of the best value (the first of equals); ``None`` when there is none that is not NaN."""
    best: int | None = None
    best_value = math.nan
    for i, value in enumerate(values):
        value = float(value)
        if not math.isnan(value) and (best is None or is_better(value, best_value, mode)):
            best, best_value = i, value
    return best


def trial_order(trial_id: str) -> int:
    """Where a trial comes in the order Tune made them (``34f55_00002`` -> 2; an id without a counter, last): the
    summary keeps the first of equal trials, by their runs' start, and the live best and the model logged ahead
    follow it."""
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else sys.maxsize
