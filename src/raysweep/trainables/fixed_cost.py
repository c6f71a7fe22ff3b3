"""A trainer whose iterations cost a fixed time: for measuring what a sweep spends on itself.

Each iteration sleeps ``trainer.params.seconds_per_iteration`` (or, with ``trainer.params.busy``, burns that much
CPU time in a loop) and reports ``score = x * iteration`` (``x`` from the trial's config, 0 when absent), so any
result shows which trial produced it. It makes no model.

Sleeping trials hide overhead that runs while a CPU would idle; busy ones compete for the CPUs with Ray's and
raysweep's own processes, as real training does, so that overhead shows up in the sweep's wall time.

A :class:`raysweep.trainables.Trainer` that needs no data and makes no model.
"""

from __future__ import annotations

import time
from typing import Any

from raysweep.errors import RaySweepError

#: Metrics every trial reports, once per iteration.
METRICS = ("score",)
#: No model to register: sweeps with this trainer need sweep.register=false.
MAKES_MODELS = False
#: Trains on nothing: the sweep skips loading data.
NEEDS_DATA = False
_SECONDS = "seconds_per_iteration"
_BUSY = "busy"


def validate(trainer_cfg, search_space: dict[str, Any]) -> None:
    """Only ``x`` (the score's slope) and the trainer's ``seconds_per_iteration`` and ``busy`` mean anything here.

    Raises:
        RaySweepError: Another hyperparameter, a negative duration, or a busy that is not true or false.
    """
    for name in search_space:
        if name != "x":
            raise RaySweepError(f"{name!r} is not a parameter of the fixed_cost trainer; search only x")
    if float(trainer_cfg.params.get(_SECONDS, 0.2)) < 0:
        raise RaySweepError(f"trainer.params.{_SECONDS} must be >= 0")
    if not isinstance(trainer_cfg.params.get(_BUSY, False), bool):
        raise RaySweepError(f"trainer.params.{_BUSY} must be true or false")


def resource_needs(trainer_cfg) -> dict[str, Any]:
    """Each trial holds ``trainer.cpus_per_trial`` CPUs while it sleeps, like a real trial would."""
    return {"cpus_per_trial": float(trainer_cfg.cpus_per_trial)}


def make_trainable(trainer_cfg, dataset, context):
    """The Tune function trainable (the dataset is not used)."""
    settings = {
        "iterations": int(trainer_cfg.iterations),
        "seconds": float(trainer_cfg.params.get(_SECONDS, 0.2)),
        "busy": bool(trainer_cfg.params.get(_BUSY, False)),
        "logging": context.logging,
    }
    from ray import tune

    return tune.with_parameters(train, settings=settings)


def train(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """Sleep (or burn CPU) and report ``iterations`` times."""
    from ray import tune

    from raysweep.tracking.worker import trial_log
    from raysweep.trainables import PROGRESS

    context = tune.get_context()
    x = float(config.get("x", 0.0))
    n = settings["iterations"]
    wait = burn if settings.get("busy") else time.sleep
    with trial_log(settings["logging"], config, context.get_trial_name(), context.get_trial_id()) as log:
        for i in range(1, n + 1):
            wait(settings["seconds"])
            log.metrics({"score": x * i}, step=i)
            if i == n:
                log.flush()  # inside the measured time, not after the last report
            # log_time_s goes to Tune only: the benchmark's measure of logging's share of trial time.
            tune.report({"score": x * i, PROGRESS: i / n, "log_time_s": log.seconds})


def burn(seconds: float) -> None:
    """Keep this thread busy until it has used ``seconds`` of CPU time.

    CPU time, not wall time: on a CPU shared with other processes the iteration takes longer, as real training would.
    """
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def best_checkpoint(result, metric: str, mode: str) -> None:
    """No checkpoints: nothing to register."""
    return None


def log_model(checkpoint_dir):
    """There is no model to log."""
    raise RaySweepError("the fixed_cost trainer makes no model; run with sweep.register=false")
