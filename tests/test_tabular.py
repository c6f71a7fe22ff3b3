"""Real tabular data end to end: CSVs with string targets, string and categorical columns with gaps, multiclass and
regression targets, through the built-in families and trainer=estimator; the registered champion served by
``mlflow models serve`` answering raw rows; the test metric on the version; the answer's table itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import serve_and_post, sweep_into, use_store
from raysweep import analysis, evaluation, predictions, promotion, registry, tabular
from raysweep.tracking import tags as tag_names

# --- the answer's table -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "classes", "prediction", "columns", "labels"),
    [
        ("binary", ("No", "Yes"), [0.2, 0.5, 0.9], ["No", "Yes", "label"], ["No", "Yes", "Yes"]),
        ("binary", (0, 1), [[0.7, 0.3], [0.1, 0.9]], ["0", "1", "label"], [0, 1]),
        ("binary", (False, True), [[0.7], [0.2]], ["False", "True", "label"], [True, False]),
        ("multiclass", ("cat", "dog", "eel"), [[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]], ["cat", "dog", "eel", "label"],
         ["dog", "cat"]),
        ("multiclass", (1, 2, 3), [[0.1, 0.1, 0.8]], ["1", "2", "3", "label"], [3]),
        ("regression", (), [1.5, -2.0], ["prediction"], None),
    ],
)
def test_to_frame_names_a_column_per_class_and_labels_rows_with_the_users_labels(task, classes, prediction, columns,
                                                                               labels):
    frame = predictions.to_frame(task, classes, prediction)
    assert list(frame.columns) == columns
    if labels is not None:
        assert list(frame["label"]) == labels
    back = predictions.from_frame(task, classes, frame)
    expected = np.asarray(prediction, dtype=float)
    if task == "binary" and (expected.ndim == 1 or expected.shape[1] == 1):
        expected = np.column_stack([1 - expected.reshape(-1), expected.reshape(-1)])
    np.testing.assert_allclose(back, expected)


def test_a_binary_threshold_moves_labels_never_probabilities():
    low = predictions.to_frame("binary", ("No", "Yes"), [0.2, 0.4], threshold=0.3)
    assert list(low["label"]) == ["No", "Yes"] and list(low["Yes"]) == [0.2, 0.4]


@pytest.mark.parametrize(
    ("task", "classes", "answer", "fragment"),
    [
        ("multiclass", ("a", "b", "c"), np.zeros((2, 2)), "an (n, 3) probability matrix"),
        ("regression", (), np.zeros((2, 2)), "is (n,) values"),
        ("binary", ("No", "Yes"), pd.DataFrame({"x": ["a", "b"]}), "expected ['No', 'Yes', 'label']"),
        # raysweep's table of other classes (an ensemble member trained on another target): never read by position.
        ("binary", ("no", "yes"), pd.DataFrame({"fraud": [0.4], "ok": [0.6], "label": ["ok"]}),
         "a model answers the classes ['fraud', 'ok'], not the data's ['no', 'yes']"),
    ],
)
def test_answers_that_do_not_fit_the_task_are_refused(task, classes, answer, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        predictions.from_frame(task, classes, answer)


@pytest.mark.parametrize("classes", [("label", "other"), (1, "1")])
def test_labels_that_would_clash_as_column_names_are_refused(classes):
    with pytest.raises(ValueError, match="must print distinctly and none may be 'label'"):
        predictions.to_frame("binary", classes, [0.5])


def test_a_model_answer_without_raysweeps_columns_is_read_as_a_matrix():
    # A model logged by a user's own code (trainer=function) answering predict_proba's matrix, or its frame.
    np.testing.assert_allclose(predictions.from_frame("binary", (0, 1), np.array([[0.3, 0.7]])), [[0.3, 0.7]])
    np.testing.assert_allclose(predictions.from_frame("binary", (0, 1), pd.DataFrame({"p": [0.7]})), [[0.3, 0.7]])


# --- the torch kind of a tabular model --------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "classes", "outputs"),
                         [("binary", ("No", "Yes"), 1), ("multiclass", ("a", "b", "c"), 3), ("regression", (), 1)])
def test_preprocessing_and_a_torchscript_network_answer_the_same_table(task, classes, outputs):
    import torch

    from raysweep import preprocess

    X = pd.DataFrame({"x": [1.0, None, 3.0, 4.0], "colour": ["red", None, "blue", "red"]})
    fitted = preprocess.build(X).fit(X)
    torch.manual_seed(0)
    network = torch.jit.script(torch.nn.Linear(fitted.transform(X).shape[1], outputs))
    with mlflow.start_run():
        info = tabular.log_model(task=task, classes=classes, example=X.head(2), preprocess=fitted, network=network,
                                 requirements=("torch",))
    answer = mlflow.pyfunc.load_model(info.model_uri).predict(X)
    with torch.no_grad():
        raw = network(torch.as_tensor(fitted.transform(X), dtype=torch.float32)).double()
    expected = {"binary": lambda: torch.sigmoid(raw[:, 0]), "multiclass": lambda: torch.softmax(raw, dim=1),
                "regression": lambda: raw[:, 0]}[task]().numpy()
    np.testing.assert_allclose(predictions.from_frame(task, classes, answer),
                               predictions.from_frame(task, classes, expected), atol=1e-6)
    assert list(answer.columns) == ([*classes, "label"] if classes else ["prediction"])


class _NotInstalled:
    """A model class of the user's own code: no distribution provides it."""


