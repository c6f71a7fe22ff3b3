"""The promotion path on real sweeps: the gate, rollback, copies, the ensemble, the uv files, serving, reproduce.

One module store: a strong forest (fraud-rf v1), a weak one (v2), a small XGBoost sweep (fraud-xgb), a tiny MLP
logged from a Train-style checkpoint (fraud-mlp; no Ray Train worker group needed), and the ensemble of the
forest and XGBoost champions (fraud-ensemble, conf/ensemble/fraud.yaml). Each test sets the aliases it needs.
Every model answers the task's table: a probability column per class ("0", "1") and "label".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import SMOKE, STRONG, WEAK, serve_and_post, sweep_into, use_store
from raysweep import analysis, ensemble, packaging, predictions, promotion, registry
from raysweep.errors import RaySweepError
from raysweep.tracking import tags as tag_names

pytestmark = pytest.mark.slow

RF, XGB, MLP, ENSEMBLE = "fraud-rf", "fraud-xgb", "fraud-mlp", "fraud-ensemble"
XGB_SMOKE = ["+sweep=fraud_xgb", "data.n_samples=4000", "trainer.iterations=2", "sweep.num_samples=1",
             "search_space.n_estimators=20", "cluster.verbose=0"]
CLASSES = (0, 1)


@pytest.fixture
def tracking_uri(module_store, monkeypatch):
    """Every test of this module reads the same models."""
    yield from use_store(module_store, monkeypatch)


@pytest.fixture(scope="module")
def models(ray_address, module_store, tmp_path_factory):
    """fraud-rf v1 (strong) and v2 (weak), fraud-xgb v1, fraud-mlp v1, fraud-ensemble v1; and the sweeps' data."""
    storage = tmp_path_factory.mktemp("ray")
    strong = sweep_into(module_store, storage, "+sweep=fraud", *SMOKE, *STRONG)
    sweep_into(module_store, storage, "+sweep=fraud", *SMOKE, *WEAK)
    sweep_into(module_store, storage, *XGB_SMOKE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", module_store)
        mlflow.set_tracking_uri(module_store)
        client = MlflowClient(module_store)
        dataset = analysis.validation_data(client, client.get_run(strong.summary.parent_run_id))
        _register_tiny_mlp(client, dataset, tmp_path_factory.mktemp("mlp"))
        spec = ensemble.load_spec("fraud")  # conf/ensemble/fraud.yaml: the fraud-rf and fraud-xgb champions
        assert spec.registered_model == ENSEMBLE
        ensemble.build(client, ENSEMBLE, spec.members)
    return dataset


def _register_tiny_mlp(client, dataset, folder: Path) -> None:
    """One epoch of a small MLP, saved and logged exactly as the torch trainer's rank 0 does."""
    import torch

    from raysweep.trainables import _mlp, torch_mlp

    torch.manual_seed(0)
    X = dataset.X_train.to_numpy(dtype="float32")
    params = {"hidden_units": 8, "num_layers": 1, "dropout": 0.0}
    model = _mlp.build(X.shape[1], params, X.mean(axis=0), X.std(axis=0))
    loader = torch.utils.data.DataLoader(_mlp.tensors(X, dataset.y_train), batch_size=256, shuffle=True)
    _mlp.train_epoch(model, loader, _mlp.optimiser(model, params), _mlp.loss_function(params, "cpu"), "cpu")
    torch_mlp._save(model, params, dataset, folder)
    with mlflow.start_run(run_name="tiny-mlp"):
        info = torch_mlp.log_model(folder)
    mv = mlflow.register_model(info.model_uri, MLP)
    client.set_registered_model_alias(MLP, registry.CHAMPION, mv.version)


def _aliases(client, champion: str, challenger: str) -> None:
    client.set_registered_model_alias(RF, registry.CHAMPION, champion)
    client.set_registered_model_alias(RF, registry.CHALLENGER, challenger)


def _auc(version: str, dataset) -> float:
    """The version's ROC AUC on the test split: what the gate compares."""
    return registry.evaluate(f"models:/{RF}/{version}", dataset)["test_auc"]


def _cli(*args: str, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), **(env or {})}
    return subprocess.run([sys.executable, "-m", "raysweep", *args], env=env, capture_output=True, text=True,
                          timeout=300)


# --- the gate -------------------------------------------------------------------------------------------------


