"""Find a trial's existing child run again, so a restarted trial never gets a second run or repeated steps.

A trial starts more than once when Tune retries it (``max_failures``), when PBT restarts it from another
trial's checkpoint, and when a sweep is resumed in a new driver (Ray's ``MLflowLoggerCallback`` keeps its
trial -> run map only in memory). Both logging modes look the run up by the trial-id tag under the parent
and continue after the last step it holds.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from raysweep.tracking.tags import ENDED_BY_TAG, ERROR_TAG, TRIAL_ID_TAG

#: Metric-name prefix of hyperparameters whose value changes during a trial (PBT); params cannot change.
CONFIG_METRIC_PREFIX = "config."


def find_trial_run(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
    """The run id of the child run already recorded for ``trial_id`` under the parent, if any."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent_run_id}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def reopen(client: MlflowClient, run_id: str) -> None:
    """Mark a re-attached run RUNNING again, dropping the notes of how its previous attempt ended."""
    client.update_run(run_id, status="RUNNING")
    tags = client.get_run(run_id).data.tags
    for stale in (ENDED_BY_TAG, ERROR_TAG):  # this attempt goes on; a new failure tags its own error
        if stale in tags:
            client.delete_tag(run_id, stale)


def last_step(client: MlflowClient, run_id: str, metric: str) -> int:
    """The highest step of ``metric`` already logged on the run (0 when none): later results continue after it."""
    history = client.get_metric_history(run_id, metric)
    return max((m.step for m in history), default=0)


def recorded_results(trial_dir: str, metrics: Sequence[str], after_step: int) -> list[tuple[int, dict[str, float]]]:
    """``(step, values)`` of a trial's results that Tune wrote to its ``result.json`` after ``after_step``.

    Tune's driver appends every result there as it arrives, so after a killed driver these are the results
    Tune knew of that never reached MLflow.
    """
    import json
    from pathlib import Path

    path = Path(trial_dir) / "result.json"
    out = []
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
        f"{CONFIG_METRIC_PREFIX}{k}": float(v)
        for k, v in config.items()
        if isinstance(v, numbers.Real) and not isinstance(v, bool)
    }


def changed_values(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, str]:
    """Hyperparameters whose value differs, as tag values (for the non-numeric ones PBT can change)."""
    return {f"{CONFIG_METRIC_PREFIX}{k}": str(v) for k, v in after.items() if before.get(k) != v}