@pytest.mark.parametrize(("model", "needed"), [
    ("sklearn.ensemble.RandomForestClassifier", []),  # scikit-learn: always required
    ("xgboost.XGBClassifier", ["xgboost"]),
    (None, []),
])
def test_a_model_requires_the_distribution_that_provides_its_class(model, needed):
    from raysweep.trainables._estimators import import_class

    obj = import_class(model)() if model else _NotInstalled()
    assert tabular.distributions(obj) == needed


@pytest.mark.parametrize("sample_misses_one", [False, True])
def test_a_pipeline_is_logged_with_every_type_skops_must_trust_and_answers_as_fitted(sample_misses_one, monkeypatch):
    from sklearn.ensemble import RandomForestClassifier

    X = pd.DataFrame({"x": [1.0, None, 3.0, 4.0, 5.0, 6.0], "colour": ["red", None, "blue", "red", "blue", "red"]})
    y = np.array([0, 1, 0, 1, 0, 1])
    pipeline = tabular.pipeline(RandomForestClassifier(n_estimators=5, random_state=0), X).fit(X, y)
    # A forest's trees bring one set of types: its first tree lists them all, and listing never cuts the model.
    assert set(tabular.trusted_types(pipeline, sample=True)) == set(tabular.trusted_types(pipeline))
    assert len(pipeline[-1].estimators_) == 5
    if sample_misses_one:  # MLflow's load-back refuses the short list; the whole model's list is taken then
        whole = tabular.trusted_types
        monkeypatch.setattr(tabular, "trusted_types", lambda obj, sample=False: [] if sample else whole(obj))
    with mlflow.start_run():
        info = tabular.log_model(task="binary", classes=(0, 1), example=X.head(2), pipeline=pipeline)
    answer = mlflow.pyfunc.load_model(info.model_uri).predict(X)
    np.testing.assert_allclose(predictions.from_frame("binary", (0, 1), answer), pipeline.predict_proba(X))


_OWN_MODELS = """
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression


class Shrunk(ClassifierMixin, BaseEstimator):
    \"\"\"A user's own classifier: a logistic regression under another name.\"\"\"

    def __init__(self, C=1.0):
        self.C = C

    def fit(self, X, y):
        self.inner_ = LogisticRegression(C=self.C).fit(X, y)
        self.classes_ = self.inner_.classes_
        return self

    def predict_proba(self, X):
        return self.inner_.predict_proba(X)
"""


