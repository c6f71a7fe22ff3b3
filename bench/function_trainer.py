"""What trainer=function costs over the same function in plain Ray Tune: wall seconds of one sweep each.

A user's Tune function (five reports per trial, each after burning a fixed CPU time) runs first as a plain Ray
Tune script would run it (actors reused, the fastest setting), then unchanged through raysweep
(``trainer=function``) in each logging mode, on the same local Ray. One run each; the table prints wall
seconds, the ideal (trials x seconds / CPUs) and each over the ideal.

    uv run python bench/function_trainer.py [--trials 40] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
STEPS = 5
_MODULE = "bench_user_function"


def _write_user_module(folder: Path) -> None:
    """The user's function, as a module of their own project (trials import it from their path)."""
    (folder / f"{_MODULE}.py").write_text(
        "import time\n"
        "from ray import tune\n\n\n"
        "def train(config):\n"
        f"    for i in range(1, {STEPS} + 1):\n"
        "        deadline = time.process_time() + config['step_seconds']\n"
        "        while time.process_time() < deadline:  # CPU-bound, like training\n"
        "            pass\n"
        "        tune.report({'score': config['x'] * i})\n"
    )


def plain_tune(n_trials: int, step_seconds: float, storage: Path) -> float:
    """The function through ``tune.Tuner`` with reused actors; returns wall seconds."""
    import importlib

    from ray import tune

    train = importlib.import_module(_MODULE).train
    tuner = tune.Tuner(
        tune.with_resources(train, {"cpu": 1}),
        param_space={"x": tune.uniform(0, 1), "step_seconds": step_seconds},
        tune_config=tune.TuneConfig(num_samples=n_trials, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0),
    )
    started = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - started


def through_raysweep(n_trials: int, step_seconds: float, storage: Path, mode: str, store: str) -> float:
    """The same function as ``trainer=function`` via :func:`raysweep.run`; returns wall seconds."""
    import raysweep

    overrides = [
        "trainer=function", f"trainer.function={_MODULE}:train", "data=none", f"mlflow={mode}",
        f"sweep.num_samples={n_trials}", f"+trainer.params.step_seconds={step_seconds}",
        f"cluster.storage_path={storage}", f"sweep.run_name=fn-{mode}", "cluster.verbose=0",
        f"mlflow.tracking_uri={store}",
    ]
    started = time.perf_counter()
    raysweep.run("overhead", overrides=overrides)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per trial")
    args = parser.parse_args()

    import logging

    import ray

    from raysweep import runtime

    with tempfile.TemporaryDirectory(prefix="raysweep-bench-fn-") as tmp:
        folder = Path(tmp)
        _write_user_module(folder)
        sys.path.insert(0, str(folder))
        # Local Ray's workers inherit this environment: the user's module is on their path too.
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
        runtime.start(num_cpus=2, logging_level=logging.ERROR, forward_mlflow_env=False)
        try:
            cpus = int(ray.cluster_resources()["CPU"])
            step = args.seconds / STEPS
            ideal = args.trials * args.seconds / cpus
            store = f"sqlite:///{folder / 'mlflow.db'}"
            rows = [("plain Tune (reuse_actors)", plain_tune(args.trials, step, folder / "ray"))]
            for mode in ("driver", "worker"):
                rows.append((f"raysweep trainer=function, {mode}",
                             through_raysweep(args.trials, step, folder / "ray", mode, store)))
        finally:
            ray.shutdown()
    print(f"\n{args.trials} trials x {args.seconds:g} CPU-s ({STEPS} reports), {cpus} CPUs, ideal {ideal:.1f} s")
    print(f"{'':<34} {'wall s':>7} {'/ ideal':>8} {'extra vs Tune':>14}")
    base = rows[0][1]
    for label, wall in rows:
        print(f"{label:<34} {wall:>7.1f} {wall / ideal:>8.2f} {(wall - base) / ideal:>+14.2f}")


if __name__ == "__main__":
    main()
