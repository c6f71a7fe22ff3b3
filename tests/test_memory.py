"""The driver's memory during long sweeps: freed heap pages go back to the system, ended trials are kept small."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from raysweep import memory

glibc = pytest.mark.skipif(memory._libc() is None, reason="glibc's allocator only")


def _rss_change_mib(code: str, *args: str) -> float:
    """Run ``code`` in a fresh interpreter (an allocator in its start state); it prints one number."""
    prelude = textwrap.dedent("""
        import sys
        from raysweep import memory

        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * 4096
    """)
    out = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.split()[-1])


@glibc
def test_trim_returns_the_free_pages_between_live_objects():
    returned = _rss_change_mib("""
        blocks = [bytearray(1000) for _ in range(200_000)]  # ~200 MiB of small blocks on the heap
        kept = blocks[::64]  # one in 64 stays: the heap cannot shrink from its top
        del blocks
        before = rss()
        assert memory.trim()
        print((before - rss()) / (1 << 20))
    """)
    assert returned > 100


@glibc
@pytest.mark.parametrize("pinned, most_kept_mib", [(False, None), (True, 1.0)])
def test_a_pinned_threshold_unmaps_a_freed_temporary_after_a_larger_one(pinned, most_kept_mib):
    kept = _rss_change_mib("""
        if sys.argv[1] == "pin":
            assert memory.pin_mmap_threshold()
        big = bytearray(20 << 20)  # freed: glibc alone would now keep anything up to 20 MiB on the heap
        del big
        before = rss()
        temporary = bytearray(8 << 20)
        later = [bytearray(100) for _ in range(1000)]  # allocated after it, so the heap's top stays in use
        del temporary
        print((rss() - before) / (1 << 20))
    """, "pin" if pinned else "no")
    if most_kept_mib is None:
        assert kept > 7  # what the pin is for: the 8 MiB stay resident
    else:
        assert kept < most_kept_mib


@pytest.mark.parametrize("now, last, interval, expected", [
    (5.0, None, 10.0, True),   # none yet
    (5.0, 0.0, 10.0, False),
    (10.0, 0.0, 10.0, True),
    (25.0, 20.0, 10.0, False),
    (31.0, 20.0, 10.0, True),
])
def test_trim_due(now, last, interval, expected):
    assert memory.due(now, last, interval) is expected


class _Trial:
    """A trial as Tune keeps it: only its run metadata matters here (Tune's own class)."""

    def __init__(self, values):
        from ray.tune.trainable.metadata import _TrainingRunMetadata

        self.run_metadata = _TrainingRunMetadata()
        for step, value in enumerate(values, 1):
            self.run_metadata.update_metric("score", value, step=step)


def test_driver_memory_compacts_finished_trials_only_and_trims_once_an_interval(monkeypatch):
    trims = []
    monkeypatch.setattr(memory, "trim", lambda: trims.append(1) or True)
    clock = iter([100.0, 101.0, 103.0, 111.0, 112.0])
    monkeypatch.setattr(memory.time, "monotonic", lambda: next(clock))
    callback = memory.DriverMemory(interval_s=10.0)
    callback.setup()  # t=100
    done, failed = _Trial([1.0, 2.0]), _Trial([3.0])
    callback.on_trial_complete(0, [], done)  # t=101: not due
    callback.on_trial_error(0, [], failed)  # t=103: not due
    callback.on_trial_complete(0, [], _Trial([4.0]))  # t=111: due
    callback.on_trial_complete(0, [], _Trial([5.0]))  # t=112: not due again
    assert len(trims) == 1
    assert done.run_metadata.metric_n_steps["score"] == {"5": [1.0, 2.0], "10": [1.0, 2.0]}
    assert all(type(window).__name__ == "deque" for window in failed.run_metadata.metric_n_steps["score"].values())
    callback.on_experiment_end([])
    assert len(trims) == 2  # always at the end, before the analysis
