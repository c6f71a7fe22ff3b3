"""The one lifecycle of a trial's child run, shared by both logging modes.

A trial's run is found again by its trial id or created (tags, params once), reopened when the trial starts
again (a retry, a PBT restart, a resumed sweep: Ray's ``MLflowLoggerCallback`` keeps its trial -> run map only
in memory), continued after the last step it holds, told which hyperparameters changed (PBT), sampled for
system metrics while it runs, and always ended with an explicit status - with the error when it failed.

The driver's callback (:mod:`raysweep.tracking.driver`) and the worker's wrapper
(:mod:`raysweep.tracking.worker`) are adapters: they decide *when* these steps happen (Tune's callback
hooks, or around the trainable) and how a run is created and ended (``MlflowClient``, or Ray's
``setup_mlflow`` and the fluent API so the user's own ``mlflow.log_*`` calls land in it).
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import RunTag

from raysweep import compat
from raysweep.tracking import lineage, queries
from raysweep.tracking.buffer import MetricBuffer
from raysweep.tracking.outage import Outage, patient
from raysweep.tracking.lineage import DatasetRecord
from raysweep.tracking.tags import (
    CONFIG_PREFIX,
    ENDED_BY_TAG,
    ERROR_TAG,
    PARENT_RUN_ID,
    ROLE_TAG,
    TRIAL_ID_TAG,
    TRIAL_NAME_TAG,
    TRIAL_ROLE,
)

#: ``create(trial_name, tags, params) -> run_id``: how an adapter creates a trial's run.
Create = Callable[[str, dict[str, str], dict[str, Any]], str]
#: ``terminate(run_id, status)``: how an adapter ends a trial's run.
Terminate = Callable[[str, str], None]


class TrialRuns:
    """The child runs of one sweep's trials, keyed by Tune's trial id.

    Args:
        client: Client bound to the sweep's tracking store.
        experiment_id: The sweep's experiment.
        parent_run_id: The sweep's parent run; every trial run is nested under it.
        metrics: The metrics trials report, the sweep metric first: a reopened run continues after the last
            step of the first, and results a killed driver never logged are read back for all of them.
        tags: Extra tags of every trial run (e.g. the Train world size).
        track_config: Log numeric hyperparameters as ``config.NAME`` metrics at each start (PBT changes them).
        system_metrics: Sample this node's CPU and memory (GPU) into each run while its trial runs.
        tracking_uri: The store's URI, for the system-metrics sampler.
        dataset: The data the trials train on, recorded as each new run's dataset input (lineage).
        create: How a new run is made (default: ``client.create_run``, the params written with its first metrics).
        terminate: How a run is ended (default: ``client.set_terminated``).
        outage: The store's clock (:mod:`raysweep.tracking.outage`): every write waits out a server that does not
            answer, up to ``mlflow.max_outage_s``; ``None`` writes once and raises, as against a file store.
    """

    def __init__(
        self,
        client: MlflowClient,
        experiment_id: str,
        parent_run_id: str,
        *,
        metrics: Sequence[str],
        tags: Mapping[str, str] | None = None,
        track_config: bool = False,
        system_metrics: bool = False,
        tracking_uri: str | None = None,
        dataset: DatasetRecord | None = None,
        create: Create | None = None,
        terminate: Terminate | None = None,
        outage: Outage | None = None,
    ):
        self._outage = outage
        self.client = patient(client, outage)
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self._metrics = tuple(metrics)
        self._tags = {PARENT_RUN_ID: parent_run_id, ROLE_TAG: TRIAL_ROLE, **(tags or {})}
        self._track_config = track_config
        self._system_metrics = system_metrics
        self._tracking_uri = tracking_uri
        self._dataset = dataset
        self._create = create or self._create_with_client
        self._terminate = terminate or (lambda run_id, status: self.client.set_terminated(run_id, status))
        self._buffer = MetricBuffer(client, outage=outage)
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._last_step: dict[str, int] = {}  # trial id -> last step the run holds
        self._monitors: dict[str, Any] = {}  # run id -> system-metrics sampler

    def run_id(self, trial_id: str) -> str:
        """The run of a started trial."""
        return self._runs[trial_id]

    def last_step(self, trial_id: str) -> int:
        """The last step the trial's run holds (0 before any)."""
        return self._last_step.get(trial_id, 0)

    def start(
        self,
        trial_id: str,
        trial_name: str,
        config: Mapping[str, Any],
        *,
        lookup: bool = True,
        tags: Mapping[str, str] | None = None,
        trial_dir: str | None = None,
    ) -> bool:
        """Begin (or begin again) a trial's run; returns whether the run was created now.

        Args:
            trial_id: Tune's trial id.
            trial_name: Tune's trial name, the run name.
            config: The trial's hyperparameters at this start.
            lookup: Look for a run this trial already has in the store (another process may have made it).
            tags: Tags of this start (e.g. the node it runs on).
            trial_dir: The trial's folder on the Tune driver: results Tune recorded there but a killed driver
                never logged are logged now.
        """
        run_id = self._runs.get(trial_id)
        if run_id is None and lookup:
            run_id = queries.trial_run_id(self.client, self.experiment_id, self.parent_run_id, trial_id)
        created = run_id is None
        if created:
            run_tags = {**self._tags, TRIAL_NAME_TAG: trial_name, TRIAL_ID_TAG: trial_id, **(tags or {})}
            run_id = self._create_once(trial_id, trial_name, run_tags, dict(config))
            created = run_id is not None
        if created:
            lineage.log(self.client, run_id, self._dataset)
            self._last_step[trial_id] = 0
        else:
            if run_id is None:  # made by an attempt the server took before it stopped answering
                run_id = queries.trial_run_id(self.client, self.experiment_id, self.parent_run_id, trial_id)
            logged, current = self._reopen(run_id)
            if trial_id not in self._last_step:
                self._last_step[trial_id] = _last_step(self.client, run_id, self._metrics[0])
            values = {k: str(v) for k, v in config.items()}
            # A driver killed before the run's first write left it without params: they go with the next one.
            missing = {k: v for k, v in values.items() if k not in logged}
            if missing:
                self._buffer.params(run_id, missing)
            new_tags = {**changed_values(current, {k: v for k, v in values.items() if k in logged}), **(tags or {})}
            if new_tags:
                self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in new_tags.items()])
        self._runs[trial_id] = run_id
        if not created and trial_dir:
            for step, values in recorded_results(trial_dir, self._metrics, self._last_step[trial_id]):
                self.metrics(trial_id, values, step)
        if self._track_config:
            self._buffer.add(run_id, config_metrics(config), self._last_step[trial_id])
        if self._system_metrics and run_id not in self._monitors:
            self._monitors[run_id] = compat.system_metrics_monitor(run_id, self._tracking_uri)
        return created

    def metrics(self, trial_id: str, values: Mapping[str, float], step: int) -> bool:
        """Queue ``values`` at ``step``; a step the run already holds (a replay after a restart) is skipped."""
        if trial_id not in self._runs or step <= self._last_step.get(trial_id, 0) or not values:
            return False
        self._last_step[trial_id] = step
        self._buffer.add(self._runs[trial_id], values, step)
        return True

    def save_folder(self, trial_id: str, folder: str | None) -> None:
        """Upload the trial's Tune folder as its run's artifacts (``mlflow.save_artifact``; see :func:`save_folder`)."""
        if trial_id in self._runs and folder:
            save_folder(self.client, self._runs[trial_id], folder)

    def tags(self, trial_id: str, values: Mapping[str, str], *, with_metrics: bool = False) -> None:
        """Set tags on the trial's run; ``with_metrics``: in the run's next metrics batch, not a call of their own
        (at the latest when the trial ends; a sweep of many short trials writes one call fewer per trial)."""
        if trial_id not in self._runs:
            return
        if with_metrics:
            self._buffer.tag(self._runs[trial_id], {k: str(v) for k, v in values.items()})
            return
        self.client.log_batch(self._runs[trial_id], tags=[RunTag(k, str(v)) for k, v in values.items()])

    def write_due(self) -> None:
        """Write what is pending of every run once a second has passed since the last write (see
        :meth:`MetricBuffer.write_due`): what a run holds shows within seconds even while no trial reports."""
        self._buffer.write_due()

    def flush(self, trial_id: str | None = None) -> None:
        """Write the queued metrics of one trial (of all when ``None``)."""
        if trial_id is None or trial_id in self._runs:
            self._buffer.flush(None if trial_id is None else self._runs[trial_id])

    def end(self, trial_id: str, status: str, error: str | None = None) -> None:
        """End the trial's run FINISHED, FAILED (with ``error`` tagged) or KILLED, metrics written first.

        A trial that failed before its run was started (Tune ends trials it could not start) has nothing to end.
        """
        run_id = self._runs.get(trial_id)
        if run_id is None:
            return
        if error:
            from raysweep.secrets import scrub

            # Masked before it is cut: a cut through a password would leave a part no scrub recognises.
            self._buffer.tag(run_id, {ERROR_TAG: scrub(error)[:500]})
        self._buffer.flush(run_id)
        self._stop_monitor(run_id)
        self.retrying(self._terminate, run_id, status)

    def close(self) -> None:
        """Write everything queued and stop the samplers (trials Tune stopped without an end)."""
        self._buffer.flush()
        for run_id in list(self._monitors):
            self._stop_monitor(run_id)

    def _create_once(self, trial_id: str, trial_name: str, tags: dict[str, str], params: dict[str, Any]) -> str | None:
        """Create the trial's run; ``None`` when an attempt the server took before an outage made it already.

        A create sent again after the server stopped answering may have been stored the first time: before trying
        again, look the trial's run up by its id tag, so one trial never gets two runs.
        """
        attempts = 0

        def attempt() -> str | None:
            nonlocal attempts
            attempts += 1
            if attempts > 1 and queries.trial_run_id(self.client, self.experiment_id, self.parent_run_id, trial_id):
                return None
            return self._create(trial_name, tags, params)

        return self.retrying(attempt)

    def retrying(self, fn, *args):
        """``fn(*args)``, retried while the tracking server does not answer (see ``outage``)."""
        return fn(*args) if self._outage is None else self._outage.call(fn, *args)

    def _create_with_client(self, trial_name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
        run_id = self.client.create_run(self.experiment_id, run_name=trial_name, tags=tags).info.run_id
        # With the run's first metrics, in one call: a sweep of many short trials writes one call fewer per trial.
        self._buffer.params(run_id, {k: str(v) for k, v in params.items()})
        return run_id

    def _reopen(self, run_id: str) -> tuple[dict[str, str], dict[str, str]]:
        """Mark a run RUNNING again, dropping the notes of how its previous attempt ended.

        Returns:
            Its params as logged at its first start, and the values it last ran with: the params with the
            ``config.NAME`` tags of what PBT changed since laid over them.
        """
        self.client.update_run(run_id, status="RUNNING")
        run = self.client.get_run(run_id)
        for stale in (ENDED_BY_TAG, ERROR_TAG):  # this attempt goes on; a new failure tags its own error
            if stale in run.data.tags:
                self.client.delete_tag(run_id, stale)
        params = dict(run.data.params)
        return params, {k: run.data.tags.get(f"{CONFIG_PREFIX}{k}", v) for k, v in params.items()}

    def _stop_monitor(self, run_id: str) -> None:
        monitor = self._monitors.pop(run_id, None)
        if monitor is not None:
            monitor.finish()
            # MLflow's sampler writes once per interval and drops what it sampled since when stopped: without this
            # a trial shorter than one interval would get no system metrics at all.
            leftover = monitor.aggregate_metrics()
            if leftover:
                monitor.publish_metrics(leftover)
                monitor.mlflow_logger.flush()


def save_folder(client: MlflowClient, run_id: str, folder: str) -> list[str]:
    """Upload a trial's Tune folder (``result.json``, ``params.json``, ``progress.csv``, ...) to the root of its
    run's artifacts, as Ray's ``MLflowLoggerCallback(save_artifact=True)`` does; returns the uploaded names.

    The folder is the one Tune's driver writes (``trial.local_path``). Checkpoint folders, should one be there,
    stay out: checkpoints live in Tune's storage and the best trial's model is logged on its own.
    """
    path = Path(folder)
    if not path.is_dir():
        return []
    uploaded = []
    for entry in sorted(path.iterdir()):
        if entry.is_dir() and entry.name.startswith("checkpoint_"):
            continue
        if entry.is_dir():
            client.log_artifacts(run_id, str(entry), entry.name)
        else:
            client.log_artifact(run_id, str(entry))
        uploaded.append(entry.name)
    return uploaded


def _last_step(client: MlflowClient, run_id: str, metric: str) -> int:
    return max((m.step for m in client.get_metric_history(run_id, metric)), default=0)


def recorded_results(trial_dir: str, metrics: Sequence[str], after_step: int) -> list[tuple[int, dict[str, float]]]:
    """``(step, values)`` of a trial's results that Tune wrote to its result file after ``after_step``.

    Tune's driver appends every result there as it arrives, so after a killed driver these are the results
    Tune knew of that never reached MLflow.
    """
    path = Path(trial_dir) / compat.TUNE_RESULT_FILE
    out: list[tuple[int, dict[str, float]]] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            result = json.loads(line)
        except ValueError:
            continue  # a line cut short by the kill
        step = int(result.get("training_iteration", 0))
        values = {k: float(result[k]) for k in metrics if isinstance(result.get(k), (int, float))}
        if step > after_step and values and all(step > s for s, _ in out):
            out.append((step, values))
    return out


def config_metrics(config: Mapping[str, Any]) -> dict[str, float]:
    """A trial's numeric hyperparameters as ``config.NAME`` metrics, to follow values PBT changes over steps."""
    return {
        f"{CONFIG_PREFIX}{k}": float(v)
        for k, v in config.items()
        if isinstance(v, numbers.Real) and not isinstance(v, bool)
    }


def changed_values(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, str]:
    """Hyperparameters whose value differs from what the run last ran with, as ``config.NAME`` tag values (for
    what PBT changes; a value changed back to the first one is a change too)."""
    return {f"{CONFIG_PREFIX}{k}": str(v) for k, v in after.items() if before.get(k) != v}
