"""The scikit-learn API trainers outside Ray: how each kind of estimator grows, the task's metrics, the checks
before anything starts, the built-in families' class per task, and the logged model's answer."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from raysweep import predictions, trainables
from raysweep.data import from_frame
from raysweep.errors import RaySweepError
from raysweep.trainables import _estimators as engine
from raysweep.trainables import _scoring
from raysweep.trainables import estimator, sklearn

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Numbers with gaps, a string column with gaps, a category column, and three targets."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], n)
    frame = pd.DataFrame({
        "a": a,
        "b": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
        "colour": pd.Series(np.where(rng.random(n) < 0.15, None, colour), dtype=object),
        "size": pd.Categorical(rng.choice(["S", "M", "L"], n)),
    })
    signal = a + (colour == "red")
    frame["churn"] = np.where(signal + rng.normal(scale=0.5, size=n) > 0.6, "Yes", "No")
    frame["tier"] = np.digitize(signal, [-0.3, 0.6, 1.4])  # 0..3
    frame["spend"] = 10 * signal + rng.normal(size=n)
    return frame


@pytest.fixture(scope="module")
def datasets():
    frame = _frame()
    others = ["churn", "tier", "spend"]
    return {
        task: from_frame(frame, target, drop=[c for c in others if c != target], seed=0)
        for task, target in (("binary", "churn"), ("multiclass", "tier"), ("regression", "spend"))
    }


def _settings(target: str, iterations: int = 4, **params) -> dict:
    return {"target": target, "params": params, "iterations": iterations, "seed": 0, "n_jobs": 1, "logging": None}


def test_the_fixture_has_the_three_tasks(datasets):
    assert {task: d.task for task, d in datasets.items()} == {t: t for t in datasets}
    assert datasets["binary"].classes == ("No", "Yes")
    assert datasets["multiclass"].classes == (0, 1, 2, 3)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("sklearn.ensemble.RandomForestClassifier", ("n_estimators", "warm_start")),
        ("sklearn.ensemble.ExtraTreesRegressor", ("n_estimators", "warm_start")),
        ("sklearn.ensemble.GradientBoostingClassifier", ("n_estimators", "warm_start")),
        ("sklearn.ensemble.HistGradientBoostingRegressor", ("max_iter", "warm_start")),
        ("sklearn.neural_network.MLPClassifier", ("max_iter", "slices")),
        ("sklearn.linear_model.SGDRegressor", ("max_iter", "slices")),
        ("xgboost.XGBClassifier", ("n_estimators", "boost")),
        ("xgboost.XGBRegressor", ("n_estimators", "boost")),
        ("sklearn.ensemble.AdaBoostClassifier", (None, None)),  # n_estimators, but no warm_start
        ("sklearn.neighbors.KNeighborsClassifier", (None, None)),
    ],
)
def test_how_each_kind_of_estimator_grows(target, expected):
    assert engine.growth(engine.make(target, {})) == expected


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_forest_grows_to_its_size_and_reports_the_tasks_metrics(datasets, task):
    target = "sklearn.ensemble.ExtraTreesRegressor" if task == "regression" else "sklearn.ensemble.ExtraTreesClassifier"
    sizes, reports = [], []
    for i, pipeline, metrics in engine.grow({"n_estimators": 12}, datasets[task], _settings(target)):
        sizes.append(len(pipeline[-1].estimators_))
        reports.append(metrics)
    assert sizes == [3, 6, 9, 12]
    assert all(set(m) == set(_metrics(task)) for m in reports)
    assert reports[-1]["train_time_s"] >= reports[0]["train_time_s"] > 0


def _metrics(task: str) -> tuple[str, ...]:
    from raysweep.metrics import TASK_METRICS

    return (*TASK_METRICS[task], "train_time_s")


def test_boosting_rounds_added_in_slices_predict_as_one_fit(datasets):
    dataset = datasets["binary"]
    settings = _settings("xgboost.XGBClassifier", iterations=3, max_depth=3)
    *_, (i, grown, last) = engine.grow({"n_estimators": 10}, dataset, settings)
    assert (i, grown[-1].get_booster().num_boosted_rounds(), grown[-1].get_params()["n_estimators"]) == (3, 10, 10)
    whole_settings = _settings("xgboost.XGBClassifier", 1, max_depth=3)
    *_, (_, whole, once) = engine.grow({"n_estimators": 10}, dataset, whole_settings)
    np.testing.assert_allclose(grown.predict_proba(dataset.X_val), whole.predict_proba(dataset.X_val), atol=1e-6)
    assert last["val_auc"] == pytest.approx(once["val_auc"], abs=1e-9)


@pytest.mark.parametrize(
    ("target", "scaled"),
    [
        ("sklearn.ensemble.RandomForestClassifier", False),
        ("sklearn.ensemble.GradientBoostingRegressor", False),
        ("sklearn.ensemble.HistGradientBoostingClassifier", False),
        ("sklearn.tree.DecisionTreeRegressor", False),
        ("xgboost.XGBRegressor", False),
        ("sklearn.svm.SVR", True),
        ("sklearn.linear_model.LogisticRegression", True),
        ("sklearn.neighbors.KNeighborsClassifier", True),
        ("sklearn.neural_network.MLPRegressor", True),
        ("sklearn.ensemble.BaggingClassifier", True),  # its members may be anything, a k-NN or an SVM
        ("sklearn.naive_bayes.MultinomialNB", False),  # takes counts, never negative
    ],
)
def test_numbers_are_standardised_for_all_but_tree_and_naive_bayes_models(target, scaled):
    from raysweep import preprocess

    assert preprocess.needs_scaling(engine.make(target, {})) is scaled


def test_a_scale_sensitive_model_learns_from_a_small_feature_beside_a_large_one():
    """An SVR on an age-like signal beside an income in tens of thousands: unscaled, the income's distances drown
    the signal (R^2 near 0); the pipeline standardises, and the logged model does the same to served rows."""
    rng = np.random.default_rng(0)
    n = 600
    age = rng.uniform(18, 80, n)
    frame = pd.DataFrame({"age": age, "income": rng.normal(50_000, 15_000, n), "price": age + rng.normal(0, 2, n)})
    dataset = from_frame(frame, "price", seed=0)
    *_, (_, pipeline, metrics) = engine.grow({"C": 100.0}, dataset, _settings("sklearn.svm.SVR", iterations=1))
    assert "scale" in dict(pipeline[0].named_transformers_["numeric"].steps)
    assert metrics["val_r2"] > 0.8, metrics


def test_warm_started_iterative_models_fit_their_budget_in_slices(datasets):
    settings = _settings("sklearn.neural_network.MLPClassifier", iterations=4, hidden_layer_sizes=(8,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = [pipeline[-1].n_iter_ for _, pipeline, _ in engine.grow({"max_iter": 20}, datasets["multiclass"],
                                                                       settings)]
    assert runs == [5, 5, 5, 5]  # 20 iterations in all, continuing from the previous solution
    # A slice stops at its share by design: only the last one may say the budget ran out before convergence.
    assert [str(w.message)[:40] for w in caught if w.category.__name__ == "ConvergenceWarning"] == [
        "Stochastic Optimizer: Maximum iterations"]


def test_the_threads_raysweep_sets_bring_no_warning_from_a_class_that_ignores_them(datasets):
    settings = _settings("sklearn.linear_model.LogisticRegression", iterations=1)
    assert engine._arguments({}, settings)["n_jobs"] == 1  # set wherever the class takes it
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # scikit-learn >= 1.8: "'n_jobs' has no effect"
        list(engine.grow({"C": 1.0}, datasets["binary"], settings))


def test_an_estimator_that_cannot_grow_reports_once(datasets):
    settings = _settings("sklearn.neighbors.KNeighborsClassifier", iterations=5)
    assert engine.planned_iterations({"n_neighbors": 7}, settings) == 1
    reports = [m for _, _, m in engine.grow({"n_neighbors": 7}, datasets["binary"], settings)]
    assert len(reports) == 1 and 0.5 < reports[0]["val_auc"] <= 1.0


def test_a_small_size_caps_the_iterations_and_the_class_default_is_the_size():
    settings = _settings("sklearn.ensemble.RandomForestClassifier", iterations=5)
    assert engine.planned_iterations({"n_estimators": 3}, settings) == 3
    assert engine.planned_iterations({}, settings) == 5  # default n_estimators=100
    assert engine.planned_iterations({}, _settings("xgboost.XGBRegressor", 7)) == 7  # n_estimators None -> 100


def test_retraining_a_trial_gives_the_same_metrics(datasets):
    cfg = OmegaConf.create({"name": "estimator", "family": "none", "iterations": 2, "cpus_per_trial": 1, "seed": 3,
                            "use_gpu": False, "params": {}, "estimator": {"_target_": "xgboost.XGBRegressor",
                                                                          "max_depth": 2}})
    first, again = (estimator.retrain(cfg, datasets["regression"], {"n_estimators": 8}) for _ in range(2))
    assert [set(m) for m in first] == [set(_metrics("regression"))] * 2
    for one, other in zip(first, again):
        assert {k: v for k, v in one.items() if k != "train_time_s"} == {k: v for k, v in other.items()
                                                                       if k != "train_time_s"}


def test_probabilities_keep_a_column_for_a_class_training_never_saw():
    from sklearn.tree import DecisionTreeClassifier

    model = DecisionTreeClassifier().fit(np.array([[0.0], [1.0]]), np.array([0, 2]))
    proba = _scoring.scores(model, np.array([[0.0], [1.0]]), "multiclass", 3)
    np.testing.assert_array_equal(proba, [[1, 0, 0], [0, 0, 1]])


@pytest.mark.parametrize("target, task, n_classes", [
    ("sklearn.ensemble.RandomForestClassifier", "binary", 2),
    ("sklearn.ensemble.ExtraTreesClassifier", "multiclass", 3),
    ("sklearn.ensemble.RandomForestRegressor", "regression", 0),
    ("sklearn.ensemble.ExtraTreesRegressor", "regression", 0),
    ("sklearn.ensemble.GradientBoostingClassifier", "binary", 2),  # no forest: asked whole each time
])
def test_a_growing_forest_is_scored_as_it_is_from_its_new_trees_only(target, task, n_classes):
    rng = np.random.default_rng(0)
    X, X_val = rng.normal(size=(200, 4)), rng.normal(size=(50, 4))
    y = X[:, 0] + rng.normal(size=200) if task == "regression" else (X[:, 0] > 0) + (X[:, 1] > 1) * (n_classes - 2)
    model = engine.make(target, {"n_estimators": 3, "warm_start": True, "random_state": 0})
    validation = _scoring.Validation(pd.DataFrame(X_val), task, n_classes)
    for size in (3, 7, 12, 12):  # grown, grown, grown, unchanged
        model.set_params(n_estimators=size).fit(X, y)
        np.testing.assert_array_equal(validation.scores(model), _scoring.scores(model, X_val, task, n_classes))
    model.set_params(warm_start=False, n_estimators=5).fit(X, y)  # refitted from scratch: fewer, other trees
    np.testing.assert_array_equal(validation.scores(model), _scoring.scores(model, X_val, task, n_classes))
    if "Forest" in target or "Trees" in target:
        assert len(validation._trees) == 5


def _cfg(target: str | None = "sklearn.ensemble.ExtraTreesClassifier", **extra):
    node = {"name": "estimator", "family": "none", "iterations": 2, "cpus_per_trial": 1, "seed": 0, "use_gpu": False,
            "params": {}, "estimator": {"_target_": target} if target else None}
    node.update(extra)
    return OmegaConf.create(node)


@pytest.mark.parametrize(
    ("cfg", "space", "fragment"),
    [
        (_cfg(None), {}, "trainer=estimator needs the class; add trainer.estimator._target_=module.Class"),
        (_cfg("ExtraTrees"), {}, "is not module.Class"),
        (_cfg("no_such_package.Model"), {}, "cannot be imported (No module named 'no_such_package')"),
        (_cfg("sklearn.ensemble.NoSuchForest"), {}, "sklearn.ensemble has no 'NoSuchForest'"),
        (_cfg("collections.OrderedDict"), {}, "is not a scikit-learn compatible estimator"),
        (_cfg(), {"learning_rate": 0.1}, "'learning_rate' is not a parameter of ExtraTreesClassifier"),
        (_cfg(params={"bogus": 1}), {}, "'bogus' is not a parameter of ExtraTreesClassifier"),
        (_cfg("sklearn.svm.LinearSVC"), {}, "gives no class probabilities (predict_proba) with these arguments; pick "
                                           "a classifier that gives them"),
        # The fix names the argument that turns them on, for the class at hand.
        (_cfg("sklearn.svm.SVC"), {},
         "set trainer.params.probability=true (and leave probability out of search_space)"),
        (_cfg("sklearn.linear_model.SGDClassifier"), {"alpha": "interval(0.1, 1)"}, "set trainer.params.loss=log_loss"),
        (_cfg(use_gpu=True), {}, "trainer.use_gpu=true"),
    ],
)
def test_estimator_configs_that_cannot_train_are_refused_in_one_line(cfg, space, fragment):
    with pytest.raises(RaySweepError) as err:
        estimator.validate(cfg, space)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def _family(name: str = "random_forest", **params):
    return OmegaConf.create({"name": "sklearn", "family": name, "iterations": 2, "cpus_per_trial": 1, "seed": 0,
                             "use_gpu": False, "params": params})


@pytest.mark.parametrize(
    ("trainer", "cfg", "space", "task", "fragment"),
    [
        # The fraud sweep's fixed criterion on a target that turned out to be a regression one.
        (sklearn, _family(), {"criterion": "gini", "n_estimators": "choice(10, 20)"}, "regression",
         "search_space.criterion='gini' does not suit RandomForestRegressor (the regression task's class): The "
         "'criterion' parameter of RandomForestRegressor must be a str among"),
        (sklearn, _family(), {"max_features": "choice(sqrt, half)"}, "binary",
         "search_space.max_features='half' does not suit RandomForestClassifier"),
        (sklearn, _family("hist_gradient_boosting", loss="log_loss"), {}, "regression",
         "trainer.params does not suit HistGradientBoostingRegressor (the regression task's class): The 'loss'"),
        (sklearn, _family(), {"class_weight": "balanced"}, "regression", "Invalid parameter 'class_weight'"),
        (estimator, _cfg("sklearn.linear_model.SGDRegressor"), {"loss": "choice(squared_error, hinge)"},
         "regression", "search_space.loss='hinge' does not suit SGDRegressor"),
    ],
)
def test_values_the_tasks_model_cannot_take_are_refused_before_ray_in_one_line(trainer, cfg, space, task, fragment):
    with pytest.raises(RaySweepError) as err:
        trainer.check_task(cfg, space, task)
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("trainer", "cfg", "space", "task"), [
    (sklearn, _family(), {"criterion": "gini", "max_depth": "choice(4, none)", "n_estimators": 10}, "binary"),
    (sklearn, _family(), {"criterion": "choice(squared_error, absolute_error)", "min_samples_leaf": "range(1, 4)",
                          "max_features": "interval(0.2, 1.0)"}, "regression"),
    (estimator, _cfg("xgboost.XGBClassifier"), {"max_depth": "choice(2, 4)"}, "multiclass"),  # states no rules
])
def test_values_the_tasks_model_takes_pass(trainer, cfg, space, task):
    trainer.check_task(cfg, space, task)


def test_a_classifier_with_probabilities_turned_on_passes():
    estimator.validate(_cfg("sklearn.svm.SVC", estimator={"_target_": "sklearn.svm.SVC", "probability": True}), {})


def test_metrics_follow_the_task_and_refuse_a_model_of_the_other_kind():
    classifier, regressor = _cfg(), _cfg("sklearn.ensemble.ExtraTreesRegressor")
    assert estimator.metrics(classifier, "multiclass") == _metrics("multiclass")
    assert estimator.metrics(regressor, "regression") == _metrics("regression")
    # Before the data is loaded: whatever the class can learn.
    assert set(estimator.metrics(classifier, None)) == {*_metrics("binary"), *_metrics("multiclass")}
    # The same model for the other task is named where scikit-learn's naming has one.
    with pytest.raises(RaySweepError, match=r"ExtraTreesClassifier is a classifier but the data's task is regression; "
                                            r"pick trainer.estimator._target_=sklearn.ensemble.ExtraTreesRegressor, or"):
        estimator.metrics(classifier, "regression")
    with pytest.raises(RaySweepError, match=r"ExtraTreesRegressor is a regressor but the data's task is binary; pick "
                                            r"trainer.estimator._target_=sklearn.ensemble.ExtraTreesClassifier, or"):
        estimator.metrics(regressor, "binary")
    with pytest.raises(RaySweepError, match="SVR is a regressor but the data's task is binary; pick a classifier, or"):
        estimator.metrics(_cfg("sklearn.svm.SVR"), "binary")


@pytest.mark.parametrize("family", list(sklearn.FAMILIES))
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_built_in_families_pick_the_class_for_the_task(family, task):
    cfg = OmegaConf.create({"name": "sklearn", "family": family, "iterations": 2, "cpus_per_trial": 1, "seed": 0,
                            "use_gpu": False, "params": {}})
    target = sklearn._settings(cfg, task)["target"]
    assert target.endswith("Regressor" if task == "regression" else "Classifier")
    assert sklearn.metrics(cfg, task) == _metrics(task)
    assert set(sklearn.metrics(cfg, None)) == {m for t in ("binary", "multiclass", "regression") for m in _metrics(t)}


def test_the_estimator_trainer_is_built_in_and_checks_the_sweep_metric(make_cfg):
    loaded = trainables.load("estimator")
    assert loaded.source == "raysweep.trainables.estimator" and loaded.RESTORES_CHECKPOINTS
    cfg = make_cfg("+sweep=fraud", "trainer=estimator", "sweep.metric=val_rmse")
    with pytest.raises(RaySweepError, match="'val_rmse' is not reported by trainer 'estimator'"):
        trainables.check_metrics(loaded, cfg)


def test_a_metric_of_the_task_the_model_cannot_learn_waits_for_the_data_to_say_which_is_wrong(make_cfg):
    # A regressor swept for val_log_loss: on a multiclass target the model is wrong, on a regression one the metric.
    loaded = trainables.load("estimator")
    cfg = make_cfg("+sweep=fraud", "trainer=estimator", "trainer.estimator._target_=sklearn.linear_model.Ridge",
                   "sweep.metric=val_log_loss", "sweep.mode=min")
    trainables.check_metrics(loaded, cfg, data_pending=True)
    with pytest.raises(RaySweepError, match="Ridge is a regressor but the data's task is multiclass; pick a "):
        trainables.check_metrics(loaded, cfg, "multiclass")
    with pytest.raises(RaySweepError, match="'val_log_loss' is not reported by trainer 'estimator' for a regression "):
        trainables.check_metrics(loaded, cfg, "regression")
    # A metric no task has is refused at once: no data can make it reported.
    with pytest.raises(RaySweepError, match="'val_score' is not reported"):
        trainables.check_metrics(loaded, make_cfg("+sweep=fraud", "trainer=estimator", "sweep.metric=val_score"),
                                 data_pending=True)


def test_a_checkpoint_logs_a_model_that_takes_raw_rows_and_answers_labels(datasets, tmp_path):
    dataset = datasets["binary"]
    settings = _settings("sklearn.ensemble.RandomForestClassifier", iterations=2)
    *_, (_, pipeline, _) = engine.grow({"n_estimators": 10, "max_depth": 4}, dataset, settings)
    from raysweep.tabular import model_config

    engine._save(pipeline, dataset.X_val.head(5), model_config(dataset.task, dataset.classes, dataset.feature_names),
                 str(tmp_path), {})
    with mlflow.start_run():
        info = estimator.log_model(tmp_path)
    model = mlflow.pyfunc.load_model(info.model_uri)
    inputs = {spec.name: spec for spec in model.metadata.get_input_schema().inputs}
    assert list(inputs) == dataset.feature_names and not any(spec.required for spec in inputs.values())

    rows = pd.DataFrame({"a": [2.0, -2.0, None], "b": [None, 0.1, 0.2], "colour": ["red", None, "purple"],
                         "size": ["M", None, "XL"]})
    answer = model.predict(rows)
    assert list(answer.columns) == ["No", "Yes", "label"]
    np.testing.assert_allclose(answer[["No", "Yes"]].sum(axis=1), 1.0)
    assert set(answer["label"]) <= {"No", "Yes"}
    # Columns in any order; the same probabilities as the pipeline itself.
    expected = pipeline.predict_proba(dataset.X_val.head(20))
    served = model.predict(predictions_input(dataset.X_val.head(20))[list(reversed(dataset.feature_names))])
    np.testing.assert_allclose(predictions.from_frame("binary", dataset.classes, served), expected, atol=1e-12)
    assert {p.name: p.default for p in model.metadata.get_params_schema().params} == {"threshold": 0.5}
    low = model.predict(rows, params={"threshold": 0.0})
    assert list(low["label"]) == ["Yes"] * 3


def test_a_served_model_takes_the_columns_in_the_types_data_arrives_in(tmp_path):
    """The same values as int64, nullable Int64, float32, category, nullable boolean or plain objects: the answers
    of the training dtypes; MLflow's own type check refused all of these but the last."""
    rng = np.random.default_rng(1)
    n = 300
    visits = rng.integers(0, 50, n).astype(float)
    visits[rng.random(n) < 0.1] = np.nan  # gaps in training: a float column
    frame = pd.DataFrame({"visits": visits, "spend": rng.gamma(2, 30, n).astype("float32"),
                          "plan": pd.Categorical(rng.choice(["free", "pro"], n)),
                          "verified": rng.random(n) < 0.5,
                          # gaps in training: an object column of True, False and NaN
                          "member": pd.array(np.where(rng.random(n) < 0.2, None, rng.random(n) < 0.5), dtype="boolean")})
    frame["churned"] = np.where(np.nan_to_num(visits) / 50 + (frame["plan"] == "pro") > 0.8, "yes", "no")
    dataset = from_frame(frame, "churned", seed=0)
    *_, (_, pipeline, _) = engine.grow({"n_estimators": 8}, dataset, _settings("sklearn.ensemble.RandomForestClassifier",
                                                                                iterations=1))
    from raysweep.tabular import model_config

    engine._save(pipeline, dataset.X_val.head(5), model_config(dataset.task, dataset.classes, dataset.feature_names),
                 str(tmp_path), {})
    with mlflow.start_run():
        model = mlflow.pyfunc.load_model(estimator.log_model(tmp_path).model_uri)
    plain = pd.DataFrame({"visits": [3.0, 41.0, np.nan], "spend": [10.0, 20.0, 30.0], "plan": ["pro", "free", None],
                          "verified": [True, False, True], "member": [True, np.nan, False]})
    expected = model.predict(plain)
    arrived = pd.DataFrame({
        "visits": pd.array([3, 41, None], dtype="Int64"),
        "spend": np.array([10.0, 20.0, 30.0], dtype="float64"),
        "plan": pd.Categorical(["pro", "free", None]),
        "verified": pd.array([True, False, True], dtype="boolean"),
        "member": pd.array([True, None, False], dtype="boolean"),
    })
    pd.testing.assert_frame_equal(model.predict(arrived), expected)
    for gap in (pd.NA, None):  # among plain objects too: scikit-learn's imputer cannot test pd.NA
        pd.testing.assert_frame_equal(model.predict(plain.assign(member=[True, gap, False])), expected)
    assert model.predict(plain.head(0)).columns.tolist() == expected.columns.tolist()  # no rows: an empty answer
    # As a CSV's text (read with dtype=str, or typed in a request): numbers, and the true/false words.
    as_text = plain.assign(visits=["3", "41.0", None], verified=["True", "false", " TRUE "])
    pd.testing.assert_frame_equal(model.predict(as_text), expected)
    complete = plain.head(2).astype({"visits": "int64", "spend": "float32"})
    pd.testing.assert_frame_equal(model.predict(complete), expected.head(2))
    with pytest.raises(Exception, match="column 'visits' holds numbers in training, but a served row has 'many'"):
        model.predict(plain.astype({"visits": object}).assign(visits=["many", 1, 2]))


