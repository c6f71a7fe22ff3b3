"""Moving ``@champion`` and ``@challenger`` so that writers who finish together agree on where they end.

MLflow has no compare-and-set for aliases: two sweeps that each read the champion, find their version better and
write it leave whichever wrote last, possibly the worse one. So the automatic writer does not compare with what it
read. :func:`settle` computes where the aliases belong from every version's recorded metric (:func:`wanted`, a
function of the registry's contents alone), writes only what differs, and reads again until what it reads is
what it wants. Every writer ends on such a read, so once the last one returns the registry holds the answer all of
them compute: the best version by its recorded metric, the newest sweep version as challenger.

A decision a person made (``raysweep promote``, ``rollback``, :func:`promote` with another ``by``) anchors the
champion: it records the newest version number it saw (``raysweep.promotion_basis``), and only versions
registered after it compete with its choice. A champion recorded with another metric or mode, or with none
(promoted by hand), is never replaced automatically. One name holds the models of one task (:func:`check_task`).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from raysweep.errors import RaySweepError
from raysweep.ranking import is_better
from raysweep.tracking.tags import (
    METRIC_TAG,
    MODE_TAG,
    PREVIOUS_CHAMPION_TAG,
    PROMOTED_AT_TAG,
    PROMOTED_BY_TAG,
    PROMOTION_BASIS_TAG,
    PROMOTION_REASON_TAG,
    TASK_TAG,
    VALUE_TAG,
    VERSION_PARENT_TAG,
    VERSION_SWEEP_TAG,
)

CHALLENGER = "challenger"
CHAMPION = "champion"
#: ``by`` of the moves raysweep makes itself after a sweep; any other ``by`` is a person's decision.
AUTOMATIC = "raysweep"
#: Rounds of write-and-read-again before :func:`settle` gives up on a registry others keep changing.
_ROUNDS = 20


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The version holding ``@champion``, or ``None``."""
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def promote(client: MlflowClient, name: str, version: str | int, *, by: str, reason: str,
            previous: str | None = None) -> str | None:
    """Move ``@champion`` to ``version`` and record who, why, when and which version it replaced.

    Also records the newest version number at the move (``raysweep.promotion_basis``): a person's decision holds
    against every version registered up to then (:func:`settle`).

    Args:
        client: Client bound to the registry.
        name: Registered model name.
        version: The version to promote.
        by: Who promotes (a person, or ``raysweep`` for the automatic move after a sweep).
        reason: Why, in a sentence.
        previous: The version to record as the one it replaced, instead of the current champion: a rollback
            keeps the restored version's own predecessor, so the next rollback goes further back.

    Returns:
        The champion before the move, or ``None``.
    """
    version = str(version)
    client.get_model_version(name, version)  # fails clearly when the version does not exist
    replaced = champion_version(client, name)
    if previous is None:
        previous = replaced
    newest = max(int(mv.version) for mv in client.search_model_versions(f"name = '{name}'"))
    tags = {
        PROMOTED_BY_TAG: by,
        PROMOTION_REASON_TAG: reason,
        PROMOTED_AT_TAG: now(),
        PREVIOUS_CHAMPION_TAG: previous or "",
        PROMOTION_BASIS_TAG: str(newest),
    }
    # Tags before the alias: a move cut short and tried again (a server outage) finds the alias missing and
    # writes the same values, rather than an alias in place and the record of the move lost.
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHAMPION, version)
    return replaced


def settle(client: MlflowClient, name: str, metric: str, mode: str) -> None:
    """Move ``@challenger`` and ``@champion`` to where :func:`wanted` says, until a read confirms it.

    Args:
        client: Client bound to the registry.
        name: Registered model name.
        metric: The sweep metric versions are compared by (``raysweep.metric`` on each version).
        mode: ``max`` or ``min``.
    """
    failed = None
    for _ in range(_ROUNDS):
        versions = client.search_model_versions(f"name = '{name}'")
        held = {alias: str(v) for alias, v in (client.get_registered_model(name).aliases or {}).items()}
        challenger, champion = wanted(versions, held.get(CHAMPION), metric, mode)
        moves = []
        if challenger is not None and held.get(CHALLENGER) != challenger:
            moves.append(lambda: client.set_registered_model_alias(name, CHALLENGER, challenger))
        if champion is not None and held.get(CHAMPION) != champion:
            mv = next(v for v in versions if str(v.version) == champion)
            reason = f"sweep {mv.tags.get(VERSION_SWEEP_TAG, '?')}: {metric}={_value(mv, metric, mode):.4f} ({mode})"
            moves.append(lambda: promote(client, name, champion, by=AUTOMATIC, reason=reason))
        if not moves:
            return
        for move in moves:
            try:
                move()
            except MlflowException as error:  # a sqlite registry refuses one of two writes of an alias at once
                failed = error
        time.sleep(0.05)  # let a concurrent writer finish its write before reading again
    if failed is not None:
        raise failed


