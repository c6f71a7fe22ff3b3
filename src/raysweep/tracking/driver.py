"""Driver-side logging: Ray's ``MLflowLoggerCallback``, kept to the trainer's metrics and nested under the parent.

An adapter of :class:`raysweep.tracking.lifecycle.TrialRuns` to Tune's callback hooks.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mlflow import MlflowClient
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.logger import LoggerCallback
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS, DONE, TRAINING_ITERATION

from raysweep import remote
from raysweep.metrics import PROGRESS
from raysweep.errors import TrackingOutage
from raysweep.tracking import outage, queries
from raysweep.tracking.lifecycle import TrialRuns, save_folder
from raysweep.tracking.lineage import DatasetRecord
from raysweep.tracking.tags import NODE_TAG, PARENT_RUN_ID, ROLE_TAG, TRIAL_ROLE
from raysweep.tracking.worker import numeric_values

#: Result keys that are Tune's bookkeeping (and raysweep's progress), never a trial's own metric.
BOOKKEEPING_KEYS = frozenset({*AUTO_RESULT_KEYS, *DEBUG_METRICS, DONE, PROGRESS})


class SweepLoggerCallback(MLflowLoggerCallback):
    """One child run per trial under the sweep's parent run, written from the Tune driver.

    Compared with Ray's callback it logs only the trainer's metrics (not ``pid``, ``timestamp``,
    ``config/*`` and Ray's other bookkeeping keys; with ``all_metrics``, for a trainer whose metrics only its
    trials know, every other number a trial reports), writes from a background thread in batches (Tune's
    event loop only queues), tags each run with its trial id and records a failed trial's error. A trial that
    starts again (a retry, a PBT restart, a resumed sweep) goes back to its own run and logs only steps after the
    last one the run holds. It connects in :meth:`setup` with its own client instead of the parent class's, which
    would set MLflow's process-wide tracking and registry URIs.
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        registry_uri: str | None,
        experiment_id: str,
        experiment_name: str,
        parent_run_id: str,
        metrics: Sequence[str],
        child_tags: Mapping[str, str] | None = None,
        system_metrics: bool = False,
        track_config: bool = False,
        dataset: DatasetRecord | None = None,
        all_metrics: bool = False,
        save_artifact: bool = False,
    ):
        super().__init__(
            # Tune pickles its callbacks into the sweep's tuner.pkl: only the masked URIs go there.
            tracking_uri=remote.remember_uri(tracking_uri),
            registry_uri=remote.remember_uri(registry_uri),
            experiment_name=experiment_name,
            tags={PARENT_RUN_ID: parent_run_id, ROLE_TAG: TRIAL_ROLE, **(child_tags or {})},
            save_artifact=save_artifact,  # kept as should_save_artifact; log_trial_end uploads the trial's folder
        )
        self._experiment_id = experiment_id
        self._parent_run_id = parent_run_id
        self._metrics = tuple(metrics)
        self._child_tags = dict(child_tags or {})
        self._system_metrics = system_metrics
        self._track_config = track_config
        self._dataset = dataset
        self._all_metrics = all_metrics
        self._nodes: dict[str, str] = {}  # trial id -> IP of the node its latest result came from
        self._runs: TrialRuns | None = None
        self._writer: _Writer | None = None
        self._restored = False  # a resumed sweep: trials may already have runs from the previous driver

    def get_state(self) -> dict:
        # Saved with Tune's experiment state, so that a restore calls set_state: the only sign of a resume.
        return {"restorable": True}

    def set_state(self, state: dict) -> None:
        self._restored = True

    def setup(self, *args, **kwargs):
        tracking_uri = remote.full_uri(self.tracking_uri)
        registry_uri = remote.full_uri(self.registry_uri)
        clock = outage.clock(tracking_uri)  # the sweep's driver set its mlflow.max_outage_s
        self._runs = TrialRuns(
            MlflowClient(tracking_uri, registry_uri),
            self._experiment_id,
            self._parent_run_id,
            metrics=self._metrics,
            tags=self._child_tags,
            track_config=self._track_config,
            system_metrics=self._system_metrics,
            tracking_uri=tracking_uri,
            dataset=self._dataset,
            outage=clock,
        )
        self._writer = _Writer(idle=self._runs.write_due)

    def __getstate__(self):
        # Tune pickles its callbacks with the Tuner; connections and the writer thread are made in setup().
        return {**self.__dict__, "_runs": None, "_writer": None, "mlflow_util": None}

    # Tune calls these from its event loop, between trials' results: they only queue the work, so that MLflow
    # round trips never hold up the loop that starts trials and hands out results.
    def log_trial_start(self, trial):
        self._writer.submit(
            self._runs.start, trial.trial_id, str(trial), dict(trial.config),
            # Only a resumed sweep has runs this driver did not make, and results it never logged.
            lookup=self._restored, trial_dir=trial.local_path if self._restored else None,
        )

    def log_trial_result(self, iteration, trial, result):
        if self._all_metrics:
            values = numeric_values(result, exclude=BOOKKEEPING_KEYS)
        else:
            values = numeric_values({key: result[key] for key in self._metrics if key in result})
        self._writer.submit(self._runs.metrics, trial.trial_id, values, int(result[TRAINING_ITERATION]))
        node = result.get("node_ip")
        if node and self._nodes.get(trial.trial_id) != node:
            self._nodes[trial.trial_id] = node
            self._writer.submit(self._runs.tags, trial.trial_id, {NODE_TAG: node}, with_metrics=True)

    def log_trial_end(self, trial, failed: bool = False):
        error = _error_summary(trial.error_file) if failed and trial.error_file else None
        if self.should_save_artifact:
            self._writer.submit(self._runs.save_folder, trial.trial_id, trial.local_path)
        self._writer.submit(self._runs.end, trial.trial_id, "FAILED" if failed else "FINISHED", error)

    def on_experiment_end(self, trials, **info):
        # Trials still running when Tune stops (an interrupt) never reach log_trial_end.
        self._writer.submit(self._runs.close)
        self._writer.close()  # waits for every queued write; raises the first one that failed


class TrialFolderCallback(LoggerCallback):
    """``mlflow.save_artifact`` in worker mode: each trial's Tune folder uploaded to its run when the trial ends.

    The trial's process writes its run, but the folder (``result.json``, ``params.json``, ``progress.csv``) is
    written by Tune's driver: this callback finds the run by its trial id tag and uploads the folder from a
    background thread, as :class:`SweepLoggerCallback` does in driver mode.
    """

    def __init__(self, *, tracking_uri: str, registry_uri: str | None, experiment_id: str, parent_run_id: str):
        # Pickled with the Tuner into tuner.pkl: only the masked URIs go there (see SweepLoggerCallback).
        self._tracking = remote.remember_uri(tracking_uri)
        self._registry = remote.remember_uri(registry_uri)
        self._experiment_id = experiment_id
        self._parent_run_id = parent_run_id
        self._client: MlflowClient | None = None
        self._writer: _Writer | None = None

    def setup(self, *args, **kwargs):
        tracking_uri = remote.full_uri(self._tracking)
        self._client = outage.patient(MlflowClient(tracking_uri, remote.full_uri(self._registry)),
                                      outage.clock(tracking_uri))
        self._writer = _Writer()

    def __getstate__(self):
        return {**self.__dict__, "_client": None, "_writer": None}

    def log_trial_end(self, trial, failed: bool = False):
        self._writer.submit(self._save, trial.trial_id, trial.local_path)

    def on_experiment_end(self, trials, **info):
        self._writer.close()

    def _save(self, trial_id: str, folder: str) -> None:
        # The trial's process ended its run before the trial ended; a trial that failed before it started has none.
        run_id = queries.trial_run_id(self._client, self._experiment_id, self._parent_run_id, trial_id)
        if run_id is not None:
            save_folder(self._client, run_id, folder)


#: Seconds without a queued write after which the writer writes what fell due meanwhile.
_IDLE_S = 1.0


class _Writer:
    """One background thread that runs queued MLflow writes in order; the first failure is raised on close.

    A write waits while the tracking server does not answer (the trials go on; their writes queue up here). When
    the outage outlasts ``mlflow.max_outage_s`` the writes still queued are dropped, not raised: the sweep's
    driver stops Tune and reports the outage itself (:func:`raysweep.tracking.outage.watch`).

    Args:
        idle: Called when no write has been queued for a second (to write the metrics, params and tags that fell
            due while no trial reported).
    """

    def __init__(self, idle: Callable[[], None] | None = None):
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._idle = idle
        self._thread = threading.Thread(target=self._run, name="raysweep-mlflow-writer", daemon=True)
        self._thread.start()

    def submit(self, fn, *args, **kwargs) -> None:
        """Queue ``fn(*args, **kwargs)``; raises at once if an earlier write failed."""
        if self._error is not None:
            raise self._error
        self._queue.put((fn, args, kwargs))

    def close(self) -> None:
        """Wait until every queued write ran, stop the thread, and raise the first failure."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        gave_up = False
        while True:
            try:
                item = self._queue.get(timeout=None if self._idle is None else _IDLE_S)
            except queue.Empty:
                item = (self._idle, (), {})
            if item is None:
                break
            fn, args, kwargs = item
            if self._error is None and not gave_up:
                try:
                    fn(*args, **kwargs)
                except TrackingOutage:
                    gave_up = True
                except BaseException as error:  # noqa: BLE001 - handed to the event loop by submit/close
                    self._error = error


def _error_summary(error_file: str) -> str:
    """The exception line of a trial's error file (:func:`raysweep.progress.exception_line`)."""
    from raysweep.progress import exception_line

    try:
        line = exception_line(Path(error_file).read_text(errors="replace"))
    except OSError:
        return "trial failed"
    return line[:500] or "trial failed"
