"""What a user's function reports, seen on its way to Tune (``trainer=function``, ``trainer.train_loop``): checked
for the sweep metric, logged in worker mode, numbered on from a restored checkpoint's step; and, in driver mode,
a run the function opened itself ended with its trial."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from raysweep.errors import RaySweepError

#: Written into each checkpoint a function reports: the step of that report. A trial restarted from the checkpoint
#: (a retry, a resumed sweep) runs the function anew; its reports go on from that step, not from 1.
STEP_FILE = ".raysweep_step"
#: Attribute of an interceptor of ``report`` naming the function it stands in for.
_ORIGINAL = "__raysweep_report_of__"


@contextmanager
def stray_run_ended(source: str) -> Iterator[None]:
    """Driver mode: a run the function opens itself with MLflow's fluent API (``mlflow.log_param``) is no child of
    the sweep's parent; it is ended with the trial (not left RUNNING) and named, once per trial process."""
    failed = True
    try:
        yield
        failed = False
    finally:
        mlflow = sys.modules.get("mlflow")  # only where the function imported it
        run = mlflow.active_run() if mlflow is not None else None
        if run is not None:
            mlflow.end_run("FAILED" if failed else "FINISHED")
            if not _warned:
                _warned.append(run.info.run_id)
                logging.getLogger(__name__).warning(
                    "raysweep: %s logged to MLflow run %s (experiment %s), outside the sweep: with mlflow=driver the "
                    "sweep logs what the function reports; set mlflow=worker to have its own mlflow calls land in "
                    "its trial's child run", source, run.info.run_id, run.info.experiment_id)


_warned: list[str] = []  # a stray run named in this trial process already


class NoReport(Exception):
    """A user's function returned without reporting: its trial fails, and only it (unlike a
    :class:`RaySweepError`, which stops the sweep as every trial would repeat it)."""


class Reports:
    """What a user's function reports, seen on its way to Tune: checked for the sweep metric, logged in worker mode.

    Args:
        metric: ``sweep.metric``: every report must carry it (Tune ranks trials and checkpoints by it).
        source: What reported, for messages: ``trainer.function=MODULE:FUNC`` (or ``trainer.train_loop=...``).
        log: The trial's :class:`raysweep.tracking.worker.TrialLog` (a no-op in driver mode and on ranks > 0).
        start: The step of the checkpoint the trial restarted from (:func:`restored_step`).
    """

    def __init__(self, metric: str, source: str, log, start: int = 0):
        self.metric = metric
        self.source = source
        self.log = log
        self.count = start

    def report(self, original: Callable[..., None], metrics: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        """Check and log one report, then hand it to Tune's own ``report`` unchanged."""
        if self.metric not in metrics:
            raise RaySweepError(
                f"sweep.metric={self.metric!r} is not among what {self.source} reported "
                f"({', '.join(map(str, metrics)) or 'nothing'}); report it in every report, or set sweep.metric to "
                "one of those"
            )
        self.count += 1
        from raysweep.tracking.worker import numeric_values

        self.log.metrics(numeric_values(metrics), step=self.count)
        checkpoint = kwargs.get("checkpoint", args[0] if args else None)
        if checkpoint is not None:
            # Everything up to a checkpoint is in MLflow before Tune knows of it (a restored trial replays only
            # later steps).
            self.log.flush()
            _stamp(checkpoint, self.count)
        original(metrics, *args, **kwargs)

    def finish(self) -> None:
        """After the function returned: a function that never reported gave Tune nothing to rank.

        Raises:
            NoReport: This trial fails; the sweep goes on (a function may return early on a config it skips).
        """
        if self.count == 0:  # a restarted trial reported before it stopped
            raise NoReport(
                f"{self.source} returned without reporting; call "
                f"report({{{self.metric!r}: value}}) at least once"
            )

    @contextmanager
    def intercept(self, function: Callable[..., Any], module) -> Iterator[None]:
        """While open, ``module.report`` (and a ``report`` the function's module imported by name) come here.

        Args:
            function: The user's function.
            module: Where its reports go: ``ray.tune`` (a Tune function) or ``ray.train`` (a Train loop).

        Only public names are replaced, and put back afterwards: a reused actor runs the next trial clean.
        """
        # A trial Tune stopped in the middle may have left its interceptor behind: go back to Tune's own.
        original = getattr(module.report, _ORIGINAL, module.report)

        def report(metrics, *args, **kwargs):
            self.report(original, metrics, *args, **kwargs)

        setattr(report, _ORIGINAL, original)
        # `from ray.tune import report` in the function's module binds Tune's function there at import time.
        namespaces = [vars(module), *(
            g for g in (getattr(function, "__globals__", None),) if g is not None and g is not vars(module)
        )]
        replaced = [(ns, name) for ns in namespaces for name, value in list(ns.items())
                    if value is original or getattr(value, _ORIGINAL, None) is original]
        for ns, name in replaced:
            ns[name] = report
        try:
            yield
        finally:
            for ns, name in replaced:
                ns[name] = original


def _stamp(checkpoint, step: int) -> None:
    """Write :data:`STEP_FILE` into a checkpoint the function made in a local folder, before Tune copies it."""
    import pyarrow.fs

    if isinstance(getattr(checkpoint, "filesystem", None), pyarrow.fs.LocalFileSystem):
        (Path(checkpoint.path) / STEP_FILE).write_text(str(step))


def restored_step(checkpoint) -> int:
    """The step :data:`STEP_FILE` of ``checkpoint`` records (0 for none, or a checkpoint made elsewhere)."""
    if checkpoint is None:
        return 0
    try:  # read where it is kept (S3 too): fetching the whole checkpoint for a number would copy the model
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{STEP_FILE}") as stream:
            return int(stream.read().decode())
    except (OSError, ValueError):
        return 0
