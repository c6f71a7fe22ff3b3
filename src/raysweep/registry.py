"""Register a sweep's best trial in the MLflow model registry and move the ``challenger``/``champion`` aliases.

The stage after :mod:`raysweep.analysis` (whose :class:`~raysweep.analysis.SweepSummary` it takes) and before
:mod:`raysweep.promotion` (which gates ``@champion`` through :func:`promote` and undoes it with :func:`rollback`).
Aliases only: MLflow's registry stages are deprecated (:func:`require_aliases` says how to move off them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from raysweep import trial_model

# The aliases' names and moves live in raysweep.aliases; importers of registry find them here too.
from raysweep.aliases import (  # noqa: F401
    CHALLENGER, CHAMPION, champion_version, check_task, promote, settle, version_task,
)
from raysweep.aliases import now as _now
from raysweep.errors import NoModelError, RaySweepError
from raysweep.evaluation import compare, evaluate, loaded, log_classifier_plots, test_tags  # noqa: F401 - API
from raysweep.ranking import is_better
from raysweep.tracking.tags import (
    METRIC_TAG, MODE_TAG, PREVIOUS_CHAMPION_TAG, PROMOTED_BY_TAG, PROMOTION_REASON_TAG, TASK_TAG, TEST_METRIC_TAG,
    TEST_VALUE_TAG, VALUE_TAG, VERSION_PARENT_TAG, VERSION_SWEEP_TAG, VERSION_TRIAL_TAG,
)

if TYPE_CHECKING:
    from raysweep.analysis import SweepSummary


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


@dataclass(frozen=True)
class NotRegistered:
    """A sweep whose best trial left no model to register: no version, and one line for the summary."""

    name: str
    reason: str
    version: None = None
    aliases: tuple[str, ...] = ()
    created: bool = False

    def __str__(self) -> str:
        return f"no version of {self.name}: {self.reason}"


def register_best(client: MlflowClient, parent, summary: SweepSummary, dataset=None) -> Registration | NotRegistered:
    """Log the best trial's checkpointed model to its run, register it, and move the aliases.

    Idempotent per sweep: a second call finds the version registered from the same parent run and creates
    nothing new; two calls at once (a sweep and ``raysweep analyse``) may both register, and then both keep the
    lower version and delete the other. The newest sweep version becomes ``@challenger``; it becomes
    ``@champion`` too when the model has no champion or it beats the champion's recorded metric in the sweep's
    mode; the aliases converge when sweeps finish together (:func:`raysweep.aliases.settle`). Given the sweep's
    data, the new version also records its score on the test split (:func:`raysweep.evaluation.test_tags`) and,
    for a classifier, the best trial's run gets its confusion matrix, ROC and precision-recall curves on the
    validation split (:func:`raysweep.evaluation.log_classifier_plots`).

    Args:
        client: Client bound to the tracking and registry stores.
        parent: The sweep's parent run.
        summary: The sweep's summary from :func:`raysweep.analysis.summarize`.
        dataset: The sweep's :class:`raysweep.data.Dataset`, to score the model on its test split; ``None``
            records no test metric.

    Returns:
        The :class:`Registration`, or :class:`NotRegistered` when the best trial's checkpoint holds no model.
    """
    name = parent.data.params["mlflow.registered_model"]
    version = sweep_version(client, parent, summary)
    created = version is None
    if created:
        check_task(client, name, dataset.task if dataset is not None else None)
        try:
            model_uri = trial_model.model_uri(client, client.get_run(summary.best_run_id),
                                              parent.data.params.get("trainer.name"))
        except NoModelError as error:
            return NotRegistered(name, str(error))
        model = loaded(model_uri) if dataset is not None else model_uri  # one load for the score and the plots
        task = {TASK_TAG: dataset.task} if dataset is not None else {}
        mine = _register(client, name, model_uri, summary, {**test_tags(model, dataset, summary.metric), **task})
        version = _keep_one(client, name, summary, mine)
        created = version == mine
        if created:
            log_classifier_plots(client, summary.best_run_id, model, dataset)
            _describe(client, name, version, summary)  # last: a described version is registered in full
    else:
        registered = client.get_model_version(name, version)
        if not registered.description:  # an attempt a tracking-server outage cut short: finish what it began
            log_classifier_plots(client, summary.best_run_id, registered.source, dataset)
            _describe(client, name, version, summary)
    settle(client, name, summary.metric, summary.mode)
    current = client.get_model_version(name, version)
    return Registration(name, version, tuple(sorted(current.aliases)), created)


def sweep_version(client: MlflowClient, parent, summary: SweepSummary) -> str | None:
    """The version this sweep registered from its best trial (the one :func:`register_best` keeps), or ``None``."""
    ours = _sweep_versions(client, parent.data.params["mlflow.registered_model"], summary)
    return ours[0] if ours else None


def _sweep_versions(client: MlflowClient, name: str, summary: SweepSummary) -> list[str]:
    # The versions registered from this sweep, lowest first (the sweep and its tags are written in one request).
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{summary.best_run_id}'")
    return [str(v) for v in sorted(int(mv.version) for mv in versions
                                   if mv.tags.get(VERSION_PARENT_TAG) == summary.parent_run_id)]


def _keep_one(client: MlflowClient, name: str, summary: SweepSummary, mine: str) -> str:
    # Two registrations of one sweep at once both found none and both registered: each keeps the lowest and
    # deletes its own when it is not that one, so one version stays whatever the order of their reads.
    keep = _sweep_versions(client, name, summary)[0]
    if keep != mine:
        client.delete_model_version(name, mine)
    return keep


def _register(client: MlflowClient, name: str, model_uri: str, summary: SweepSummary,
              extra_tags: dict[str, str]) -> str:
    import mlflow

    tags = {
        VERSION_PARENT_TAG: summary.parent_run_id,
        VERSION_SWEEP_TAG: summary.sweep_run_name,
        VERSION_TRIAL_TAG: summary.best_run_name,
        METRIC_TAG: summary.metric,
        VALUE_TAG: repr(summary.best_value),
        MODE_TAG: summary.mode,
        **extra_tags,
    }
    mv = mlflow.register_model(model_uri, name, tags=tags)
    return str(mv.version)


def _describe(client: MlflowClient, name: str, version: str, summary: SweepSummary) -> None:
    """The new version's description: the sweep, its best value and trial, the params, the test score if any."""
    tags = client.get_model_version(name, version).tags
    params = ", ".join(f"{k}={v}" for k, v in sorted(summary.best_params.items()))
    tested = ""
    if TEST_METRIC_TAG in tags:
        tested = f" On the test split: {tags[TEST_METRIC_TAG]}={float(tags[TEST_VALUE_TAG]):.4f}."
    client.update_model_version(
        name,
        version,
        description=(
            f"Best of {summary.n_trials} trials of sweep {summary.sweep_run_name}: "
            f"{summary.metric}={summary.best_value:.4f} ({summary.mode}).{tested} Trial {summary.best_run_name}; "
            f"{params}."
        ),
    )


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
    name, alias, version = parse_model_uri(uri)
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException:
        raise RaySweepError(f"{uri} does not exist in the model registry; check the name, alias or version "
                            "and MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI") from None


