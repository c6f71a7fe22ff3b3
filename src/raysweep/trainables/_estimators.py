"""The engine of the scikit-learn API trainers (:mod:`~raysweep.trainables.estimator`, the built-in families of
:mod:`~raysweep.trainables.sklearn`): build an estimator, grow it a slice per iteration, score and checkpoint it.

Every trial fits :func:`raysweep.preprocess.build` on the training split (numeric columns standardised for all
but tree and naive Bayes models, :func:`raysweep.preprocess.needs_scaling`), then grows the estimator over
``trainer.iterations`` reports, each with the validation metrics of the data's task and a checkpoint of the
whole ``Pipeline`` so far (the registered model is that checkpoint, never a retrain). How it grows
(:func:`growth`):

- ``warm_start`` with ``n_estimators`` (forests, bagging, gradient boosting) or HistGradientBoosting's
  ``max_iter``: the size rises to its final value in equal steps, keeping what was fitted;
- ``warm_start`` with ``max_iter`` (MLP, SGD, logistic regression): each report fits a further slice of the
  ``max_iter`` budget, starting from the previous solution;
- XGBoost and LightGBM: ``n_estimators`` boosting rounds, added in equal steps to the booster so far;
- anything else: one fit, one report.

Module-level imports stay light (no scikit-learn): driver-mode trial processes import this.
"""

from __future__ import annotations

import json
import pickle
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raysweep.errors import RaySweepError
from raysweep.trainables._scoring import Validation

#: Reported besides the task's validation metrics: seconds spent fitting so far.
TRAIN_TIME = "train_time_s"

#: The fitted Pipeline (preprocessing, estimator), a plain pickle (protocol 5) that ``joblib.load`` also reads, as
#: it reads the joblib dumps of checkpoints written before: pickle writes a forest's many small tree arrays 5-8 x
#: faster than ``joblib.dump``, and a trial writes one per report.
MODEL_FILE = "model.joblib"
EXAMPLE_FILE = "input_example.parquet"  # a few raw validation rows: the logged model's example and signature
CONFIG_FILE = "model.json"  # raysweep.tabular.model_config: task, classes, columns
PROGRESS_FILE = "progress.json"  # iteration, fit seconds
#: What :func:`log_model` imports in the driver (skops.io: 4-5 s, it imports all of scikit-learn and torch):
#: imported while Ray starts (raysweep.sweep).
REGISTRATION_IMPORTS = ("mlflow.sklearn", "skops.io")

#: Boosting libraries whose scikit-learn classes continue training from a booster: top-level module -> the
#: ``fit`` argument taking the booster so far, and how to get it from a fitted estimator.
_BOOSTERS = {
    "xgboost": ("xgb_model", lambda estimator: estimator.get_booster()),
    "lightgbm": ("init_model", lambda estimator: estimator.booster_),
}
#: Classes whose ``max_iter`` with ``warm_start`` counts all iterations (it adds rounds, not a fresh budget).
_CUMULATIVE_MAX_ITER = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")
_DEFAULT_ROUNDS = 100  # boosters' n_estimators when left at None


def trainable(settings: dict[str, Any], dataset):
    """:func:`train` bound to the data (shipped once through the object store) and the settings."""
    from ray import tune

    return tune.with_parameters(train, dataset=dataset, settings=settings)


def trial_settings(trainer_cfg, target: str, params: dict[str, Any], logging=None) -> dict[str, Any]:
    """What every trial of a sweep shares besides its hyperparameters: class, fixed arguments, iterations, seed."""
    return {
        "target": target,
        "params": dict(params),
        "iterations": int(trainer_cfg.iterations),
        "seed": int(trainer_cfg.seed),
        "n_jobs": max(1, int(trainer_cfg.cpus_per_trial)),
        "logging": logging,
    }


def best_checkpoint(result, metric: str, mode: str) -> str | None:
    """Path of the best-scoring checkpoint Tune kept for the trial (the sweep keeps the two best and the latest)."""
    checkpoint = result.get_best_checkpoint(metric, mode) if result.best_checkpoints else None
    return checkpoint.path if checkpoint is not None else None


