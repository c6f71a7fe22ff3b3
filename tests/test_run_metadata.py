"""Run metadata users expect from MLflow's own Ray integration, in both logging modes: the user's tags on every
run, each trial's Tune folder as its run's artifacts, a classifier's plots on the best trial, MLFLOW_EXPERIMENT_ID."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import SMOKE, sweep_into, use_store
from raysweep import cli, evaluation
from raysweep.errors import RaySweepError
from raysweep.plan import make_plan
from raysweep.tracking import queries
from raysweep.tracking.lifecycle import save_folder
from raysweep.tracking.metadata import user_tags
from raysweep.tracking.tags import TRIAL_ID_TAG

#: What a user adds to a sweep: their tags, and each trial's folder uploaded.
METADATA = ["mlflow.tags={team: risk, owner: ana}", "mlflow.save_artifact=true"]
USER_TAGS = {"team": "risk", "owner": "ana"}
#: The experiment the driver-mode sweep names only by MLFLOW_EXPERIMENT_ID.
BY_ID = "metadata-by-id"
PLOTS = {f"{evaluation.PLOTS_DIR}/{name}" for name in
         (evaluation.CONFUSION_MATRIX, evaluation.ROC_CURVE, evaluation.PR_CURVE)}


@pytest.fixture
def tracking_uri(module_store, monkeypatch):
    """Every test of this module reads the same two sweeps."""
    yield from use_store(module_store, monkeypatch)


@pytest.fixture(scope="module")
def sweeps(ray_address, module_store, tmp_path_factory):
    """One sweep per logging mode with tags and saved trial folders: driver mode into an experiment named only by
    MLFLOW_EXPERIMENT_ID, then worker mode into the sweep file's experiment (the newest sweep of the store)."""
    storage = tmp_path_factory.mktemp("ray")
    by_id = MlflowClient(module_store).create_experiment(BY_ID)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        mp.setenv("MLFLOW_EXPERIMENT_ID", by_id)
        driver = sweep_into(module_store, storage, "+sweep=fraud", *SMOKE, *METADATA)
        mp.delenv("MLFLOW_EXPERIMENT_ID")
        worker = sweep_into(module_store, storage, "+sweep=fraud", *SMOKE, *METADATA, "mlflow=worker")
    return {"driver": driver, "worker": worker, "experiment_id": by_id}


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


# --- One sweep per mode -----------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("mode", ["driver", "worker"])
def test_user_tags_and_trial_folders_on_every_run_and_plots_on_the_best(mode, sweeps, module_store):
    client = MlflowClient(module_store)
    summary = sweeps[mode].summary
    parent = client.get_run(summary.parent_run_id)
    assert USER_TAGS.items() <= parent.data.tags.items()
    children = queries.children(client, summary.experiment_id, summary.parent_run_id)
    assert len(children) == 4
    for child in children:
        assert USER_TAGS.items() <= child.data.tags.items(), child.info.run_name
        root = _artifacts(client, child.info.run_id)
        # The trial's Tune folder, as MLflowLoggerCallback(save_artifact=True) uploads it; no checkpoint.
        assert {"params.json", "result.json", "progress.csv"} <= root, root
        assert not [p for p in root if p.startswith("checkpoint_")]
        params = json.loads(Path(client.download_artifacts(child.info.run_id, "params.json")).read_text())
        assert str(params["n_estimators"]) == child.data.params["n_estimators"]
        results = Path(client.download_artifacts(child.info.run_id, "result.json")).read_text().splitlines()
        assert [json.loads(line)["trial_id"] for line in results] == [child.data.tags[TRIAL_ID_TAG]] * 2
        plots = _artifacts(client, child.info.run_id, evaluation.PLOTS_DIR)
        # A binary classifier: confusion matrix, ROC and PR curves of the validation split, on the best trial only.
        assert plots == (PLOTS if child.info.run_id == summary.best_run_id else set()), child.info.run_name


@pytest.mark.slow
def test_mlflow_experiment_id_names_the_sweeps_experiment_and_analyse_follows_it(sweeps, module_store, monkeypatch,
                                                                               capsys):
    driver, worker = sweeps["driver"].summary, sweeps["worker"].summary
    assert driver.experiment_id == sweeps["experiment_id"]
    assert MlflowClient(module_store).get_experiment(worker.experiment_id).name == "fraud-detection"
    # `raysweep analyse` takes the experiment MLFLOW_EXPERIMENT_ID names, not the newest sweep of the store.
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", sweeps["experiment_id"])
    assert cli.analyse(["--no-register"]) == 0
    assert f"parent run  {driver.parent_run_id}" in capsys.readouterr().out
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID")
    assert cli.analyse(["--no-register"]) == 0
    assert f"parent run  {worker.parent_run_id}" in capsys.readouterr().out


