"""Register a sweep's best trial in the MLflow model registry and move the ``challenger``/``champion`` aliases."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities import RunTag

from raysweep.analysis import SweepSummary
from raysweep.errors import RaySweepError
from raysweep.tracking.tags import CHECKPOINT_TAG, MODEL_URI_TAG

CHALLENGER = "challenger"
CHAMPION = "champion"
PARENT_TAG = "raysweep.parent_run_id"
METRIC_TAG = "raysweep.metric"
VALUE_TAG = "raysweep.metric_value"
MODE_TAG = "raysweep.mode"
#: Column of a model's output table that holds fraud probabilities (the ensemble answers with a table).
FRAUD_PROBABILITY = "fraud_probability"


@dataclass(frozen=True)
class Registration:
    """The model version a sweep registered (or found already registered) and the aliases it holds."""

    name: str
    version: str
    aliases: tuple[str, ...]
    created: bool

    @property
    def uri(self) -> str:
        """``models:/NAME@champion`` when it is the champion, else ``models:/NAME/VERSION``."""
        return f"models:/{self.name}@{CHAMPION}" if CHAMPION in self.aliases else f"models:/{self.name}/{self.version}"

    def __str__(self) -> str:
        aliases = ", ".join(f"@{a}" for a in self.aliases) or "no aliases"
        state = "new version" if self.created else "already registered"
        return f"{self.name} v{self.version} ({state}; {aliases})  load with {self.uri}"


def register_best(client: MlflowClient, parent, summary: SweepSummary) -> Registration:
    """Log the best trial's checkpointed model to its run, register it, and move the aliases.

    Idempotent per sweep: a second call finds the version registered from the same parent run and
    creates nothing new. The new version always becomes ``@challenger``; it becomes ``@champion`` too when
    the model has no champion or beats the champion's recorded metric in the sweep's mode.

    Args:
        client: Client bound to the tracking and registry stores.
        parent: The sweep's parent run.
        summary: The sweep's summary from :func:`raysweep.analysis.summarize`.

    Returns:
        The :class:`Registration`.
    """
    name = parent.data.params["mlflow.registered_model"]
    version = _existing_version(client, name, summary)
    created = version is None
    if created:
        model_uri = _log_model(client, parent, summary)
        version = _register(client, name, model_uri, summary)
    _move_aliases(client, name, version, summary)
    current = client.get_model_version(name, version)
    return Registration(name, version, tuple(sorted(current.aliases)), created)


def _existing_version(client: MlflowClient, name: str, summary: SweepSummary) -> str | None:
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{summary.best_run_id}'")
    for mv in versions:
        if mv.tags.get(PARENT_TAG) == summary.parent_run_id:
            return str(mv.version)
    return None


def _log_model(client: MlflowClient, parent, summary: SweepSummary) -> str:
    import mlflow

    from raysweep import trainables

    best = client.get_run(summary.best_run_id)
    if MODEL_URI_TAG in best.data.tags:
        return best.data.tags[MODEL_URI_TAG]
    checkpoint = best.data.tags.get(CHECKPOINT_TAG)
    if not checkpoint:
        raise RaySweepError(f"best trial {summary.best_run_name} recorded no checkpoint; its model cannot be registered")
    trainer = trainables.get(parent.data.params["trainer.name"])
    with tempfile.TemporaryDirectory() as tmp:
        local = _fetch_checkpoint(checkpoint, tmp)
        try:
            with mlflow.start_run(run_id=summary.best_run_id):
                info = trainer.log_model(local)
        finally:
            # start_run re-opened the finished child; put its status back whatever happened.
            client.set_terminated(summary.best_run_id, "FINISHED", end_time=best.info.end_time)
    client.log_batch(summary.best_run_id, tags=[RunTag(MODEL_URI_TAG, info.model_uri)])
    return info.model_uri


def _fetch_checkpoint(path: str, tmp: str) -> str:
    from ray.tune import Checkpoint

    try:
        return Checkpoint(path).to_directory(tmp)
    except FileNotFoundError:
        raise RaySweepError(
            f"checkpoint {path!r} of the best trial is gone; keep the Ray results folder (cluster.storage_path)"
        ) from None


def _register(client: MlflowClient, name: str, model_uri: str, summary: SweepSummary) -> str:
    import mlflow

    tags = {
        PARENT_TAG: summary.parent_run_id,
        "raysweep.sweep": summary.sweep_run_name,
        "raysweep.trial": summary.best_run_name,
        METRIC_TAG: summary.metric,
        VALUE_TAG: repr(summary.best_value),
        MODE_TAG: summary.mode,
    }
    mv = mlflow.register_model(model_uri, name, tags=tags)
    params = ", ".join(f"{k}={v}" for k, v in sorted(summary.best_params.items()))
    client.update_model_version(
        name,
        mv.version,
        description=(
            f"Best of {summary.n_trials} trials of sweep {summary.sweep_run_name}: "
            f"{summary.metric}={summary.best_value:.4f} ({summary.mode}). Trial {summary.best_run_name}; {params}."
        ),
    )
    return str(mv.version)


def _move_aliases(client: MlflowClient, name: str, version: str, summary: SweepSummary) -> None:
    client.set_registered_model_alias(name, CHALLENGER, version)
    champion = champion_version(client, name)
    if champion is None or (champion != version and beats(summary, client.get_model_version(name, champion).tags)):
        promote(client, name, version, by="raysweep",
                reason=f"sweep {summary.sweep_run_name}: {summary.metric}={summary.best_value:.4f} ({summary.mode})")


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` -> ``(NAME, ALIAS, None)``; ``models:/NAME/VERSION`` -> ``(NAME, None, VERSION)``.

    Raises:
        RaySweepError: Not a registered model's URI (a ``runs:/`` or ``models:/m-<id>`` URI names no version).
    """
    rest = uri.removeprefix("models:/") if uri.startswith("models:/") else None
    if rest and "@" in rest and "/" not in rest:
        name, alias = rest.split("@", 1)
        if name and alias:
            return name, alias, None
    elif rest and rest.count("/") == 1:
        name, version = rest.split("/")
        if name and version.isdigit():
            return name, None, version
    raise RaySweepError(f"{uri!r} names no registered model version; use models:/NAME@ALIAS or models:/NAME/VERSION")