def train(config: dict[str, Any], dataset, settings: dict[str, Any]) -> None:
    """Tune function trainable: grow the estimator, report metrics and a checkpoint each iteration."""
    from ray import tune

    from raysweep.tracking.worker import trial_log

    context = tune.get_context()
    with trial_log(settings["logging"], config, context.get_trial_name(), context.get_trial_id()) as log:
        _report_growth(config, dataset, settings, log)


def _report_growth(config: dict[str, Any], dataset, settings: dict[str, Any], log) -> None:
    from ray import tune

    from raysweep.tabular import model_config
    from raysweep.trainables import PROGRESS

    example = dataset.X_val.head(5)
    described = model_config(dataset.task, dataset.classes, dataset.X_train.columns)
    pipeline, progress = _restore(tune.get_checkpoint())
    planned = planned_iterations(config, settings)
    for i, pipeline, metrics in grow(config, dataset, settings, pipeline, **progress):
        log.metrics(metrics, step=i)
        # Everything up to a checkpoint is in MLflow before Tune knows of the checkpoint: a trial restored from
        # it after a crash replays only later steps, so none goes missing.
        log.flush()
        with tempfile.TemporaryDirectory() as tmp:
            _save(pipeline, example, described, tmp, {"iteration": i, "fit_seconds": metrics[TRAIN_TIME]})
            tune.report({**metrics, PROGRESS: i / planned}, checkpoint=tune.Checkpoint.from_directory(tmp))
    if log.logs_models:
        with tempfile.TemporaryDirectory() as tmp:
            _save(pipeline, example, described, tmp, {})
            log.model(log_model, tmp)


def grow(config: dict[str, Any], dataset, settings: dict[str, Any], pipeline=None, done: int = 0,
         fit_seconds: float = 0.0, until: int | None = None) -> Iterator[tuple[int, Any, dict[str, float]]]:
    """Grow a trial's estimator one slice per iteration; no Ray and no MLflow, so a trial can be retrained anywhere.

    Args:
        config: The trial's hyperparameters.
        dataset: The :class:`raysweep.data.Dataset`.
        settings: :func:`trial_settings` of the sweep.
        pipeline: A ``Pipeline`` restored from a checkpoint, grown ``done`` iterations in ``fit_seconds``.
        done: Iterations already done.
        fit_seconds: Fitting time so far.
        until: Stop after this iteration (default: the last).

    Yields:
        ``(iteration, pipeline, metrics)`` after each iteration (the same pipeline object, grown).
    """
    from raysweep import preprocess, tabular
    from raysweep.metrics import score

    params = _arguments(config, settings)
    size_key, how = growth(make(settings["target"], params))
    total = _final_size(settings["target"], params, size_key)
    if size_key:
        params.pop(size_key, None)  # set per iteration below
    if pipeline is None:
        estimator = make(settings["target"], params)
        pipeline = tabular.pipeline(estimator, dataset.X_train, scale=preprocess.needs_scaling(estimator))
        start = time.perf_counter()
        pipeline[0].fit(dataset.X_train)
        fit_seconds += time.perf_counter() - start
    else:
        # A retry, a resumed sweep or a PBT exploit: keep what was grown so far, take this trial's params (PBT may
        # have perturbed them) for what is still to grow.
        pipeline[-1].set_params(**params)
    preprocess, estimator = pipeline[0], pipeline[-1]
    X_train = preprocess.transform(dataset.X_train)
    validation = Validation(preprocess.transform(dataset.X_val), dataset.task, len(dataset.classes))
    iterations = planned_iterations(config, settings)
    last = iterations if until is None else min(until, iterations)
    for i in range(done + 1, last + 1):
        start = time.perf_counter()
        _fit_slice(estimator, X_train, dataset.y_train, size_key, how, total, i, iterations)
        fit_seconds += time.perf_counter() - start
        prediction = validation.scores(estimator)
        yield i, pipeline, {**score(dataset.task, dataset.y_val, prediction), TRAIN_TIME: fit_seconds}


