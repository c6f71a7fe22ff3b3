"""The README's sweep against its physical limit: wall time / (trials' fit seconds / CPUs), and its fixed costs.

    uv run python bench/default_sweep.py              # 3 repetitions of `python -m raysweep +sweep=fraud` (~4 min)
    uv run python bench/default_sweep.py --reps 1 -- sweep.num_samples=4     # extra overrides after --
    uv run python bench/default_sweep.py --baseline old=/tmp/old/src    # against another version, rep by rep
    uv run python bench/default_sweep.py --checkpoints    # seconds and bytes one trial spends on checkpoints (no Ray)
    uv run python bench/default_sweep.py --plain-tune     # beside the same trials as a plain Ray Tune script runs them

Each repetition runs the sweep as the README does (a subprocess, ``raysweep.__main__.main``), on a fresh sqlite
store and Tune folder in a temp directory, and reads back from the store it wrote:

- ``wall``: launch -> process exit, seen from this script;
- ``limit``: the trials' fit seconds (each trial's last ``train_time_s``, the wall time of its ``fit`` calls)
  divided by the cluster's CPUs; ``ratio`` = wall / limit (issue 18's goal: <= 1.3);
- ``first trial``: launch -> the first trial's child run starts (the driver saw Tune start it) and -> its first fit
  began (its first ``train_time_s`` report's time less the fit seconds in it);
- ``exit``: the last trial's run ended -> process exit;
- ``trials``: the trials' time in Tune (``time_total_s``) beside their fit seconds: what a trial spends besides
  fitting (scoring, checkpoints, reporting);
- the driver's phases: the ``raysweep.sweep`` DEBUG lines (time since launch) the sweep writes at each step;
- models logged ahead: the best finished trial's model, logged while the last trials ran
  (:mod:`raysweep.leading`), and how many of them a later trial beat (deleted; registration logged its own);
- ``CPU s``: where the machine's CPU time went (psutil, sampled every 0.2 s): the sweep's process and
  every process it started, grouped as the driver, the trial processes (Ray workers; their fit seconds are in
  them), Ray's own processes (GCS, raylet, agents, dashboard, monitors) and any other (a tool MLflow runs), and
  what stayed idle (wall x CPUs less all of them), in all and between launch, the first fit, the last trial's end
  and exit. Wall x CPUs = fit seconds + the CPU spent on anything else + idle, so the ratio is
  1 + (CPU not spent fitting + idle) / fit seconds: these rows are the ratio's parts.

With ``--plain-tune``, a column beside it runs the same trials (the same data, search space, seed, trial code and
CPUs per trial) as a plain Ray Tune script would: no MLflow, no checks, no checkpoints, no registration, no
report. Its ratio is what Ray Tune's own quick start reaches with these trials on this machine: the measure of
what the sweep adds to them, or saves.

Every number is the median of the repetitions, with min and max; with ``--baseline`` the versions alternate
(ABBA...), so a neighbour's load falls on all. The machine should be otherwise idle: on a busy one the ratio says
as much about the neighbours as about raysweep.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

#: The sweep as `python -m raysweep` runs it, with a handler that prints raysweep's DEBUG lines stamped with time.
DRIVER = (
    "import atexit, logging, sys, threading\n"
    "logging.basicConfig(level=logging.WARNING, format='%(created).3f %(name)s %(levelname)s %(message)s')\n"
    "log = logging.getLogger('raysweep.sweep')\n"
    "log.setLevel(logging.DEBUG)\n"
    "logging.getLogger('raysweep.leading').setLevel(logging.DEBUG)\n"
    "atexit.register(log.debug, 'phase last exit handler')  # registered first: runs last\n"
    "sys.argv = ['raysweep', *sys.argv[1:]]\n"
    "from raysweep.__main__ import main\n"
    "try:\n"
    "    main()\n"
    "finally:\n"
    "    log.debug('phase main returned')\n"
    "    threads = [t.name for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]\n"
    "    if threads:\n"
    "        log.debug('threads left: %s', threads)\n"
)
#: The same trials as a plain Ray Tune script runs them. raysweep only composes the config (so the data, search
#: space, draws and trial code are the sweep's own) and grows each trial's forest (``_estimators.grow``, Ray- and
#: MLflow-free); the rest is Ray Tune's quick-start: ``ray.init``, ``Tuner(...).fit()``, exit.
PLAIN_TUNE = (
    "import sys, time\n"
    "import ray\n"
    "from ray import tune\n"
    "from raysweep import data, strategy, search_space\n"
    "from raysweep.compose import compose\n"
    "from raysweep.runtime import free_port\n"
    "from raysweep.trainables import _estimators, sklearn\n"
    "cfg = compose(sys.argv[1:])\n"
    "dataset = data.load(cfg.data)\n"
    "settings = sklearn._settings(cfg.trainer, dataset.task)\n"
    "def trial(config, dataset, settings):\n"
    "    for _, _, metrics in _estimators.grow(config, dataset, settings):\n"
    "        tune.report({**metrics, 'reported_at': time.time()})\n"
    "ray.init(num_cpus=cfg.cluster.num_cpus, include_dashboard=False, dashboard_port=free_port())\n"
    "searcher, space = strategy.searcher(cfg.search_alg, search_space.parse(cfg.search_space), cfg.sweep.metric,\n"
    "                                    cfg.sweep.mode, None)\n"
    "tune.Tuner(\n"
    "    tune.with_resources(tune.with_parameters(trial, dataset=dataset, settings=settings),\n"
    "                        {'cpu': cfg.trainer.cpus_per_trial}),\n"
    "    param_space=space,\n"
    "    tune_config=tune.TuneConfig(num_samples=cfg.sweep.num_samples, search_alg=searcher, reuse_actors=True),\n"
    "    run_config=tune.RunConfig(storage_path=cfg.cluster.storage_path, name='plain', verbose=0),\n"
    ").fit()\n"
)
#: The column of :data:`PLAIN_TUNE` runs.
PLAIN = "plain Tune"
#: A DEBUG line of the driver's phases: "<epoch seconds> raysweep.sweep DEBUG phase <name>".
PHASE = re.compile(r"^(\d+\.\d+) raysweep\.sweep DEBUG phase (.+)$")


def run_once(overrides: list[str], cpus: int, src: str | None = None, plain: bool = False) -> dict[str, float]:
    """One sweep in a fresh temp directory; returns its numbers (seconds, ratio, bytes). ``src``: a folder whose
    ``raysweep`` package is run instead of the installed one (driver and trials: local Ray workers inherit
    ``PYTHONPATH``). ``plain``: the same trials as :data:`PLAIN_TUNE` runs them, read from Tune's results."""
    with tempfile.TemporaryDirectory(prefix="raysweep-bench-") as tmp:
        work = Path(tmp)
        store = work / "mlflow.db"
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}", "PYTHONUNBUFFERED": "1",
               "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
        if src:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(src).resolve()), env.get("PYTHONPATH")]))
        args = [sys.executable, "-c", PLAIN_TUNE if plain else DRIVER, "+sweep=fraud",
                f"cluster.storage_path={work / 'ray'}", *overrides]
        launched = time.time()
        sweep = subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with CpuMeter(sweep.pid) as cpu:
            stdout, stderr = sweep.communicate()
        exited = time.time()
        done = subprocess.CompletedProcess(args, sweep.returncode, stdout, stderr)
        if done.returncode != 0:
            raise SystemExit(f"sweep failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        if plain:
            numbers = _from_tune(work / "ray", launched, exited, cpus)
        else:
            numbers = _from_store(store, launched, exited, cpus)
        numbers.update(_trial_time(work / "ray"))
        numbers.update(_phases(done.stderr, launched))
        # raysweep.leading's lines: the leading trial's model logged while the last trials ran, and deleted again
        # when a later trial beat it (registration then logged the new leader's after the last trial).
        if not plain:
            numbers["models logged ahead"] = done.stderr.count("logged ahead in")
            numbers["of them deleted (beaten)"] = done.stderr.count("a later trial leads")
        numbers.update(cpu.seconds(wall=exited - launched, cpus=cpus))
        first_fit = launched + numbers["launch -> first fit began"]
        last_end = exited - numbers["last trial ended -> exit"]
        numbers["CPU s: idle, launch -> first fit"] = cpu.idle(launched, first_fit, cpus)
        numbers["CPU s: idle, first fit -> last trial ended"] = cpu.idle(first_fit, last_end, cpus)
        numbers["CPU s: idle, last trial ended -> exit"] = cpu.idle(last_end, exited, cpus)
        # Fit seconds are wall seconds of single-threaded fits: CPU seconds of the trial processes, near enough.
        numbers["CPU s: trial processes, not fitting"] = (numbers["CPU s: trial processes"]
                                                         - numbers["fit seconds (all trials)"])
        kept = re.search(r"checkpoints kept \d+ trials? \(([\d.]+) MB\), removed \d+ \(([\d.]+) MB\)", done.stdout)
        if kept:
            numbers["checkpoints MB (last 2 per trial)"] = float(kept[1]) + float(kept[2])
        return numbers


#: Ray's processes that name themselves ``ray::...`` as its workers do.
RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


class CpuMeter:
    """CPU seconds of a process and of every process it starts, read every ``every`` seconds.

    A process is followed from the first sample that finds it below the root (or below one followed) until it
    ends, even when it is handed to init: Ray's processes outlive their parents' waits. What a process spends
    after its last sample is missed (at most ``every`` seconds of it, at exit).
    """

    def __init__(self, root: int, every: float = 0.2):
        self._root, self._every = root, every
        self._seen: dict[tuple[int, float], list] = {}  # (pid, start time) -> [kind, CPU seconds]
        self._timeline: list[tuple[float, float]] = []  # (time, CPU seconds of all followed so far)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_done, daemon=True)

    def __enter__(self) -> CpuMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _sample_until_done(self) -> None:
        while not self._done.wait(self._every):
            self._sample()

    def _sample(self) -> None:
        import psutil

        # One pass over every process (psutil reads /proc): who started it, when, its CPU seconds and command.
        stats = {p.pid: p.info for p in psutil.process_iter(["ppid", "create_time", "cpu_times", "cmdline"])
                 if p.info["cpu_times"] is not None}
        followed = {pid for pid, born in self._seen if pid in stats and stats[pid]["create_time"] == born}
        followed.add(self._root)
        grew = True
        while grew:  # new descendants of anything followed, to any depth
            new = {pid for pid, info in stats.items() if info["ppid"] in followed and pid not in followed}
            followed |= new
            grew = bool(new)
        for pid in followed & stats.keys():
            info = stats[pid]
            seen = self._seen.setdefault((pid, info["create_time"]), ["other processes", 0.0])
            if seen[0] == "other processes":  # a worker may be seen between fork and exec: look again
                seen[0] = self._kind(pid, info["cmdline"] or [])
            seen[1] = max(seen[1], info["cpu_times"].user + info["cpu_times"].system)
        self._timeline.append((time.time(), sum(cpu for _, cpu in self._seen.values())))

    def _kind(self, pid: int, args: list[str]) -> str:
        if pid == self._root:
            return "driver"
        # A Ray worker boots as `python setup_worker.py`, execs `python default_worker.py`, then names itself
        # ray::IDLE, ray::ImplicitFunc...; the agents name themselves too (the raylet's arguments name both scripts).
        head = args[:2] or [""]
        if any(a.endswith("_worker.py") for a in head) or (head[0].startswith("ray::") and head[0] not in RAY_AGENTS):
            return "trial processes"
        if head[0].startswith("ray::") or any("/site-packages/ray/" in a for a in args[:3]):  # `python -u X.py`
            return "Ray's own processes"
        return "other processes"

    def idle(self, start: float, end: float, cpus: int) -> float:
        """CPU seconds nothing followed used between the samples nearest to ``start`` and ``end`` (epoch)."""
        inside = [(t, cpu) for t, cpu in self._timeline if start <= t <= end]
        if len(inside) < 2:
            return 0.0
        (t0, cpu0), (t1, cpu1) = inside[0], inside[-1]
        return (t1 - t0) * cpus - (cpu1 - cpu0)

    def seconds(self, wall: float, cpus: int) -> dict[str, float]:
        """CPU seconds per kind of process, all together, and the CPU time nothing used (``wall`` x ``cpus`` less
        everything measured)."""
        kinds = dict.fromkeys(("driver", "trial processes", "Ray's own processes", "other processes"), 0.0)
        for kind, cpu in self._seen.values():
            kinds[kind] += cpu
        used = sum(kinds.values())
        return {**{f"CPU s: {kind}": cpu for kind, cpu in kinds.items()}, "CPU s: all": used,
                "CPU s: idle (wall x CPUs - all)": wall * cpus - used}


def _from_store(store: Path, launched: float, exited: float, cpus: int) -> dict[str, float]:
    db = sqlite3.connect(store)
    children = db.execute(
        "select r.run_uuid, r.start_time, r.end_time from runs r join tags t on t.run_uuid = r.run_uuid "
        "where t.key = 'mlflow.parentRunId'").fetchall()
    fit = {}
    first_fit = []
    for run_id, _, _ in children:
        history = db.execute("select value, timestamp from metrics where run_uuid = ? and key = 'train_time_s' "
                             "order by step", (run_id,)).fetchall()
        if history:
            fit[run_id] = history[-1][0]
            first_fit.append(history[0][1] / 1000 - history[0][0])
    db.close()
    wall = exited - launched
    limit = sum(fit.values()) / cpus
    return {
        "wall": wall,
        "fit seconds (all trials)": sum(fit.values()),
        "limit": limit,
        "ratio": wall / limit,
        "launch -> first child run": min(start for _, start, _ in children) / 1000 - launched,
        "launch -> first fit began": min(first_fit) - launched,
        "last trial ended -> exit": exited - max(end for _, _, end in children) / 1000,
        "trials": len(children),
    }


def _from_tune(tune_dir: Path, launched: float, exited: float, cpus: int) -> dict[str, float]:
    """:func:`_from_store`'s numbers for a :data:`PLAIN_TUNE` run, from each trial's ``result.json``."""
    import json

    fit, first_fit, ended = [], [], []
    for result in tune_dir.glob("*/*/result.json"):
        reports = [json.loads(line) for line in result.read_text().splitlines()]
        if reports:
            fit.append(reports[-1]["train_time_s"])
            first_fit.append(reports[0]["reported_at"] - reports[0]["train_time_s"])
            ended.append(reports[-1]["reported_at"])
    wall, limit = exited - launched, sum(fit) / cpus
    return {
        "wall": wall,
        "fit seconds (all trials)": sum(fit),
        "limit": limit,
        "ratio": wall / limit,
        "launch -> first fit began": min(first_fit) - launched,
        "last trial ended -> exit": exited - max(ended),
        "trials": len(fit),
    }


def _trial_time(tune_dir: Path) -> dict[str, float]:
    """Tune's time per trial (time_total_s of its last result) against its fit seconds."""
    import json

    total = fit = 0.0
    for result in tune_dir.glob("*/*/result.json"):
        lines = result.read_text().splitlines()
        if lines:
            last = json.loads(lines[-1])
            total += last.get("time_total_s", 0.0)
            fit += last.get("train_time_s", 0.0)
    return {"trial time in Tune (all trials)": total, "trial time not fitting": total - fit}


def _phases(stderr: str, launched: float) -> dict[str, float]:
    """Launch -> each phase the driver logged (the first time it is logged)."""
    seen: dict[str, float] = {}
    for line in stderr.splitlines():
        match = PHASE.match(line)
        if match and f"phase: {match[2]}" not in seen:
            seen[f"phase: {match[2]}"] = float(match[1]) - launched
    return seen


#: Fraud search-space configurations whose checkpoints --checkpoints measures: the largest forest, a middling one.
CHECKPOINT_CONFIGS = {
    "largest": {"n_estimators": 200, "max_depth": None, "min_samples_leaf": 1, "max_features": "sqrt"},
    "middling": {"n_estimators": 100, "max_depth": 10, "min_samples_leaf": 8, "max_features": 0.5},
}


def checkpoint_cost() -> None:
    """Seconds and bytes a fraud trial spends writing its checkpoints (5 iterations), outside Ray: the trial's own
    write only (Tune then copies the folder into the sweep's storage, about as much again)."""
    import time as clock

    from raysweep import data
    from raysweep.compose import compose
    from raysweep.tabular import model_config
    from raysweep.trainables import _estimators as engine
    from raysweep.trainables import sklearn

    cfg = compose(["+sweep=fraud"])
    dataset = data.load(cfg.data)
    settings = sklearn._settings(cfg.trainer, dataset.task)
    described = model_config(dataset.task, dataset.classes, dataset.X_train.columns)
    print(f"\n{'checkpoints of one trial (5 iterations)':<40} {'fit s':>8} {'trial s':>8} {'save s':>8} {'MB':>8}")
    for name, config in CHECKPOINT_CONFIGS.items():
        saving = written = 0.0
        started = clock.perf_counter()
        for i, pipeline, metrics in engine.grow({**config, "criterion": "gini"}, dataset, settings):
            before = clock.perf_counter()
            with tempfile.TemporaryDirectory() as folder:
                engine._save(pipeline, dataset.X_val.head(5), described, folder, {"iteration": i})
                written += sum(f.stat().st_size for f in Path(folder).iterdir())
            saving += clock.perf_counter() - before
        print(f"{name:<40} {metrics['train_time_s']:>8.2f} {clock.perf_counter() - started:>8.2f} {saving:>8.2f} "
              f"{written / 1e6:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="the local Ray's CPUs (default: all)")
    parser.add_argument("--baseline", metavar="[NAME=]SRC", action="append", default=[],
                        help="also run the raysweep package in SRC (the src/ folder of another version, with conf/ "
                        "beside it), alternating with this one rep by rep, and print them side by side; repeatable")
    parser.add_argument("--checkpoints", action="store_true", help="only measure what writing one trial's "
                        "checkpoints costs (no Ray, seconds)")
    parser.add_argument("--plain-tune", action="store_true", help="also run the same trials as a plain Ray Tune "
                        "script does (no MLflow, checkpoints, registration or report), alternating rep by rep")
    parser.add_argument("overrides", nargs="*", help="more overrides for the sweep, after --")
    args = parser.parse_args()
    if args.checkpoints:
        checkpoint_cost()
        return
    overrides = list(args.overrides)
    if args.cpus != os.cpu_count():
        overrides.append(f"cluster.num_cpus={args.cpus}")
    print(f"python -m raysweep +sweep=fraud {' '.join(overrides)}  x{args.reps}, {args.cpus} CPUs", flush=True)
    versions: dict[str, str | None] = {"this": None}
    for i, given in enumerate(args.baseline):
        name, _, src = given.rpartition("=")
        versions[name or f"baseline{i + 1 if len(args.baseline) > 1 else ''}"] = src
    if args.plain_tune:
        versions[PLAIN] = None
    reps: dict[str, list[dict[str, float]]] = {name: [] for name in versions}
    for i in range(args.reps):
        for name, src in (list(versions.items()) if i % 2 == 0 else list(versions.items())[::-1]):
            numbers = run_once(overrides, args.cpus, src, plain=name == PLAIN)
            reps[name].append(numbers)
            print(f"rep {i + 1} {name}: wall {numbers['wall']:.1f} s, limit {numbers['limit']:.1f} s, "
                  f"ratio {numbers['ratio']:.2f}", flush=True)
    keys = list(dict.fromkeys(k for runs in reps.values() for numbers in runs for k in numbers))
    print(f"\n{'median (min-max)':<40}" + "".join(f"{name:>24}" for name in versions))
    for key in keys:
        cells = []
        for runs in reps.values():
            values = [numbers[key] for numbers in runs if key in numbers]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})" if values else "-")
        print(f"{key:<40}" + "".join(f"{cell:>24}" for cell in cells))


if __name__ == "__main__":
    main()
