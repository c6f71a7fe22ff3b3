"""Split rows into train, validation and test: at random (stratified), by group, or by time.

Each splitter returns three arrays of row positions ``(train, val, test)``; the same inputs and seed always give
the same split. ``val_fraction`` and ``test_fraction`` are shares of all rows; training gets the rest. Every
split gets at least one row, and training at least one row of every class (checked by the caller).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from raysweep.errors import RaySweepError

if TYPE_CHECKING:
    import pandas as pd

Positions = tuple[np.ndarray, np.ndarray, np.ndarray]

log = logging.getLogger(__name__)


def _counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """``(n_val, n_test)`` for a stratum of ``n`` rows: each held-out split gets a row where there are enough,
    and training always keeps one."""
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n >= 2:
        n_val = max(n_val, 1)  # every class is in the validation split the sweep ranks on (ROC AUC needs both)
    if n >= 3:
        n_test = max(n_test, 1)
    while n - n_val - n_test < 1 and n_test > 0:
        n_test -= 1
    while n - n_val - n_test < 1 and n_val > 0:
        n_val -= 1
    return n_val, n_test


def _too_few(n: int, how: str) -> RaySweepError:
    return RaySweepError(f"the data has {n} row(s), too few for a {how} train/validation/test split; add rows "
                         "(at least 3, and enough for data.val_fraction and data.test_fraction)")


def check_class_sizes(codes: np.ndarray, classes: tuple[Any, ...], target: str) -> None:
    """A binary task needs 2 rows of each class (one for training, one for validation: ROC AUC needs both).

    Of many classes, one with a single row (real tables often have a few) trains the model, but no validation
    or test row checks it; a warning names them.

    Raises:
        RaySweepError: A binary task with a class of one row, naming it; or classes mostly of one row each.
    """
    counts = np.bincount(codes, minlength=len(classes))
    single = [classes[c] for c in np.flatnonzero(counts < 2)]
    if not single:
        return
    if len(classes) == 2:
        raise RaySweepError(
            f"class {single[0]!r} of target column {target!r} has 1 row; a binary task needs at least 2 per class "
            "(one to train on, one to validate): add rows of it"
        )
    if len(single) > len(classes) / 2:
        raise RaySweepError(
            f"target column {target!r} has {len(classes)} classes in {len(codes)} rows, {len(single)} of them seen "
            "once: not labels a model can learn (an ID, a date?); pick another data.target, or data.task=regression "
            "for a number"
        )
    named = ", ".join(map(repr, single[:5])) + (", ..." if len(single) > 5 else "")
    log.warning("raysweep: %d class(es) of %r have one row (%s): they go to training, and no validation or test "
                "row checks them", len(single), target, named)


def random_split(n: int, val_fraction: float, test_fraction: float, seed: int,
                 strata: np.ndarray | None = None) -> Positions:
    """Rows drawn at random; with ``strata`` (class codes) each class is split in the same proportions.

    Args:
        n: Number of rows.
        val_fraction: Share of rows for validation.
        test_fraction: Share of rows for the test split.
        seed: Seed of the draw.
        strata: Class code of each row, or ``None`` (regression).

    Raises:
        RaySweepError: Too few rows for three non-empty splits.
    """
    rng = np.random.default_rng(seed)
    strata = np.zeros(n, dtype="int64") if strata is None else np.asarray(strata)
    parts: tuple[list, list, list] = ([], [], [])
    for stratum in np.unique(strata):
        rows = rng.permutation(np.flatnonzero(strata == stratum))
        n_val, n_test = _counts(len(rows), val_fraction, test_fraction)
        parts[2].append(rows[:n_test])
        parts[1].append(rows[n_test:n_test + n_val])
        parts[0].append(rows[n_test + n_val:])
    # Shuffled once more so the classes interleave (mini-batches, subsampling and early stopping see a mix).
    train, val, test = (rng.permutation(np.concatenate(p)) if p else np.array([], dtype="int64") for p in parts)
    if not (len(train) and len(val) and len(test)):
        raise _too_few(n, "random")
    return train, val, test


def group_split(groups: pd.Series, val_fraction: float, test_fraction: float, seed: int, column: str) -> Positions:
    """Every value of the group column entirely in one split (no customer, patient or store on two sides).

    Groups are drawn in a seeded random order; the test split takes groups until it holds ``test_fraction`` of
    the rows, validation until it holds ``val_fraction``, training the rest. A large group can overshoot.

    Raises:
        RaySweepError: Gaps in the group column, fewer than 3 groups, or no group left for training.
    """
    gaps = int(groups.isna().sum())
    if gaps:
        raise RaySweepError(f"data.group_column={column!r} has {gaps} missing value(s); fill them (the rows of a "
                            "gap belong to no group) or drop those rows")
    codes, uniques = _factorize(groups)
    if len(uniques) < 3:
        raise RaySweepError(f"data.group_column={column!r} has {len(uniques)} distinct value(s); a group split "
                            "needs at least 3 (train, validation, test); use data.split=random or another column")
    sizes = np.bincount(codes)
    order = np.random.default_rng(seed).permutation(len(uniques))
    side = np.zeros(len(uniques), dtype="int64")  # 0 train, 1 val, 2 test
    n, held = len(groups), {1: 0, 2: 0}
    targets = {2: test_fraction * n, 1: val_fraction * n}
    position = 0
    for which in (2, 1):
        while position < len(order) - 1 and (held[which] == 0 or held[which] < targets[which]):
            side[order[position]] = which
            held[which] += sizes[order[position]]
            position += 1
    if position >= len(order) or held[1] == 0:
        raise RaySweepError(f"data.group_column={column!r}: its groups leave no rows for training; lower "
                            "data.val_fraction and data.test_fraction, or use more, smaller groups")
    row_side = side[codes]
    return tuple(np.flatnonzero(row_side == s) for s in (0, 1, 2))  # type: ignore[return-value]


def time_split(times: pd.Series, val_fraction: float, test_fraction: float, column: str) -> Positions:
    """Rows ordered by time: the earliest for training, then validation, the latest for test.

    Args:
        times: The time column: numbers, datetimes, or text pandas parses as datetimes.
        val_fraction: Share of rows for validation.
        test_fraction: Share of rows for the test split.
        column: Its name, for messages.

    Raises:
        RaySweepError: Gaps, values that are neither numbers nor dates, or too few rows.
    """
    values = parse_times(times, column)
    n = len(values)
    n_val, n_test = _counts(n, val_fraction, test_fraction)
    if n < 3 or not n_val or not n_test:
        raise _too_few(n, "time")
    order = np.argsort(values, kind="stable")  # ties keep the file's order
    n_train = n - n_val - n_test
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]


def parse_times(times: pd.Series, column: str) -> np.ndarray:
    """The time column as sortable numbers (numbers as they are, dates as nanoseconds).

    Raises:
        RaySweepError: Gaps, or text that is not a date.
    """
    import pandas as pd

    gaps = int(times.isna().sum())
    if gaps:
        raise RaySweepError(f"data.time_column={column!r} has {gaps} missing value(s); fill them or drop those rows")
    if pd.api.types.is_numeric_dtype(times.dtype) and not pd.api.types.is_bool_dtype(times.dtype):
        return times.to_numpy(dtype="float64")
    if not pd.api.types.is_datetime64_any_dtype(times.dtype):
        try:
            times = pd.to_datetime(times)
        except (ValueError, TypeError):
            raise RaySweepError(f"data.time_column={column!r} holds values that are neither numbers nor dates "
                                f"(e.g. {str(times.iloc[0])!r}); use ISO dates (2024-01-31) or numbers") from None
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)  # instants compare across time zones
    return times.to_numpy(dtype="datetime64[ns]").astype("int64")


def _factorize(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    codes, uniques = pd.factorize(values, sort=False)
    return codes, np.asarray(uniques)
