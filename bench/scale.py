"""A sweep of many tiny trials: the driver's peak memory and the post-sweep analysis time as trials grow.

    uv run python bench/scale.py                     # 10,000 trials (goals: driver RSS < 1 GB, analysis < 10 s)
    uv run python bench/scale.py --trials 1000       # a tenth: the per-trial costs, in minutes

The trials are ``+sweep=overhead`` with one iteration of no time (the fixed-cost trainer: nothing to train, no
model, nothing registered), so everything measured is what Ray Tune and raysweep spend per trial: the sweep runs
through ``raysweep.sweep.run`` as the CLI would, with trial runs logged to a sqlite store. Printed:

- wall time and trials per second; the phases of ``sweep.run`` after Tune (from its ``phase`` debug lines);
- the driver process's peak RSS (sampled with psutil, and ``ru_maxrss``), and its growth per 1,000 trials;
  the peak RSS of Ray's own processes on this node (GCS, raylet, ...), which a cluster's head node carries;
- the post-sweep analysis again on the finished store, timed part by part: ``find_sweep``, ``summarize``
  (one paginated ``search_runs`` of every child), ``record_best``.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: The issue's goals.
RSS_GOAL_BYTES, ANALYSIS_GOAL_S = 1 << 30, 10.0


class Sampler:
    """Samples this process's RSS, and the summed RSS of its child processes (Ray's), every ``interval_s``."""

    def __init__(self, interval_s: float = 0.5):
        import psutil

        self._process = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, driver RSS, children's RSS)
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def now(self) -> tuple[int, int]:
        """(driver RSS, Ray's processes' RSS) in bytes, now."""
        import psutil

        children = 0
        for child in self._process.children(recursive=True):
            try:
                children += child.memory_info().rss
            except psutil.Error:
                pass
        return self._process.memory_info().rss, children

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.samples.append((time.monotonic(), *self.now()))

    def at(self, when: float) -> tuple[int, int]:
        """The last sample taken at or before ``when`` (``time.monotonic``)."""
        taken = [s for s in self.samples if s[0] <= when]
        return taken[-1][1:] if taken else (0, 0)

    @property
    def peak(self) -> tuple[int, int]:
        return max((s[1] for s in self.samples), default=0), max((s[2] for s in self.samples), default=0)


class Phases(logging.Handler):
    """Timestamps of ``raysweep.sweep``'s ``phase ...`` debug lines; with ``profile``, tracemalloc snapshots at
    the start and the end of Tune's part."""

    def __init__(self, profile: bool = False):
        super().__init__(logging.DEBUG)
        self.marks: list[tuple[str, float]] = []
        self.snapshots: dict = {}
        self._profile = profile

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("phase "):
            name = message[len("phase "):]
            self.marks.append((name, time.monotonic()))
            if self._profile and name in ("parent run created", "tune finished"):
                import tracemalloc

                self.snapshots[name] = tracemalloc.take_snapshot()


def print_growth(snapshots: dict, top: int = 20) -> None:
    """Where the driver's Python memory grew while Tune ran (``--profile-memory``)."""
    if len(snapshots) < 2:
        return
    stats = snapshots["tune finished"].compare_to(snapshots["parent run created"], "traceback")
    total = sum(s.size_diff for s in stats)
    print(f"\nPython allocations grown while Tune ran: {total / (1 << 20):.1f} MiB; the largest, by traceback:")
    for stat in stats[:top]:
        frames = [f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno}" for f in stat.traceback]
        print(f"{stat.size_diff / (1 << 20):8.2f} MiB {stat.count_diff:>+9,} blocks  " + " <- ".join(frames[::-1][:6]))


def run_sweep(n_trials: int, workdir: Path, mode: str, cpus_per_trial: float, phases: Phases):
    """The sweep through raysweep.sweep.run; returns (outcome, wall seconds, phase marks, seconds at start)."""
    from overhead import _compose

    from raysweep import sweep

    uri = f"sqlite:///{workdir / 'scale.db'}"
    cfg = _compose("+sweep=overhead", f"mlflow={mode}", f"sweep.num_samples={n_trials}", "trainer.iterations=1",
                   "trainer.params.seconds_per_iteration=0", f"trainer.cpus_per_trial={cpus_per_trial}",
                   f"cluster.storage_path={workdir / 'ray'}", f"sweep.run_name=scale-{n_trials}", "cluster.verbose=0",
                   mlflow_uri=uri)
    logger = logging.getLogger("raysweep.sweep")
    logger.addHandler(phases)
    logger.setLevel(logging.DEBUG)
    started = time.monotonic()
    try:
        outcome = sweep.run(cfg)
    finally:
        logger.removeHandler(phases)
    return outcome, time.monotonic() - started, phases.marks, started, uri


