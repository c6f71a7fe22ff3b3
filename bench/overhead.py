"""What a sweep spends on itself, measured side by side with plain Ray Tune on this machine.

    uv run python bench/overhead.py                 # everything, 3 runs per cell (~2 h on 2 cores)
    uv run python bench/overhead.py --quick         # tables 1-2 at a tenth of the sizes (~10 min on 2 cores)
    uv run python bench/overhead.py --smoke         # seconds: every measurement at toy size (the tests run this)
    uv run python bench/overhead.py --only wall --sizes 100:1 --kinds busy --reps 5    # one part

Tables, each printed as soon as it is measured:

1. sweep wall time / ideal packing (trial compute / CPUs) for fixed-cost trials (``+sweep=overhead``: 5 steps
   at 1 CPU each) that sleep or burn their seconds on a CPU (``trainer.params.busy``), at several sweep sizes:
   plain Tune (default and ``reuse_actors=True``), plain Tune with Ray's ``MLflowLoggerCallback``, raysweep in
   driver and in worker mode. Each cell is the median [min-max] of ``--reps`` sweeps, all sweeps of a size in
   shuffled order (each on a fresh store); raysweep's extra over plain Tune's better setting has its own columns
   and the issue's goals (<= 0.05 at 100 x 1 s, <= 0.10 at 1000 x 0.2 s) a pass/FAIL;
2. metrics logged per second into MLflow: a ``log_metric`` loop, ``log_batch`` per step, MLflow's asynchronous
   ``log_batch(synchronous=False)``, raysweep's trial logging; on sqlite and a real ``mlflow server`` (and 2b:
   what the store holds after a killed writer and a 30 s server outage; see mlflow_logging.py);
3. seconds from launch to ``--help``, to a config error, and to the first trial running;
4. the post-sweep analysis (search_runs, pick, register) of a sweep with 1,000 children.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
REPO = Path(__file__).resolve().parents[1]
STEPS = 5  # reports per fixed-cost trial


# ---------------------------------------------------------------------------------------------- 1. wall / ideal
#: What each column runs: plain Tune without and with actor reuse, plain Tune with Ray's MLflowLoggerCallback,
#: raysweep in driver and in worker logging mode.
VARIANTS = ("tune", "reuse", "mlflow", "driver", "worker")
HEADINGS = {"tune": "Tune", "reuse": "Tune+reuse", "mlflow": "Tune+MLflow", "driver": "raysweep drv",
            "worker": "raysweep wkr"}
#: Sleeping trials, and CPU-bound ones that burn their seconds of CPU time (see fixed_cost.burn).
KINDS = ("sleep", "busy")
#: The issue's goals: raysweep's extra over plain Tune's best setting, in units of the ideal, at these sizes.
GOALS = {(100, 1.0): 0.05, (1000, 0.2): 0.10}
#: Plain Tune without actor reuse starts a process per trial: worth waiting for only up to this many trials.
DEFAULT_TUNE_MAX_TRIALS = 100


def plain_tune(n_trials: int, step_seconds: float, storage: Path, reuse: bool, mlflow_uri: str | None,
               busy: bool = False) -> float:
    """The same fixed-cost trials as a plain Ray Tune script would run them; returns wall seconds."""
    from ray import tune

    def trainable(config):
        for i in range(1, STEPS + 1):
            if busy:  # as fixed_cost.burn: CPU time of this thread, so a contended CPU makes it last longer
                end = time.thread_time() + step_seconds
                while time.thread_time() < end:
                    pass
            else:
                time.sleep(step_seconds)
            tune.report({"score": config["x"] * i})

    callbacks = []
    if mlflow_uri:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(MLflowLoggerCallback(tracking_uri=mlflow_uri, experiment_name="plain-tune"))
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(num_samples=n_trials, reuse_actors=reuse),
        run_config=tune.RunConfig(storage_path=str(storage), name="plain", verbose=0, callbacks=callbacks),
    )
    started = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - started


def raysweep_sweep(n_trials: int, step_seconds: float, storage: Path, mode: str, mlflow_uri: str, name: str,
                   busy: bool = False):
    """``+sweep=overhead`` through raysweep.sweep.run; returns (wall seconds, logging share of trial time)."""
    from ray.tune import ExperimentAnalysis

    from raysweep import sweep

    cfg = _compose("+sweep=overhead", f"mlflow={mode}", f"sweep.num_samples={n_trials}",
                   f"trainer.params.seconds_per_iteration={step_seconds}", f"trainer.params.busy={busy}",
                   f"cluster.storage_path={storage}", f"sweep.run_name={name}", "cluster.verbose=0",
                   mlflow_uri=mlflow_uri)
    started = time.perf_counter()
    sweep.run(cfg)
    wall = time.perf_counter() - started
    frame = ExperimentAnalysis(str(storage / name)).dataframe()
    share = frame["log_time_s"].sum() / frame["time_total_s"].sum() if "log_time_s" in frame else float("nan")
    return wall, share


def measure_once(variant: str, kind: str, n_trials: int, step: float, workdir: Path, index: int):
    """One sweep of one column; returns (wall seconds, logging share or nan). Leaves nothing on disk."""
    storage, db = workdir / f"ray-{index}", workdir / f"wall-{index}.db"
    uri = f"sqlite:///{db}"  # a fresh store per sweep: no sweep pays for an earlier one's runs
    busy = kind == "busy"
    try:
        if variant in ("tune", "reuse", "mlflow"):
            return plain_tune(n_trials, step, storage, variant != "tune", uri if variant == "mlflow" else None,
                              busy), float("nan")
        return raysweep_sweep(n_trials, step, storage, variant, uri, f"rs-{index}", busy)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        db.unlink(missing_ok=True)


def table_wall(sizes, workdir: Path, cpus: int, *, reps: int, kinds, variants, seed: int) -> None:
    """Every cell the median of ``reps`` sweeps, all sweeps of one size in shuffled order; prints a row per kind."""
    import itertools
    import random
    import statistics

    print(f"\n1. sweep wall time / ideal ({cpus} CPUs, {STEPS} steps per trial, 1 CPU per trial; "
          f"median [min-max] of {reps} runs in shuffled order, seed {seed})")
    print("   extra = raysweep - min(Tune, Tune+reuse), in units of ideal; goal <= 0.05 at 100 x 1 s, "
          "<= 0.10 at 1000 x 0.2 s")
    print(f"{'trials':>6} {'s/trial':>7} {'kind':<5} {'ideal s':>7} | "
          + " ".join(f"{HEADINGS[v]:>16}" for v in variants)
          + f" | {'extra drv':>9} {'extra wkr':>9} {'goal':>13} | {'log share':>9}")
    shuffle = random.Random(seed)
    # One number per sweep across all sizes: MLflow keeps an engine per store URI, so a URI is never used twice.
    sweeps = itertools.count(1)
    for n_trials, trial_seconds in sizes:
        step, ideal = trial_seconds / STEPS, n_trials * trial_seconds / cpus
        jobs = [(v, k, r) for v in variants for k in kinds for r in range(reps)
                if v != "tune" or n_trials <= DEFAULT_TUNE_MAX_TRIALS]
        shuffle.shuffle(jobs)
        walls: dict[tuple[str, str], list[float]] = {}
        shares: dict[str, list[float]] = {}
        for i, (variant, kind, rep) in enumerate(jobs, 1):
            wall, share = measure_once(variant, kind, n_trials, step, workdir, next(sweeps))
            walls.setdefault((variant, kind), []).append(wall / ideal)
            if variant == "worker":
                shares.setdefault(kind, []).append(share)
            # Every sweep on its own line: an interrupted run still leaves its numbers.
            print(f"   run {i:>3}/{len(jobs)}: {n_trials} x {trial_seconds:g} s {kind:<5} {HEADINGS[variant]:<12} "
                  f"rep {rep + 1}: {wall:7.1f} s = {wall / ideal:5.2f} x ideal", flush=True)
        for kind in kinds:
            med = {v: statistics.median(walls[(v, kind)]) for v in variants if (v, kind) in walls}
            cells = []
            for v in variants:
                got = walls.get((v, kind))
                cells.append(f"{med[v]:>5.2f} [{min(got):.2f}-{max(got):.2f}]" if got else f"{'(not run)':>16}")
            tune_best = min((med[v] for v in ("tune", "reuse") if v in med), default=float("nan"))
            extra = {m: med.get(m, float("nan")) - tune_best for m in ("driver", "worker")}
            goal = GOALS.get((n_trials, trial_seconds))
            measured = [x for x in extra.values() if x == x]  # nan: a column not run
            verdict = "-" if goal is None or not measured else (
                f"{'pass' if all(x <= goal for x in measured) else 'FAIL'} (<={goal:g})")
            share = statistics.median(shares[kind]) if shares.get(kind) else float("nan")
            print(f"{n_trials:>6} {trial_seconds:>7.2f} {kind:<5} {ideal:>7.1f} | "
                  + " ".join(f"{c:>16}" for c in cells)
                  + f" | {extra['driver']:>+9.3f} {extra['worker']:>+9.3f} {verdict:>13} | {share:>9.2%}", flush=True)


# --------------------------------------------------------------------------------------------- 3. start-up
def table_startup(workdir: Path, trials: int = 2) -> None:
    print("\n3. seconds from launch")
    cli = [sys.executable, "-m", "raysweep"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'startup.db'}", "PYTHONUNBUFFERED": "1"}
    for label, args in (("--help", ["--help"]), ("config error", ["+sweep=fraud", "sweep.metric=nope"])):
        started = time.perf_counter()
        subprocess.run([*cli, *args], env=env, cwd=workdir, capture_output=True, check=False)
        print(f"{label:<22} {time.perf_counter() - started:>6.2f}", flush=True)
    args = ["+sweep=overhead", f"sweep.num_samples={trials}", f"cluster.storage_path={workdir / 'ray'}", "cluster.verbose=0"]
    started = time.perf_counter()
    process = subprocess.Popen([*cli, *args], env=env, cwd=workdir, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    first = None
    while process.poll() is None:
        if first is None and _count(workdir / "startup.db", "select count(*) from runs where name like 'train_%'"):
            first = time.perf_counter() - started
        time.sleep(0.05)
    ray = "joining RAY_ADDRESS" if os.environ.get("RAY_ADDRESS") else "starting a local Ray"
    print(f"{'first trial running':<22} {first if first is not None else float('nan'):>6.2f}  "
          f"({ray}; whole {trials}-trial sweep {time.perf_counter() - started:.1f} s)", flush=True)


# -------------------------------------------------------------------------------------------- 4. analysis
def table_analysis(workdir: Path, n_children: int) -> None:
    from raysweep.analysis import find_sweep, record_best, summarize
    from raysweep.registry import register_best

    uri = f"sqlite:///{workdir / 'analysis.db'}"
    parent_id = _fake_sweep(uri, n_children, workdir)
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    started = time.perf_counter()
    parent = find_sweep(client, "analysis", parent_id)
    summary = summarize(client, parent)
    t_search = time.perf_counter() - started
    record_best(client, summary)
    registration = register_best(client, client.get_run(parent_id), summary)
    total = time.perf_counter() - started
    print(f"\n4. analysis of a sweep with {summary.n_trials} children (sqlite)")
    print(f"search_runs + pick {t_search:>6.2f} s   + record + register {total:>6.2f} s   -> {registration}")


def _fake_sweep(uri: str, n_children: int, workdir: Path) -> str:
    """A finished sweep written straight into MLflow: parent, children with 5 steps, a real best checkpoint."""
    import joblib
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param
    from sklearn.ensemble import RandomForestClassifier

    from raysweep.tracking.tags import CHECKPOINT_TAG, PARENT_ROLE, ROLE_TAG, TRIAL_ID_TAG, TRIAL_ROLE
    from raysweep import tabular
    from raysweep.trainables._estimators import CONFIG_FILE, EXAMPLE_FILE, MODEL_FILE

    client = MlflowClient(uri)
    experiment_id = client.create_experiment("analysis")
    parent = client.create_run(experiment_id, run_name="sweep-1000", tags={ROLE_TAG: PARENT_ROLE})
    pid = parent.info.run_id
    client.log_batch(pid, params=[Param("sweep.metric", "val_auc"), Param("sweep.mode", "max"),
                                  Param("mlflow.registered_model", "analysis-bench"),
                                  Param("trainer.name", "sklearn")])
    checkpoint = workdir / "checkpoint"
    checkpoint.mkdir()
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    joblib.dump(tabular.pipeline(RandomForestClassifier(n_estimators=2), X).fit(X, [0, 1, 0, 1]),
                checkpoint / MODEL_FILE)
    X.to_parquet(checkpoint / EXAMPLE_FILE)
    (checkpoint / CONFIG_FILE).write_text(json.dumps(tabular.model_config("binary", (0, 1), X.columns)))
    now = int(time.time() * 1000)
    for i in range(n_children):
        tags = {"mlflow.parentRunId": pid, ROLE_TAG: TRIAL_ROLE, TRIAL_ID_TAG: f"t{i}"}
        if i == n_children // 2:
            tags[CHECKPOINT_TAG] = str(checkpoint)
        run = client.create_run(experiment_id, run_name=f"train_{i:05d}", tags=tags)
        best = 0.99 if i == n_children // 2 else 0.5 + 0.4 * i / n_children
        client.log_batch(run.info.run_id,
                         metrics=[Metric("val_auc", best * s / 5, now, s) for s in range(1, 6)],
                         params=[Param("x", str(i))])
        client.set_terminated(run.info.run_id)
    client.set_terminated(pid)
    return pid


# ------------------------------------------------------------------------------------------------- helpers
def _compose(*overrides: str, mlflow_uri: str):
    import mlflow
    from hydra import compose, initialize_config_dir

    from raysweep.config import CONF_DIR, register_schema

    register_schema()
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    mlflow.set_tracking_uri(mlflow_uri)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _count(db: Path, query: str) -> int:
    try:
        with sqlite3.connect(db) as connection:
            return connection.execute(query).fetchone()[0]
    except sqlite3.Error:
        return 0


def _bytecode() -> str:
    """Whether Ray Tune's modules are compiled: every trial process imports them, 3x slower from source."""
    import importlib.util

    source = importlib.util.find_spec("ray.tune.tuner").origin
    if Path(importlib.util.cache_from_source(source)).exists():
        return "compiled"
    return "NOT compiled (trial processes start slower; install with `uv sync --compile-bytecode`)"


