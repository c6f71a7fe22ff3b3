"""The promotion path of a registered model: a validation gate, and copies between registries.

:func:`gate` scores ``@challenger`` and ``@champion`` on the same test split (rows no trial saw and nothing was
ranked on), moves ``@champion`` only when the challenger is better by a margin (or when forced), and records the
decision as version tags and in the challenger's description; :func:`raysweep.registry.rollback` undoes a
promotion. Aliases only: MLflow's registry stages are deprecated, and a model that has nothing but stages gets
one line saying how to set aliases.
:func:`copy_version` copies a version to another registered model, in the same registry or in another one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from mlflow import MlflowClient

from raysweep import registry
from raysweep.compat import global_tracking_uri
from raysweep.errors import RaySweepError
from raysweep.ranking import is_better
from raysweep.remote import redact
from raysweep.tracking.tags import (
    COPIED_FROM_REGISTRY_TAG,
    COPIED_FROM_TAG,
    HISTORY_TAG_PREFIXES,
    METRIC_TAG,
    MODE_TAG,
    SOURCE_RUN_TAG,
    VALIDATION_PREFIX,
    VALIDATION_STATUS_TAG,
    VERSION_PARENT_TAG,
)

#: The gate's outcomes (``validation_status`` on the challenger; the other ``validation_*`` tags hold what it compared).
PASSED, FAILED, FORCED = "passed", "failed", "forced"


@dataclass(frozen=True)
class Decision:
    """What the gate decided about a challenger and why."""

    name: str
    challenger: str
    champion: str
    metric: str
    mode: str
    challenger_value: float
    champion_value: float
    margin: float
    status: str  # passed | failed | forced
    decided_at: str  # ISO 8601, UTC
    by: str
    reason: str

    @property
    def promoted(self) -> bool:
        """Whether ``@champion`` moved to the challenger."""
        return self.status in (PASSED, FORCED)

    @property
    def tags(self) -> dict[str, str]:
        """The version tags recording the decision on the challenger (``validation_status``, ``validation_...``)."""
        recorded = {
            "metric": self.metric,
            "mode": self.mode,
            "challenger_value": repr(self.challenger_value),
            "champion_value": repr(self.champion_value),
            "champion_version": self.champion,
            "margin": repr(self.margin),
            "date": self.decided_at,
            "by": self.by,
            "reason": self.reason,
        }
        return {VALIDATION_STATUS_TAG: self.status, **{VALIDATION_PREFIX + key: value for key, value in recorded.items()}}

    def __str__(self) -> str:
        outcome = f"@champion -> v{self.challenger}" if self.promoted else f"@champion stays v{self.champion}"
        why = f"; {self.reason}" if self.reason else ""
        return (
            f"{self.name}: gate {self.status} ({self.decided_at}, by {self.by}): challenger v{self.challenger} "
            f"{self.metric}={self.challenger_value:.6f} vs champion v{self.champion} {self.champion_value:.6f} "
            f"({self.mode}, margin {self.margin:g}); {outcome}{why}"
        )


def status(better: bool, force: bool) -> str:
    """``passed`` when better; ``forced`` when promoted anyway; else ``failed``."""
    return PASSED if better else FORCED if force else FAILED


def held_out_data(client: MlflowClient, version, data_cfg=None):
    """The data a gate evaluates on: ``data_cfg`` when given, else the data of the sweep that produced
    ``version`` (rebuilt, with the same splits, from the config recorded on its parent run).

    Raises:
        RaySweepError: No data config given and the version records no sweep.
    """
    from raysweep import data
    from raysweep.analysis import validation_data

    if data_cfg is not None:
        return data.load(data_cfg)
    parent_id = version.tags.get(VERSION_PARENT_TAG)
    if not parent_id:
        raise RaySweepError(
            f"{version.name} v{version.version} records no sweep ({VERSION_PARENT_TAG}); "
            "pass the held-out data with --data FILE.yaml (a data config like conf/data/fraud.yaml)"
        )
    return validation_data(client, client.get_run(parent_id))


def gate(client: MlflowClient, name: str, dataset=None, *, margin: float = 0.0, force: bool = False,
         by: str, reason: str = "", data_cfg=None) -> Decision:
    """Evaluate ``@challenger`` against ``@champion`` and move ``@champion`` when the challenger is better.

    Both versions are scored on the same test split in the sweep's metric (recorded on the challenger as
    ``raysweep.metric``/``raysweep.mode``; ``val_auc``/``max`` otherwise), named for that split (``test_auc``).
    The decision is written to the challenger as tags (:attr:`Decision.tags`) and appended to its description; a
    promotion also records who, why, when and the previous champion (:func:`raysweep.registry.promote`), so :func:`raysweep.registry.rollback`
    can undo it. Nothing is written when the aliases cannot be resolved or the models cannot be evaluated.

    Args:
        client: Client bound to the tracking store and registry.
        name: Registered model name.
        dataset: The :class:`raysweep.data.Dataset` whose test split to score on; default :func:`held_out_data`.
        margin: How much better the challenger must be (metric units); equal is never better.
        force: Promote even when the challenger is not better (recorded as ``forced``).
        by: Who decides (recorded).
        reason: Why (recorded).
        data_cfg: A ``data`` config to build the held-out data from, when ``dataset`` is not given.

    Returns:
        The :class:`Decision`.

    Raises:
        RaySweepError: Missing model or aliases, a stages-only model, both aliases on one version, a metric the
            gate cannot recompute, or no test rows.
    """
    from raysweep.evaluation import TEST, evaluate, on_split
    from raysweep.metrics import metric_names

    if margin < 0:
        raise RaySweepError(f"--margin must be >= 0, got {margin}")
    versions = registry.require_aliases(client, name, registry.CHALLENGER, registry.CHAMPION)
    challenger, champion = versions[registry.CHALLENGER], versions[registry.CHAMPION]
    if challenger == champion:
        raise RaySweepError(f"{name}@challenger is already @champion (v{champion}); register a new version first")
    challenger_mv = client.get_model_version(name, challenger)
    tasks = {alias: registry.version_task(client, mv) for alias, mv in
             ((registry.CHALLENGER, challenger_mv), (registry.CHAMPION, client.get_model_version(name, champion)))}
    if None not in tasks.values() and len(set(tasks.values())) > 1:
        raise RaySweepError(f"{name} v{challenger} (@challenger) learned a {tasks[registry.CHALLENGER]} task and "
                            f"v{champion} (@champion) a {tasks[registry.CHAMPION]} one: one test split cannot score "
                            f"both; register a {tasks[registry.CHAMPION]} model as @challenger")
    swept = challenger_mv.tags.get(METRIC_TAG, "val_auc")
    mode = challenger_mv.tags.get(MODE_TAG, "max")
    if dataset is None:
        dataset = held_out_data(client, challenger_mv, data_cfg)
    metric = on_split(swept, TEST)
    if metric not in metric_names(dataset.task, "test_"):
        raise RaySweepError(f"{name} v{challenger} is ranked by {swept!r}, which a gate cannot recompute on "
                            f"{dataset.task} data; use a sweep whose metric is one of "
                            f"{', '.join(metric_names(dataset.task))}")
    if not len(dataset.xy(TEST)[1]):
        raise RaySweepError(f"the held-out data has no test rows to score {name} on; give it some with "
                            "data.test_fraction > 0 (--data FILE.yaml)")
    values = {version: evaluate(f"models:/{name}/{version}", dataset, TEST)[metric]
              for version in (challenger, champion)}
    better = is_better(values[challenger], values[champion], mode, margin)
    decision = Decision(
        name=name, challenger=challenger, champion=champion, metric=metric, mode=mode,
        challenger_value=values[challenger], champion_value=values[champion], margin=margin,
        status=status(better, force), decided_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        by=by, reason=reason,
    )
    # A sweep may have moved @champion while the models were scored: never replace a champion not compared with.
    now = registry.require_aliases(client, name, registry.CHAMPION)[registry.CHAMPION]
    if now != champion:
        raise RaySweepError(f"{name}@champion moved from v{champion} to v{now} while the gate scored the models; "
                            "run promote again")
    if decision.promoted:
        registry.promote(client, name, challenger, by=by, reason=f"gate {decision.status}: {reason}".rstrip(": "))
    for key, value in decision.tags.items():
        client.set_model_version_tag(name, challenger, key, value)
    registry.append_description(client, name, challenger, str(decision))
    return decision


def copy_version(client: MlflowClient, src_uri: str, dst_name: str, registry_uri: str | None = None, *,
                 source_registry_uri: str | None = None):
    """Copy a registered version to a new version of ``dst_name``, in this registry or in another one.

    In one registry this is MLflow's ``copy_model_version`` (the copy points at the same model artifacts).
    MLflow 3.17 copies only inside one registry: its copy refers to the source as ``models:/NAME/VERSION``,
    which another registry cannot resolve. So for another registry (``registry_uri``, an MLflow store used as
    both tracking and registry) the model's files are downloaded and logged there as a new LoggedModel,
    which the new version points at. Either way the copy keeps the source's tags and description except
    its promotion history, and records the source in ``raysweep.copied_from`` (and, across registries, the
    source registry without credentials in ``raysweep.copied_from_registry``).

    Args:
        client: Client bound to the source registry (and its tracking store).
        src_uri: ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.
        dst_name: Destination registered model (created when missing).
        registry_uri: Another MLflow store; ``None`` copies within ``client``'s registry.
        source_registry_uri: The registry ``client`` is bound to, recorded (without credentials) on a copy in
            another store; default MLflow's process-wide registry URI (``MLFLOW_REGISTRY_URI``, else the
            tracking URI).

    Returns:
        The new ``ModelVersion``.
    """
    src = registry.resolve(client, src_uri)
    source = f"models:/{src.name}/{src.version}"
    if registry_uri is None:
        copy = client.copy_model_version(source, dst_name)
        target = client
    else:
        target = MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)
        copy = _copy_across(client, src, dst_name, target, registry_uri)
    for key in target.get_model_version(dst_name, copy.version).tags:
        if key.startswith(HISTORY_TAG_PREFIXES):
            target.delete_model_version_tag(dst_name, copy.version, key)
    target.set_model_version_tag(dst_name, copy.version, COPIED_FROM_TAG, source)
    if registry_uri is not None:
        if source_registry_uri is None:
            import mlflow

            source_registry_uri = mlflow.get_registry_uri()
        target.set_model_version_tag(dst_name, copy.version, COPIED_FROM_REGISTRY_TAG,
                                     redact(source_registry_uri) or "")
    return target.get_model_version(dst_name, copy.version)


def _copy_across(client: MlflowClient, src, dst_name: str, dst: MlflowClient, dst_uri: str):
    import tempfile

    import mlflow
    from mlflow.entities import LoggedModelStatus
    from mlflow.exceptions import MlflowException

    experiment_name = "raysweep-copies"
    if src.run_id:
        try:
            experiment_name = client.get_experiment(client.get_run(src.run_id).info.experiment_id).name
        except MlflowException:
            pass  # the run is gone: the copy still needs a home
    experiment = dst.get_experiment_by_name(experiment_name)
    experiment_id = experiment.experiment_id if experiment else dst.create_experiment(experiment_name)
    tags = {k: v for k, v in src.tags.items() if not k.startswith(HISTORY_TAG_PREFIXES)}
    if src.run_id:
        tags[SOURCE_RUN_TAG] = src.run_id
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri(src.name, src.version), dst_path=tmp
        )
        model = dst.create_logged_model(experiment_id, name="model",
                                        tags={COPIED_FROM_TAG: f"models:/{src.name}/{src.version}"})
        dst.log_model_artifacts(model.model_id, local)
    dst.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    try:
        dst.create_registered_model(dst_name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # MLflow's sqlite registry finds the new LoggedModel through the process-wide tracking URI, not dst's store.
    with global_tracking_uri(dst_uri):
        return dst.create_model_version(dst_name, source=f"models:/{model.model_id}", tags=tags,
                                        description=src.description, model_id=model.model_id)
