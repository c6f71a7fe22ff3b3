"""Live progress on the sweep's parent run: trials ended of those planned and the best value so far.

A Tune callback on the driver, so it works whichever process logs the trials (``mlflow=driver`` or ``worker``).
As trials end it writes to the parent run, within a second, in one batch per second at most:

- metric ``sweep_trials_finished`` (step = that count; a chart in the MLflow UI), ``sweep_trials_failed``,
- metric ``sweep_best_<metric>`` (same step), once a trial has reported the metric,
- tag ``raysweep.progress`` (``5/16``: visible as a column in the runs table) and ``raysweep.trials_planned``.

Counts come from Tune's own trial list, which a resumed sweep restores with its finished trials, so a resume
continues the count instead of starting again at 1. The list is read once, at the first trial end; after that
each end only adds to the count (a recount per end would cost O(trials^2) over a sweep of many small trials), and
the ends of one second (and the writes a slow store has let queue up) go out as one batch, every step kept.
"""

from __future__ import annotations

import logging
import math
import numbers
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ray.tune import Callback

from raysweep import ranking, remote
from raysweep.progress import fired, ran, trial_value
from raysweep.tracking.tags import PROGRESS_TAG, TRIALS_PLANNED_TAG

log = logging.getLogger(__name__)

#: Parent-run metrics: trials ended (including failed ones), trials failed, and the best value so far.
FINISHED_METRIC = "sweep_trials_finished"
FAILED_METRIC = "sweep_trials_failed"
BEST_METRIC_PREFIX = "sweep_best_"
#: Seconds the end of the sweep waits for progress writes still queued (a slow server must not hold it up).
_FLUSH_TIMEOUT_S = 30.0
#: Trial ends written in one batch at most (3 metrics each: within MLflow's 1,000 metrics a batch).
_MAX_BATCHED = 300
#: Seconds a write waits for more trial ends to take along: one request a second at most, however fast trials end
#: (the end of the sweep is written at once).
_BATCH_WINDOW_S = 1.0
_ENDED = ("TERMINATED", "ERROR")


@dataclass(frozen=True)
class Progress:
    """Where a sweep stands: trials ended and failed, of those planned, and the best value so far (or NaN)."""

    finished: int
    failed: int
    planned: int
    best: float

    @property
    def text(self) -> str:
        """The parent run's progress tag: ``5/16``, with failures when there are any (``5/16, 1 failed``)."""
        return f"{self.finished}/{self.planned}" + (f", {self.failed} failed" if self.failed else "")


def progress(outcomes: Iterable[tuple[str, float | None]], planned: int, mode: str) -> Progress:
    """Count ended trials and pick the best value among those that finished without an error.

    Args:
        outcomes: ``(status, value)`` per trial: Tune's status (``TERMINATED``, ``ERROR``, ``RUNNING`` ...)
            and its last value of the sweep metric (``None`` when it reported none).
        planned: Trials the sweep plans.
        mode: ``max`` or ``min``.
    """
    finished = failed = 0
    values = []
    for status, value in outcomes:
        if status not in _ENDED:
            continue
        finished += 1
        if status == "ERROR":
            failed += 1
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            values.append(float(value))
    best = ranking.best_index(values, mode)
    return Progress(finished, failed, planned, math.nan if best is None else values[best])


def advance(state: Progress, status: str, value: float | None, mode: str) -> Progress:
    """``state`` with one more trial ended: :func:`progress` over the trials so far and this one, in O(1)."""
    ended = progress([(status, value)], state.planned, mode)
    candidates = [v for v in (state.best, ended.best) if not math.isnan(v)]
    best = ranking.best_index(candidates, mode)
    return Progress(state.finished + ended.finished, state.failed + ended.failed, state.planned,
                    math.nan if best is None else candidates[best])


