"""Plain Ray Tune function trainables, written as a raysweep user would: no raysweep import anywhere.

Used by tests/test_function_trainer.py as ``trainer.function=tune_functions:NAME`` (the tests put this folder on
the path, as a user's working directory would be).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import mlflow.sklearn
from ray import tune
from ray.tune import report  # bound at import: raysweep must see these reports too


def _iris():
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    X, y = load_iris(return_X_y=True, as_frame=True)
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


def train_iris(config):
    """Grow a logistic regression's iterations; report accuracy with a checkpoint holding an MLflow model."""
    from sklearn.linear_model import LogisticRegression

    X_train, X_val, y_train, y_val = _iris()
    if mlflow.active_run():  # worker mode: raysweep opened this trial's run
        mlflow.log_param("own_param", "from-the-function")
    for epoch in range(1, config["epochs"] + 1):
        model = LogisticRegression(C=config["C"], max_iter=5 * epoch).fit(X_train, y_train)
        accuracy = float(model.score(X_val, y_val))
        if mlflow.active_run():
            mlflow.log_metric("own_metric", accuracy * 100, step=epoch)
        with tempfile.TemporaryDirectory() as folder:
            mlflow.sklearn.save_model(model, Path(folder) / "model", pip_requirements=["scikit-learn"],
                                      signature=mlflow.models.infer_signature(X_val, model.predict(X_val)))
            metrics = {"val_accuracy": accuracy, "train_accuracy": float(model.score(X_train, y_train)),
                       "note": "strings are not metrics"}
            if epoch % 2:
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
            else:
                report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def train_with_data(config, data):
    """Take raysweep's loaded dataset; checkpoint a model the registry cannot find (no MLmodel)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    numeric = data.X_train.select_dtypes("number").columns
    model = LogisticRegression(C=config["C"], max_iter=200).fit(data.X_train[numeric], data.y_train)
    accuracy = float(model.score(data.X_val[numeric], data.y_val))
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "coef.npy", model.coef_)
        tune.report({"val_accuracy": accuracy, "rows": len(data.X_train)},
                    checkpoint=tune.Checkpoint.from_directory(folder))


def train_iris_unless_c_is_small(config):
    """Returns without reporting on some configs (as a function may skip a combination it cannot train)."""
    if config["C"] < 0.5:
        return
    train_iris(config)


def train_failing_once(config):
    """Reports x * epoch with a checkpoint each epoch; fails in epoch 3 unless restored from a checkpoint."""
    import json

    restored, start = tune.get_checkpoint(), 1
    if restored:
        with restored.as_directory() as folder:
            start = json.loads((Path(folder) / "state.json").read_text())["epoch"] + 1
    for epoch in range(start, 5):
        if epoch == 3 and not restored:
            raise RuntimeError("a transient failure")
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "state.json").write_text(json.dumps({"epoch": epoch}))
            tune.report({"val_accuracy": config["x"] * epoch}, checkpoint=tune.Checkpoint.from_directory(folder))


def train_dying_unless_c_is_large(config):
    """Reports once; then, for a small C, its process dies as under the kernel's OOM killer."""
    import os
    import signal
    import time

    tune.report({"val_accuracy": config["C"]})
    if config["C"] < 0.5:
        time.sleep(1)  # the report reaches Tune first
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(2)


def train_peaking(config):
    """Validation accuracy peaks at the second of four epochs (x * 1, 5, 2, 1); each epoch's checkpoint holds an MLflow
    model with its epoch written beside it."""
    from sklearn.dummy import DummyClassifier

    for epoch, score in enumerate([1.0, 5.0, 2.0, 1.0], 1):
        with tempfile.TemporaryDirectory() as folder:
            mlflow.sklearn.save_model(DummyClassifier().fit([[0], [1]], [0, 1]), Path(folder) / "model",
                                      pip_requirements=["scikit-learn"])
            (Path(folder) / "model" / "epoch.txt").write_text(str(epoch))
            tune.report({"val_accuracy": score * config["x"]}, checkpoint=tune.Checkpoint.from_directory(folder))


def train_logging_on_its_own(config):
    """Calls MLflow's fluent API itself, on the store it is given, whatever the logging mode: a run of its own where
    none is active."""
    mlflow.set_tracking_uri(config["store"])
    mlflow.log_param("own_param", "from-the-function")
    tune.report({"val_accuracy": config["C"]})


def train_without_the_metric(config):
    """Reports a loss but never the sweep's metric."""
    tune.report({"loss": 1.0 / (1 + config["C"])})


def train_with_two_arguments(config, epochs):
    """Not a Tune function trainable: its second parameter is not ``data``."""