def rollback(client: MlflowClient, name: str, *, by: str, reason: str = "") -> str:
    """Move ``@champion`` back to the version it replaced, and note it in the restored version's description.

    The move is a :func:`promote` (so the restored version records who, why and when, and the version it
    replaced); the note ends the restored version's description, as a gate decision does.

    Args:
        client: Client bound to the registry.
        name: Registered model name.
        by: Who rolls back (recorded).
        reason: Why (recorded).

    Returns:
        The restored version.

    Raises:
        RaySweepError: No such model, a stages-only model, no ``@champion``, or a champion that records no
            previous champion.
    """
    current = require_aliases(client, name, CHAMPION)[CHAMPION]
    previous = client.get_model_version(name, current).tags.get(PREVIOUS_CHAMPION_TAG)
    if not previous:
        raise RaySweepError(f"{name}@champion (v{current}) records no previous champion; promote a version instead")
    # The restored version keeps the predecessor it had: a second rollback goes on back through the history
    # instead of reinstating the version the first one rolled back.
    before = client.get_model_version(name, previous).tags.get(PREVIOUS_CHAMPION_TAG, "")
    promote(client, name, previous, by=by, reason=f"rollback from v{current}: {reason}", previous=before)
    note = f"{name}: rollback ({_now()}, by {by}): @champion v{current} -> v{previous}"
    append_description(client, name, previous, note + (f"; {reason}" if reason else ""))
    return previous


