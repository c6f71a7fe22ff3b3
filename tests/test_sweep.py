"""Real sweeps on the session's local Ray against a temporary sqlite store: runs, nesting, registry, aliases."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest
import ray
from mlflow import MlflowClient

from conftest import SMOKE, sweep_into, use_store
from raysweep import analysis, registry
from raysweep.tracking.tags import CHECKPOINT_TAG, NODE_TAG, PARENT_ROLE, ROLE_TAG, TRIAL_ID_TAG
from raysweep.tracking import tags as tag_names

pytestmark = pytest.mark.slow

EXPERIMENT = "fraud-detection"
MODEL = "fraud-rf"


def _runs(client):
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id], max_results=1000)


@pytest.fixture
def tracking_uri(module_store, monkeypatch):
    """Every test of this module reads the same sweep."""
    yield from use_store(module_store, monkeypatch)


#: What the first sweep's driver held when Tune had finished (filled by ``first_sweep``).
AFTER_TUNE: dict[str, int] = {}


@pytest.fixture(scope="module")
def first_sweep(ray_address, module_store, tmp_path_factory):
    """A 4-trial smoke sweep, run once in this process on the shared Ray."""
    import gc
    import weakref

    from ray.tune import ResultGrid

    from raysweep import sweep

    # Earlier tests in this process may have left grids behind (in cycles, or held by their fixtures): only this
    # sweep's count.
    gc.collect()
    earlier = weakref.WeakSet(o for o in gc.get_objects() if isinstance(o, ResultGrid))

    def after_training(*args, **kwargs):
        # No gc.collect(): what only the cycle collector would free is still held when the runs are read.
        AFTER_TUNE["result grids"] = sum(isinstance(o, ResultGrid) and o not in earlier for o in gc.get_objects())
        return run_after(*args, **kwargs)

    run_after = sweep.after_training
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep, "after_training", after_training)
        return sweep_into(module_store, tmp_path_factory.mktemp("ray"), "+sweep=fraud", *SMOKE)




def test_sweep_yields_one_finished_child_per_trial_nested_under_the_parent(first_sweep):
    client = MlflowClient()
    runs = _runs(client)
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == PARENT_ROLE]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and len(runs) == 5
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags[TRIAL_ID_TAG] for r in children}) == 4
    assert parent.info.run_name == first_sweep.plan.run_name

    for child in children:
        # Params are the trial's hyperparameters; metrics are the trainer's, never Ray's bookkeeping.
        assert set(child.data.params) == {"n_estimators", "max_depth", "min_samples_leaf", "max_features", "criterion"}
        assert set(child.data.metrics) == {"val_auc", "val_average_precision", "val_f1", "val_log_loss", "train_time_s"}
        history = client.get_metric_history(child.info.run_id, "val_auc")
        assert sorted(m.step for m in history) == [1, 2]
        assert child.data.tags[CHECKPOINT_TAG]
        assert child.data.tags[NODE_TAG] == ray.util.get_node_ip_address()  # written with the trial's metrics

    # The parent carries the config, the overrides, versions and commit.
    assert parent.data.params["sweep.num_samples"] == "4"
    assert parent.data.params["search_space.max_depth"] == "choice(4, 8, none)"
    assert "data.n_samples=4000" in parent.data.tags["raysweep.overrides"]
    assert parent.data.tags["raysweep.version.ray"].startswith("2.60")
    config_yaml = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/config.yaml")
    assert "registered_model: fraud-rf" in config_yaml

    # Lineage: the parent and every child record the one dataset the sweep trained on.
    inputs = [client.get_run(r.info.run_id).inputs.dataset_inputs for r in [parent, *children]]
    assert all(len(found) == 1 for found in inputs)
    assert {(i[0].dataset.name, i[0].dataset.digest, i[0].dataset.source_type) for i in inputs} == {
        ("fraud", inputs[0][0].dataset.digest, "code")}
    assert {t.key: t.value for t in inputs[0][0].tags}[tag_names.TASK_TAG] == "binary"


def test_tunes_saved_state_keeps_each_finished_trials_running_averages_as_plain_lists(first_sweep):
    """The driver shrinks what Tune keeps of every finished trial (raysweep.memory.DriverMemory), and a resume reads
    the sweep's state back from this file."""
    from pathlib import Path

    states = sorted(Path(first_sweep.plan.run_dir).glob("experiment_state-*.json"))
    trials = json.loads(states[-1].read_text())["trial_data"]
    assert len(trials) == len(first_sweep.summary.trials)
    for _, metadata in trials:
        windows = json.loads(metadata)["metric_n_steps"]
        assert windows and all(isinstance(values, list) for by_n in windows.values() for values in by_n.values())


