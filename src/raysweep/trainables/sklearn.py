"""scikit-learn trainer: the built-in tree-ensemble families, classifier or regressor as the data's task needs.

``trainer.family`` names a family (:data:`FAMILIES`): a classifier for binary and multiclass targets, a regressor
for regression, and the size parameter the search space gives (``n_estimators`` trees, ``max_iter`` boosting
rounds), grown with ``warm_start`` in equal steps over ``trainer.iterations`` reports so schedulers can stop
trials early. Apart from picking the class this is ``trainer=estimator`` (:mod:`raysweep.trainables.estimator`),
the same engine: preprocessing fitted inside the model, the task's metrics, a checkpoint per report.

A :class:`raysweep.trainables.Trainer` that restores checkpoints (PBT) and can ``retrain`` a trial outside Tune.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from raysweep.errors import RaySweepError
from raysweep.metrics import TASK_METRICS, VALIDATION_METRICS

# best_checkpoint, log_model and resource_needs are Trainer members, the same for every scikit-learn API trainer;
# REGISTRATION_IMPORTS: what the sweep imports while Ray starts (raysweep.sweep).
from raysweep.trainables._estimators import (  # noqa: F401
    REGISTRATION_IMPORTS,
    TRAIN_TIME,
    best_checkpoint,
    container,
    grow,
    log_model,
    make,
    resource_needs,
    trainable,
    trial_settings,
)
from raysweep.trainables._values import check_arguments


class Family(NamedTuple):
    """A built-in family: its classifier and regressor classes, the size grown per iteration, fixed defaults."""

    classifier: str
    regressor: str
    size_key: str
    defaults: dict[str, Any]

    def target(self, task: str) -> str:
        """The class for ``task``."""
        return self.regressor if task == "regression" else self.classifier


#: ``trainer.family`` -> its :class:`Family`.
FAMILIES: dict[str, Family] = {
    # n_jobs=1: a trial holds trainer.cpus_per_trial CPUs; more threads would fight the other trials.
    "random_forest": Family("sklearn.ensemble.RandomForestClassifier", "sklearn.ensemble.RandomForestRegressor",
                            "n_estimators", {"n_jobs": 1}),
    "hist_gradient_boosting": Family("sklearn.ensemble.HistGradientBoostingClassifier",
                                     "sklearn.ensemble.HistGradientBoostingRegressor", "max_iter", {}),
}

#: The metrics of the default task (binary); :func:`metrics` gives them per task.
METRICS = (*VALIDATION_METRICS, TRAIN_TIME)
#: Trials continue from a Tune checkpoint (retries, resumed sweeps, PBT), so scheduler=pbt can be used.
RESTORES_CHECKPOINTS = True
LOGS_FINAL_MODEL = True  # _estimators.train logs it, in worker mode with mlflow.log_models


def metrics(trainer_cfg, task: str | None) -> tuple[str, ...]:
    """The task's validation metrics and ``train_time_s``; every task's while the task is not known."""
    names = TASK_METRICS[task] if task else [m for names in TASK_METRICS.values() for m in names]
    return (*dict.fromkeys(names), TRAIN_TIME)


def validate(trainer_cfg, search_space: dict[str, Any]) -> None:
    """Check the family exists and every hyperparameter is one its classifier or regressor takes.

    Raises:
        RaySweepError: Unknown family, unknown parameter, or no size parameter to grow.
    """
    family = _family(trainer_cfg)
    names = [*search_space, *trainer_cfg.params]
    classifier, regressor = (family.classifier.rsplit(".", 1)[1], family.regressor.rsplit(".", 1)[1])
    known = parameter_names(family)
    for name in names:
        if name not in known:
            raise RaySweepError(f"{name!r} is not a parameter of {classifier} or {regressor}; remove it from "
                                "search_space/trainer.params or pick another trainer.family")
    if family.size_key not in search_space and family.size_key not in trainer_cfg.params:
        raise RaySweepError(f"search_space.{family.size_key} is missing; the {trainer_cfg.family} trainer grows it "
                            "per iteration")
    resource_needs(trainer_cfg)  # refuses use_gpu


def check_task(trainer_cfg, search_space, task: str | None) -> None:
    """Refuse a value the family's class for the data's task cannot take (``criterion: gini`` for a regressor).

    Raises:
        RaySweepError: The setting, its value and scikit-learn's rule for it, in one line.
    """
    from raysweep.trainables._values import check_values

    settings = _settings(trainer_cfg, task or "binary")
    check_values(make(settings["target"], settings["params"]), "trainer.params", search_space, task)


def parameter_names(family: Family) -> set[str]:
    """The parameters the family's classifier or regressor takes.

    Read once per scikit-learn version and kept (:mod:`raysweep.cache`): importing scikit-learn to read them was
    ~1 s of the checks before Ray starts, the sweep's critical path; the driver imports it later anyway, while
    Ray starts.
    """
    from importlib.metadata import version

    from raysweep import cache

    def read() -> list[str]:
        return sorted(set(make(family.classifier, {}).get_params()) | set(make(family.regressor, {}).get_params()))

    return set(cache.remembered(f"params-{family.classifier}-{family.regressor}-scikit-learn-{version('scikit-learn')}"
                                ".json", read))


def make_trainable(trainer_cfg, dataset, context):
    """The Tune function trainable: the family's class for the data's task, grown by the shared engine.

    Args:
        trainer_cfg: The ``trainer`` config node.
        dataset: The :class:`raysweep.data.Dataset` to train on; shipped once through the object store.
        context: The sweep's :class:`raysweep.trainables.TrialContext`.

    Raises:
        RaySweepError: ``trainer.params`` names an argument the task's class does not take.
    """
    settings = _settings(trainer_cfg, dataset.task, context.logging)
    check_arguments(settings["target"], trainer_cfg.params, "trainer.params", settings["params"])
    return trainable(settings, dataset)


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
    return [m for _, _, m in grow(config, dataset, _settings(trainer_cfg, dataset.task), until=until)]


def _settings(trainer_cfg, task: str, logging=None) -> dict[str, Any]:
    family = _family(trainer_cfg)
    return trial_settings(trainer_cfg, family.target(task), {**family.defaults, **container(trainer_cfg.params)},
                          logging)


def _family(trainer_cfg) -> Family:
    if trainer_cfg.family not in FAMILIES:
        raise RaySweepError(f"trainer.family={trainer_cfg.family!r} is not known; use one of {', '.join(FAMILIES)}, "
                            "or trainer=estimator with trainer.estimator._target_=CLASS for any other estimator")
    return FAMILIES[trainer_cfg.family]
