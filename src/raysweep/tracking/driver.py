"""Driver-side logging: Ray's ``MLflowLoggerCallback``, kept to the trainer's metrics and nested under the parent."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.result import TRAINING_ITERATION

from raysweep.tracking.tags import ERROR_TAG, ROLE_TAG, TRIAL_ID_TAG, TRIAL_ROLE


class SweepLoggerCallback(MLflowLoggerCallback):
    """One child run per trial under the sweep's parent run, written from the Tune driver.

    Compared with Ray's callback it logs only the trainer's metrics (not ``pid``, ``timestamp``,
    ``config/*`` and Ray's other bookkeeping keys), writes params and metrics in one batch per call, tags
    each run with its trial id and records a failed trial's error. With ``system_metrics`` it samples the
    driver node's CPU and memory (GPU where present) into each trial's run while the trial runs.
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
    ):
        super().__init__(
            tracking_uri=tracking_uri,
            registry_uri=registry_uri,
            experiment_name=experiment_name,
            tags={MLFLOW_PARENT_RUN_ID: parent_run_id, ROLE_TAG: TRIAL_ROLE, **(child_tags or {})},
        )
        self._metrics = tuple(metrics)
        self._system_metrics = system_metrics
        self._monitors: dict[str, object] = {}
        self._client: MlflowClient | None = None

    def setup(self, *args, **kwargs):
        super().setup(*args, **kwargs)
        self._client = MlflowClient(self.tracking_uri, self.registry_uri)

    def log_trial_start(self, trial):
        if trial in self._trial_runs:
            return
        tags = {**self.tags, "trial_name": str(trial), TRIAL_ID_TAG: trial.trial_id}
        run = self._client.create_run(self.mlflow_util.experiment_id, run_name=str(trial), tags=tags)
        self._trial_runs[trial] = run.info.run_id
        self._client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in trial.config.items()])
        if self._system_metrics:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(run.info.run_id, sampling_interval=1, tracking_uri=self.tracking_uri)
            monitor.start()
            self._monitors[run.info.run_id] = monitor

    def log_trial_result(self, iteration, trial, result):
        now = int(time.time() * 1000)
        step = int(result[TRAINING_ITERATION])
        metrics = [
            Metric(key, float(result[key]), now, step)
            for key in self._metrics
            if isinstance(result.get(key), (int, float)) and not isinstance(result.get(key), bool)
        ]
        if metrics:
            self._client.log_batch(self._trial_runs[trial], metrics=metrics)

    def log_trial_end(self, trial, failed: bool = False):
        run_id = self._trial_runs[trial]
        monitor = self._monitors.pop(run_id, None)
        if monitor is not None:
            monitor.finish()
        if failed and trial.error_file:
            self._client.log_batch(run_id, tags=[RunTag(ERROR_TAG, _error_summary(trial.error_file))])
        super().log_trial_end(trial, failed=failed)

    def on_experiment_end(self, trials, **info):
        # Trials still running when Tune stops (an interrupt) never reach log_trial_end.
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