def test_tunes_result_grid_is_gone_once_each_trials_outcome_is_read(first_sweep):
    """It holds every trial's history as a DataFrame (~13 MiB per 1,000 trials); the sweep keeps TrialOutcomes."""
    assert AFTER_TUNE == {"result grids": 0}


def test_parent_names_the_best_child_which_tops_search_runs(first_sweep):
    client = MlflowClient()
    parent = client.get_run(first_sweep.summary.parent_run_id)
    trials = mlflow.search_runs(
        experiment_names=[EXPERIMENT],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        order_by=["metrics.val_auc DESC"],
    )
    # Each trial counts with its registered checkpoint's value (raysweep.model_value), not the metric's last one.
    values = analysis.model_values(trials, "val_auc")
    top = trials.loc[values.idxmax()]
    assert parent.data.tags[tag_names.BEST_RUN_TAG] == top["run_id"]
    assert parent.data.metrics["best_val_auc"] == pytest.approx(values.max())
    assert parent.data.params["best.max_depth"] == top["params.max_depth"]


def test_best_child_is_registered_with_both_aliases(first_sweep):
    client = MlflowClient()
    best = first_sweep.summary.best_run_id
    champion = client.get_model_version_by_alias(MODEL, "champion")
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    assert str(champion.version) == str(challenger.version) == "1"
    assert champion.run_id == best
    assert champion.tags[tag_names.VERSION_PARENT_TAG] == first_sweep.summary.parent_run_id
    assert float(champion.tags[tag_names.VALUE_TAG]) == pytest.approx(first_sweep.summary.best_value)
    assert "val_auc=" in champion.description
    # Logging the model re-opened the best child; it is FINISHED again.
    assert client.get_run(best).info.status == "FINISHED"

    requirements = mlflow.artifacts.download_artifacts(f"models:/{MODEL}@champion/requirements.txt")
    pins = open(requirements).read().split()
    import sklearn

    assert f"scikit-learn=={sklearn.__version__}" in pins
    assert not any(p.startswith(("torch", "ray", "hydra")) for p in pins)


def test_reanalysis_adds_no_version(first_sweep):
    client = MlflowClient()
    parent = client.get_run(first_sweep.summary.parent_run_id)
    again = registry.register_best(client, parent, analysis.summarize(client, parent))
    assert again.version == "1" and not again.created
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1
    # The command line does the same on the latest sweep of the experiment.
    assert analysis.main(["--experiment", EXPERIMENT]) == 0
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1


def test_champion_loads_in_a_fresh_process_and_predicts_probabilities(first_sweep, cli_env):
    code = (
        "import json, mlflow, pandas as pd\n"
        "from raysweep.data import generate_fraud\n"
        "X = generate_fraud(50, 0.1, 4, seed=5).drop(columns=['is_fraud'])\n"
        "p = mlflow.pyfunc.load_model('models:/fraud-rf@champion').predict(X)\n"
        "q = p[['0', '1']].to_numpy()\n"
        "print(json.dumps({'columns': list(p.columns), 'rows': len(p), 'min': float(q.min()), 'max': float(q.max()),"
        " 'labels': sorted(set(map(int, p['label'])))}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=cli_env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # One probability column per class, named by the label, and the most probable label.
    assert (result["columns"], result["rows"]) == (["0", "1", "label"], 50)
    assert 0.0 <= result["min"] <= result["max"] <= 1.0 and set(result["labels"]) <= {0, 1}