def test_cli_gate_promotes_a_better_challenger_and_records_the_decision(models):
    client = MlflowClient()
    _aliases(client, champion="2", challenger="1")
    out = _cli("promote", RF, "--by", "alice", "--reason", "nightly gate")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "gate passed" in out.stdout

    assert registry.champion_version(client, RF) == "1"
    table = registry.versions(client, RF).set_index("version")  # what promotion.ipynb shows
    assert table.loc[1, "aliases"] == "challenger, champion" and table.loc[2, "aliases"] == ""
    v1 = client.get_model_version(RF, "1")
    tags = v1.tags
    assert tags[tag_names.VALIDATION_STATUS_TAG] == "passed"
    assert tags["validation_metric"] == "test_auc" and tags["validation_champion_version"] == "2"
    # Both were scored on the sweep's own test split, which no trial saw: the champion's value is what the test
    # computes on it, and the challenger's is the test score its registration recorded.
    assert float(tags["validation_champion_value"]) == _auc("2", models)
    assert v1.tags[tag_names.TEST_METRIC_TAG] == "test_auc"
    assert float(tags["validation_challenger_value"]) == float(v1.tags[tag_names.TEST_VALUE_TAG])
    assert float(tags["validation_challenger_value"]) > float(tags["validation_champion_value"])
    decided = datetime.fromisoformat(tags["validation_date"])
    assert abs((datetime.now(timezone.utc) - decided).total_seconds()) < 600
    assert tags["validation_by"] == "alice" and tags["validation_reason"] == "nightly gate"
    assert tags["raysweep.previous_champion"] == "2" and tags["raysweep.promoted_by"] == "alice"
    assert "val_auc=" in v1.description and "gate passed" in v1.description.splitlines()[-1]


def test_gate_keeps_the_champion_against_a_worse_challenger(models):
    client = MlflowClient()
    _aliases(client, champion="1", challenger="2")
    decision = promotion.gate(client, RF, models, by="ci")
    assert decision.status == "failed" and not decision.promoted
    assert registry.champion_version(client, RF) == "1"
    tags = client.get_model_version(RF, "2").tags
    assert tags[tag_names.VALIDATION_STATUS_TAG] == "failed"
    assert float(tags["validation_challenger_value"]) == decision.challenger_value == _auc("2", models)
    assert decision.challenger_value < decision.champion_value
    assert "gate failed" in client.get_model_version(RF, "2").description


def test_an_equal_challenger_is_not_better_and_a_margin_is_required(models):
    client = MlflowClient()
    # The same model registered again (a copy within the registry) scores exactly the same.
    twin = promotion.copy_version(client, f"models:/{RF}/1", RF)
    _aliases(client, champion="1", challenger=twin.version)
    decision = promotion.gate(client, RF, models, by="ci")
    assert decision.challenger_value == decision.champion_value
    assert decision.status == "failed" and registry.champion_version(client, RF) == "1"

    _aliases(client, champion="2", challenger="1")
    gain = _auc("1", models) - _auc("2", models)
    assert promotion.gate(client, RF, models, margin=gain + 1e-6, by="ci").status == "failed"
    assert registry.champion_version(client, RF) == "2"
    assert promotion.gate(client, RF, models, margin=gain / 2, by="ci").status == "passed"
    assert registry.champion_version(client, RF) == "1"


