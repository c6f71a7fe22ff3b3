"""Driver-side logging: Ray's ``MLflowLoggerCallback``, kept to the trainer's metrics and nested under the parent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.result import TRAINING_ITERATION

from raysweep.tracking import reattach
from raysweep.tracking.buffer import MetricBuffer
from raysweep.tracking.tags import ERROR_TAG, ROLE_TAG, TRIAL_ID_TAG, TRIAL_ROLE


class SweepLoggerCallback(MLflowLoggerCallback):
    """One child run per trial under the sweep's parent run, written from the Tune driver.

    Compared with Ray's callback it logs only the trainer's metrics (not ``pid``, ``timestamp``,
    ``config/*`` and Ray's other bookkeeping keys), writes params and metrics in one batch per call, tags
    each run with its trial id and records a failed trial's error. A trial that starts again (a retry, a
    PBT restart, a resumed sweep) goes back to its own run and logs only steps after the last one the run
    holds. With ``track_config`` (PBT) each start also logs the numeric hyperparameters as ``config.NAME``
    metrics, since a run's params cannot change. With ``system_metrics`` it samples the driver node's CPU
    and memory (GPU where present) into each trial's run while the trial runs.
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        registry_uri: str | None,
        experiment_name: str,
        parent_run_id: str,
        metrics: Sequence[str],
        child_tags: Mapping[str, str] | None = None,
        system_metrics: bool = False,
        track_config: bool = False,
    ):
        super().__init__(
            tracking_uri=tracking_uri,
            registry_uri=registry_uri,
            experiment_name=experiment_name,
            tags={MLFLOW_PARENT_RUN_ID: parent_run_id, ROLE_TAG: TRIAL_ROLE, **(child_tags or {})},
        )
        self._parent_run_id = parent_run_id
        self._metrics = tuple(metrics)
        self._system_metrics = system_metrics
        self._track_config = track_config
        self._monitors: dict[str, object] = {}
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._last_step: dict[str, int] = {}  # trial id -> last step logged
        self._configs: dict[str, dict] = {}  # trial id -> config at the last start
        self._client: MlflowClient | None = None
        self._buffer: MetricBuffer | None = None

    def setup(self, *args, **kwargs):
        super().setup(*args, **kwargs)
        self._client = MlflowClient(self.tracking_uri, self.registry_uri)
        self._buffer = MetricBuffer(self._client)

    def log_trial_start(self, trial):
        trial_id, config = trial.trial_id, dict(trial.config)
        run_id = self._runs.get(trial_id) or reattach.find_trial_run(
            self._client, self.mlflow_util.experiment_id, self._parent_run_id, trial_id
        )
        if run_id is None:
            tags = {**self.tags, "trial_name": str(trial), TRIAL_ID_TAG: trial_id}
            run_id = self._client.create_run(self.mlflow_util.experiment_id, run_name=str(trial), tags=tags).info.run_id
            self._client.log_batch(run_id, params=[Param(k, str(v)) for k, v in config.items()])
            self._last_step[trial_id] = 0
        else:
            reattach.reopen(self._client, run_id)
            if trial_id not in self._last_step:
                self._last_step[trial_id] = reattach.last_step(self._client, run_id, self._metrics[0])
            changed = reattach.changed_values(self._configs.get(trial_id, config), config)
            if changed:
                self._client.log_batch(run_id, tags=[RunTag(k, v) for k, v in changed.items()])
        self._runs[trial_id] = run_id
        self._trial_runs[trial] = run_id
        self._configs[trial_id] = config
        if self._track_config:
            self._buffer.add(run_id, reattach.config_metrics(config), self._last_step[trial_id])
        if self._system_metrics and run_id not in self._monitors:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(run_id, sampling_interval=1, tracking_uri=self.tracking_uri)
            monitor.start()
            self._monitors[run_id] = monitor

    def log_trial_result(self, iteration, trial, result):
        step = int(result[TRAINING_ITERATION])
        if step <= self._last_step.get(trial.trial_id, 0):
            return  # replayed after a restore: the run already holds this step
        self._last_step[trial.trial_id] = step
        values = {
            key: float(result[key])
            for key in self._metrics
            if isinstance(result.get(key), (int, float)) and not isinstance(result.get(key), bool)
        }
        self._buffer.add(self._runs[trial.trial_id], values, step)

    def log_trial_end(self, trial, failed: bool = False):
        run_id = self._runs[trial.trial_id]
        self._buffer.flush(run_id)
        monitor = self._monitors.pop(run_id, None)
        if monitor is not None:
            monitor.finish()
        if failed and trial.error_file:
            self._client.log_batch(run_id, tags=[RunTag(ERROR_TAG, _error_summary(trial.error_file))])
        self._client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def on_experiment_end(self, trials, **info):
        # Trials still running when Tune stops (an interrupt) never reach log_trial_end.
        self._buffer.flush()
        for monitor in self._monitors.values():
            monitor.finish()
        self._monitors.clear()


def _error_summary(error_file: str) -> str:
    """The exception line of a trial's error file (its last non-empty line)."""
    try:
        lines = [line for line in Path(error_file).read_text().splitlines() if line.strip()]
    except OSError:
        return "trial failed"
    return lines[-1][:500] if lines else "trial failed"
