"""Logging the leading trial's model while the sweep's last trials run, ahead of registration.

Logging a model is most of what registering the best trial costs (a forest's skops dump, MLflow's check that the
logged model loads and predicts: 2-3 s of the README's sweep), and it needs only that trial, not the end of the
sweep. Once the last trials leave CPUs idle, :class:`LeadingModel` logs the model of the best trial finished so
far; when that trial is still the best after the last one, registration finds its model logged
(:func:`raysweep.trial_model.model_uri`) instead of logging it after the last trial.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from mlflow import MlflowClient
from ray.tune import Callback

from raysweep.ranking import is_better, trial_order
from raysweep.tracking.tags import MODEL_CHECKPOINT_TAG, MODEL_URI_TAG, MODELS_BEFORE_TAG
from raysweep.trial_model import log_from_checkpoint

log = logging.getLogger(__name__)

#: Seconds the leading trial's model waits for its run to end (driver mode writes the end from a queue).
RUN_END_WAIT_S = 10.0
#: Seconds Tune's end waits for a model being logged ahead.
JOIN_TIMEOUT_S = 60.0


def cpus_idle(statuses: list[str], planned: int, capacity: int) -> bool:
    """Whether the sweep's last trials leave room that no trial will take: every planned trial exists, none waits
    to start, and fewer run (or are paused) than can run at once."""
    if len(statuses) < planned or "PENDING" in statuses:
        return False
    return sum(s in ("RUNNING", "PAUSED") for s in statuses) < capacity


class LeadingModel(Callback):
    """Driver-side Tune callback: once the sweep's last trials leave CPUs idle (:func:`cpus_idle`), log the model
    of the best trial finished so far (by the value of its best checkpoint, as the sweep ranks trials), in a
    thread; Tune's end waits for it. Should a later trial beat it, its model is deleted again there.

    Args:
        tracking_uri: The sweep's tracking store.
        experiment_id: The sweep's experiment.
        parent_id: The sweep's parent run.
        metric: The sweep metric.
        mode: ``max`` or ``min``.
        trainer_name: ``trainer.name`` (its ``best_checkpoint`` and ``log_model``).
        planned: Trials the sweep runs.
        capacity: Trials that run at once.
    """

    def __init__(self, *, tracking_uri: str, experiment_id: str, parent_id: str, metric: str, mode: str,
                 trainer_name: str, planned: int, capacity: int):
        self._where = (tracking_uri, experiment_id, parent_id)
        self._metric, self._mode, self._trainer_name = metric, mode, trainer_name
        self._planned, self._capacity = planned, capacity
        self._leader: tuple[float, str, str] | None = None  # (value, trial id, checkpoint) of the best finished
        self._logged: dict[str, str | None] = {}  # trial id -> the model logged from its checkpoint (None: failed)
        self._thread: threading.Thread | None = None
        self._abandoned = threading.Event()  # Tune ended: the thread must not start logging any more
        self._trainer = None  # loaded at the first trial's end

    def __getstate__(self):
        # Tune pickles its callbacks into the sweep's state; thread, event and loaded trainer stay in this driver.
        return {**self.__dict__, "_thread": None, "_abandoned": None, "_trainer": None}

    def __setstate__(self, state):
        self.__dict__.update(state, _abandoned=threading.Event())

    def on_trial_complete(self, iteration, trials, trial, **info):
        try:
            self._consider(trials, trial)
        except Exception as error:  # noqa: BLE001 - a head start only: it must never fail the trial in Tune
            log.debug("trial %s not considered for logging ahead: %s: %s", trial, type(error).__name__, error)

    def _consider(self, trials, trial) -> None:
        from raysweep import compat, trainables
        from raysweep.tracking.reconcile import model_value

        if self._trainer is None:
            self._trainer = trainables.load(self._trainer_name)
        result = compat.trial_result(trial)
        checkpoint = self._trainer.best_checkpoint(result, self._metric, self._mode)
        value = model_value(result, checkpoint, self._metric, logged_model=False)
        # Of equal trials, the one Tune made first, as the summary keeps the one whose run started first.
        if value is not None and not math.isnan(value) and (
                self._leader is None or is_better(value, self._leader[0], self._mode)
                or (value == self._leader[0] and trial_order(trial.trial_id) < trial_order(self._leader[1]))):
            self._leader = (value, trial.trial_id, checkpoint)
        if self._leader is None or self._leader[1] in self._logged or self._busy():
            return
        # Tune tells of the trial's end before it sets the trial's status: it counts as ended here. The statuses are
        # read only once every planned trial exists, not at each end of a long sweep.
        if len(trials) >= self._planned and cpus_idle([("TERMINATED" if t is trial else t.status) for t in trials],
                                                      self._planned, self._capacity):
            _, trial_id, checkpoint = self._leader
            self._logged[trial_id] = None
            self._thread = threading.Thread(target=self._log, args=(trial_id, checkpoint), daemon=True,
                                            name="raysweep-leading-model")
            self._thread.start()

    def on_experiment_end(self, trials, **info):
        if self._thread is not None:
            # Seconds in the usual case; a tracking server that stopped answering holds the thread in MLflow's
            # retries, and then registration does the work instead (the thread, told, starts no upload).
            self._thread.join(JOIN_TIMEOUT_S)
            self._abandoned.set()
        for trial_id, uri in list(self._logged.items()):
            if uri is not None and (self._leader is None or trial_id != self._leader[1]):
                self._forget(MlflowClient(self._where[0]), trial_id, uri)

    def _busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _log(self, trial_id: str, checkpoint: str) -> None:
        # A head start only: whatever goes wrong here, registration logs the model itself after the last trial.
        started = time.monotonic()
        try:
            client = MlflowClient(self._where[0])
            run = self._ended_run(client, trial_id)
            if run is not None and MODEL_URI_TAG not in run.data.tags and not self._abandoned.is_set():
                self._logged[trial_id] = log_from_checkpoint(client, run, checkpoint, self._trainer_name)
                log.debug("model of leading trial %s logged ahead in %.2f s", trial_id, time.monotonic() - started)
        except Exception as error:  # noqa: BLE001 - see above
            log.debug("leading trial %s's model not logged ahead: %s: %s", trial_id, type(error).__name__, error)

    def _ended_run(self, client: MlflowClient, trial_id: str):
        from raysweep.tracking import queries

        _, experiment_id, parent_id = self._where
        deadline = time.monotonic() + RUN_END_WAIT_S
        while time.monotonic() < deadline:
            runs = queries.children(client, experiment_id, parent_id, trial_id=trial_id, max_results=1)
            if runs and runs[0].info.status != "RUNNING":
                return runs[0]
            time.sleep(0.05)
        return None

    def _forget(self, client: MlflowClient, trial_id: str, uri: str) -> None:
        """Delete the model logged ahead for a trial a later one beat: only the registered trial keeps one."""
        from raysweep.tracking import queries

        try:
            client.delete_logged_model(uri.removeprefix("models:/"))
            for run in queries.children(client, *self._where[1:], trial_id=trial_id, max_results=1):
                for tag in (MODELS_BEFORE_TAG, MODEL_CHECKPOINT_TAG):
                    client.delete_tag(run.info.run_id, tag)
            log.debug("model logged ahead for trial %s deleted: a later trial leads", trial_id)
        except Exception as error:  # noqa: BLE001 - an extra logged model costs space, not correctness
            log.debug("model logged ahead for trial %s not deleted: %s: %s", trial_id, type(error).__name__, error)