def growth(estimator) -> tuple[str | None, str | None]:
    """``(size parameter, how it grows)`` of an estimator, or ``(None, None)`` when it is fitted once.

    ``how`` is ``"warm_start"`` (the size is the total), ``"slices"`` (``max_iter`` is a budget per fit) or
    ``"boost"`` (rounds added to the booster so far).
    """
    params = estimator.get_params()
    if type(estimator).__module__.split(".")[0] in _BOOSTERS and "n_estimators" in params:
        return "n_estimators", "boost"
    if "warm_start" in params:
        if "n_estimators" in params:
            return "n_estimators", "warm_start"
        if "max_iter" in params:
            return "max_iter", "warm_start" if type(estimator).__name__ in _CUMULATIVE_MAX_ITER else "slices"
    return None, None


def planned_iterations(config: dict[str, Any], settings: dict[str, Any]) -> int:
    """Reports a trial makes: ``trainer.iterations``, fewer when the size is smaller (3 trees cannot grow in 5
    steps), one when the estimator does not grow."""
    params = _arguments(config, settings)
    size_key, _ = growth(make(settings["target"], params))
    if size_key is None:
        return 1
    return max(1, min(settings["iterations"], _final_size(settings["target"], params, size_key)))


def make(target: str, params: dict[str, Any]):
    """An instance of ``target`` (``module.Class``) with ``params``.

    Raises:
        RaySweepError: The class does not import, is no estimator, or refuses the arguments.
    """
    cls = import_class(target)
    try:
        estimator = cls(**params)
    except TypeError as error:
        raise RaySweepError(f"{target}({', '.join(params)}) fails: {error}; fix the estimator's arguments") from None
    if not hasattr(estimator, "get_params") or not hasattr(estimator, "fit"):
        raise RaySweepError(f"{target} is not a scikit-learn compatible estimator (no fit/get_params); name one "
                            "that follows the scikit-learn API")
    return estimator


def import_class(target: str):
    """The class a ``module.Class`` path names.

    Raises:
        RaySweepError: It does not import (naming the package to install) or is not there.
    """
    import importlib

    module_name, _, name = target.rpartition(".")
    if not module_name:
        raise RaySweepError(f"trainer.estimator._target_={target!r} is not module.Class; name the class with its "
                            "module, e.g. sklearn.ensemble.ExtraTreesClassifier")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        extra = " (pip install 'raysweep[xgboost]')" if module_name.split(".")[0] == "xgboost" else ""
        raise RaySweepError(f"{target} cannot be imported ({error}); install {module_name.split('.')[0]}{extra}") \
            from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise RaySweepError(f"{module_name} has no {name!r}; check trainer.estimator._target_") from None


def log_model(checkpoint_dir: str | Path):
    """Log the checkpointed pipeline to the active MLflow run as a tabular model (:func:`raysweep.tabular.log_model`):
    it takes the raw columns and answers class probabilities and ``label``, or ``prediction``.

    Args:
        checkpoint_dir: A local copy of the trial's Tune checkpoint.

    Returns:
        The ``mlflow.models.model.ModelInfo`` of the logged model.
    """
    import joblib
    import pandas as pd

    from raysweep import tabular

    folder = Path(checkpoint_dir)
    pipeline = joblib.load(folder / MODEL_FILE)
    described = json.loads((folder / CONFIG_FILE).read_text())
    return tabular.log_model(task=described["task"], classes=described["classes"],
                             example=pd.read_parquet(folder / EXAMPLE_FILE), pipeline=pipeline,
                             requirements=tabular.distributions(pipeline[-1]))


def _fit_slice(estimator, X, y, size_key, how, total: int, i: int, iterations: int) -> None:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # n_jobs is set wherever a class takes it; scikit-learn >= 1.8's LogisticRegression says it no longer uses it.
        warnings.filterwarnings("ignore", message="'n_jobs' has no effect", category=FutureWarning)
        if how == "slices" and i < iterations:  # a slice stops at its share of the budget by design: the last warns
            warnings.simplefilter("ignore", ConvergenceWarning)
        _fit(estimator, X, y, size_key, how, total, i, iterations)


