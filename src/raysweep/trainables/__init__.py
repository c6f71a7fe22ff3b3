"""Training frameworks raysweep can sweep, one module each, looked up by ``trainer.name``.

A trainer module exposes:

- ``METRICS``: the metric names its trials report (``sweep.metric`` must be one of them);
- ``validate(trainer_cfg, search_space)``: raise ``RaySweepError`` for hyperparameters it cannot take;
- ``resource_needs(trainer_cfg)``: keyword arguments for :func:`raysweep.resources.plan`;
- ``make_trainable(trainer_cfg, dataset, context)``: the Tune function trainable;
- ``best_checkpoint(result, metric, mode)``: where a finished trial's best model is;
- ``log_model(checkpoint_dir)``: log that model to the active MLflow run;
- optionally ``MAKES_MODELS = False`` when there is nothing to register, ``NEEDS_DATA = False`` when it
  trains on no data (``make_trainable`` then gets ``None``);
- optionally ``RESTORES_CHECKPOINTS = True`` when its trials continue from ``tune.get_checkpoint()`` (PBT);
- optionally ``retrain(trainer_cfg, dataset, config, until)``: train one trial again outside Ray Tune and
  return each iteration's metrics (``raysweep reproduce``).

Every result a trainable reports carries :data:`PROGRESS`.

Module-level imports stay light: heavy frameworks load inside the functions that train.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

from raysweep.errors import RaySweepError

#: Result key every trainable reports to Tune (not to MLflow): the fraction of its planned iterations done,
#: so a trial that ended below 1.0 without an error was stopped early (scheduler or sweep stop criteria).
PROGRESS = "progress"

_TRAINERS = {
    "sklearn": "raysweep.trainables.sklearn",
    "torch": "raysweep.trainables.torch_mlp",
    "fixed_cost": "raysweep.trainables.fixed_cost",
}


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares besides the data: ranking, logging, resources, storage."""

    metric: str
    mode: str
    logging: object | None  # raysweep.tracking.worker.WorkerLogging in worker mode, else None
    resources: object  # raysweep.resources.ResourcePlan
    storage_path: str  # where Ray Train runs of distributed trials keep their checkpoints
    child_tags: dict[str, str] = field(default_factory=dict)


def get(name: str) -> ModuleType:
    """Return the trainer module called ``name``.

    Raises:
        RaySweepError: No trainer has that name.
    """
    try:
        return importlib.import_module(_TRAINERS[name])
    except KeyError:
        raise RaySweepError(f"trainer.name={name!r} is not known; use one of {', '.join(_TRAINERS)}") from None
