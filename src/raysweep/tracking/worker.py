"""Worker-side logging: ``setup_mlflow`` inside the trainable; only rank 0 of a worker group writes.

Trainables log through :func:`trial_log` in both modes. With ``mlflow=driver`` it is a no-op (the driver's
callback writes); with ``mlflow=worker`` it opens the trial's child run with Ray's ``setup_mlflow`` and
always ends it - FINISHED, FAILED with the error, or KILLED - so a reused actor never carries a run, or
autologging, into the next trial.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from raysweep.tracking.tags import ERROR_TAG, MODEL_URI_TAG, NODE_TAG, ROLE_TAG, TRIAL_ID_TAG, TRIAL_ROLE


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


class TrialLog:
    """Metrics sink of one trial: a real MLflow run on rank 0 in worker mode, otherwise a no-op.

    Metrics are written in batches (:class:`raysweep.tracking.buffer.MetricBuffer`); :meth:`flush` writes
    what is pending, and :func:`trial_log` flushes before it ends the run.
    """

    def __init__(self, mlflow_module=None, last_step: int = 0, log_models: bool = False):
        self._mlflow = mlflow_module
        #: Whether :meth:`model` logs: worker mode with ``mlflow.log_models``, on rank 0.
        self.logs_models = mlflow_module is not None and log_models
        self._last_step = last_step
        self._buffer = None
        if mlflow_module is not None:
            from raysweep.tracking.buffer import MetricBuffer

            self._run_id = mlflow_module.active_run().info.run_id
            self._buffer = MetricBuffer(mlflow_module.MlflowClient())
        #: Seconds spent in MLflow calls, for the overhead benchmark.
        self.seconds = 0.0

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        """Log ``values`` at ``step``; steps the run already holds (a restarted trial) are skipped."""
        if self._buffer is not None and step > self._last_step:
            self._last_step = step
            start = time.perf_counter()
            self._buffer.add(self._run_id, values, step)
            self.seconds += time.perf_counter() - start

    def flush(self) -> None:
        """Write the metrics still pending."""
        if self._buffer is not None:
            start = time.perf_counter()
            self._buffer.flush()
            self.seconds += time.perf_counter() - start

    def model(self, log_model: Callable[..., Any], *args: Any) -> None:
        """Log the trial's model with ``log_model(*args)`` (a trainer's ``log_model``) and tag its URI on the run.

        Logged from the trial's own process, so the model reaches the tracking server (and through its artifact
        proxy, the artifact store) from whichever node the trial ran on; the registration takes it from there.
        """
        if self.logs_models:
            info = log_model(*args)
            self._mlflow.set_tag(MODEL_URI_TAG, info.model_uri)

    def tags(self, values: Mapping[str, str]) -> None:
        """Set tags on the trial's run."""
        if self._mlflow is not None:
            self._mlflow.set_tags(dict(values))


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
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
    from ray.air.integrations.mlflow import setup_mlflow

    from raysweep.tracking import reattach

    if logging.system_metrics:
        mlflow.enable_system_metrics_logging()
        # Trials last seconds to minutes: sample every second so short trials still get a curve.
        mlflow.set_system_metrics_sampling_interval(1)
        mlflow.set_system_metrics_samples_before_logging(1)
    import ray.util

    node = {NODE_TAG: ray.util.get_node_ip_address()}
    tags = {MLFLOW_PARENT_RUN_ID: logging.parent_run_id, ROLE_TAG: TRIAL_ROLE, TRIAL_ID_TAG: trial_id,
            "trial_name": trial_name, **node, **logging.tags}
    client = MlflowClient(logging.tracking_uri, logging.registry_uri)
    existing = reattach.find_trial_run(client, logging.experiment_id, logging.parent_run_id, trial_id)
    if existing is None:
        setup_mlflow(
            dict(params),
            tracking_uri=logging.tracking_uri,
            registry_uri=logging.registry_uri,
            experiment_id=logging.experiment_id,
            run_name=trial_name,
            tags=tags,
            rank_zero_only=True,
        )
        start_step = 0
    else:
        # The trial starts again (retry, PBT restart, resumed sweep): back to its own run, after its last step.
        reattach.reopen(client, existing)
        mlflow.set_tracking_uri(logging.tracking_uri)
        mlflow.start_run(run_id=existing)
        start_step = reattach.last_step(client, existing, logging.step_metric)
        logged = client.get_run(existing).data.params
        changed = reattach.changed_values(logged, {k: str(v) for k, v in params.items()})
        mlflow.set_tags({**changed, **node})
    if logging.track_config:
        mlflow.log_metrics(reattach.config_metrics(params), step=start_step)
    if logging.autolog:
        mlflow.autolog(log_models=False, log_datasets=False, silent=True)
    status = "FAILED"
    log = TrialLog(mlflow, start_step, log_models=logging.log_models)
    try:
        yield log
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    except BaseException as error:
        mlflow.set_tag(ERROR_TAG, f"{type(error).__name__}: {error}"[:500])
        raise
    finally:
        log.flush()
        if logging.autolog:
            mlflow.autolog(disable=True)
        mlflow.end_run(status)
        if logging.system_metrics:
            mlflow.disable_system_metrics_logging()


def _world_rank() -> int:
    """This worker's rank in a Ray Train worker group; 0 in a plain Tune trial, which has no group."""
    try:
        import ray.train

        return ray.train.get_context().get_world_rank()
    except Exception:  # noqa: BLE001 - a Tune function trial has no Train context
        return 0
