"""Driver-side logging: Ray's ``MLflowLoggerCallback``, kept to the trainer's metrics and nested under the parent."""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.result import TRAINING_ITERATION

from raysweep.tracking import reattach
from raysweep.tracking.buffer import MetricBuffer
from raysweep.tracking.tags import ERROR_TAG, NODE_TAG, ROLE_TAG, TRIAL_ID_TAG, TRIAL_ROLE


class SweepLoggerCallback(MLflowLoggerCallback):
    """One child run per trial under the sweep's parent run, written from the Tune driver.

    Compared with Ray's callback it logs only the trainer's metrics (not ``pid``, ``timestamp``,
    ``config/*`` and Ray's other bookkeeping keys), writes from a background thread in batches (Tune's
    event loop only queues), tags each run with its trial id and records a failed trial's error. A trial that starts again (a retry, a
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
        self._nodes: dict[str, str] = {}  # trial id -> IP of the node its latest result came from
        self._client: MlflowClient | None = None
        self._buffer: MetricBuffer | None = None
        self._writer: _Writer | None = None
        self._restored = False  # a resumed sweep: trials may already have runs from the previous driver

    def get_state(self) -> dict:
        # Saved with Tune's experiment state, so that a restore calls set_state: the only sign of a resume.
        return {"runs": len(self._runs)}

    def set_state(self, state: dict) -> None:
        self._restored = True

    def setup(self, *args, **kwargs):
        super().setup(*args, **kwargs)
        self._client = MlflowClient(self.tracking_uri, self.registry_uri)
        self._buffer = MetricBuffer(self._client)
        self._writer = _Writer()

    def __getstate__(self):
        # Tune pickles its callbacks with the Tuner; connections and the writer thread are made in setup().
        return {**self.__dict__, "_client": None, "_buffer": None, "_writer": None, "_monitors": {}}

    # Tune calls these from its event loop, between trials' results: they only queue the work, so that MLflow
    # round trips never hold up the loop that starts trials and hands out results.
    def log_trial_start(self, trial):
        self._writer.submit(self._start, trial.trial_id, str(trial), dict(trial.config), trial.local_path)

    def log_trial_result(self, iteration, trial, result):
        values = {
            key: float(result[key])
            for key in self._metrics
            if isinstance(result.get(key), (int, float)) and not isinstance(result.get(key), bool)
        }
        self._writer.submit(self._result, trial.trial_id, int(result[TRAINING_ITERATION]), values)
        node = result.get("node_ip")
        if node and self._nodes.get(trial.trial_id) != node:
            self._nodes[trial.trial_id] = node
            self._writer.submit(self._tag, trial.trial_id, NODE_TAG, node)

    def log_trial_end(self, trial, failed: bool = False):
        error = _error_summary(trial.error_file) if failed and trial.error_file else None
        self._writer.submit(self._end, trial.trial_id, failed, error)

    def on_experiment_end(self, trials, **info):
        # Trials still running when Tune stops (an interrupt) never reach log_trial_end.
        self._writer.submit(self._buffer.flush)
        self._writer.close()  # waits for every queued write; raises the first one that failed
        for monitor in self._monitors.values():
            monitor.finish()
        self._monitors.clear()

    # The writer thread runs these, one at a time and in order, so the state they keep needs no lock.
    def _start(self, trial_id: str, trial_name: str, config: dict, trial_dir: str | None) -> None:
        run_id = self._runs.get(trial_id)
        if run_id is None and self._restored:
            run_id = reattach.find_trial_run(self._client, self.mlflow_util.experiment_id, self._parent_run_id, trial_id)
        if run_id is None:
            tags = {**self.tags, "trial_name": trial_name, TRIAL_ID_TAG: trial_id}
            run_id = self._client.create_run(self.mlflow_util.experiment_id, run_name=trial_name, tags=tags).info.run_id
            self._client.log_batch(run_id, params=[Param(k, str(v)) for k, v in config.items()])
            self._last_step[trial_id] = 0
        else:
            reattach.reopen(self._client, run_id)
            if trial_id not in self._last_step:
                self._last_step[trial_id] = reattach.last_step(self._client, run_id, self._metrics[0])
                if self._restored and trial_dir:
                    # A killed driver may have died with results Tune had recorded still queued for MLflow.
                    for step, values in reattach.recorded_results(trial_dir, self._metrics, self._last_step[trial_id]):
                        self._buffer.add(run_id, values, step)
                        self._last_step[trial_id] = step
            changed = reattach.changed_values(self._configs.get(trial_id, config), config)
            if changed:
                self._client.log_batch(run_id, tags=[RunTag(k, v) for k, v in changed.items()])
        self._runs[trial_id] = run_id
        self._configs[trial_id] = config
        if self._track_config:
            self._buffer.add(run_id, reattach.config_metrics(config), self._last_step[trial_id])
        if self._system_metrics and run_id not in self._monitors:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(run_id, sampling_interval=1, tracking_uri=self.tracking_uri)
            monitor.start()
            self._monitors[run_id] = monitor

    def _result(self, trial_id: str, step: int, values: dict[str, float]) -> None:
        if step <= self._last_step.get(trial_id, 0):
            return  # replayed after a restore: the run already holds this step
        self._last_step[trial_id] = step
        self._buffer.add(self._runs[trial_id], values, step)

    def _tag(self, trial_id: str, key: str, value: str) -> None:
        self._client.set_tag(self._runs[trial_id], key, value)

    def _end(self, trial_id: str, failed: bool, error: str | None) -> None:
        run_id = self._runs[trial_id]
        self._buffer.flush(run_id)
        monitor = self._monitors.pop(run_id, None)
        if monitor is not None:
            monitor.finish()
        if error:
            self._client.log_batch(run_id, tags=[RunTag(ERROR_TAG, error)])
        self._client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


class _Writer:
    """One background thread that runs queued MLflow writes in order; the first failure is raised on close."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="raysweep-mlflow-writer", daemon=True)
        self._thread.start()

    def submit(self, fn, *args) -> None:
        """Queue ``fn(*args)``; raises at once if an earlier write failed."""
        if self._error is not None:
            raise self._error
        self._queue.put((fn, args))

    def close(self) -> None:
        """Wait until every queued write ran, stop the thread, and raise the first failure."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args = item
            if self._error is None:
                try:
                    fn(*args)
                except BaseException as error:  # noqa: BLE001 - handed to the event loop by submit/close
                    self._error = error


def _error_summary(error_file: str) -> str:
    """The exception line of a trial's error file (its last non-empty line)."""
    try:
        lines = [line for line in Path(error_file).read_text().splitlines() if line.strip()]
    except OSError:
        return "trial failed"
    return lines[-1][:500] if lines else "trial failed"
