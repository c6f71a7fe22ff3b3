"""A plain Ray Tune function trainable: scikit-learn's wine data set, a linear classifier trained epoch by epoch.

Nothing here imports raysweep: this is the function you would hand to ``ray.tune.Tuner``. raysweep runs it
unchanged with ``trainer=function trainer.function=train:train`` (see conf/sweep/wine.yaml), tracks every trial
in MLflow and registers the model in the best trial's best checkpoint.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import mlflow.sklearn
import sklearn
from ray import tune
from sklearn.datasets import load_wine
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def load_data(seed: int = 0):
    """Wine cultivars (3 classes, 13 numeric columns, 178 rows): 70 % train, 30 % validation, stratified."""
    X, y = load_wine(return_X_y=True, as_frame=True)
    return train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)


def train(config: dict) -> None:
    """One trial: ``config["epochs"]`` passes of SGD over the training rows, a report (and checkpoint) after each.

    Hyperparameters (the sweep's search space): ``alpha`` (regularisation strength), ``l1_ratio`` (elastic-net
    mix), ``eta0`` (initial learning rate). Fixed: ``epochs`` and ``seed`` (``trainer.params``).
    """
    X_train, X_val, y_train, y_val = load_data(config.get("seed", 0))
    model = make_pipeline(
        StandardScaler(),
        SGDClassifier(loss="log_loss", penalty="elasticnet", alpha=config["alpha"], l1_ratio=config["l1_ratio"],
                      learning_rate="adaptive", eta0=config["eta0"], random_state=config.get("seed", 0)),
    )
    scaler, classifier = model.steps[0][1], model.steps[1][1]
    scaler.fit(X_train)
    classes = sorted(y_train.unique())
    if mlflow.active_run():  # mlflow=worker: raysweep opened this trial's child run around the function
        mlflow.log_param("train_rows", len(X_train))
    for epoch in range(1, config["epochs"] + 1):
        classifier.partial_fit(scaler.transform(X_train), y_train, classes=classes)
        proba = model.predict_proba(X_val)
        metrics = {"val_accuracy": accuracy_score(y_val, proba.argmax(axis=1)),
                   "val_log_loss": log_loss(y_val, proba, labels=classes), "epoch": epoch}
        with tempfile.TemporaryDirectory() as folder:
            # An MLflow model in the checkpoint's model/ folder: what raysweep registers from the best checkpoint.
            mlflow.sklearn.save_model(
                model, Path(folder) / "model",
                signature=mlflow.models.infer_signature(X_val, proba),
                input_example=X_val.head(3),
                pyfunc_predict_fn="predict_proba",  # the served model answers class probabilities
                pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
            )
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