def test_the_users_own_code_behind_a_models_types_is_found(tmp_path, monkeypatch):
    (tmp_path / "own_models.py").write_text(_OWN_MODELS)
    (tmp_path / "own_pkg").mkdir()
    (tmp_path / "own_pkg" / "__init__.py").write_text("")
    (tmp_path / "own_pkg" / "models.py").write_text(_OWN_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert tabular.local_code(["sklearn.linear_model._logistic.LogisticRegression", "numpy.dtype", "json.JSONEncoder",
                               "raysweep.tabular_model.TabularModel", "__main__.Mine", "no_such_module.X"]) == []
    assert tabular.local_code(["own_models.Shrunk", "own_pkg.models.Shrunk", "own_models.Other"]) == [
        str((tmp_path / "own_models.py").resolve()), str((tmp_path / "own_pkg").resolve())]


def test_a_model_of_the_users_own_class_carries_its_code_and_loads_elsewhere(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    project = tmp_path / "project"
    project.mkdir()
    (project / "own_models.py").write_text(_OWN_MODELS)
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.delitem(sys.modules, "own_models", raising=False)
    from own_models import Shrunk

    X = pd.DataFrame({"x": np.linspace(-1, 1, 40), "colour": ["red", "blue"] * 20})
    pipeline = tabular.pipeline(Shrunk(), X).fit(X, (X.x > 0).astype(int).to_numpy())
    with mlflow.start_run():
        info = tabular.log_model(task="binary", classes=("no", "yes"), example=X.head(2), pipeline=pipeline)
    # Another process, in another folder, without the project on its path.
    script = ("import mlflow, pandas as pd; model = mlflow.pyfunc.load_model(%r); "
              "print(model.predict(pd.DataFrame({'x': [0.9], 'colour': ['red']}))['label'][0])" % info.model_uri)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "yes"
    sys.modules.pop("own_models", None)


# --- CSVs through real sweeps -----------------------------------------------------------------------------------

ROWS = 1500
SMALL = ["sweep.num_samples=2", "trainer.iterations=2", "cluster.verbose=0"]
FOREST = ["+sweep=fraud", "search_space.n_estimators='range(10, 21, 10)'", "search_space.max_depth='choice(4, 8)'"]
BOOSTING = ["+sweep=fraud_hgb", "search_space.max_iter='range(10, 21, 10)'"]


def _tables(folder: Path) -> dict[str, Path]:
    """churn.csv (Yes/No target; strings, a category-like column and numbers with gaps; an id to drop),
    plan.csv (three string classes) and spend.csv (a numeric target)."""
    rng = np.random.default_rng(7)
    n = ROWS
    tenure = rng.integers(1, 72, n).astype(float)
    charges = rng.normal(70, 20, n)
    contract = rng.choice(["monthly", "yearly", "two-year"], n, p=[0.5, 0.3, 0.2])
    region = rng.choice(["north", "south", "east", "west"], n)
    signal = -0.04 * tenure + 0.03 * (charges - 70) + 1.5 * (contract == "monthly") + 0.3 * (region == "south")
    frame = pd.DataFrame({
        "customer_id": [f"c{i:05d}" for i in range(n)],
        "tenure": np.where(rng.random(n) < 0.1, np.nan, tenure),
        "charges": charges,
        "contract": np.where(rng.random(n) < 0.1, None, contract),
        "region": region,
    })
    paths = {}
    churn = frame.assign(churn=np.where(signal + rng.logistic(size=n) * 0.5 > 0, "Yes", "No"))
    paths["churn"] = folder / "churn.csv"
    churn.to_csv(paths["churn"], index=False)
    plan = frame.assign(plan=np.select([signal < -0.8, signal < 0.6], ["basic", "plus"], "premium"))
    paths["plan"] = folder / "plan.csv"
    plan.to_csv(paths["plan"], index=False)
    spend = frame.assign(spend=20 * signal + rng.normal(size=n) + 100)
    paths["spend"] = folder / "spend.csv"
    spend.to_csv(paths["spend"], index=False)
    return paths


@pytest.fixture
def tracking_uri(module_store, monkeypatch):
    """Every test of this module reads the same sweeps."""
    yield from use_store(module_store, monkeypatch)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    return _tables(tmp_path_factory.mktemp("tables"))


def _csv(path: Path, target: str, model: str) -> list[str]:
    return ["data=csv", f"data.path={path}", f"data.target={target}", "data.drop=[customer_id]",
            f"mlflow.registered_model={model}", "mlflow.experiment_name=tabular"]


@pytest.fixture(scope="module")
def churn(ray_address, module_store, tmp_path_factory, tables):
    """A forest sweep on churn.csv (string target, string columns with gaps), registered as churn-rf; run from the
    file's folder with data.path relative to it, as the README's command is."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tables["churn"].parent)
        return sweep_into(module_store, tmp_path_factory.mktemp("ray"), *FOREST, *SMALL,
                          *_csv(Path(tables["churn"].name), "churn", "churn-rf"))


@pytest.mark.slow
def test_a_string_target_sweep_registers_a_model_of_the_raw_columns_with_its_test_metric(churn, tables):
    client = MlflowClient()
    version = client.get_model_version("churn-rf", churn.registration.version)
    assert version.tags[tag_names.METRIC_TAG] == "val_auc"
    assert version.tags[tag_names.TEST_METRIC_TAG] == "test_auc"
    # The data's path is recorded whole: read here, from another folder, the file is found.
    assert client.get_run(churn.summary.parent_run_id).data.params["data.path"] == str(tables["churn"])
    dataset = analysis.validation_data(client, client.get_run(churn.summary.parent_run_id))
    assert (dataset.task, dataset.classes) == ("binary", ("No", "Yes")) and len(dataset.y_test) == ROWS * 0.2
    # The recorded test value is the registered model's score on the test split, recomputed here.
    recorded = float(version.tags[tag_names.TEST_VALUE_TAG])
    assert recorded == pytest.approx(registry.evaluate("models:/churn-rf@champion", dataset)["test_auc"], abs=1e-12)
    assert f"test_auc={recorded:.4f}" in version.description
    model = mlflow.pyfunc.load_model("models:/churn-rf@champion")
    assert [s.name for s in model.metadata.get_input_schema().inputs] == ["tenure", "charges", "contract", "region"]
    # Logging the model added nothing to the trial's params: they are its hyperparameters.
    assert set(client.get_run(churn.summary.best_run_id).data.params) == set(churn.summary.best_params)
    assert [s.name for s in model.metadata.get_output_schema().inputs] == ["No", "Yes", "label"]


@pytest.mark.slow
def test_the_champion_served_by_mlflow_answers_raw_rows_with_gaps(churn, tmp_path):
    rows = pd.DataFrame({"tenure": [2.0, None, 60.0], "charges": [95.0, 70.0, 30.0],
                         "contract": ["monthly", None, "two-year"], "region": ["south", "west", "mars"]})
    body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    answer = serve_and_post("models:/churn-rf@champion", body, tmp_path)
    local = mlflow.pyfunc.load_model("models:/churn-rf@champion").predict(rows)
    assert [list(row) for row in answer] == [["No", "Yes", "label"]] * 3
    assert [row["label"] for row in answer] == list(local["label"])
    np.testing.assert_allclose([[row["No"], row["Yes"]] for row in answer], local[["No", "Yes"]], atol=1e-12)
    assert answer[0]["label"] == "Yes" and answer[2]["label"] == "No"  # new month-to-month churns, old contract stays


@pytest.mark.slow
def test_promote_scores_challenger_and_champion_on_the_test_split(churn, ray_address, module_store, tmp_path,
                                                                  tables):
    client = MlflowClient()
    weak = sweep_into(module_store, tmp_path / "ray", *FOREST, *SMALL, *_csv(tables["churn"], "churn", "churn-rf"),
                      "sweep.num_samples=1", "search_space.n_estimators=10", "search_space.max_depth=1")
    client.set_registered_model_alias("churn-rf", registry.CHAMPION, churn.registration.version)
    client.set_registered_model_alias("churn-rf", registry.CHALLENGER, weak.registration.version)
    decision = promotion.gate(client, "churn-rf", by="ci")
    assert decision.metric == "test_auc" and decision.status == "failed"
    recorded = {v: float(client.get_model_version("churn-rf", v).tags[tag_names.TEST_VALUE_TAG])
                for v in (decision.challenger, decision.champion)}
    assert (decision.challenger_value, decision.champion_value) == (recorded[decision.challenger],
                                                                    recorded[decision.champion])
    assert client.get_model_version("churn-rf", weak.registration.version).tags["validation_metric"] == "test_auc"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["forest", "boosting"])
def test_a_multiclass_csv_through_each_built_in_family(family, ray_address, tmp_path, tables):
    base = FOREST if family == "forest" else BOOSTING
    outcome = sweep_into(mlflow.get_tracking_uri(), tmp_path / "ray", *base, *SMALL, "sweep.metric=val_f1_macro",
                         *_csv(tables["plan"], "plan", f"plan-{family}"))
    assert set(MlflowClient().get_run(outcome.summary.best_run_id).data.metrics) >= {
        "val_accuracy", "val_f1_macro", "val_log_loss"}
    answer = mlflow.pyfunc.load_model(f"models:/plan-{family}@champion").predict(
        pd.read_csv(tables["plan"]).head(30).drop(columns=["plan", "customer_id"]))
    assert list(answer.columns) == ["basic", "plus", "premium", "label"]
    np.testing.assert_allclose(answer[["basic", "plus", "premium"]].sum(axis=1), 1.0, atol=1e-9)
    version = MlflowClient().get_model_version(f"plan-{family}", "1")
    assert version.tags[tag_names.TEST_METRIC_TAG] == "test_f1_macro"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["forest", "boosting"])
def test_a_regression_csv_through_each_built_in_family(family, ray_address, tmp_path, tables):
    base = [*FOREST, "search_space.criterion=squared_error"] if family == "forest" else BOOSTING
    outcome = sweep_into(mlflow.get_tracking_uri(), tmp_path / "ray", *base, *SMALL, "sweep.metric=val_rmse",
                         "sweep.mode=min", *_csv(tables["spend"], "spend", f"spend-{family}"))
    assert outcome.summary.best_value > 0
    frame = pd.read_csv(tables["spend"]).head(50)
    answer = mlflow.pyfunc.load_model(f"models:/spend-{family}@champion").predict(
        frame.drop(columns=["spend", "customer_id"]))
    assert list(answer.columns) == ["prediction"]
    assert np.corrcoef(answer["prediction"], frame["spend"])[0, 1] > 0.5
    tags = MlflowClient().get_model_version(f"spend-{family}", "1").tags
    assert tags[tag_names.TEST_METRIC_TAG] == "test_rmse" and float(tags[tag_names.TEST_VALUE_TAG]) > 0


@pytest.mark.slow
def test_trainer_estimator_with_xgboost_on_the_string_csv(ray_address, tmp_path, tables):
    outcome = sweep_into(mlflow.get_tracking_uri(), tmp_path / "ray", "+sweep=fraud_xgb", *SMALL,
                         "search_space.n_estimators=20", *_csv(tables["churn"], "churn", "churn-xgb"))
    client = MlflowClient()
    best = client.get_run(outcome.summary.best_run_id)
    assert sorted(m.step for m in client.get_metric_history(best.info.run_id, "val_auc")) == [1, 2]
    version = client.get_model_version("churn-xgb", outcome.registration.version)
    requirements = Path(mlflow.artifacts.download_artifacts(f"models:/churn-xgb/{version.version}/requirements.txt"))
    assert any(line.startswith("xgboost==") for line in requirements.read_text().split())
    answer = mlflow.pyfunc.load_model("models:/churn-xgb@champion").predict(
        pd.read_csv(tables["churn"]).head(10).drop(columns=["churn", "customer_id"]))
    assert list(answer.columns) == ["No", "Yes", "label"]
    assert evaluation.on_split(version.tags[tag_names.METRIC_TAG], "test") == version.tags[tag_names.TEST_METRIC_TAG]
