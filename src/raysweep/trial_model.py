"""A trial's model, logged to its MLflow run from its checkpoint: what registration registers (:func:`model_uri`),
and what :class:`raysweep.leading.LeadingModel` logs ahead of it while the sweep's last trials run."""

from __future__ import annotations

import tempfile

from mlflow import MlflowClient
from mlflow.entities import RunTag

from raysweep.errors import NoModelError, RaySweepError
from raysweep.tracking.tags import CHECKPOINT_TAG, MODEL_CHECKPOINT_TAG, MODEL_URI_TAG, MODELS_BEFORE_TAG


def model_uri(client: MlflowClient, run, trainer_name: str | None) -> str:
    """The model registration takes from a trial's run: the one the trial logged itself, the one logged from its
    best checkpoint before (by :class:`raysweep.leading.LeadingModel`, or an attempt a tracking-server outage cut
    short), else one logged now; recorded on the run (``raysweep.model_uri``).

    Args:
        client: Client bound to the sweep's tracking store.
        run: The trial's run (tagged by :func:`raysweep.tracking.reconcile.record_outcomes`).
        trainer_name: The sweep's ``trainer.name``, whose ``log_model`` logs the model when none is logged yet.

    Raises:
        NoModelError: The trial kept no checkpoint.
        RaySweepError: Its checkpoint is gone.
    """
    if MODEL_URI_TAG in run.data.tags:
        return run.data.tags[MODEL_URI_TAG]
    checkpoint = run.data.tags.get(CHECKPOINT_TAG)
    if not checkpoint:
        raise NoModelError(f"best trial {run.info.run_name} kept no checkpoint; report one "
                           "(ray.tune.report(metrics, checkpoint=...)) holding a model to have it registered")
    uri = log_from_checkpoint(client, run, checkpoint, trainer_name)
    client.log_batch(run.info.run_id, tags=[RunTag(MODEL_URI_TAG, uri)])
    return uri


def log_from_checkpoint(client: MlflowClient, run, checkpoint: str, trainer_name: str) -> str:
    """Log the model in ``checkpoint`` to the trial's (ended) ``run`` with the trainer's ``log_model``, once: a
    model an earlier call logged in full from the same checkpoint is returned, any other it logged is deleted.
    Returns the model's URI."""
    import mlflow

    from raysweep import trainables

    reused = _logged_before(client, run, checkpoint)
    if reused is not None:
        return reused
    trainer = trainables.load(trainer_name)
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        local = _fetch_checkpoint(checkpoint, tmp)
        try:
            with mlflow.start_run(run_id=run_id):
                info = trainer.log_model(local)
        finally:
            # start_run re-opened the finished trial's run; put its status back whatever happened.
            client.set_terminated(run_id, "FINISHED", end_time=run.info.end_time)
    return info.model_uri


def _logged_before(client: MlflowClient, run, checkpoint: str) -> str | None:
    """The model an earlier call logged in full to ``run`` from ``checkpoint``; any other it logged (half-logged,
    or from another checkpoint) is deleted. The first call records on the run the logged models it had before
    (the trial's own) and, before anything is uploaded, the checkpoint it logs from."""
    from mlflow.entities import LoggedModelStatus

    run_id, tags = run.info.run_id, run.data.tags
    logged = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    if MODELS_BEFORE_TAG not in tags:
        client.log_batch(run_id, tags=[RunTag(MODELS_BEFORE_TAG, ",".join(sorted(m.model_id for m in logged)) or "-"),
                                       RunTag(MODEL_CHECKPOINT_TAG, checkpoint)])
        return None
    # A run an older raysweep began logging to records no checkpoint: it logged the one registration takes.
    same = tags.get(MODEL_CHECKPOINT_TAG, checkpoint) == checkpoint
    mine = [m for m in logged if m.model_id not in tags[MODELS_BEFORE_TAG].split(",")]
    for model in sorted(mine, key=lambda m: m.status == LoggedModelStatus.READY):  # half-logged first
        if same and model.status == LoggedModelStatus.READY:
            return f"models:/{model.model_id}"
        client.delete_logged_model(model.model_id)
    if not same:
        client.set_tag(run_id, MODEL_CHECKPOINT_TAG, checkpoint)
    return None


def _fetch_checkpoint(path: str, tmp: str) -> str:
    from ray.tune import Checkpoint

    try:
        return Checkpoint(path).to_directory(tmp)
    except FileNotFoundError:
        raise RaySweepError(
            f"checkpoint {path!r} of the best trial is gone; keep the Ray results folder (cluster.storage_path)"
        ) from None
