"""Training frameworks raysweep can sweep, one module each, looked up by ``trainer.name``.

A trainer module exposes:

- ``METRICS``: the metric names its trials report (``sweep.metric`` must be one of them);
- ``validate(trainer_cfg, search_space)``: raise ``RaySweepError`` for hyperparameters it cannot take;
- ``make_trainable(trainer_cfg, dataset)``: the Tune function trainable and its per-trial resources;
- ``log_model(checkpoint_dir, dataset_example)``: log the checkpointed model to the active MLflow run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from raysweep.errors import RaySweepError

_TRAINERS = {"sklearn": "raysweep.trainables.sklearn"}


def get(name: str) -> ModuleType:
    """Return the trainer module called ``name``.

    Raises:
        RaySweepError: No trainer has that name.
    """
    try:
        return importlib.import_module(_TRAINERS[name])
    except KeyError:
        raise RaySweepError(f"trainer.name={name!r} is not known; use one of {', '.join(_TRAINERS)}") from None