def analyse(uri: str, parent_run_id: str) -> dict[str, float]:
    """The post-sweep analysis on the finished store, through the code path ``sweep.run`` and ``analyse`` use."""
    from mlflow import MlflowClient

    from raysweep.analysis import find_sweep, record_best, summarize

    client = MlflowClient(uri)
    out = {}
    started = time.perf_counter()
    parent = find_sweep(client, None, parent_run_id)
    out["find_sweep"] = time.perf_counter() - started
    mark = time.perf_counter()
    summary = summarize(client, parent)
    out["summarize"] = time.perf_counter() - mark
    mark = time.perf_counter()
    record_best(client, summary)
    out["record_best"] = time.perf_counter() - mark
    out["total"] = time.perf_counter() - started
    out["children"] = float(len(summary.trials))
    return out


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000, help="trials in the sweep (default: %(default)s)")
    parser.add_argument("--mode", choices=["driver", "worker"], default="driver", help="raysweep's logging mode")
    parser.add_argument("--cpus-per-trial", type=float, default=0.5,
                        help="CPUs each trial holds: 0.5 runs 4 at once on 2 CPUs (default: %(default)s)")
    parser.add_argument("--no-tune-loggers", action="store_true",
                        help="TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1: without Tune's TensorBoard logger, which imports "
                             "torch into the driver (~500 MiB), and its CSV/JSON loggers")
    parser.add_argument("--profile-memory", action="store_true",
                        help="trace the driver's Python allocations while Tune runs (slower); prints where it grew")
    args = parser.parse_args()
    if args.no_tune_loggers:
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    if args.profile_memory:
        import tracemalloc

        tracemalloc.start(8)

    import raysweep  # noqa: F401  (before Ray: it turns off Ray's `uv run` worker hook)
    import ray

    from raysweep import runtime

    workdir = Path(tempfile.mkdtemp(prefix="raysweep-scale-"))
    try:
        with Sampler() as sampler:
            address = os.environ.get("RAY_ADDRESS")
            runtime.start(address, None if address else 2, logging_level=logging.ERROR, forward_mlflow_env=False)
            cpus = int(ray.cluster_resources()["CPU"])
            before, ray_before = sampler.now()
            cpu_before = _cpu_seconds()
            try:
                phases = Phases(args.profile_memory)
                outcome, wall, marks, started, uri = run_sweep(args.trials, workdir, args.mode, args.cpus_per_trial,
                                                               phases)
            finally:
                ray.shutdown()
            after, _ = sampler.now()
            cpu = _cpu_seconds() - cpu_before
        peak, ray_peak = sampler.peak
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
        mib = 1 << 20
        print(f"\nscale: {args.trials:,} trials of 1 iteration, 0 s, {args.cpus_per_trial:g} CPU each on {cpus} CPUs, "
              f"mlflow={args.mode}, sqlite store"
              + (", Tune's default loggers off" if args.no_tune_loggers else ""))
        print(f"sweep wall {wall:8.1f} s   {args.trials / wall:6.1f} trials/s   "
              f"{wall / args.trials * 1000:6.1f} ms/trial   "
              f"driver CPU {cpu:.1f} s = {cpu / args.trials * 1000:.1f} ms/trial "
              "(all its threads: Tune's loop, raysweep's writers; one GIL)")
        previous = ("start", started)
        for name, at in marks:
            print(f"   phase {previous[0]:>24} -> {name:<24} {at - previous[1]:8.2f} s   "
                  f"driver RSS then {sampler.at(at)[0] / (1 << 20):6.0f} MiB")
            previous = (name, at)
        # Growth while Tune runs, from its second quarter on (imports and first trials are done by then).
        tune = dict(marks)
        growth = float("nan")
        if "parent run created" in tune and "tune finished" in tune:
            begin, end = tune["parent run created"], tune["tune finished"]
            quarter = begin + (end - begin) / 4
            growth = (sampler.at(end)[0] - sampler.at(quarter)[0]) / (0.75 * args.trials) * 1000
        driver_peak = max(peak, maxrss)
        print(f"driver RSS: before the sweep {before / mib:7.0f} MiB, after {after / mib:7.0f} MiB, "
              f"peak {peak / mib:7.0f} "
              f"MiB (ru_maxrss {maxrss / mib:.0f} MiB); while Tune runs {growth / mib:+.1f} "
              f"MiB per 1,000 trials; goal < 1 GiB: {'pass' if driver_peak < RSS_GOAL_BYTES else 'FAIL'}")
        print(f"Ray's processes on this node (GCS, raylet, workers): before {ray_before / mib:7.0f} MiB, "
              f"peak {ray_peak / mib:7.0f} MiB")
        print_growth(phases.snapshots)
        times = analyse(uri, outcome.summary.parent_run_id)
        print(f"analysis of {int(times['children']):,} children: find_sweep {times['find_sweep']:.2f} s, "
              f"summarize {times['summarize']:.2f} s, record_best {times['record_best']:.2f} s, total "
              f"{times['total']:.2f} s; goal < {ANALYSIS_GOAL_S:g} s: "
              f"{'pass' if times['total'] < ANALYSIS_GOAL_S else 'FAIL'}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
