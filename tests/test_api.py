"""``raysweep.run`` from Python: bad input as one-line RaySweepError, and a sweep that borrows the caller's Ray,
MLflow URIs and active run and gives them back as they were."""

from __future__ import annotations

import os
import signal
import threading

import mlflow
import pytest
from mlflow import MlflowClient

import raysweep
from raysweep.tracking import tags

#: Two trials of two iterations on little data.
TINY = ["data.n_samples=2000", "trainer.iterations=2", "sweep.num_samples=2", "search_space.n_estimators=range(10, 21, 10)",
        "search_space.max_depth=4", "cluster.verbose=0"]


def test_run_is_loaded_lazily():
    import subprocess
    import sys

    code = "import sys, raysweep; assert 'raysweep.api' not in sys.modules; raysweep.run; print('raysweep.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("nope",), "Could not find 'sweep/nope'; available: fraud,"),
        (("+sweep=fraud",), "give a sweep's name"),
        (("fraud", ["trainer.colour=red"]), "Could not override 'trainer.colour'"),
        (("fraud", "sweep.num_samples=2"), "is one string; pass a list"),
        (("fraud", ["sweep.num_samples=0"]), "sweep.num_samples=0; it must be at least 1"),
        (("fraud", ["search_space.max_depth=choice(4,8"]), "search_space.max_depth: cannot parse"),
        (("fraud", [], "no/such/folder"), "--config-dir no/such/folder: no such folder"),
    ],
)
def test_bad_input_raises_one_line_before_anything_starts(args, fragment, tmp_path, monkeypatch):
    import ray

    monkeypatch.chdir(tmp_path)
    was_up = ray.is_initialized()
    with pytest.raises(raysweep.RaySweepError) as error:
        raysweep.run(*args)
    assert fragment in str(error.value) and "\n" not in str(error.value)
    assert ray.is_initialized() == was_up
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_run_uses_the_running_ray_and_restores_mlflow(ray_address, tracking_uri, tmp_path, monkeypatch):
    """From a thread (as a notebook's background cell would), with the caller's own experiment and run active."""
    import ray

    # Both put back after the test: mlflow.set_experiment below sets them for the whole process.
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "0")
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)

    sweep_store = f"sqlite:///{tmp_path / 'sweeps.db'}"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    seen: dict = {}

    def caller() -> None:
        try:
            mlflow.set_experiment("notebook")  # which sets MLFLOW_EXPERIMENT_ID for this process
            with mlflow.start_run(run_name="notebook") as mine:
                registry_before = mlflow.get_registry_uri()
                seen["result"] = raysweep.run(
                    "fraud", [*TINY, f"mlflow.tracking_uri={sweep_store}", f"cluster.storage_path={tmp_path / 'ray'}",
                              "mlflow.experiment_name=churn"])
                seen["active"] = mlflow.active_run().info.run_id == mine.info.run_id
                seen["uris"] = (mlflow.get_tracking_uri(), mlflow.get_registry_uri(), registry_before,
                                os.environ.get("MLFLOW_TRACKING_URI"))
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            seen["error"] = error

    thread = threading.Thread(target=caller)
    thread.start()
    thread.join(timeout=600)
    assert not thread.is_alive(), "raysweep.run did not return"
    if "error" in seen:
        raise seen["error"]

    assert ray.is_initialized(), "raysweep.run shut down a Ray it did not start"
    assert seen["active"], "the caller's active run was not active again"
    tracking, registry, registry_before, env_uri = seen["uris"]
    assert tracking == tracking_uri and env_uri == tracking_uri and registry == registry_before
    assert {s: signal.getsignal(s) for s in handlers} == handlers

    result = seen["result"]
    client = MlflowClient(sweep_store)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags[tags.ROLE_TAG] == tags.PARENT_ROLE and parent.info.status == "FINISHED"
    assert client.get_experiment(parent.info.experiment_id).name == "churn"  # the override, not the caller's
    best = client.get_run(result.best_run_id)
    assert best.data.tags["mlflow.parentRunId"] == result.parent_run_id
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert len(children) == 2
    # The sweep's number is that of the model it registers: the value reported with the trial's kept checkpoint.
    assert result.best_metric == max(float(c.data.tags[tags.MODEL_VALUE_TAG]) for c in children)
    assert result.model_version == "1" and result.model_name == "fraud-rf"
    assert client.get_model_version("fraud-rf", "1").run_id == result.best_run_id
    assert "registered  fraud-rf v1" in result.report()
    # The caller's own store has the caller's run only.
    mine = MlflowClient(tracking_uri).search_runs([e.experiment_id for e in MlflowClient(tracking_uri).search_experiments()])
    assert [r.info.run_name for r in mine] == ["notebook"]


def test_an_interrupted_sweep_says_how_to_continue_it_where_a_notebook_shows_the_exception():
    from raysweep.errors import SweepInterrupted

    interrupted = SweepInterrupted(signal.SIGINT)
    assert str(interrupted) == ("interrupted by SIGINT; the sweep's open MLflow runs were ended KILLED, none is left "
                                "RUNNING")
    interrupted.run_name = "fraud-20261205-001156-2e2064"
    assert str(interrupted).endswith("; continue it with resume=true sweep.run_name=fraud-20261205-001156-2e2064")
    assert isinstance(interrupted, KeyboardInterrupt) and interrupted.exit_code == 130