class SweepProgressCallback(Callback):
    """Update the parent run as trials end (see the module docstring); never fails the sweep.

    Writes go through a background thread, so a slow or unreachable tracking server holds up neither Tune's
    event loop nor the trials; a write waits out a server that does not answer (up to ``mlflow.max_outage_s``, see
    :mod:`raysweep.tracking.outage`), and one that fails anyway is reported once: the next carries newer counts.
    Tune pickles its callbacks into the sweep's state: only the masked tracking URI is kept
    (:func:`raysweep.remote.remember_uri`), and the client and thread are made again in :meth:`setup`.
    """

    _final_models = False  # the default for a callback an earlier version pickled into a sweep's state

    def __init__(self, *, tracking_uri: str, parent_run_id: str, metric: str, mode: str, planned: int, stop=None,
                 final_models: bool = False):
        self._tracking_uri = remote.remember_uri(tracking_uri)
        self._parent_run_id = parent_run_id
        self._metric = metric
        self._mode = mode
        self._planned = int(planned)
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._warned = False
        self._state: Progress | None = None  # counted once from Tune's list at the first end, then advanced
        self._started: set[str] = set()
        self._stop = stop  # the sweep's own stop (sweep.stop.*): the trials it ends are counted at the end
        self._final_models = final_models  # trials log their final models: each counts with its last value

    def __getstate__(self):
        return {**self.__dict__, "_queue": None, "_thread": None, "_warned": False, "_state": None}

    def setup(self, **info):
        from mlflow import MlflowClient

        from raysweep.tracking import outage

        tracking_uri = remote.full_uri(self._tracking_uri)
        client = outage.patient(MlflowClient(tracking_uri), outage.clock(tracking_uri))
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(client,), name="raysweep-progress", daemon=True)
        self._thread.start()
        self._queue.put(({}, {TRIALS_PLANNED_TAG: str(self._planned)}, None))

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started.add(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._update(trials, trial, "TERMINATED")  # Tune marks it only after this hook

    def on_trial_error(self, iteration, trials, trial, **info):
        self._update(trials, trial, "ERROR")

    def on_experiment_end(self, trials, **info):
        if self._thread is None:
            return
        # Trials a sweep-wide stop ended (sweep.stop.*) get no hook of their own: counted from Tune's list now.
        if fired(self._stop):
            final = progress(((t.status, self._value(t)) for t in trials
                              if ran(t, self._started)), self._planned, self._mode)
            if final.finished > (self._state.finished if self._state is not None else 0):
                self._put(final)
        self._queue.put(None)
        self._thread.join(_FLUSH_TIMEOUT_S)

    def _value(self, trial) -> float | None:
        return trial_value(trial, self._metric, self._mode, self._final_models)

    def _update(self, trials, ended, status: str) -> None:
        if self._queue is None:
            return
        if self._state is None:  # the trials a resumed sweep restored ended before this driver's first end
            self._state = progress(((t.status, self._value(t)) for t in trials
                                    if t is not ended), self._planned, self._mode)
        self._put(advance(self._state, status, self._value(ended), self._mode))

    def _put(self, state: Progress) -> None:
        self._state = state
        metrics = {FINISHED_METRIC: float(state.finished), FAILED_METRIC: float(state.failed)}
        if not math.isnan(state.best):
            metrics[BEST_METRIC_PREFIX + self._metric] = state.best
        self._queue.put((metrics, {PROGRESS_TAG: state.text}, state.finished))

    def _run(self, client) -> None:
        from mlflow.entities import Metric, RunTag

        done = False
        while not done:
            items = [self._queue.get()]
            # The ends of the next second go in the same write (and what queued while the last one ran): short
            # trials end several a second, and each write costs the driver's CPU, which trials share.
            deadline = time.monotonic() + _BATCH_WINDOW_S
            while items[-1] is not None and len(items) < _MAX_BATCHED:
                try:
                    items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            if None in items:
                done, items = True, items[:items.index(None)]
            if not items:
                continue
            now = int(time.time() * 1000)
            tags = {k: v for _, item_tags, _ in items for k, v in item_tags.items()}  # the latest of each
            try:
                client.log_batch(
                    self._parent_run_id,
                    metrics=[Metric(k, v, now, step) for metrics, _, step in items for k, v in metrics.items()],
                    tags=[RunTag(k, v) for k, v in tags.items()],
                )
            except Exception as error:  # noqa: BLE001 - progress is a view; the sweep goes on without it
                if not self._warned:
                    self._warned = True
                    log.warning("sweep progress not written to the parent run (the sweep goes on): %s: %s",
                                type(error).__name__, str(error).splitlines()[0] if str(error) else "")
