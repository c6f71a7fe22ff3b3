"""The Tune side of a torch trial: each Ray Train report, its checkpoint included, handed to the Tune trial.

Ray's ``TuneReportCallback`` forwards a Train run's metrics to the Tune trial that runs it, but not its
checkpoints: Tune then holds none for a torch trial, so a retried trial (``sweep.max_failures``) and a resumed
sweep start again from epoch 1, and PBT skips every exploit ("no checkpoint"). Here a Train callback on the run's
controller passes each report with its checkpoint to the trial's process, which reports both with
``tune.report``: Tune copies the (small) checkpoint folder into the trial's storage and gives it back through
``tune.get_checkpoint()`` whenever the trial starts again (see :mod:`raysweep.trainables._torch_loop`).

The callback waits until the trial has reported (and so copied) a checkpoint before Train goes on: Train keeps
only its best two, and would otherwise delete one Tune is still copying.

Imported inside a Tune trial only: it imports Ray Train.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.train import UserCallback

from raysweep.compat import TRAIN_CHECKPOINT_KEY

#: What :func:`fit_reporting_to_tune` posts once the Train run has ended: the relay thread stops.
_DONE = "raysweep-train-run-ended"


@ray.remote(num_cpus=0)
class _Mailbox:
    """One report at a time from the Train controller to the Tune trial; ``post`` returns once it was reported."""

    def __init__(self):
        self._items: asyncio.Queue = asyncio.Queue(1)
        self._reported: asyncio.Queue = asyncio.Queue()

    async def post(self, item: Any, wait: bool = True) -> None:
        await self._items.put(item)
        if wait:
            await self._reported.get()

    async def take(self) -> Any:
        return await self._items.get()

    def done(self) -> None:
        self._reported.put_nowait(True)


class ReportToTune(UserCallback):
    """Train callback (runs on the Train controller): rank 0's metrics and the checkpoint, to the Tune trial."""

    def __init__(self, mailbox):
        self._mailbox = mailbox

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        values = dict(metrics[0])
        if checkpoint is not None:
            # Registration picks the best epoch's Train checkpoint by this path (torch_mlp.best_checkpoint).
            values[TRAIN_CHECKPOINT_KEY] = checkpoint.path
        ray.get(self._mailbox.post.remote((values, checkpoint)))


def mailbox():
    """A mailbox actor on this node (it lives and dies with the trial), for :class:`ReportToTune`."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return _Mailbox.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()


def fit_reporting_to_tune(trainer, box) -> None:
    """Run ``trainer.fit()`` here while a thread reports what :class:`ReportToTune` posts to ``box`` to Tune.

    ``fit`` stays on the trial's own thread, as with Ray's callback: when Tune stops the trial (a scheduler's
    decision, a PBT exploit), its report call ends the relay thread and Tune ends the trial's process, and with it
    the Train run it owns.
    """
    from ray import tune

    def relay() -> None:
        try:
            while (item := ray.get(box.take.remote())) != _DONE:
                values, checkpoint = item
                saved = None if checkpoint is None else tune.Checkpoint(checkpoint.path, checkpoint.filesystem)
                tune.report(values, checkpoint=saved)
                box.done.remote()
        except RayActorError:
            return  # the mailbox is gone (its node with it): the Train run fails on the same error, and says so

    thread = threading.Thread(target=relay, name="raysweep-train-to-tune", daemon=True)
    thread.start()
    try:
        trainer.fit()
    finally:
        # Every report was taken by now (the callback waits for each): the relay reports the last and stops.
        try:
            ray.get(box.post.remote(_DONE, wait=False))
        except RayActorError:
            pass  # fit's own error (raised now) tells what happened
        thread.join()
