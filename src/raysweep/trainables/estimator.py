"""``trainer=estimator``: any scikit-learn compatible estimator, grown a slice per iteration where it can be.

``trainer.estimator._target_`` names the class: scikit-learn's, XGBoost's or LightGBM's scikit-learn classes
(where installed), or the user's own. The rest of ``trainer.estimator``, ``trainer.params`` and the search space
are its constructor arguments. How a trial trains, grows and checkpoints it: :mod:`raysweep.trainables._estimators`.

A :class:`raysweep.trainables.Trainer` whose metrics follow the data's task, that restores checkpoints (PBT) and
can ``retrain`` a trial outside Tune.
"""

from __future__ import annotations

from typing import Any

from raysweep.errors import RaySweepError
from raysweep.metrics import TASK_METRICS, VALIDATION_METRICS
# best_checkpoint, log_model and resource_needs are Trainer members, the same for every scikit-learn API trainer;
# REGISTRATION_IMPORTS: what the sweep imports while Ray starts (raysweep.sweep).
from raysweep.trainables._estimators import (  # noqa: F401
    REGISTRATION_IMPORTS,
    TRAIN_TIME,
    bare,
    best_checkpoint,
    container,
    grow,
    import_class,
    is_classifier,
    log_model,
    make,
    resource_needs,
    trainable,
    trial_settings,
)
from raysweep.trainables._values import check_arguments

#: The metrics of the default task (binary); :func:`metrics` gives them per task.
METRICS = (*VALIDATION_METRICS, TRAIN_TIME)
#: Trials continue from a Tune checkpoint (retries, resumed sweeps, PBT), so scheduler=pbt can be used.
RESTORES_CHECKPOINTS = True
LOGS_FINAL_MODEL = True  # _estimators.train logs it, in worker mode with mlflow.log_models


def metrics(trainer_cfg, task: str | None) -> tuple[str, ...]:
    """The task's validation metrics and ``train_time_s``; before the task is known, every task the class can do.

    Raises:
        RaySweepError: The class cannot learn the task (a classifier for regression, or the reverse).
    """
    return task_metrics(_target(trainer_cfg), task, fixed_params(trainer_cfg))


def validate(trainer_cfg, search_space: dict[str, Any]) -> None:
    """Check the class imports and takes every fixed and searched hyperparameter.

    Raises:
        RaySweepError: No ``trainer.estimator._target_``, a class that does not import or is no estimator, an
            argument it does not take, a classifier without ``predict_proba``.
    """
    fixed = fixed_params(trainer_cfg)
    check_arguments(_target(trainer_cfg), [*search_space, *fixed], "search_space/trainer.params/trainer.estimator",
                    fixed)
    resource_needs(trainer_cfg)  # refuses use_gpu


def check_task(trainer_cfg, search_space, task: str | None) -> None:
    """Refuse a fixed or searched value the estimator's own parameter rules reject, before Ray starts.

    Raises:
        RaySweepError: The setting, its value and the estimator's rule for it, in one line.
    """
    from raysweep.trainables._values import check_values

    check_values(make(_target(trainer_cfg), fixed_params(trainer_cfg)), "trainer.estimator/trainer.params",
                 search_space, task)


def make_trainable(trainer_cfg, dataset, context):
    """The Tune function trainable for this trainer config (:func:`raysweep.trainables._estimators.train`).

    Raises:
        RaySweepError: The estimator cannot learn the data's task.
    """
    task_metrics(_target(trainer_cfg), dataset.task, fixed_params(trainer_cfg))
    return trainable(trial_settings(trainer_cfg, _target(trainer_cfg), fixed_params(trainer_cfg), context.logging),
                     dataset)


def fixed_params(trainer_cfg) -> dict[str, Any]:
    """Constructor arguments every trial shares: ``trainer.estimator`` (but ``_target_``), then ``trainer.params``."""
    estimator = container(trainer_cfg.get("estimator") or {})
    return {**{k: v for k, v in estimator.items() if k != "_target_"}, **container(trainer_cfg.params)}


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
    settings = trial_settings(trainer_cfg, _target(trainer_cfg), fixed_params(trainer_cfg))
    return [m for _, _, m in grow(config, dataset, settings, until=until)]


def _target(trainer_cfg) -> str:
    target = (trainer_cfg.get("estimator") or {}).get("_target_")
    if not target:
        raise RaySweepError("trainer=estimator needs the class; add trainer.estimator._target_=module.Class "
                            "(e.g. sklearn.ensemble.ExtraTreesClassifier)")
    return str(target)


def task_metrics(target: str, task: str | None, fixed: dict[str, Any] | None = None) -> tuple[str, ...]:
    """What trials of the class ``target`` (``module.Class``) report: the task's validation metrics and
    ``train_time_s``; with ``task=None`` (not known yet), those of every task the class can learn. ``fixed``: the
    arguments every trial passes (a class may require some).

    Raises:
        RaySweepError: The class cannot learn the task (a classifier for regression, or the reverse).
    """
    tasks = ("binary", "multiclass") if is_classifier(bare(target, fixed or {})) else ("regression",)
    if task is not None and task not in tasks:
        kind, other = ("a classifier", "regressor") if tasks[0] == "binary" else ("a regressor", "classifier")
        twin = _twin(target)
        pick = f"trainer.estimator._target_={twin}" if twin else f"a {other}"
        raise RaySweepError(f"{target} is {kind} but the data's task is {task}; pick {pick}, or set data.task")
    names = [m for t in ((task,) if task else tasks) for m in TASK_METRICS[t]]
    return (*dict.fromkeys(names), TRAIN_TIME)


def _twin(target: str) -> str | None:
    """The same model for the other kind of task, by scikit-learn's naming (``XGBClassifier`` / ``XGBRegressor``),
    where that class exists."""
    module, _, name = target.rpartition(".")
    for one, other in (("Classifier", "Regressor"), ("Regressor", "Classifier")):
        if name.endswith(one):
            twin = f"{module}.{name[: -len(one)]}{other}"
            try:
                import_class(twin)
            except RaySweepError:
                return None
            return twin
    return None