# --- Pure: no Ray -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "tags, expected",
    [
        ({}, {}),
        (None, {}),
        ({"team": "risk", "owner": "ana"}, {"team": "risk", "owner": "ana"}),
        ({"cost_center": 42, "pii": False, "note": None}, {"cost_center": "42", "pii": "False", "note": ""}),
        ({"mlflow_user": "x", "ray": "y"}, {"mlflow_user": "x", "ray": "y"}),  # prefixes, not substrings
        ({"mlflow.note.content": "x"}, "'mlflow.note.content' is reserved"),
        ({"mlflow.parentRunId": "x"}, "'mlflow.parentRunId' is reserved"),
        ({"team": "risk", "raysweep.sweep": "x"}, "'raysweep.sweep' is reserved"),
        ({"config.lr": "x"}, "'config.lr' is reserved"),
        ({"trial_name": "x"}, "'trial_name' is reserved"),
    ],
)
def test_user_tags(tags, expected):
    if isinstance(expected, str):
        with pytest.raises(RaySweepError, match=expected) as error:
            user_tags(tags)
        assert "\n" not in str(error.value) and "mlflow.tags" in str(error.value)
    else:
        assert user_tags(tags) == expected


def test_reserved_tag_keys_are_refused_by_the_plan(make_cfg):
    with pytest.raises(RaySweepError, match=r"^mlflow.tags key 'raysweep.role' is reserved"):
        make_plan(make_cfg("+sweep=fraud", "mlflow.tags={team: risk, raysweep.role: x}"))


def test_mlflow_experiment_id_resolves_to_its_experiment(make_cfg, tracking_uri, monkeypatch):
    client = MlflowClient(tracking_uri)
    mine = client.create_experiment("mine")
    other = client.create_experiment("other")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    assert make_plan(make_cfg("+sweep=fraud")).experiment_name == "fraud-detection"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", mine)
    # The id wins over the sweep file's experiment (as MLFLOW_EXPERIMENT_NAME does)...
    assert make_plan(make_cfg("+sweep=fraud")).experiment_name == "mine"
    assert queries.env_experiment(client, None) == "mine"
    # An override naming the experiment wins: mlflow.set_experiment in a notebook sets the variable unasked.
    explicit = ["mlflow.experiment_name=churn"]
    assert make_plan(make_cfg("+sweep=fraud", *explicit), explicit).experiment_name == "churn"
    assert make_plan(make_cfg("+sweep=fraud", "sweep.num_samples=2"), ["sweep.num_samples=2"]).experiment_name == "mine"
    # ... and MLFLOW_EXPERIMENT_NAME over the id, as in MLflow, when it names no other experiment.
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    assert make_plan(make_cfg("+sweep=fraud")).experiment_name == "mine"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "new-one")
    assert make_plan(make_cfg("+sweep=fraud")).experiment_name == "new-one"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "other")
    with pytest.raises(RaySweepError, match=f"^MLFLOW_EXPERIMENT_ID={mine} but MLFLOW_EXPERIMENT_NAME='other' is "
                                            f"experiment {other}; unset one of them$"):
        make_plan(make_cfg("+sweep=fraud"))
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    client.delete_experiment(other)
    for unknown in ("987654", "not-an-id", other):
        monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", unknown)
        with pytest.raises(RaySweepError, match=f"^MLFLOW_EXPERIMENT_ID={unknown} names no active experiment"):
            make_plan(make_cfg("+sweep=fraud"))


def test_a_trial_folder_is_saved_without_checkpoints(tracking_uri, tmp_path):
    client = MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("folders")).info.run_id
    folder = tmp_path / "train_abc_00000"
    (folder / "checkpoint_000001").mkdir(parents=True)
    (folder / "checkpoint_000001" / "model.pkl").write_bytes(b"0" * 100)
    (folder / "logs").mkdir()
    (folder / "logs" / "events.txt").write_text("x")
    for name in ("params.json", "result.json", "progress.csv"):
        (folder / name).write_text("{}")
    assert save_folder(client, run_id, str(folder)) == ["logs", "params.json", "progress.csv", "result.json"]
    assert _artifacts(client, run_id) == {"logs", "params.json", "progress.csv", "result.json"}
    assert _artifacts(client, run_id, "logs") == {"logs/events.txt"}
    assert save_folder(client, run_id, str(tmp_path / "gone")) == []


@pytest.mark.parametrize("classes", [("No", "Yes"), (3, 5, 7)], ids=["binary", "multiclass"])
def test_classifier_figures(classes):
    rng = np.random.default_rng(0)
    y = np.resize(np.arange(len(classes)), 60)
    proba = rng.dirichlet(np.ones(len(classes)), len(y))
    figures = evaluation.classifier_figures(classes, y, proba)
    assert set(figures) == {evaluation.CONFUSION_MATRIX, evaluation.ROC_CURVE, evaluation.PR_CURVE}
    # Every true row counted once; one curve per class (multiclass, one vs rest) or of the positive class (binary).
    matrix = figures[evaluation.CONFUSION_MATRIX].axes[0].images[0].get_array()
    assert matrix.shape == (len(classes),) * 2 and matrix.sum() == len(y)
    curves = 1 if len(classes) == 2 else len(classes)
    for name in (evaluation.ROC_CURVE, evaluation.PR_CURVE):
        labels = [line.get_label() for line in figures[name].axes[0].get_lines()
                  if not line.get_label().startswith("_")]
        assert len(labels) == curves and labels[0].startswith(str(classes[-1] if curves == 1 else classes[0]))


def test_drawing_that_fails_only_warns(tracking_uri, caplog):
    from raysweep.data import load

    client = MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("plots")).info.run_id
    dataset = load({"n_samples": 400})
    assert evaluation.log_classifier_plots(client, run_id, "models:/m-does-not-exist", dataset) == []
    assert "no classifier plots stored" in caplog.text
    assert not _artifacts(client, run_id)
