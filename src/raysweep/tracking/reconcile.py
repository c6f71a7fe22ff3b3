"""After ``Tuner.fit`` returns: square the sweep's child runs with Tune's account of its trials."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mlflow import MlflowClient
from mlflow.entities import RunTag

from raysweep.metrics import PROGRESS
from raysweep.tracking import queries
from raysweep.tracking.tags import CHECKPOINT_TAG, ENDED_BY_TAG, STOP_REASON_TAG, STOPPED_EARLY_TAG, TRIAL_ID_TAG


def record_outcomes(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
    results: Iterable,
    best_checkpoint: Callable[[object], str | None],
    *,
    scheduler: str,
    resumed: bool,
    interrupted: bool,
) -> None:
    """Tag each finished trial's run with its best checkpoint and what stopped it early; drop superseded runs.

    Each finished trial's run is tagged with its best checkpoint (the model registration takes) and, when
    it ended before its last iteration, with what stopped it; a worker-mode run that Tune stopped early
    is FINISHED, not KILLED. On a resumed sweep, a run whose trial Tune's restored state never knew (the
    driver died before saving it; Tune ran that trial again under a new id) is deleted, so each trial
    has exactly one run.

    Args:
        client: Client bound to the sweep's tracking store.
        experiment_id: The sweep's experiment.
        parent_id: The sweep's parent run.
        results: Tune's ``ResultGrid`` (one ``Result`` per trial).
        best_checkpoint: The trainer's ``best_checkpoint(result)``: where a trial's model is.
        scheduler: The scheduler's name (``fifo`` stops nothing early).
        resumed: The sweep was resumed in this driver.
        interrupted: A signal stopped the sweep: runs stay as the signal left them.
    """
    runs = {r.data.tags.get(TRIAL_ID_TAG): r for r in queries.children(client, experiment_id, parent_id)}
    stop_reason = client.get_run(parent_id).data.tags.get(STOP_REASON_TAG)
    causes = ", ".join(c for c in (scheduler if scheduler != "fifo" else None, stop_reason) if c)
    known = set()
    for result in results:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id")
        known.add(trial_id)
        run = runs.get(trial_id)
        if run is None or result.error is not None:
            continue
        tags = {}
        path = best_checkpoint(result)
        if path:
            tags[CHECKPOINT_TAG] = path
        if not interrupted and metrics.get(PROGRESS, 1.0) < 1.0:
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