#: ``--quick``: the goals' shapes (few long trials, many short ones) at a tenth of their size or less, and only
#: the columns the goals compare (plain Tune without reuse is ~3x slower here, never the better setting: the full
#: run shows it), and only tables 1 and 2: ~10 minutes on 2 CPUs. The goals' own sizes need the full run.
QUICK = {"sizes": "12:1,60:0.2", "reps": 3, "variants": "reuse,driver,worker", "children": 500, "only": "wall,logging"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10:1,100:1,1000:0.2",
                        help="sweep sizes as TRIALS:SECONDS_PER_TRIAL, comma-separated (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=3, help="sweeps per cell, the median printed (default: 3)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="trial kinds: sleep, busy (default: both)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"columns of table 1, comma-separated from {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled order of table 1's sweeps")
    parser.add_argument("--children", type=int, default=1000, help="children of the analysed sweep")
    parser.add_argument("--quick", action="store_true",
                        help=f"~10 minutes: {QUICK['sizes']}, {QUICK['reps']} reps, columns {QUICK['variants']}, "
                             f"tables {QUICK['only']}")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: checks that every part still runs")
    parser.add_argument("--only", help="comma-separated tables: wall, logging, safety, startup, analysis")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            if parser.get_default(key) == getattr(args, key):
                setattr(args, key, value)
    tables = {"wall", "logging", "safety", "startup", "analysis"}
    only = set(args.only.split(",")) if args.only else tables
    variants_ok, kinds_ok = set(args.variants.split(",")) <= set(VARIANTS), set(args.kinds.split(",")) <= set(KINDS)
    if only - tables or not variants_ok or not kinds_ok:
        parser.error(f"--only takes {', '.join(sorted(tables))}; --variants {', '.join(VARIANTS)}; "
                     f"--kinds {', '.join(KINDS)}")
    sizes = [(int(n), float(s)) for n, s in (part.split(":") for part in args.sizes.split(","))]
    kinds, variants = args.kinds.split(","), args.variants.split(",")
    steps, metrics, children, reps = 200, 10, args.children, args.reps
    if args.smoke:
        # Each code path once: the busy trials, plain Tune with reuse, both raysweep modes.
        sizes, kinds, variants, reps, steps, metrics, children = [(2, 0.05)], ["busy"], ["reuse", "driver",
                                                                                          "worker"], 1, 20, 5, 20

    import raysweep  # noqa: F401  (before Ray: it turns off Ray's `uv run` worker hook)

    import mlflow_logging

    print(f"installed packages' bytecode: {_bytecode()}")
    began = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="raysweep-bench-"))
    try:
        if "wall" in only:
            import logging

            import ray

            from raysweep import runtime

            # RAY_ADDRESS (the test suite's Ray) or a fresh local 2-CPU Ray.
            address = os.environ.get("RAY_ADDRESS")
            runtime.start(address, None if address else 2, logging_level=logging.ERROR, forward_mlflow_env=False)
            try:
                table_wall(sizes, workdir, int(ray.cluster_resources()["CPU"]), reps=reps, kinds=kinds,
                           variants=variants, seed=args.seed)
            finally:
                ray.shutdown()
        if only & {"logging", "safety"}:
            with mlflow_logging.mlflow_server(workdir / "server") as server:  # one server for both tables
                # A toy run starts the safety table's writers first, so that their start-up overlaps table 2
                # (a real run keeps table 2's rates to itself).
                writers = mlflow_logging.start_kill_writers(workdir, server) if args.smoke and "safety" in only \
                    else None
                if "logging" in only:
                    mlflow_logging.table_logging(workdir, steps, metrics, server, smoke=args.smoke)
                if "safety" in only:
                    mlflow_logging.table_safety(workdir, smoke=args.smoke, server=server, kill_writers=writers)
        if "startup" in only:
            table_startup(workdir, trials=1 if args.smoke else 2)
        if "analysis" in only:
            table_analysis(workdir, children)
        print(f"\n(all tables: {time.perf_counter() - began:.0f} s)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
