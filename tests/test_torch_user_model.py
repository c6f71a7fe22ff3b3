"""The torch trainer with a user's own network (trainer.model._target_) and own Ray Train loop (trainer.train_loop)."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from raysweep.errors import RaySweepError
from raysweep.trainables import torch_mlp

USER_CODE = Path(__file__).parent / "user_code"
#: One small trial of one worker: a user's network is wired the same way whatever the world size.
TINY = ["+sweep=fraud_torch", "sweep.num_samples=1", "trainer.iterations=2", "trainer.num_workers=1",
        "trainer.cpus_per_worker=1", "cluster.verbose=0", "~search_space", "+search_space={}"]
SPECIES = ("setosa", "versicolor", "virginica")


@pytest.fixture(autouse=True)
def user_code(monkeypatch):
    """The user's modules are importable, as from their working directory."""
    monkeypatch.syspath_prepend(str(USER_CODE))
    yield
    sys.modules.pop("torch_models", None)


@pytest.fixture
def iris_csv(tmp_path) -> Path:
    """A multiclass table with the user's own labels (strings)."""
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame
    frame["species"] = [SPECIES[i] for i in frame.pop("target")]
    path = tmp_path / "iris.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def diabetes_csv(tmp_path) -> Path:
    """A regression table."""
    from sklearn.datasets import load_diabetes

    path = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(path, index=False)
    return path


# --- without Ray ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, fragment", [
    (["+trainer.model._target_=torch_models.TinyNet", "+search_space.hidden_units=8"],
     "'hidden_units' is not a parameter of your model torch_models.TinyNet"),
    (["+trainer.model._target_=torch_models.NoSuchNet"], "has no 'NoSuchNet'"),
    (["+trainer.model.width=3"], "trainer.model needs _target_"),
    (["trainer.train_loop=torch_models:TinyNet"], "a Ray Train train_loop_per_worker takes (config)"),
])
def test_a_user_model_or_loop_that_cannot_work_is_refused_in_one_line(make_cfg, overrides, fragment):
    cfg = make_cfg(*TINY, *overrides)
    with pytest.raises(RaySweepError) as error:
        torch_mlp.validate(cfg.trainer, dict(cfg.search_space))
    assert fragment in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("overrides, task, fragment", [
    (["+sweep=fraud_torch"], "multiclass", "search_space.pos_weight weights the positive class of a binary target, "
                                           "but the data's task is multiclass, whose loss has none; remove it "
                                           "(~search_space.pos_weight)"),
    ([*TINY, "+trainer.params.pos_weight=5"], "regression", "trainer.params.pos_weight weights"),
    (["+sweep=fraud_torch"], "binary", None),
    (["+sweep=fraud_torch", "~search_space.pos_weight"], "multiclass", None),
    (["+sweep=fraud_torch", "trainer.train_loop=torch_models:loop"], "regression", None),  # the user's loop reads it
])
def test_pos_weight_is_refused_where_the_built_in_loss_has_no_positive_class(make_cfg, overrides, task, fragment):
    cfg = make_cfg(*overrides)
    if fragment is None:
        torch_mlp.check_task(cfg.trainer, cfg.search_space, task)
        return
    with pytest.raises(RaySweepError) as error:
        torch_mlp.check_task(cfg.trainer, cfg.search_space, task)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_user_model_takes_its_own_hyperparameters_and_the_loops(make_cfg):
    cfg = make_cfg(*TINY, "+trainer.model._target_=torch_models.TinyNet", "+search_space.width='choice(4, 8)'",
                   "+search_space.lr=0.01")
    torch_mlp.validate(cfg.trainer, dict(cfg.search_space))
    # A user's loop reads whatever it likes: its trials tell which metrics they report.
    assert torch_mlp.metrics(cfg.trainer, "binary") == (*torch_mlp.METRICS[:4], *torch_mlp.METRICS[4:])
    assert torch_mlp.metrics({"train_loop": "m:f"}, "binary") == ()
    assert torch_mlp.metrics(cfg.trainer, "regression")[:3] == ("val_rmse", "val_mae", "val_r2")


