"""After ``Tuner.fit`` returns: square the sweep's child runs with Tune's account of its trials."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import RunTag

from raysweep.metrics import PROGRESS
from raysweep.tracking import queries
from raysweep.tracking.tags import (
    CHECKPOINT_TAG,
    ENDED_BY_TAG,
    ERROR_TAG,
    MODEL_URI_TAG,
    MODEL_VALUE_TAG,
    STOP_REASON_TAG,
    STOPPED_EARLY_TAG,
    TRIAL_ID_TAG,
)


@dataclass(frozen=True)
class TrialOutcome:
    """What the sweep keeps of one trial once Tune has finished: Tune's ``ResultGrid`` holds every trial's whole
    history (a DataFrame each: ~13 MiB per 1,000 trials), and nothing after Tune needs more than this."""

    trial_id: str | None
    path: str  # the trial's folder (a URI on remote storage)
    failed: bool  # Tune's account ends with an error
    checkpoint: str | None = None  # the trainer's best checkpoint: the model registration takes
    checkpoint_value: float | None = None  # the sweep metric reported with that checkpoint
    last_value: float | None = None  # the sweep metric's last reported value (a model the trial logged itself)
    progress: float = 1.0  # share of its planned iterations the trial ran (``raysweep.metrics.PROGRESS``)
    error: str | None = None  # a failed trial's exception line


def outcomes(results: Iterable, best_checkpoint: Callable[[object], str | None], metric: str | None) \
        -> list[TrialOutcome]:
    """Each trial's :class:`TrialOutcome`, read from Tune's ``Result`` objects (no store, so no outage to wait out).

    Args:
        results: Tune's ``ResultGrid`` (one ``Result`` per trial).
        best_checkpoint: The trainer's ``best_checkpoint(result)``: where a trial's model is.
        metric: The sweep metric.
    """
    found = []
    for result in results:
        result = with_unkept_checkpoints(result)
        metrics = result.metrics or {}
        failed = result.error is not None
        checkpoint = None if failed else best_checkpoint(result)
        found.append(TrialOutcome(
            trial_id=metrics.get("trial_id") or trial_id_of(result.path),
            path=result.path,
            failed=failed,
            checkpoint=checkpoint,
            checkpoint_value=None if failed else model_value(result, checkpoint, metric, logged_model=False),
            last_value=None if failed else model_value(result, checkpoint, metric, logged_model=True),
            progress=metrics.get(PROGRESS, 1.0),
            error=_error(result) if failed else None,
        ))
    return found


#: The key of a trial's result row that names the checkpoint reported with it (Tune's ``result.json``).
CHECKPOINT_NAME_KEY = "checkpoint_dir_name"


def with_unkept_checkpoints(result):
    """Tune's ``Result`` with the checkpoints its trial reported and wrote but Tune never recorded.

    A sweep-wide stop (``sweep.stop.*``) that fires on a report stops every trial at once, and Ray Tune's
    controller drops the save of the checkpoint still in flight: the trial wrote it, its result row names it,
    but ``best_checkpoints`` lacks it, and a trial that reached the threshold at its first report would have
    nothing to register. A checkpoint folder its rows name and that is still there (Tune deletes the ones it
    does not keep) joins ``best_checkpoints`` with its row's metrics.
    """
    import dataclasses
    import math

    frame = result.metrics_dataframe
    if frame is None or CHECKPOINT_NAME_KEY not in frame or not result.path:
        return result
    from ray.tune import Checkpoint

    known = {Path(saved.path).name for saved, _ in result.best_checkpoints or ()}
    unkept = []
    for row in frame[frame[CHECKPOINT_NAME_KEY].notna()].to_dict("records"):
        folder = Path(result.path) / str(row[CHECKPOINT_NAME_KEY])
        if folder.name not in known and folder.is_dir():  # a remote trial folder is not checked, nor added
            # The table's gaps are keys that report did not have (NaN would rank as a value).
            reported = {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
            unkept.append((Checkpoint.from_directory(str(folder)), reported))
    if not unkept:
        return result
    return dataclasses.replace(result, best_checkpoints=[*(result.best_checkpoints or ()), *unkept])


def record_outcomes(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
    trials: Iterable[TrialOutcome],
    *,
    scheduler: str,
    resumed: bool,
    interrupted: bool,
) -> None:
    """Tag each finished trial's run with its best checkpoint and what stopped it early; drop superseded runs.

    Each finished trial's run is tagged with its best checkpoint (the model registration takes), that model's
    value of the sweep metric (:func:`model_value`: what ranks the trial and what its version records) and, when
    it ended before its last iteration, with what stopped it; a worker-mode run that Tune stopped early
    is FINISHED, not KILLED. On a resumed sweep, a run whose trial Tune's restored state never knew (the
    driver died before saving it; Tune ran that trial again under a new id) is deleted, so each trial
    has exactly one run.

    Args:
        client: Client bound to the sweep's tracking store.
        experiment_id: The sweep's experiment.
        parent_id: The sweep's parent run.
        trials: Each trial's :class:`TrialOutcome` (:func:`outcomes`).
        scheduler: The scheduler's name (``fifo`` stops nothing early).
        resumed: The sweep was resumed in this driver.
        interrupted: A signal stopped the sweep: runs stay as the signal left them.
    """
    runs = {r.data.tags.get(TRIAL_ID_TAG): r for r in queries.children(client, experiment_id, parent_id)}
    parent = client.get_run(parent_id)
    stop_reason = parent.data.tags.get(STOP_REASON_TAG)
    causes = ", ".join(c for c in (scheduler if scheduler != "fifo" else None, stop_reason) if c)
    known = set()
    for trial in trials:
        known.add(trial.trial_id)
        run = runs.get(trial.trial_id)
        if run is None:
            continue
        if trial.failed:
            if not interrupted and run.info.status == "RUNNING":  # its own process died before ending it (worker)
                from raysweep.secrets import scrub

                client.log_batch(run.info.run_id, tags=[RunTag(ERROR_TAG, scrub(trial.error or "trial failed")[:500])])
                client.set_terminated(run.info.run_id, "FAILED")
            continue
        tags = {}
        if trial.checkpoint:
            tags[CHECKPOINT_TAG] = trial.checkpoint
        # A model the trial logged itself (worker mode, mlflow.log_models) is its final one: its last report.
        value = trial.last_value if MODEL_URI_TAG in run.data.tags else trial.checkpoint_value
        if value is not None:
            tags[MODEL_VALUE_TAG] = repr(value)
        if not interrupted and trial.progress < 1.0:
            tags[STOPPED_EARLY_TAG] = causes or "stopped"
        if tags:
            client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        if not interrupted and run.info.status in ("RUNNING", "KILLED"):
            client.set_terminated(run.info.run_id, "FINISHED")
    if resumed and not interrupted:
        for trial_id, run in runs.items():
            if trial_id not in known and run.info.status == "KILLED":
                client.log_batch(run.info.run_id, tags=[RunTag(ENDED_BY_TAG, "superseded: trial re-run after resume")])
                client.delete_run(run.info.run_id)


def trial_id_of(path: str) -> str | None:
    """Tune's trial id in a trial folder's name (``train_29a33_00000_0_x=0.6370_2026-...``: ``29a33_00000``), for
    a trial that failed before its first report (Tune's account of it has no metrics)."""
    import re

    match = re.search(r"_([0-9a-f]{5}_\d{5})_", path.rstrip("/").rsplit("/", 1)[-1])
    return match.group(1) if match else None


def _error(result) -> str:
    """A failed trial's exception line: from the error file Tune keeps in its folder, else from the error."""
    from raysweep.progress import exception_line

    try:
        return exception_line(Path(result.path, "error.txt").read_text(errors="replace")) or "trial failed"
    except OSError:  # a folder on remote storage, or none written
        return exception_line(f"{type(result.error).__name__}: {result.error}")


def model_value(result, checkpoint: str | None, metric: str | None, *, logged_model: bool) -> float | None:
    """The sweep metric's value of the model a trial registers, from Tune's account of the trial.

    The metric's last logged value is the trial's last report; the model registered is its best kept checkpoint
    (an earlier report, when a later one was worse), or the final model when the trial logged one itself.

    Args:
        result: The trial's Tune ``Result``.
        checkpoint: Path of the checkpoint registration takes (the trainer's ``best_checkpoint``).
        metric: The sweep metric.
        logged_model: The trial logged its final model (worker mode with ``mlflow.log_models``).

    Returns:
        The value reported with that model, or ``None`` when Tune's account does not say.
    """
    if not metric:
        return None
    if logged_model:
        value = (result.metrics or {}).get(metric)
        return float(value) if isinstance(value, (int, float)) else None
    if not checkpoint:
        return None
    for saved, metrics in result.best_checkpoints or ():
        if saved.path == checkpoint and isinstance(metrics.get(metric), (int, float)):
            return float(metrics[metric])
    # Ray Train runs inside a trial (torch) report their checkpoint's path as a metric column instead.
    frame = result.metrics_dataframe
    if frame is not None and metric in frame:
        for column in frame.columns:  # a number column simply never equals the path
            hits = frame.loc[frame[column] == checkpoint, metric].dropna()
            if len(hits):
                return float(hits.iloc[-1])
    return None
