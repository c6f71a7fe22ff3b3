"""Where a distributed torch trial's time goes: worker-group start, training, MLflow logging, the rest.

Runs the torch sweep (2-worker trials) once per logging mode on a local Ray and a throwaway sqlite store,
then prints one row per trial and the mean per mode:

    uv run python bench/torch_trial_time.py [--trials 2] [--epochs 3] [--rows 20000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def run_mode(mode: str, args, workdir: Path):
    """Run one sweep in ``mode``; return Tune's last result of each trial as a DataFrame."""
    import mlflow
    from hydra import compose, initialize_config_dir
    from ray.tune import ExperimentAnalysis

    from raysweep import sweep
    from raysweep.config import CONF_DIR, register_schema

    register_schema()
    uri = f"sqlite:///{workdir / f'{mode}.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    overrides = [
        "+sweep=fraud_torch", f"mlflow={mode}", f"sweep.num_samples={args.trials}",
        f"trainer.iterations={args.epochs}", f"data.n_samples={args.rows}", "sweep.register=false",
        f"cluster.storage_path={workdir / 'ray'}", f"sweep.run_name=bench-{mode}", "cluster.verbose=0",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    sweep.run(cfg)
    return ExperimentAnalysis(str(workdir / "ray" / f"bench-{mode}")).dataframe()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()

    import logging

    import ray

    from raysweep import runtime

    runtime.start(num_cpus=os.cpu_count(), logging_level=logging.ERROR, forward_mlflow_env=False)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for mode in ("worker", "driver"):
                frame = run_mode(mode, args, Path(tmp))
                for _, r in frame.iterrows():
                    start, train, log = r["worker_group_start_s"], r["train_time_s"], r["log_time_s"]
                    total = r["time_total_s"]
                    rows.append((mode, r["trial_id"], start, train, log, total - start - train - log, total))
    finally:
        ray.shutdown()

    header = f"{'mode':<7} {'trial':<12} {'group start':>11} {'training':>9} {'logging':>8} {'other':>7} {'total':>7}"
    print(f"\ntorch trial time, {args.trials} trials x 2 workers x {args.epochs} epochs, {args.rows} rows (seconds)")
    print(header)
    for mode, trial, *values in rows:
        print(f"{mode:<7} {trial:<12} " + " ".join(f"{v:>{w}.2f}" for v, w in zip(values, (11, 9, 8, 7, 7))))
    for mode in ("worker", "driver"):
        mine = [values for m, _, *values in rows if m == mode]
        means = [sum(col) / len(col) for col in zip(*mine)]
        print(f"{mode:<7} {'mean':<12} " + " ".join(f"{v:>{w}.2f}" for v, w in zip(means, (11, 9, 8, 7, 7))))
    print("(driver mode logs from the Tune driver, outside the trial: its logging column is 0 by construction)")


if __name__ == "__main__":
    main()