def resolve(client: MlflowClient, uri: str):
    """The ``ModelVersion`` a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI points at.

    Raises:
        RaySweepError: The URI is malformed, or the model, alias or version does not exist.
    """
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_uri(uri)
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException:
        raise RaySweepError(f"{uri} does not exist in the model registry; check the name, alias or version "
                            "and MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI") from None


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The version holding ``@champion``, or ``None``."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def promote(client: MlflowClient, name: str, version: str | int, *, by: str, reason: str) -> str | None:
    """Move ``@champion`` to ``version`` and record who, why, when and which version it replaced.

    Args:
        client: Client bound to the registry.
        name: Registered model name.
        version: The version to promote.
        by: Who promotes (a person or ``raysweep``).
        reason: Why, in a sentence.

    Returns:
        The previous champion's version, or ``None``.
    """
    from datetime import datetime, timezone

    version = str(version)
    client.get_model_version(name, version)  # fails clearly when the version does not exist
    previous = champion_version(client, name)
    client.set_registered_model_alias(name, CHAMPION, version)
    tags = {
        "raysweep.promoted_by": by,
        "raysweep.promotion_reason": reason,
        "raysweep.promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "raysweep.previous_champion": previous or "",
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return previous


def rollback(client: MlflowClient, name: str, *, by: str, reason: str) -> str:
    """Move ``@champion`` back to the version it replaced; returns that version.

    Raises:
        RaySweepError: There is no champion, or it records no previous champion.
    """
    current = champion_version(client, name)
    if current is None:
        raise RaySweepError(f"{name} has no @champion to roll back")
    previous = client.get_model_version(name, current).tags.get("raysweep.previous_champion")
    if not previous:
        raise RaySweepError(f"{name}@champion (v{current}) records no previous champion; promote a version instead")
    promote(client, name, previous, by=by, reason=f"rollback from v{current}: {reason}")
    return previous


def versions(client: MlflowClient, name: str):
    """Every version of a registered model with its aliases, metric and promotion tags, newest first."""
    import pandas as pd

    rows = [
        {
            "version": int(mv.version),
            "aliases": ", ".join(sorted(mv.aliases)),
            "run_id": mv.run_id,
            "metric": mv.tags.get(METRIC_TAG),
            "value": float(mv.tags[VALUE_TAG]) if VALUE_TAG in mv.tags else None,
            "sweep": mv.tags.get("raysweep.sweep"),
            "promoted_by": mv.tags.get("raysweep.promoted_by"),
            "promotion_reason": mv.tags.get("raysweep.promotion_reason"),
        }
        for mv in client.search_model_versions(f"name = '{name}'")
    ]
    return pd.DataFrame(rows).sort_values("version", ascending=False, ignore_index=True)


def evaluate(model_uri: str, features, labels) -> dict[str, float]:
    """Load a model through pyfunc and compute the validation metrics of its fraud probabilities.

    A model may answer with class probabilities (sklearn: one column per class), one probability per row
    (torch), or a table with a ``fraud_probability`` column (the ensemble).
    """
    import mlflow.pyfunc
    import numpy as np

    from raysweep.metrics import validation_metrics

    predictions = mlflow.pyfunc.load_model(model_uri).predict(features)
    if hasattr(predictions, "columns") and FRAUD_PROBABILITY in predictions.columns:
        predictions = predictions[FRAUD_PROBABILITY]
    predictions = np.asarray(predictions)
    proba = predictions[:, -1] if predictions.ndim == 2 else predictions
    return validation_metrics(labels, proba)


def compare(client: MlflowClient, name: str, dataset, aliases=(CHAMPION, CHALLENGER)):
    """Validation metrics of the versions behind ``aliases``, on the same validation data."""
    import pandas as pd

    rows = []
    for alias in aliases:
        mv = client.get_model_version_by_alias(name, alias)
        metrics = evaluate(f"models:/{name}@{alias}", dataset.X_val, dataset.y_val)
        rows.append({"alias": alias, "version": int(mv.version), **metrics})
    return pd.DataFrame(rows).set_index("alias")


def beats(summary: SweepSummary, champion_tags: dict[str, str]) -> bool:
    """Whether a sweep's best value beats the metric recorded on the champion version.

    A champion recorded with another metric or mode, or with none (promoted by hand), is never replaced
    automatically.
    """
    if champion_tags.get(METRIC_TAG) != summary.metric or champion_tags.get(MODE_TAG) != summary.mode:
        return False
    try:
        recorded = float(champion_tags[VALUE_TAG])
    except (KeyError, ValueError):
        return False
    return summary.best_value > recorded if summary.mode == "max" else summary.best_value < recorded