def _fit(estimator, X, y, size_key, how, total: int, i: int, iterations: int) -> None:
    target = max(1, round(total * i / iterations))
    if how is None:
        estimator.fit(X, y)
    elif how == "warm_start":
        # Never shrink: a PBT exploit may bring an estimator grown past this trial's own schedule.
        grown = estimator.get_params()[size_key] if _fitted(estimator) else 0
        estimator.set_params(warm_start=True, **{size_key: max(grown, target)})
        estimator.fit(X, y)
    elif how == "slices":
        previous = max(1, round(total * (i - 1) / iterations)) if i > 1 else 0
        estimator.set_params(warm_start=True, **{size_key: max(1, target - previous)})
        estimator.fit(X, y)
        estimator.set_params(**{size_key: total})  # the logged model shows the trial's budget, not the last slice
    else:  # boost: add the rounds still missing to the booster so far
        argument, booster = _BOOSTERS[type(estimator).__module__.split(".")[0]]
        grown = estimator.get_params()[size_key] if _fitted(estimator) else 0
        if target > grown:
            estimator.set_params(**{size_key: target - grown})
            estimator.fit(X, y, **({argument: booster(estimator)} if grown else {}))
        estimator.set_params(**{size_key: max(grown, target)})


def _fitted(estimator) -> bool:
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(estimator)
        return True
    except Exception:  # noqa: BLE001 - NotFittedError, or an estimator whose own check is stricter
        return False


def _arguments(config: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    # Seed and threads when the class takes them and nothing set them: trials are reproducible and stay on their
    # CPUs. The search space wins over fixed arguments.
    params = {**settings["params"], **config}
    known = bare(settings["target"], settings["params"]).get_params()
    for key, value in (("random_state", settings["seed"]), ("n_jobs", settings["n_jobs"])):
        if key in known and key not in params:
            params[key] = value
    return params


def _final_size(target: str, params: dict[str, Any], size_key: str | None) -> int:
    # The searched or fixed size, else the class's own default (a booster's None means 100 rounds).
    if size_key is None:
        return 1
    value = params.get(size_key)
    if value is None:
        value = bare(target, params).get_params()[size_key]
    return int(_DEFAULT_ROUNDS if value is None else value)


def _save(pipeline, example, described: dict[str, Any], folder: str, progress: dict[str, Any]) -> None:
    """Write a checkpoint folder: the pipeline, an input example, what the model answers, how far it got."""
    with open(Path(folder) / MODEL_FILE, "wb") as file:
        pickle.dump(pipeline, file, protocol=5)
    example.to_parquet(Path(folder) / EXAMPLE_FILE)
    (Path(folder) / CONFIG_FILE).write_text(json.dumps(described))
    (Path(folder) / PROGRESS_FILE).write_text(json.dumps(progress))


def _restore(checkpoint) -> tuple[Any, dict[str, Any]]:
    """``(pipeline, {"done": iterations, "fit_seconds": seconds})`` from a Tune checkpoint, or ``(None, {})``."""
    if checkpoint is None:
        return None, {}
    import joblib

    with checkpoint.as_directory() as folder:
        progress = json.loads((Path(folder) / PROGRESS_FILE).read_text())
        return joblib.load(Path(folder) / MODEL_FILE), {"done": int(progress["iteration"]),
                                                        "fit_seconds": float(progress["fit_seconds"])}


def bare(target: str, fixed: dict[str, Any]):
    """An instance of ``target`` to read its parameters' names and defaults from: made without arguments, or with
    ``fixed`` when the class requires some."""
    try:
        return make(target, {})
    except RaySweepError:
        return make(target, fixed)


def is_classifier(estimator) -> bool:
    from sklearn.base import is_classifier, is_regressor

    if not (is_classifier(estimator) or is_regressor(estimator)):
        raise RaySweepError(f"{type(estimator).__module__}.{type(estimator).__name__} is neither a classifier nor a "
                            "regressor; name a supervised estimator")
    return is_classifier(estimator)


def resource_needs(trainer_cfg) -> dict[str, Any]:
    """Each trial trains in its own process on ``trainer.cpus_per_trial`` CPUs; ``trainer.use_gpu`` is refused."""
    if trainer_cfg.use_gpu:
        raise RaySweepError("trainer.use_gpu=true: the scikit-learn API trainers run on CPUs only; "
                            "set trainer.use_gpu=false")
    return {"cpus_per_trial": float(trainer_cfg.cpus_per_trial)}


def container(node) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