def predictions_input(frame: pd.DataFrame) -> pd.DataFrame:
    from raysweep.tabular import servable

    return servable(frame)


def test_the_fraud_family_retrains_on_the_fraud_data():
    from raysweep.data import generate_fraud

    dataset = from_frame(generate_fraud(600, 0.1, 1, seed=0), "is_fraud")
    cfg = SimpleNamespace(family="random_forest", params={}, iterations=2, seed=0, cpus_per_trial=1)
    reports = sklearn.retrain(cfg, dataset, {"n_estimators": 10, "max_depth": 4})
    assert [set(m) for m in reports] == [set(_metrics("binary"))] * 2 and reports[1]["val_auc"] > 0.6


def test_a_checkpoint_is_a_plain_pickle_and_one_written_by_joblib_still_restores(datasets, tmp_path):
    """Checkpoints are written with pickle (a forest's tree arrays 5-8 x faster than joblib.dump); a sweep
    resumed from checkpoints written with joblib.dump before still continues from them."""
    import pickle

    import joblib
    from ray import tune

    from raysweep.tabular import model_config

    dataset = datasets["binary"]
    settings = _settings("sklearn.ensemble.RandomForestClassifier", iterations=2)
    *_, (_, pipeline, _) = engine.grow({"n_estimators": 6, "max_depth": 3}, dataset, settings)
    described = model_config(dataset.task, dataset.classes, dataset.feature_names)
    expected = pipeline.predict_proba(dataset.X_val)
    for folder, write in (("pickle", None), ("joblib", joblib.dump)):
        path = tmp_path / folder
        path.mkdir()
        engine._save(pipeline, dataset.X_val.head(5), described, str(path), {"iteration": 2, "fit_seconds": 0.5})
        if write is not None:
            write(pipeline, path / engine.MODEL_FILE)
        else:
            with open(path / engine.MODEL_FILE, "rb") as file:
                np.testing.assert_allclose(pickle.load(file).predict_proba(dataset.X_val), expected)
        restored, progress = engine._restore(tune.Checkpoint.from_directory(str(path)))
        assert progress == {"done": 2, "fit_seconds": 0.5}
        np.testing.assert_allclose(restored.predict_proba(dataset.X_val), expected)