def wanted(versions, champion: str | None, metric: str, mode: str) -> tuple[str | None, str | None]:
    """Where ``@challenger`` and ``@champion`` belong, from the versions alone: ``(challenger, champion)``.

    The challenger is the newest version a sweep registered. The champion is the best by recorded metric among the
    current champion, the latest person-made choice, and the sweep versions registered after that choice (all,
    when no person chose); ties keep the earlier. ``None`` leaves an alias as it is.

    Args:
        versions: Every ``ModelVersion`` of the model, with its tags.
        champion: The version now holding ``@champion``.
        metric: The metric the caller compares by.
        mode: ``max`` or ``min``.
    """
    by_number = {str(mv.version): mv for mv in versions}
    swept = sorted((mv for mv in versions if VERSION_PARENT_TAG in mv.tags), key=lambda mv: int(mv.version))
    challenger = str(swept[-1].version) if swept else None
    if champion is not None and (champion not in by_number or _value(by_number[champion], metric, mode) is None):
        return challenger, champion  # promoted by hand, or ranked by another metric: never replaced automatically
    chosen = _latest_choice(versions)
    floor = _basis(chosen, versions) if chosen is not None else 0
    candidates = [by_number[v] for v in (champion,) if v is not None]
    if chosen is not None:
        candidates.append(chosen)
    candidates += [mv for mv in swept if int(mv.version) > floor]
    best, best_value = None, None
    for mv in candidates:
        value = _value(mv, metric, mode)
        if value is not None and (best is None or is_better(value, best_value, mode)):
            best, best_value = str(mv.version), value
    return challenger, best if best is not None else champion


def _latest_choice(versions):
    # The version a person promoted last: the highest basis (the newest version it saw), then the latest time.
    chosen = [mv for mv in versions if mv.tags.get(PROMOTED_BY_TAG, AUTOMATIC) != AUTOMATIC]
    if not chosen:
        return None
    return max(chosen, key=lambda mv: (_basis(mv, versions), mv.tags.get(PROMOTED_AT_TAG, "")))


def _basis(version, versions) -> int:
    # The newest version number the decision saw; one recorded before raysweep kept it: the newest registered
    # by the decision's time (its tag has whole seconds, so that whole second counts as seen).
    if PROMOTION_BASIS_TAG in version.tags:
        return int(version.tags[PROMOTION_BASIS_TAG])
    try:
        at = datetime.fromisoformat(version.tags[PROMOTED_AT_TAG]).timestamp() * 1000 + 999
    except (KeyError, ValueError):
        return int(version.version)
    return max(int(mv.version) for mv in versions if (mv.creation_timestamp or 0) <= at or mv is version)


def _value(version, metric: str, mode: str) -> float | None:
    # The version's recorded metric when it is recorded in the same metric and direction, else None.
    if version.tags.get(METRIC_TAG) != metric or version.tags.get(MODE_TAG) != mode:
        return None
    try:
        return float(version.tags[VALUE_TAG])
    except (KeyError, ValueError):
        return None


def now() -> str:
    """The current UTC time, as the promotion tags record it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_task(client: MlflowClient, name: str, task: str | None) -> None:
    """Refuse to register a model of ``task`` under a name whose champion learned another task.

    Their scores could never be compared (``promote`` scores both on one test split), and a caller loading
    ``@champion`` would get another kind of answer. Checked before the sweep's parent run exists, and again when
    it registers.

    Raises:
        RaySweepError: Naming the champion, both tasks and the fix.
    """
    if task is None:
        return
    try:
        champion = (client.get_registered_model(name).aliases or {}).get(CHAMPION)
    except MlflowException:
        return  # a new name
    if champion is None:
        return
    held = version_task(client, client.get_model_version(name, str(champion)))
    if held is not None and held != task:
        raise RaySweepError(
            f"registered model {name!r} holds a {held} model (@{CHAMPION} v{champion}) and this sweep's data is a "
            f"{task} task, whose models cannot be compared with it; set mlflow.registered_model to another name"
        )


def version_task(client: MlflowClient, version) -> str | None:
    """The task a model version learned: its tag, or (registered before the tag) its run's dataset's; ``None``
    where neither says (a trainer that loads its own data)."""
    if TASK_TAG in version.tags:
        return version.tags[TASK_TAG]
    try:
        inputs = client.get_run(version.run_id).inputs.dataset_inputs if version.run_id else []
    except MlflowException:
        return None
    return next((tag.value for i in inputs for tag in i.tags if tag.key == TASK_TAG), None)
