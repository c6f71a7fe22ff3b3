"""Giving the driver's freed memory back to the system while a long sweep runs (glibc's allocator only).

Tune keeps every trial in the driver, and its loop allocates and frees all the time around what it keeps: the
experiment state it writes every few seconds holds a JSON copy of every trial, so its temporaries grow with the
sweep. glibc's allocator keeps what is freed for reuse instead of returning it, and after the first large
temporary it raises the size above which it maps memory on its own (up to 32 MiB), so later temporaries land on
the heap between long-lived objects. Measured with ``bench/scale.py`` at 3,000 trials, 45 % of the driver's
growth while Tune ran was such freed memory (719 MiB, 532 MiB after ``malloc_trim``).

So a sweep pins that size (large temporaries are mapped and unmapped on their own) and :class:`DriverMemory`
hands free pages back every few seconds as trials end (elsewhere than glibc, macOS or musl, both are no-ops), and
shrinks what Tune keeps of each ended trial (:func:`raysweep.compat.compact_ended_trial`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time

from ray.tune import Callback

#: Allocations from this size up are mapped and unmapped on their own, never from the heap (glibc's default
#: starts at 128 KiB and rises to the largest block freed so far).
MMAP_THRESHOLD_BYTES = 1 << 20
#: Seconds between two trims: one costs milliseconds even on a heap of GiBs, and memory grows by the trial.
TRIM_INTERVAL_S = 10.0
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


@functools.cache
def _libc():
    """glibc when this process runs on it, else ``None``."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def pin_mmap_threshold(size: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Map allocations of ``size`` bytes and more on their own for the rest of this process (a notebook's too).

    Returns:
        Whether the allocator took the setting (False off glibc).
    """
    libc = _libc()
    return bool(libc and libc.mallopt(_M_MMAP_THRESHOLD, int(size)))


def trim() -> bool:
    """Return the heap's free pages to the system.

    Returns:
        Whether any memory was returned (False off glibc).
    """
    libc = _libc()
    return bool(libc and libc.malloc_trim(0))


def due(now: float, last: float | None, interval_s: float = TRIM_INTERVAL_S) -> bool:
    """Whether a trim is due at ``now`` after the last one at ``last`` (``None``: none yet)."""
    return last is None or now - last >= interval_s


class DriverMemory(Callback):
    """As trials end, shrink what Tune keeps of each finished one and trim the driver's heap, once per
    :data:`TRIM_INTERVAL_S` at most (see the module docstring).

    Tune calls it from its own loop, between trials' events; a trim takes milliseconds.
    """

    def __init__(self, interval_s: float = TRIM_INTERVAL_S):
        self._interval_s = interval_s
        self._last: float | None = None

    def setup(self, **info):
        pin_mmap_threshold()
        self._last = time.monotonic()

    def on_trial_complete(self, iteration, trials, trial, **info):
        from raysweep import compat

        compat.compact_ended_trial(trial)  # not a failed one: a resume may take it up again (resume_errored)
        self._maybe_trim()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._maybe_trim()

    def on_experiment_end(self, trials, **info):
        trim()  # before the analysis and the report allocate their own

    def _maybe_trim(self) -> None:
        now = time.monotonic()
        if due(now, self._last, self._interval_s):
            self._last = now
            trim()
