"""Worker-side logging: ``setup_mlflow`` inside the trainable; only rank 0 of a worker group writes.

Trainables log through :func:`trial_log` in both modes. With ``mlflow=driver`` it is a no-op (the driver's
callback writes); with ``mlflow=worker`` it opens the trial's child run with Ray's ``setup_mlflow`` - so the
trainable's own ``mlflow.log_*`` calls and autolog land in it - and always ends it - FINISHED, FAILED with
the error, or KILLED - so a reused actor never carries a run, or autologging, into the next trial. The run's
lifecycle is :class:`raysweep.tracking.lifecycle.TrialRuns`, the same one the driver's callback uses.

Importing this module loads no MLflow: driver-mode trials import it for the no-op.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raysweep.tracking.tags import MODEL_URI_TAG, NODE_TAG

if TYPE_CHECKING:
    from raysweep.tracking.lifecycle import TrialRuns
    from raysweep.tracking.lineage import DatasetRecord


@dataclass(frozen=True)
class WorkerLogging:
    """What a trainable needs to write its own child run (picklable, shipped in the trial settings)."""

    tracking_uri: str
    registry_uri: str | None
    experiment_id: str
    parent_run_id: str
    autolog: bool = False
    system_metrics: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    track_config: bool = False  # log numeric hyperparameters as config.NAME metrics at each start (PBT)
    step_metric: str = "val_auc"  # a metric logged every step: where a re-attached run left off
    log_models: bool = False  # each trial logs its final model to its run, from the worker
    dataset: DatasetRecord | None = None  # the data trials train on, recorded on each run (lineage)
    max_outage_s: float = 300.0  # mlflow.max_outage_s: writes wait for a tracking server that does not answer


class TrialLog:
    """Metrics sink of one trial: its child run on rank 0 in worker mode, otherwise a no-op.

    Metrics are written in batches; :meth:`flush` writes what is pending, and :func:`trial_log` flushes
    before it ends the run.
    """

    def __init__(self, runs: TrialRuns | None = None, trial_id: str = "", log_models: bool = False):
        self._runs = runs
        self._trial_id = trial_id
        #: Whether :meth:`model` logs: worker mode with ``mlflow.log_models``, on rank 0.
        self.logs_models = runs is not None and log_models
        #: Seconds spent in MLflow calls, for the overhead benchmark.
        self.seconds = 0.0

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        """Log ``values`` at ``step``; steps the run already holds (a restarted trial) are skipped."""
        if self._runs is not None:
            start = time.perf_counter()
            self._runs.metrics(self._trial_id, values, step)
            self.seconds += time.perf_counter() - start

    def flush(self) -> None:
        """Write the metrics still pending."""
        if self._runs is not None:
            start = time.perf_counter()
            self._runs.flush(self._trial_id)
            self.seconds += time.perf_counter() - start

    def model(self, log_model: Callable[..., Any], *args: Any) -> None:
        """Log the trial's model with ``log_model(*args)`` (a trainer's ``log_model``) and tag its URI on the run.

        Logged from the trial's own process, so the model reaches the tracking server (and through its artifact
        proxy, the artifact store) from whichever node the trial ran on; the registration takes it from there.
        """
        if self.logs_models:
            info = self._runs.retrying(log_model, *args)
            self._runs.tags(self._trial_id, {MODEL_URI_TAG: info.model_uri})

    def tags(self, values: Mapping[str, str]) -> None:
        """Set tags on the trial's run."""
        if self._runs is not None:
            self._runs.tags(self._trial_id, values)


@contextmanager
def trial_log(
    logging: WorkerLogging | None, params: Mapping[str, Any], trial_name: str, trial_id: str
) -> Iterator[TrialLog]:
    """Open the trial's child run when this process is the one that logs (worker mode, rank 0).

    Args:
        logging: Worker-mode settings, or ``None`` in driver mode.
        params: The trial's hyperparameters, logged as the run's params.
        trial_name: Tune's trial name, used as the run name.
        trial_id: Tune's trial id, tagged so analysis can match runs to trials.

    Yields:
        The trial's :class:`TrialLog`.
    """
    if logging is None or _world_rank() != 0:
        yield TrialLog()
        return

    import mlflow
    import ray.util
    from mlflow import MlflowClient
    from mlflow.entities import Param
    from ray.air.integrations.mlflow import setup_mlflow

    from raysweep.tracking import outage
    from raysweep.tracking.lifecycle import TrialRuns

    def create(name: str, tags: dict[str, str], config: dict[str, Any]) -> str:
        # Ray's own worker-side entry: starts the fluent run that user code logs to. The params go in one call
        # after it, before user code runs: setup_mlflow writes them one request per hyperparameter.
        setup_mlflow({}, tracking_uri=logging.tracking_uri, registry_uri=logging.registry_uri,
                     experiment_id=logging.experiment_id, run_name=name, tags=tags, rank_zero_only=True)
        run_id = mlflow.active_run().info.run_id
        if config:
            runs.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in config.items()])
        return run_id

    def terminate(run_id: str, status: str) -> None:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            try:
                mlflow.end_run(status)  # one write, and no active run left in this (maybe reused) process
                return
            except Exception:  # noqa: BLE001 - end_run drops the run before it writes: the write is retried below
                pass
        runs.client.set_terminated(run_id, status)  # waits out an outage

    runs = TrialRuns(
        MlflowClient(logging.tracking_uri, logging.registry_uri),
        logging.experiment_id,
        logging.parent_run_id,
        metrics=(logging.step_metric,),
        tags=logging.tags,
        track_config=logging.track_config,
        system_metrics=logging.system_metrics,
        tracking_uri=logging.tracking_uri,
        dataset=logging.dataset,
        create=create,
        terminate=terminate,
        # Twice the driver's limit: the sweep's driver decides when an outage is too long and stops the trials.
        outage=outage.clock(logging.tracking_uri, 2 * logging.max_outage_s),
    )
    created = runs.start(trial_id, trial_name, params, tags={NODE_TAG: ray.util.get_node_ip_address()})
    if not created:
        # The trial starts again (retry, PBT restart, resumed sweep): its own run becomes the active one.
        mlflow.set_tracking_uri(logging.tracking_uri)
        active = mlflow.active_run()
        if active is None or active.info.run_id != runs.run_id(trial_id):
            runs.retrying(lambda: mlflow.start_run(run_id=runs.run_id(trial_id)))
    if logging.autolog:
        mlflow.autolog(log_models=False, log_datasets=False, silent=True)
    status, error = "FAILED", None
    try:
        yield TrialLog(runs, trial_id, log_models=logging.log_models)
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if logging.autolog:
            mlflow.autolog(disable=True)
        runs.end(trial_id, status, error)


def numeric_values(values: Mapping[str, Any], exclude: Collection[str] = ()) -> dict[str, float]:
    """The numbers among a trial's reported values, as floats: what gets logged of a report.

    Booleans, strings, nested values (Tune's ``config``) and the names in ``exclude`` are left out.
    """
    return {
        key: float(value)
        for key, value in values.items()
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and key not in exclude
    }


def _world_rank() -> int:
    """This worker's rank in a Ray Train worker group; 0 in a plain Tune trial, which has no group."""
    try:
        import ray.train

        return ray.train.get_context().get_world_rank()
    except Exception:  # noqa: BLE001 - a Tune function trial has no Train context
        return 0
