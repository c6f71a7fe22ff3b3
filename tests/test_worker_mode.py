"""Worker-side logging and distributed torch trials: one child run per trial whatever the world size."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import SMOKE
from raysweep import sweep
from raysweep.errors import RaySweepError
from raysweep.tracking.tags import ERROR_TAG, MODEL_URI_TAG, NODE_TAG, PARENT_ROLE, ROLE_TAG, TRIAL_ID_TAG

pytestmark = pytest.mark.slow

EXPERIMENT = "fraud-detection"
TORCH_SMOKE = [
    "+sweep=fraud_torch", "data.n_samples=3000", "sweep.num_samples=2", "trainer.iterations=2",
    "trainer.num_workers=2", "trainer.cpus_per_worker=0.5", "cluster.verbose=0",
]


def _sweep_runs(client: MlflowClient):
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == PARENT_ROLE]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(runs) == len(children) + 1, "a run that is neither the parent nor one of its children"
    return parents[0], children


def test_sklearn_in_worker_mode_with_autolog_and_system_metrics(ray_address, make_cfg, tracking_uri):
    overrides = ["+sweep=fraud", *SMOKE, "mlflow=worker", "mlflow.autolog=true", "mlflow.system_metrics=true"]
    outcome = sweep.run(make_cfg(*overrides))
    client = MlflowClient()
    parent, children = _sweep_runs(client)
    assert len(children) == 4
    assert {r.info.status for r in [parent, *children]} == {"FINISHED"}
    for child in children:
        assert child.info.run_name.startswith("train_") and child.data.tags[TRIAL_ID_TAG]
        # Params are the hyperparameters only, whatever setup_mlflow or autolog add besides.
        for name in ("n_estimators", "max_depth", "min_samples_leaf", "max_features", "criterion"):
            assert name in child.data.params
        assert not any(k.startswith(("settings", "dataset", "logging")) for k in child.data.params)
        assert sorted(m.step for m in client.get_metric_history(child.info.run_id, "val_auc")) == [1, 2]
        assert any(k.startswith("training_") for k in child.data.metrics), "autolog logged nothing"
        assert any(k.startswith("system/cpu_utilization") for k in child.data.metrics), "no system metrics"
        assert child.data.tags[NODE_TAG]
        # Lineage, written from the trial's own process: the sweep's data, as on the parent.
        [data_input] = client.get_run(child.info.run_id).inputs.dataset_inputs
        [parent_input] = client.get_run(parent.info.run_id).inputs.dataset_inputs
        assert data_input.dataset.digest == parent_input.dataset.digest
        # Each trial logged its final model from its own process (mlflow.log_models, on in worker mode).
        assert client.get_logged_model(child.data.tags[MODEL_URI_TAG].removeprefix("models:/")).source_run_id == \
            child.info.run_id
    assert outcome.registration.version == "1"
    # Registration took the best trial's own model: no second model logged from a checkpoint.
    best = client.get_run(outcome.summary.best_run_id)
    version = client.get_model_version("fraud-rf", "1")
    assert version.source == best.data.tags[MODEL_URI_TAG]


def test_worker_mode_trial_that_raises_ends_failed_with_its_error(ray_address, make_cfg, tracking_uri):
    overrides = ["+sweep=fraud", *SMOKE, "sweep.num_samples=2", "mlflow=worker",
                 "search_space.max_features='interval(1.5,2.5)'"]  # refused by sklearn in the trials only
    with pytest.raises(RaySweepError, match="no finished trial"):
        sweep.run(make_cfg(*overrides))
    parent, children = _sweep_runs(MlflowClient())
    assert parent.info.status == "FAILED"
    assert len(children) == 2 and {c.info.status for c in children} == {"FAILED"}
    assert all("InvalidParameterError" in c.data.tags[ERROR_TAG] for c in children)


# Worker mode with two trials at once (rank-0 logging must keep them apart); driver mode logs per trial whatever
# the world size, so one trial shows it.
@pytest.mark.parametrize("mode, trials, extra", [("worker", 2, []), ("driver", 1, ["mlflow.system_metrics=true"])])
def test_two_worker_torch_trials_log_one_child_each_and_register(mode, trials, extra, ray_address, make_cfg,
                                                                 tracking_uri):
    before = _actor_processes("PreemptionWatcher")
    outcome = sweep.run(make_cfg(*TORCH_SMOKE, f"mlflow={mode}", f"sweep.num_samples={trials}", *extra))
    client = MlflowClient()
    parent, children = _sweep_runs(client)
    assert len(children) == trials
    # On a local Ray nothing preempts a node: Ray Train started no watcher process for any trial.
    assert _actor_processes("PreemptionWatcher") == before
    assert {r.info.status for r in [parent, *children]} == {"FINISHED"}
    for child in children:
        assert child.data.tags["raysweep.world_size"] == "2"
        assert set(child.data.params) == {"hidden_units", "num_layers", "dropout", "lr", "weight_decay",
                                          "batch_size", "pos_weight"}
        history = client.get_metric_history(child.info.run_id, "val_auc")
        assert sorted(m.step for m in history) == [1, 2], "rank != 0 logged too, or epochs went missing"
        assert child.data.tags["raysweep.checkpoint"]
        if extra:
            assert any(k.startswith("system/cpu_utilization") for k in child.data.metrics), "no driver-side system metrics"

    champion = client.get_model_version_by_alias("fraud-mlp", "champion")
    assert champion.run_id == outcome.summary.best_run_id
    pins = open(__import__("mlflow").artifacts.download_artifacts("models:/fraud-mlp@champion/requirements.txt")).read()
    import torch

    assert f"torch=={torch.__version__.split('+')[0]}" in pins.replace("+cpu", "")
    # The network comes with the preprocessing fitted on the training split (scikit-learn), never with Ray.
    assert "scikit-learn" in pins and "ray" not in pins
    # Loaded in this process: a fresh process loading a registered model is tested on the forest (test_sweep).
    import mlflow

    from raysweep.data import generate_fraud

    answer = mlflow.pyfunc.load_model("models:/fraud-mlp@champion").predict(
        generate_fraud(40, 0.1, 4, seed=5).drop(columns=["is_fraud"]))
    assert list(answer.columns) == ["0", "1", "label"] and len(answer) == 40
    assert 0.0 <= answer["1"].min() <= answer["1"].max() <= 1.0


def _actor_processes(class_name: str) -> set[Path]:
    """Worker processes of this session's Ray that hosted an actor of ``class_name`` (their output files)."""
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    return {f for f in logs.glob("worker-*.out") if f":actor_name:{class_name}" in f.read_text(errors="replace")}


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["trainer.num_workers=8", "trainer.cpus_per_worker=1"],
         "trainer.num_workers=8 x 1 CPU needs 8 CPUs but the Ray cluster has 2"),
        (["trainer.use_gpu=true"], "trainer.use_gpu=true needs 2 GPU (one per worker) but the Ray cluster has no GPU"),
    ],
)
def test_plans_that_cannot_fit_fail_before_any_run(overrides, fragment, ray_address, make_cfg, tracking_uri):
    with pytest.raises(RaySweepError) as err:
        sweep.run(make_cfg(*TORCH_SMOKE, *overrides))
    assert fragment in str(err.value)
    experiment = MlflowClient().get_experiment_by_name(EXPERIMENT)
    assert experiment is None or not MlflowClient().search_runs([experiment.experiment_id])
