"""ASHA against FIFO on the same search space, trials and seed: best val_auc and training iterations spent.

Runs the fraud sweep twice on one local Ray (scheduler=fifo, then scheduler=asha) into a throwaway sqlite store
and reads both back from MLflow, the way a user compares them:

    uv run python bench/asha_vs_fifo.py [--trials 16] [--iterations 8] [--rows 20000] [--search-alg random]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def run_sweep(scheduler: str, args, workdir: Path) -> dict:
    """Run one sweep with ``scheduler``; return its best metric, iterations spent and wall time."""
    import mlflow
    from hydra import compose, initialize_config_dir
    from mlflow import MlflowClient

    from raysweep import sweep
    from raysweep.config import CONF_DIR, register_schema

    register_schema()
    uri = f"sqlite:///{workdir / 'bench.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    overrides = [
        "+sweep=fraud", f"scheduler={scheduler}", f"search_alg={args.search_alg}", f"sweep.num_samples={args.trials}",
        f"trainer.iterations={args.iterations}", f"data.n_samples={args.rows}", "sweep.register=false",
        f"cluster.storage_path={workdir / 'ray'}", f"sweep.run_name=bench-{scheduler}", "cluster.verbose=0",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    started = time.perf_counter()
    outcome = sweep.run(cfg)
    wall = time.perf_counter() - started
    client = MlflowClient(uri)
    steps = sum(
        len(client.get_metric_history(run_id, "val_auc")) for run_id in outcome.summary.trials["run_id"]
    )
    column = "tags.raysweep.stopped_early"
    trials = outcome.summary.trials
    stopped = int(trials[column].notna().sum()) if column in trials else 0
    return {"best": outcome.summary.best_value, "iterations": steps, "stopped": stopped, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--search-alg", default="random", choices=["random", "optuna"])
    args = parser.parse_args()

    import logging

    import ray

    from raysweep import runtime

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    runtime.start(logging_level=logging.ERROR)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = {s: run_sweep(s, args, Path(tmp)) for s in ("fifo", "asha")}
    finally:
        ray.shutdown()

    budget = args.trials * args.iterations
    print(f"\n{args.trials} trials x {args.iterations} iterations, {args.rows} rows, {args.search_alg} search, "
          f"{cpus} CPUs")
    print(f"{'scheduler':<10} {'best val_auc':>12} {'iterations':>11} {'of budget':>9} {'stopped':>8} {'wall s':>7}")
    for name, r in rows.items():
        print(f"{name:<10} {r['best']:>12.4f} {r['iterations']:>11d} {r['iterations'] / budget:>9.0%} "
              f"{r['stopped']:>8d} {r['wall']:>7.1f}")


if __name__ == "__main__":
    main()
