"""scikit-learn trainer: tree ensembles grown a slice per iteration so schedulers can stop them early.

Each trial builds one estimator with ``warm_start=True`` and raises its size parameter (``n_estimators``
for random forests, ``max_iter`` for gradient boosting) over ``trainer.iterations`` steps. After every step
it reports validation metrics to Tune with a checkpoint of the model so far; the registered model is that
checkpoint, never a retrain.

A :class:`raysweep.trainables.Trainer` that restores checkpoints (PBT) and can ``retrain`` a trial outside Tune.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raysweep.errors import RaySweepError
from raysweep.metrics import VALIDATION_METRICS

#: Metrics every trial reports, once per iteration.
METRICS = (*VALIDATION_METRICS, "train_time_s")

#: family -> (estimator class path, the size parameter grown each iteration, defaults raysweep sets)
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "random_forest": ("sklearn.ensemble.RandomForestClassifier", "n_estimators", {"n_jobs": 1}),
    "hist_gradient_boosting": ("sklearn.ensemble.HistGradientBoostingClassifier", "max_iter", {}),
}

MODEL_FILE = "model.joblib"
EXAMPLE_FILE = "input_example.parquet"
PROGRESS_FILE = "progress.json"
#: Trials continue from a Tune checkpoint (retries, resumed sweeps, PBT), so scheduler=pbt can be used.
RESTORES_CHECKPOINTS = True


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


def resource_needs(trainer_cfg) -> dict[str, Any]:
    """Each trial trains in its own process on ``trainer.cpus_per_trial`` CPUs."""
    if trainer_cfg.use_gpu:
        raise RaySweepError("trainer.use_gpu=true: the sklearn trainer runs on CPUs only; set trainer.use_gpu=false")
    return {"cpus_per_trial": float(trainer_cfg.cpus_per_trial)}


def make_trainable(trainer_cfg, dataset, context):
    """Build the Tune function trainable for this trainer config.

    Args:
        trainer_cfg: The ``trainer`` config node.
        dataset: The :class:`raysweep.data.Dataset` to train on; shipped once through the object store.
        context: The sweep's :class:`raysweep.trainables.TrialContext`.

    Returns:
        The trainable for ``tune.with_resources``.
    """
    from ray import tune

    return tune.with_parameters(train, dataset=dataset, settings=trial_settings(trainer_cfg, context.logging))


def trial_settings(trainer_cfg, logging=None) -> dict[str, Any]:
    """What every trial of a sweep shares besides its hyperparameters: family, iterations, seed, fixed params."""
    from omegaconf import DictConfig, OmegaConf

    params = trainer_cfg.params
    return {
        "family": trainer_cfg.family,
        "iterations": int(trainer_cfg.iterations),
        "seed": int(trainer_cfg.seed),
        "params": OmegaConf.to_container(params) if isinstance(params, DictConfig) else dict(params),
        "logging": logging,
    }


def best_checkpoint(result, metric: str, mode: str) -> str | None:
    """Path of the best-scoring checkpoint Tune kept for the trial (the sweep keeps the latest two)."""
    checkpoint = result.get_best_checkpoint(metric, mode) if result.best_checkpoints else None
    return checkpoint.path if checkpoint is not None else None


def train(config: dict[str, Any], dataset, settings: dict[str, Any]) -> None:
    """Tune function trainable: grow the estimator, report metrics and a checkpoint each iteration."""
    from ray import tune

    from raysweep.tracking.worker import trial_log

    context = tune.get_context()
    with trial_log(settings["logging"], config, context.get_trial_name(), context.get_trial_id()) as log:
        _grow(config, dataset, settings, log)


def _grow(config: dict[str, Any], dataset, settings: dict[str, Any], log) -> None:
    from ray import tune

    from raysweep.trainables import PROGRESS

    example = dataset.X_val.head(5)
    planned = _planned_iterations(config, settings)
    estimator, done, fit_seconds = _restore(tune.get_checkpoint())
    for i, estimator, metrics in grow(config, dataset, settings, estimator, done, fit_seconds):
        log.metrics(metrics, step=i)
        # Everything up to a checkpoint is in MLflow before Tune knows of the checkpoint: a trial restored from
        # it after a crash replays only later steps, so none goes missing.
        log.flush()
        with tempfile.TemporaryDirectory() as tmp:
            _save(estimator, example, tmp, {"iteration": i, "fit_seconds": metrics["train_time_s"]})
            tune.report({**metrics, PROGRESS: i / planned}, checkpoint=tune.Checkpoint.from_directory(tmp))
    if log.logs_models:
        with tempfile.TemporaryDirectory() as tmp:
            _save(estimator, example, tmp, {"iteration": planned, "fit_seconds": fit_seconds})
            log.model(log_model, tmp)


def _save(estimator, example, folder: str, progress: dict[str, Any]) -> None:
    """Write a checkpoint folder: the estimator, an input example and how far training got."""
    import joblib

    joblib.dump(estimator, Path(folder) / MODEL_FILE)
    example.to_parquet(Path(folder) / EXAMPLE_FILE)
    (Path(folder) / PROGRESS_FILE).write_text(json.dumps(progress))


def grow(config: dict[str, Any], dataset, settings: dict[str, Any], estimator=None, done: int = 0,
         fit_seconds: float = 0.0, until: int | None = None) -> Iterator[tuple[int, Any, dict[str, float]]]:
    """Grow a trial's estimator one slice per iteration; no Ray and no MLflow, so a trial can be retrained anywhere.

    Args:
        config: The trial's hyperparameters.
        dataset: The :class:`raysweep.data.Dataset`.
        settings: :func:`trial_settings` of the sweep's trainer config.
        estimator: An estimator restored from a checkpoint, grown ``done`` iterations in ``fit_seconds``.
        done: Iterations already done.
        fit_seconds: Fitting time so far.
        until: Stop after this iteration (default: the trainer's last).

    Yields:
        ``(iteration, estimator, metrics)`` after each iteration (the same estimator object, grown).
    """
    from raysweep.metrics import validation_metrics

    _, size_key, defaults = FAMILIES[settings["family"]]
    params = {**defaults, **settings["params"], **config}
    total = int(params.pop(size_key))
    if estimator is None:
        estimator = _estimator_class(settings["family"])(warm_start=True, random_state=settings["seed"], **params)
    else:
        # A retry, a resumed sweep or a PBT exploit: keep the trees grown so far, take this trial's params
        # (PBT may have perturbed them) for the trees still to grow.
        estimator.set_params(**params)
    iterations = _planned_iterations(config, settings)
    last = iterations if until is None else min(until, iterations)
    for i in range(done + 1, last + 1):
        # Never shrink: a PBT exploit may bring a forest grown past this trial's own schedule.
        grown = estimator.get_params()[size_key] if hasattr(estimator, "n_features_in_") else 0  # 0 until fitted
        estimator.set_params(**{size_key: max(1, grown, round(total * i / iterations))})
        start = time.perf_counter()
        estimator.fit(dataset.X_train, dataset.y_train)
        fit_seconds += time.perf_counter() - start
        proba = estimator.predict_proba(dataset.X_val)[:, 1]
        yield i, estimator, {**validation_metrics(dataset.y_val, proba), "train_time_s": fit_seconds}


def _planned_iterations(config: dict[str, Any], settings: dict[str, Any]) -> int:
    # A forest of 3 trees cannot grow over 5 iterations: it takes 3.
    _, size_key, _ = FAMILIES[settings["family"]]
    return min(settings["iterations"], int({**settings["params"], **config}[size_key]))


def retrain(trainer_cfg, dataset, config: dict[str, Any], until: int | None = None) -> list[dict[str, float]]:
    """Train one trial again outside Ray Tune, exactly as its trial did (same seed, same iterations).

    Args:
        trainer_cfg: The sweep's ``trainer`` config node (as recorded in its ``config.yaml``).
        dataset: The sweep's :class:`raysweep.data.Dataset`.
        config: The trial's hyperparameters, with their Python types.
        until: Stop after this iteration (a trial a scheduler stopped early).

    Returns:
        The metrics of each iteration, the first iteration first.
    """
    return [metrics for _, _, metrics in grow(config, dataset, trial_settings(trainer_cfg), until=until)]


def _restore(checkpoint) -> tuple[Any, int, float]:
    """``(estimator, iterations done, fit seconds)`` from a Tune checkpoint, or ``(None, 0, 0.0)``."""
    if checkpoint is None:
        return None, 0, 0.0
    import joblib

    with checkpoint.as_directory() as folder:
        progress = json.loads((Path(folder) / PROGRESS_FILE).read_text())
        return joblib.load(Path(folder) / MODEL_FILE), int(progress["iteration"]), float(progress["fit_seconds"])


#: What loading a logged sklearn model needs, pinned to the versions it was trained with.
REQUIREMENTS = ("scikit-learn", "skops", "numpy", "scipy", "pandas")


def log_model(checkpoint_dir: str | Path):
    """Log the checkpointed estimator to the active MLflow run with the sklearn flavor.

    The pyfunc predicts fraud probabilities (``predict_proba``) from a DataFrame of the feature columns. The
    model directory also holds the project's uv files (:mod:`raysweep.packaging`).

    Args:
        checkpoint_dir: A local copy of the trial's Tune checkpoint.

    Returns:
        The ``mlflow.models.model.ModelInfo`` of the logged model.
    """
    import joblib
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature

    from raysweep import packaging

    checkpoint_dir = Path(checkpoint_dir)
    estimator = joblib.load(checkpoint_dir / MODEL_FILE)
    example = pd.read_parquet(checkpoint_dir / EXAMPLE_FILE)
    signature = infer_signature(example, estimator.predict_proba(example))
    info = mlflow.sklearn.log_model(
        estimator,
        name="model",
        signature=signature,
        input_example=example,
        pip_requirements=packaging.pip_requirements(*REQUIREMENTS),
        pyfunc_predict_fn="predict_proba",
        skops_trusted_types=trusted_types(estimator),
    )
    packaging.attach_project_files(info.model_id)
    return info


def trusted_types(estimator) -> list[str]:
    """The types skops must be told to trust to load ``estimator`` (sklearn's tree internals, for forests)."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(estimator))