@pytest.mark.parametrize("task, classes", [("multiclass", ("a", "b", "c")), ("regression", ())])
def test_a_checkpointed_user_network_is_logged_to_take_raw_columns(tmp_path, task, classes):
    import numpy as np

    from raysweep.data import Dataset
    from raysweep.trainables import _torch_loop

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=40), "colour": rng.choice(["red", "blue", None], size=40)})
    y = rng.integers(0, 3, size=40) if classes else rng.normal(100.0, 5.0, size=40)
    data = _torch_loop.prepare(Dataset(X[:30], y[:30], X[30:], y[30:], task=task, classes=classes))
    spec = _torch_loop.ModelSpec("torch_models.TinyNet", {"width": 3})
    network = spec.build(data, {"lr": 0.1, "unused_by_the_net": 1})
    _torch_loop.save(network, data, tmp_path, y_scale=(100.0, 5.0) if task == "regression" else None)
    with mlflow.start_run():
        info = torch_mlp.log_model(tmp_path)
    answer = mlflow.pyfunc.load_model(info.model_uri).predict(X.head(3))
    assert list(answer.columns) == ([*classes, "label"] if classes else ["prediction"]) and len(answer) == 3


# --- sweeps -----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_user_network_trains_multiclass_in_the_built_in_loop_and_serves_raw_rows(ray_address, make_cfg, iris_csv):
    from raysweep import sweep

    outcome = sweep.run(make_cfg(
        *TINY, "mlflow=worker", "data=csv", f"data.path={iris_csv}", "data.target=species",
        "+trainer.model._target_=torch_models.TinyNet", "+trainer.model.activation._target_=torch.nn.Tanh",
        "+search_space.width=16", "+search_space.lr=0.05", "+search_space.batch_size=32",
        "sweep.metric=val_accuracy", "mlflow.registered_model=iris-net",
    ))
    best = MlflowClient().get_run(outcome.summary.best_run_id)
    assert {"val_accuracy", "val_f1_macro", "val_log_loss", "train_loss"} <= set(best.data.metrics)
    assert best.data.params["width"] == "16"
    assert outcome.registration.version == "1"
    model = mlflow.pyfunc.load_model("models:/iris-net/1")
    rows = pd.read_csv(iris_csv).drop(columns="species").head(4)
    answer = model.predict(rows)
    assert list(answer.columns) == [*SPECIES, "label"] and set(answer["label"]) <= set(SPECIES)
    assert answer[list(SPECIES)].sum(axis=1).round(5).eq(1.0).all()


@pytest.mark.slow
def test_a_user_train_loop_reports_its_own_metrics_and_registers_regression(ray_address, make_cfg, diabetes_csv):
    from raysweep import sweep

    outcome = sweep.run(make_cfg(
        *TINY, "mlflow=driver", "data=csv", f"data.path={diabetes_csv}", "data.target=target",
        "+trainer.model._target_=torch_models.TinyNet", "trainer.train_loop=torch_models:train_loop",
        "+search_space.width=8", "+search_space.lr=0.05", "+trainer.params.epochs=3",
        "sweep.metric=val_mae", "sweep.mode=min", "mlflow.registered_model=diabetes-net",
    ))
    client = MlflowClient()
    best = client.get_run(outcome.summary.best_run_id)
    # Driver mode logs what the loop reported, and nothing of Tune's bookkeeping.
    assert [m.step for m in client.get_metric_history(best.info.run_id, "val_mae")] == [1, 2, 3]
    assert "train_mse" in best.data.metrics and "time_total_s" not in best.data.metrics
    assert outcome.registration.version == "1"
    answer = mlflow.pyfunc.load_model("models:/diabetes-net/1").predict(
        pd.read_csv(diabetes_csv).drop(columns="target").head(3))
    assert list(answer.columns) == ["prediction"] and len(answer) == 3