def test_gate_never_replaces_a_champion_a_sweep_moved_while_it_scored(models, monkeypatch):
    from raysweep import evaluation

    client = MlflowClient()
    _aliases(client, champion="2", challenger="1")
    before = client.get_model_version(RF, "1").description
    score = evaluation.evaluate

    def scored_while_a_sweep_registers(*args, **kwargs):
        # A sweep finishing now moves @champion: MLflow has no compare-and-set that could stop it.
        client.set_registered_model_alias(RF, registry.CHAMPION, "1")
        return score(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", scored_while_a_sweep_registers)
    with pytest.raises(RaySweepError, match="moved from v2 to v1 while the gate scored the models; run promote again"):
        promotion.gate(client, RF, models, force=True, by="ci")
    assert registry.champion_version(client, RF) == "1"
    assert client.get_model_version(RF, "1").description == before  # no decision written


def test_force_promotes_a_worse_challenger_and_rollback_restores_the_champion(models):
    client = MlflowClient()
    _aliases(client, champion="1", challenger="2")
    decision = promotion.gate(client, RF, models, force=True, by="bob", reason="hotfix")
    assert decision.status == "forced" and registry.champion_version(client, RF) == "2"
    assert client.get_model_version(RF, "2").tags[tag_names.VALIDATION_STATUS_TAG] == "forced"

    out = _cli("rollback", RF, "--by", "carol", "--reason", "forced model misbehaves")
    assert out.returncode == 0, out.stderr[-2000:]
    assert registry.champion_version(client, RF) == "1"
    v1 = client.get_model_version(RF, "1")
    assert v1.tags["raysweep.promoted_by"] == "carol"
    assert "rollback" in v1.description.splitlines()[-1]


def test_stage_only_model_gets_one_line_and_nothing_is_written(models):
    client = MlflowClient()
    source = client.get_model_version(RF, "1")
    client.create_registered_model("fraud-legacy")
    for version, stage in (("1", "Production"), ("2", "Staging")):
        client.create_model_version("fraud-legacy", source.source, model_id=source.model_id)
        client.transition_model_version_stage("fraud-legacy", version, stage)
    out = _cli("promote", "fraud-legacy")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert "only registry stages (v1 Production, v2 Staging)" in lines[0]
    assert "set_registered_model_alias('fraud-legacy', 'champion', VERSION)" in lines[0]
    for version in ("1", "2"):
        assert not any(k.startswith("validation_") for k in client.get_model_version("fraud-legacy", version).tags)
    with pytest.raises(RaySweepError, match="only registry stages"):
        registry.rollback(client, "fraud-legacy", by="x")


def test_gate_refuses_what_it_cannot_decide_and_writes_nothing(models):
    client = MlflowClient()
    source = client.get_model_version(RF, "1")
    client.create_registered_model("fraud-lonely")
    client.create_model_version("fraud-lonely", source.source, model_id=source.model_id)
    client.set_registered_model_alias("fraud-lonely", registry.CHAMPION, "1")
    with pytest.raises(RaySweepError, match="fraud-lonely has no @challenger"):
        promotion.gate(client, "fraud-lonely", models, by="ci")
    client.set_registered_model_alias("fraud-lonely", registry.CHALLENGER, "1")
    with pytest.raises(RaySweepError, match="already @champion"):
        promotion.gate(client, "fraud-lonely", models, by="ci")
    version = client.get_model_version("fraud-lonely", "1")
    assert not any(k.startswith("validation_") for k in version.tags) and not version.description


# --- copies -----------------------------------------------------------------------------------------------------


def test_copy_within_a_registry_and_to_another_registry(models, tmp_path, tracking_uri):
    client = MlflowClient()
    _aliases(client, champion="1", challenger="2")
    src = client.get_model_version(RF, "1")
    expected = mlflow.pyfunc.load_model(f"models:/{RF}/1").predict(models.X_val)

    staging = promotion.copy_version(client, f"models:/{RF}@champion", "fraud-rf-staging")
    assert staging.source == f"models:/{RF}/1"  # the same artifacts, resolved through the source version
    assert staging.tags[tag_names.COPIED_FROM_TAG] == f"models:/{RF}/1"
    assert not any(k.startswith(("validation_", "raysweep.promot", "raysweep.previous")) for k in staging.tags)
    assert staging.tags[tag_names.VERSION_PARENT_TAG] == src.tags[tag_names.VERSION_PARENT_TAG]
    client.set_registered_model_alias("fraud-rf-staging", "candidate", staging.version)

    prod_uri = f"sqlite:///{tmp_path / 'prod.db'}"
    out = _cli("copy", "models:/fraud-rf-staging@candidate", "fraud-rf-prod", "--registry-uri", prod_uri)
    assert out.returncode == 0, out.stderr[-2000:]
    prod = MlflowClient(prod_uri, prod_uri)
    copy = prod.get_model_version("fraud-rf-prod", "1")
    assert copy.tags[tag_names.COPIED_FROM_TAG] == f"models:/fraud-rf-staging/{staging.version}"
    assert copy.tags[tag_names.COPIED_FROM_REGISTRY_TAG] == mlflow.get_tracking_uri()
    assert copy.tags["raysweep.source_run_id"] == src.run_id
    # The files were logged into the other store as a LoggedModel of its own.
    assert copy.source.startswith("models:/m-")
    logged = prod.get_logged_model(copy.source.removeprefix("models:/"))
    assert logged.tags[tag_names.COPIED_FROM_TAG] == copy.tags[tag_names.COPIED_FROM_TAG]
    try:
        mlflow.set_tracking_uri(prod_uri)
        served = mlflow.pyfunc.load_model("models:/fraud-rf-prod/1").predict(models.X_val)
    finally:
        mlflow.set_tracking_uri(tracking_uri)
    pd.testing.assert_frame_equal(served, expected)


# --- the ensemble ------------------------------------------------------------------------------------------------


def test_ensemble_averages_its_members_and_labels_at_the_threshold(models):
    client = MlflowClient()
    version = client.get_model_version_by_alias(ENSEMBLE, registry.CHAMPION)
    members = dict(item.split("=", 1) for item in version.tags[tag_names.MEMBERS_TAG].split(","))
    assert set(members) == {"random_forest", "xgboost"}
    assert members["xgboost"].startswith(f"models:/{XGB}/")

    model = mlflow.pyfunc.load_model(f"models:/{ENSEMBLE}@champion")
    assert {p.name: p.default for p in model.metadata.get_params_schema().params} == {"threshold": 0.5}
    X = models.X_val
    expected = np.mean([predictions.from_frame("binary", CLASSES, mlflow.pyfunc.load_model(uri).predict(X))
                        for uri in members.values()], axis=0)
    default = model.predict(X)
    assert list(default.columns) == ["0", "1", "label"]
    np.testing.assert_allclose(default[["0", "1"]], expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(default["label"], (expected[:, 1] >= 0.5).astype(int))
    low = model.predict(X, params={"threshold": 0.05})
    np.testing.assert_array_equal(low["1"], default["1"])
    np.testing.assert_array_equal(low["label"], (expected[:, 1] >= 0.05).astype(int))
    assert low["label"].sum() > default["label"].sum(), "the threshold moved no label"
    # Columns in another order reach the members by name.
    np.testing.assert_allclose(model.predict(X[X.columns[::-1]])["1"], expected[:, 1], atol=1e-12)
    uri = f"models:/{ENSEMBLE}@champion"
    assert float(version.tags[tag_names.VALUE_TAG]) == pytest.approx(
        registry.evaluate(uri, models, "val")["val_auc"], abs=1e-12)
    assert version.tags[tag_names.TEST_METRIC_TAG] == "test_auc"
    assert float(version.tags[tag_names.TEST_VALUE_TAG]) == pytest.approx(
        registry.evaluate(uri, models)["test_auc"], abs=1e-12)


# --- environment in the model ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, pins", [
    (RF, ("scikit-learn", "skops")), (XGB, ("scikit-learn", "xgboost")), (MLP, ("torch",)),
    (ENSEMBLE, ("mlflow", "scikit-learn", "xgboost")),  # the members' pins too
])
def test_every_logged_model_carries_pins_and_the_projects_uv_files(models, model, pins, tmp_path):
    from importlib.metadata import version

    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{model}@champion", dst_path=str(tmp_path)))
    root = packaging.project_root()
    for name in packaging.PROJECT_FILES:
        assert (folder / name).read_bytes() == (root / name).read_bytes(), name
    assert (folder / ".python-version").read_text().strip() == "3.11"
    lock = (folder / "uv.lock").read_text()
    assert f'name = "mlflow"\nversion = "{mlflow.__version__}"' in lock
    requirements = (folder / "requirements.txt").read_text().split()
    for pkg in pins:
        assert f"{pkg}=={version(pkg)}" in requirements
    assert not any(r.startswith(("ray", "hydra", "raysweep")) for r in requirements)
    if model == RF:
        # The files alone are a consistent uv project: `uv sync --frozen --no-install-project` can restore it.
        # uv is required, never skipped over (.ci/run installs it).
        uv = os.environ.get("UV") or shutil.which("uv")
        assert uv, "uv is needed to check the logged uv project; install it (.ci/run does)"
        check = subprocess.run([uv, "lock", "--check", "--offline"], cwd=folder, capture_output=True, text=True,
                               timeout=120)
        assert check.returncode == 0, check.stderr[-2000:]


