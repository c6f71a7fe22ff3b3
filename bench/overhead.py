"""What a sweep spends on itself, measured side by side with plain Ray Tune on this machine.

    uv run python bench/overhead.py                 # everything (~21 min on 2 cores)
    uv run python bench/overhead.py --smoke         # seconds: every measurement at toy size (CI runs this)

Four tables, each printed as soon as it is measured:

1. sweep wall time / ideal packing (trial compute / CPUs) for fixed-cost trials (``+sweep=overhead``: each
   trial sleeps 5 times at 1 CPU) at several sweep sizes: plain Tune (default and ``reuse_actors=True``),
   plain Tune with Ray's ``MLflowLoggerCallback``, raysweep in driver and in worker mode;
2. metrics logged per second into MLflow by raysweep's trial logging against a per-metric ``log_metric``
   loop, on a local sqlite store and on a real ``mlflow server`` on loopback; and logging's share of trial time;
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
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
REPO = Path(__file__).resolve().parents[1]
STEPS = 5  # reports per fixed-cost trial


# ---------------------------------------------------------------------------------------------- 1. wall / ideal
def plain_tune(n_trials: int, step_seconds: float, storage: Path, reuse: bool, mlflow_uri: str | None) -> float:
    """The same fixed-cost trials as a plain Ray Tune script would run them; returns wall seconds."""
    from ray import tune

    def trainable(config):
        for i in range(1, STEPS + 1):
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
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0, callbacks=callbacks),
    )
    started = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - started


def raysweep_sweep(n_trials: int, step_seconds: float, storage: Path, mode: str, mlflow_uri: str, name: str):
    """``+sweep=overhead`` through raysweep.sweep.run; returns (wall seconds, logging share of trial time)."""
    from ray.tune import ExperimentAnalysis

    from raysweep import sweep

    cfg = _compose("+sweep=overhead", f"mlflow={mode}", f"sweep.num_samples={n_trials}",
                   f"trainer.params.seconds_per_iteration={step_seconds}", f"cluster.storage_path={storage}",
                   f"sweep.run_name={name}", "cluster.verbose=0", mlflow_uri=mlflow_uri)
    started = time.perf_counter()
    sweep.run(cfg)
    wall = time.perf_counter() - started
    frame = ExperimentAnalysis(str(storage / name)).dataframe()
    share = frame["log_time_s"].sum() / frame["time_total_s"].sum() if "log_time_s" in frame else float("nan")
    return wall, share


def table_wall(sizes, storage: Path, cpus: int, plain: bool = True) -> None:
    print(f"\n1. sweep wall time / ideal ({cpus} CPUs, {STEPS} sleeps per trial, 1 CPU per trial)")
    print(f"{'trials':>6} {'s/trial':>7} {'ideal s':>7} | {'Tune':>6} {'Tune+reuse':>10} {'Tune+MLflow':>11} "
          f"{'raysweep drv':>12} {'raysweep wkr':>12} | {'log share':>9}")
    for n_trials, trial_seconds in sizes:
        step = trial_seconds / STEPS
        ideal = n_trials * trial_seconds / cpus
        uri = f"sqlite:///{storage / f'wall-{n_trials}.db'}"
        nan = float("nan")
        row = {
            # Without actor reuse every trial starts a process: only worth waiting for at small sizes.
            "tune": plain_tune(n_trials, step, storage, False, None) if plain and n_trials <= 100 else nan,
            "reuse": plain_tune(n_trials, step, storage, True, None) if plain else nan,
            "mlflow": plain_tune(n_trials, step, storage, True, uri),
        }
        row["driver"], _ = raysweep_sweep(n_trials, step, storage, "driver", uri, f"drv-{n_trials}")
        row["worker"], share = raysweep_sweep(n_trials, step, storage, "worker", uri, f"wkr-{n_trials}")
        r = {k: v / ideal for k, v in row.items()}
        print(f"{n_trials:>6} {trial_seconds:>7.2f} {ideal:>7.1f} | {r['tune']:>6.2f} {r['reuse']:>10.2f} "
              f"{r['mlflow']:>11.2f} {r['driver']:>12.2f} {r['worker']:>12.2f} | {share:>9.2%}", flush=True)


# ------------------------------------------------------------------------------------------- 2. logging rate
@contextmanager
def mlflow_server(workdir: Path):
    """A real ``mlflow server`` on a free loopback port (sqlite backend), stopped by pid afterwards."""
    import urllib.request

    from raysweep.runtime import free_port

    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}", "--artifacts-destination",
         str(workdir / "artifacts")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("mlflow server did not start") from None
                time.sleep(0.3)
        yield uri
    finally:
        process.terminate()
        process.wait(timeout=30)


def logging_rates(uri: str, steps: int, metrics_per_step: int) -> tuple[float, float]:
    """(per-metric loop metrics/s, raysweep trial logging metrics/s) for one run each."""
    from mlflow import MlflowClient

    from raysweep.tracking.lifecycle import TrialRuns

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("logging") or client.get_experiment(client.create_experiment("logging"))
    names = [f"m{i}" for i in range(metrics_per_step)]

    run = client.create_run(experiment.experiment_id)
    started = time.perf_counter()
    for step in range(steps):
        for name in names:
            client.log_metric(run.info.run_id, name, step * 0.1, step=step)
    loop = steps * metrics_per_step / (time.perf_counter() - started)

    # A trial's run through raysweep's lifecycle (what both logging modes use), under a stand-in parent.
    parent = client.create_run(experiment.experiment_id).info.run_id
    runs = TrialRuns(client, experiment.experiment_id, parent, metrics=names)
    runs.start("trial-0", "trial-0", {}, lookup=False)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        runs.metrics("trial-0", {name: step * 0.1 for name in names}, step=step)
    runs.flush()
    ours = steps * metrics_per_step / (time.perf_counter() - started)
    runs.end("trial-0", "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return loop, ours


def table_logging(workdir: Path, steps: int, metrics_per_step: int) -> None:
    print(f"\n2. metrics logged per second ({steps} steps x {metrics_per_step} metrics, one run)")
    print(f"{'store':<14} {'log_metric loop':>15} {'raysweep':>10} {'ratio':>7}")
    with mlflow_server(workdir) as server:
        for label, uri in (("sqlite", f"sqlite:///{workdir / 'logging.db'}"), ("mlflow server", server)):
            loop, ours = logging_rates(uri, steps, metrics_per_step)
            print(f"{label:<14} {loop:>15,.0f} {ours:>10,.0f} {ours / loop:>6.1f}x", flush=True)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10:1,100:1,1000:0.2",
                        help="sweep sizes as TRIALS:SECONDS_PER_TRIAL, comma-separated (default: %(default)s)")
    parser.add_argument("--children", type=int, default=1000, help="children of the analysed sweep")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: checks that every part still runs")
    parser.add_argument("--only", choices=["wall", "logging", "startup", "analysis"], help="one table only")
    args = parser.parse_args()
    sizes = [(int(n), float(s)) for n, s in (part.split(":") for part in args.sizes.split(","))]
    steps, metrics, children = 200, 10, args.children
    if args.smoke:
        sizes, steps, metrics, children = [(2, 0.05)], 20, 5, 20

    import raysweep  # noqa: F401  (before Ray: it turns off Ray's `uv run` worker hook)

    print(f"installed packages' bytecode: {_bytecode()}")
    workdir = Path(tempfile.mkdtemp(prefix="raysweep-bench-"))
    try:
        if args.only in (None, "wall"):
            import logging

            import ray

            from raysweep import runtime

            # RAY_ADDRESS (the test suite's Ray) or a fresh local 2-CPU Ray.
            address = os.environ.get("RAY_ADDRESS")
            runtime.start(address, None if address else 2, logging_level=logging.ERROR, forward_mlflow_env=False)
            try:
                # The smoke runs plain Tune once (its MLflow-callback variant): the other two are the same code.
                table_wall(sizes, workdir / "ray", int(ray.cluster_resources()["CPU"]), plain=not args.smoke)
            finally:
                ray.shutdown()
        if args.only in (None, "logging"):
            table_logging(workdir, steps, metrics)
        if args.only in (None, "startup"):
            table_startup(workdir, trials=1 if args.smoke else 2)
        if args.only in (None, "analysis"):
            table_analysis(workdir, children)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
