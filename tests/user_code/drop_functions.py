"""A Ray Tune function trainable whose last report is worse than an earlier one (tests/test_concurrency.py).

Each report carries a checkpoint holding an MLflow model that records its epoch, so a test can tell which
checkpoint was registered. Written as a user would: no raysweep import.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow.sklearn
from ray import tune

#: ``val_score`` of epochs 1, 2, 3: the best kept checkpoint (of the latest two) is epoch 2's, the last value 0.6.
VALUES = (0.5, 0.9, 0.6)


def peak_then_drop(config):
    """Report VALUES one epoch at a time, each with a checkpoint of a tiny model tagged with its epoch."""
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit([[0.0], [1.0]], [0, 1])
    for epoch, value in enumerate(VALUES, start=1):
        with tempfile.TemporaryDirectory() as folder:
            mlflow.sklearn.save_model(model, Path(folder) / "model", pip_requirements=["scikit-learn"],
                                      metadata={"epoch": epoch})
            tune.report({"val_score": value}, checkpoint=tune.Checkpoint.from_directory(folder))
