"""scikit-learn trainer: tree ensembles grown a slice per iteration so schedulers can stop them early.

Each trial builds one estimator with ``warm_start=True`` and raises its size parameter (``n_estimators``
for random forests, ``max_iter`` for gradient boosting) over ``trainer.iterations`` steps. After every step
it reports validation metrics to Tune with a checkpoint of the model so far; the registered model is that
checkpoint, never a retrain.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from raysweep.errors import RaySweepError

#: Metrics every trial reports, once per iteration.
METRICS = ("val_auc", "val_average_precision", "val_f1", "val_log_loss", "train_time_s")

#: family -> (estimator class path, the size parameter grown each iteration, defaults raysweep sets)
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "random_forest": ("sklearn.ensemble.RandomForestClassifier", "n_estimators", {"n_jobs": 1}),
    "hist_gradient_boosting": ("sklearn.ensemble.HistGradientBoostingClassifier", "max_iter", {}),
}

MODEL_FILE = "model.joblib"
EXAMPLE_FILE = "input_example.json"


def _estimator_class(family: str):
    import importlib

    module, _, cls = FAMILIES[family][0].rpartition(".")
    return getattr(importlib.import_module(module), cls)


def validate(trainer_cfg, search_space: dict[str, Any]) -> None:
    """Check the family exists and every hyperparameter is one its estimator takes.

    Raises:
        RaySweepError: Unknown family, unknown parameter, or no size parameter to grow.
    """
    if trainer_cfg.family not in FAMILIES:
        raise RaySweepError(
            f"trainer.family={trainer_cfg.family!r} is not known; use one of {', '.join(FAMILIES)}"
        )
    known = set(_estimator_class(trainer_cfg.family)().get_params())
    for name in [*search_space, *trainer_cfg.params]:
        if name not in known:
            raise RaySweepError(
                f"{name!r} is not a parameter of {FAMILIES[trainer_cfg.family][0].rsplit('.', 1)[1]}; "
                f"remove it from search_space/trainer.params or pick another trainer.family"
            )
    size_key = FAMILIES[trainer_cfg.family][1]
    if size_key not in search_space and size_key not in trainer_cfg.params:
        raise RaySweepError(f"search_space.{size_key} is missing; the {trainer_cfg.family} trainer grows it per iteration")


def make_trainable(trainer_cfg, dataset):
    """Build the Tune function trainable for this trainer config.

    Args:
        trainer_cfg: The ``trainer`` config node.
        dataset: The :class:`raysweep.data.Dataset` to train on; shipped once through the object store.

    Returns:
        ``(trainable, resources)`` for ``tune.with_resources``.
    """
    from ray import tune

    settings = {
        "family": trainer_cfg.family,
        "iterations": int(trainer_cfg.iterations),
        "seed": int(trainer_cfg.seed),
        "params": dict(trainer_cfg.params),
    }
    trainable = tune.with_parameters(train, dataset=dataset, settings=settings)
    return trainable, {"cpu": float(trainer_cfg.cpus_per_trial)}


def train(config: dict[str, Any], dataset, settings: dict[str, Any]) -> None:
    """Tune function trainable: grow the estimator, report metrics and a checkpoint each iteration."""
    import joblib
    import numpy as np
    from ray import tune
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    _, size_key, defaults = FAMILIES[settings["family"]]
    params = {**defaults, **settings["params"], **config}
    total = int(params.pop(size_key))
    estimator = _estimator_class(settings["family"])(warm_start=True, random_state=settings["seed"], **params)
    example = dataset.X_val.head(5)
    fit_seconds = 0.0
    iterations = min(settings["iterations"], total)
    for i in range(1, iterations + 1):
        estimator.set_params(**{size_key: max(1, round(total * i / iterations))})
        start = time.perf_counter()
        estimator.fit(dataset.X_train, dataset.y_train)
        fit_seconds += time.perf_counter() - start
        proba = estimator.predict_proba(dataset.X_val)[:, 1]
        metrics = {
            "val_auc": float(roc_auc_score(dataset.y_val, proba)),
            "val_average_precision": float(average_precision_score(dataset.y_val, proba)),
            "val_f1": _best_f1(dataset.y_val, proba),
            "val_log_loss": float(log_loss(dataset.y_val, np.clip(proba, 1e-7, 1 - 1e-7), labels=[0, 1])),
            "train_time_s": fit_seconds,
        }
        with tempfile.TemporaryDirectory() as tmp:
            joblib.dump(estimator, Path(tmp) / MODEL_FILE)
            (Path(tmp) / EXAMPLE_FILE).write_text(example.to_json(orient="split", index=False))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def _best_f1(y_true, proba) -> float:
    # At 1-2 % fraud a forest's probabilities rarely pass 0.5, so F1 at 0.5 is mostly 0; report F1 at the
    # threshold a fraud team would pick on this validation set instead.
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y_true, proba)
    denominator = precision + recall
    f1 = 2 * precision * recall / (denominator + (denominator == 0))
    return float(f1.max())


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "skops", "numpy", "scipy", "pandas")]


def log_model(checkpoint_dir: str | Path):
    """Log the checkpointed estimator to the active MLflow run with the sklearn flavor.

    The pyfunc predicts fraud probabilities (``predict_proba``) from a DataFrame of the feature columns.

    Args:
        checkpoint_dir: A local copy of the trial's Tune checkpoint.

    Returns:
        The ``mlflow.models.model.ModelInfo`` of the logged model.
    """
    import io

    import joblib
    import mlflow.sklearn
    import pandas as pd
    import skops.io
    from mlflow.models import infer_signature

    checkpoint_dir = Path(checkpoint_dir)
    estimator = joblib.load(checkpoint_dir / MODEL_FILE)
    example = pd.read_json(io.StringIO((checkpoint_dir / EXAMPLE_FILE).read_text()), orient="split")
    example = example.astype("float64")
    signature = infer_signature(example, estimator.predict_proba(example))
    return mlflow.sklearn.log_model(
        estimator,
        name="model",
        signature=signature,
        input_example=example,
        pip_requirements=_pip_requirements(),
        pyfunc_predict_fn="predict_proba",
        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(estimator)),
    )