def require_aliases(client: MlflowClient, name: str, *aliases: str) -> dict[str, str]:
    """Version behind each alias; fails with one line for a missing model or alias, or a stages-only model.

    Args:
        client: Client bound to the registry.
        name: Registered model name.
        *aliases: The aliases that must be set.

    Returns:
        ``{alias: version}``.

    Raises:
        RaySweepError: No such model; it uses only (deprecated) stages; an alias is not set.
    """
    import warnings

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        raise RaySweepError(f"no registered model {name!r}; check the name and MLFLOW_TRACKING_URI / "
                            "MLFLOW_REGISTRY_URI") from None
    found = {alias: str(version) for alias, version in (model.aliases or {}).items()}
    if not found:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reading current_stage warns that stages are deprecated
            staged = sorted(
                (int(mv.version), mv.current_stage)
                for mv in client.search_model_versions(f"name = '{name}'")
                if mv.current_stage not in (None, "", "None")
            )
        if staged:
            listed = ", ".join(f"v{v} {stage}" for v, stage in staged)
            raise RaySweepError(
                f"{name} uses only registry stages ({listed}), which MLflow deprecated; raysweep uses aliases: "
                f"set them with MlflowClient().set_registered_model_alias({name!r}, 'champion', VERSION) "
                f"(and 'challenger'), then run this again"
            )
    missing = [alias for alias in aliases if alias not in found]
    if missing:
        raise RaySweepError(
            f"{name} has no {', '.join('@' + a for a in missing)}; set it with "
            f"MlflowClient().set_registered_model_alias({name!r}, {missing[0]!r}, VERSION)"
        )
    return {alias: found[alias] for alias in aliases}


def append_description(client: MlflowClient, name: str, version: str, line: str) -> None:
    """Add ``line`` as a new paragraph at the end of a version's description (its human-readable history)."""
    current = client.get_model_version(name, version).description or ""
    client.update_model_version(name, version, description=f"{current}\n\n{line}".strip())


def versions(client: MlflowClient, name: str):
    """Every version of a registered model with its aliases, metric and promotion tags, newest first."""
    import pandas as pd

    try:  # search_model_versions answers without aliases: the registered model holds them
        held = client.get_registered_model(name).aliases
    except MlflowException:  # no such model: an empty table below
        held = {}
    rows = [
        {
            "version": int(mv.version),
            "aliases": ", ".join(sorted(alias for alias, v in held.items() if str(v) == str(mv.version))),
            "run_id": mv.run_id,
            "metric": mv.tags.get(METRIC_TAG),
            "value": float(mv.tags[VALUE_TAG]) if VALUE_TAG in mv.tags else None,
            "test_metric": mv.tags.get(TEST_METRIC_TAG),
            "test_value": float(mv.tags[TEST_VALUE_TAG]) if TEST_VALUE_TAG in mv.tags else None,
            "sweep": mv.tags.get(VERSION_SWEEP_TAG),
            "promoted_by": mv.tags.get(PROMOTED_BY_TAG),
            "promotion_reason": mv.tags.get(PROMOTION_REASON_TAG),
        }
        for mv in client.search_model_versions(f"name = '{name}'")
    ]
    columns = ["version", "aliases", "run_id", "metric", "value", "test_metric", "test_value", "sweep", "promoted_by",
               "promotion_reason"]
    # A model with no version yet is an empty table, not a KeyError.
    return pd.DataFrame(rows, columns=columns).sort_values("version", ascending=False, ignore_index=True)


def beats(summary: SweepSummary, champion_tags: dict[str, str]) -> bool:
    """Whether a sweep's best value beats the metric recorded on the champion version (:func:`raysweep.ranking.is_better`).

    A champion recorded with another metric or mode, or with none (promoted by hand), is never replaced
    automatically.

    Args:
        summary: The sweep's summary.
        champion_tags: The champion version's tags (its recorded metric, value and mode).
    """
    if champion_tags.get(METRIC_TAG) != summary.metric or champion_tags.get(MODE_TAG) != summary.mode:
        return False
    try:
        recorded = float(champion_tags[VALUE_TAG])
    except (KeyError, ValueError):
        return False
    return is_better(summary.best_value, recorded, summary.mode)
