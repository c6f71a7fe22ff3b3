"""The example project (examples/wine) as its README runs it: its own sweep file, its own Ray Tune function,
from its own folder, in both logging modes; the registered model answers wine rows with class probabilities."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from raysweep.config import CONF_DIR

EXAMPLE = CONF_DIR.parent / "examples" / "wine"
#: Two trials of two epochs.
TINY = ["sweep.num_samples=2", "trainer.params.epochs=2", "trainer.iterations=2", "cluster.verbose=0"]


def test_the_example_sweep_composes_from_its_folder(cli_env):
    out = subprocess.run([sys.executable, "-m", "raysweep", "+sweep=wine", "--cfg", "job"], cwd=EXAMPLE, env=cli_env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "function: train:train" in out.stdout and "registered_model: wine-sgd" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["driver", "worker"])
def test_the_example_project_sweeps_and_registers_its_model(mode, ray_address, cli_env, tracking_uri, tmp_path):
    # Worker mode through the console script (its sys.path starts at bin/, not at the working directory).
    command = [sys.executable, "-m", "raysweep"] if mode == "driver" else [str(Path(sys.executable).parent / "raysweep")]
    out = subprocess.run([*command, "+sweep=wine", *TINY, f"mlflow={mode}", f"cluster.storage_path={tmp_path / 'ray'}"],
                         cwd=EXAMPLE, env={**cli_env, "RAY_ADDRESS": ray_address}, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert "registered  wine-sgd v1" in out.stdout

    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("wine").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 3 and len(children) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for child in children:
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")] == [1, 2]
        assert {"alpha", "l1_ratio", "eta0"} <= set(child.data.params)
        # The function's own mlflow.log_param lands in the trial's run when raysweep opened it (worker mode).
        assert ("train_rows" in child.data.params) == (mode == "worker")

    from sklearn.datasets import load_wine

    X, _ = load_wine(return_X_y=True, as_frame=True)
    proba = mlflow.pyfunc.load_model("models:/wine-sgd@champion").predict(X.head(5))
    assert proba.shape == (5, 3)