# --- serving -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, params", [(RF, None), (MLP, None), (ENSEMBLE, {"threshold": 0.9})])
def test_served_model_answers_invocations_like_the_loaded_model(models, model, params, tmp_path):
    uri = f"models:/{model}@champion"
    X = models.X_val.head(20)
    body = {"dataframe_split": json.loads(X.to_json(orient="split", index=False))}
    if params:
        body["params"] = params
    answer = serve_and_post(uri, body, tmp_path)
    local = mlflow.pyfunc.load_model(uri).predict(X, params=params)
    # Every model answers its table as one record per row: "0", "1" and "label".
    served = pd.DataFrame(answer)
    assert list(served.columns) == list(local.columns) == ["0", "1", "label"]
    assert list(served["label"]) == list(local["label"])
    np.testing.assert_allclose(served[["0", "1"]], local[["0", "1"]], atol=1e-6)
    if params:
        assert list(local["label"]) == list((local["1"] >= 0.9).astype(int))


# --- reproduce ---------------------------------------------------------------------------------------------------


def test_reproduce_retrains_the_champion_to_its_recorded_metric(models):
    client = MlflowClient()
    _aliases(client, champion="1", challenger="2")
    out = _cli("reproduce", f"models:/{RF}@champion")
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    run_id = client.get_model_version(RF, "1").run_id
    recorded = client.get_run(run_id).data.metrics["val_auc"]
    row = next(line for line in out.stdout.splitlines() if line.startswith("val_auc"))
    assert row.split()[1:3] == [f"{recorded:.15g}", f"{recorded:.15g}"]
    assert "result      match" in out.stdout

    from raysweep.reproduce import reproduce

    xgb = reproduce(client, f"models:/{XGB}/1")  # trainer=estimator: boosting rounds added per iteration
    assert xgb.matches and xgb.step == 2
    assert xgb.recorded == {k: client.get_run(xgb.run_id).data.metrics[k] for k in xgb.recorded}
    assert set(xgb.reproduced) == {"val_auc", "val_average_precision", "val_f1", "val_log_loss"}
