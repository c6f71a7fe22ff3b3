"""Read a finished (or interrupted) sweep back from MLflow and pick its best trial.

The first stage after the sweep (analysis -> registry -> promotion): it reads runs and writes the best trial
onto the parent run, and imports nothing downstream. From Python: :func:`find_sweep`, :func:`summarize`,
:func:`record_best`. From the command line, ``raysweep analyse`` (``python -m raysweep.analysis`` is an alias)::

    raysweep analyse                                   # the newest sweep in the store, then register
    raysweep analyse --experiment NAME                 # that experiment's latest sweep
    raysweep analyse --parent-run-id 1f2e... --no-register
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from raysweep.errors import RaySweepError
from raysweep.tracking import queries
from raysweep.tracking.queries import find_sweep  # noqa: F401 - part of the analysis API (notebooks, CLI)
from raysweep.ranking import best_index
from raysweep.tracking.tags import (
    BEST_RUN_NAME_TAG,
    BEST_RUN_TAG,
    CONFIG_PREFIX,
    ERROR_TAG,
    MODEL_VALUE_TAG,
    PARETO_TAG,
    RUN_NAME,
    STOP_REASON_TAG,
    TRIALS_PLANNED_TAG,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Run

#: Parent-run artifact listing the Pareto front of a multi-objective sweep.
PARETO_ARTIFACT = "pareto_front.json"
_OBJECTIVE_PARAM = "search_alg.objectives."
_SEARCH_SPACE_PARAM = "search_space."
#: The ``search_runs`` column of a trial's run name.
_RUN_NAME_COLUMN = f"tags.{RUN_NAME}"


@dataclass(frozen=True)
class SweepSummary:
    """What a sweep found: its trials as a DataFrame and the best one."""

    experiment_id: str
    parent_run_id: str
    sweep_run_name: str
    metric: str
    mode: str
    best_run_id: str
    best_run_name: str
    best_value: float
    best_params: dict[str, str]
    trials: pd.DataFrame = field(repr=False)
    extra_objectives: dict[str, str] = field(default_factory=dict)
    stop_reason: str | None = None  # what of sweep.stop ended the sweep: time_budget or metric_threshold
    planned: int | None = None  # trials the sweep planned

    @property
    def n_trials(self) -> int:
        """Number of child runs of the sweep."""
        return len(self.trials)

    @property
    def objectives(self) -> dict[str, str]:
        """Metric -> mode of every objective: the sweep metric, then any further multi-objective ones."""
        return {self.metric: self.mode, **self.extra_objectives}

    @property
    def pareto(self) -> pd.DataFrame:
        """The finished trials no other finished trial beats on every objective (all trials if one objective)."""
        return pareto_front(self.trials[self.trials["status"] == "FINISHED"], self.objectives)

    @property
    def status_counts(self) -> dict[str, int]:
        """Child runs per MLflow status, e.g. ``{"FINISHED": 16}``."""
        return self.trials["status"].value_counts().to_dict()


def summarize(client: MlflowClient, parent) -> SweepSummary:
    """Pick the best FINISHED child of a sweep by the sweep's metric and mode.

    A trial counts with its model's value (``raysweep.model_value``: the checkpoint registration would take),
    not the metric's last logged value, so the best trial, the parent's ``best_<metric>`` and the registered
    version's recorded metric are one number; a sweep recorded before that tag existed counts the last value.

    Args:
        client: Client bound to the sweep's tracking store.
        parent: The sweep's parent run (see :func:`find_sweep`).

    Raises:
        RaySweepError: The sweep has no finished trial that reported the metric.
    """
    params = parent.data.params
    metric, mode = params["sweep.metric"], params["sweep.mode"]
    frame = queries.children_frame(parent.info.experiment_id, parent.info.run_id)
    column = f"metrics.{metric}"
    if column in frame:  # best first by each trial's one number (a stable sort keeps the earliest of ties first)
        frame = frame.reset_index(drop=True)
        order = model_values(frame, metric).sort_values(ascending=mode == "min", kind="stable", na_position="last")
        frame = frame.iloc[order.index].reset_index(drop=True)
    finished = frame[frame["status"] == "FINISHED"] if len(frame) else frame
    values = model_values(finished, metric) if column in finished else None
    best = best_index(values, mode) if values is not None else None
    if best is None:
        failed = int((frame["status"] == "FAILED").sum()) if len(frame) else 0
        see = f"see the failed child runs' {ERROR_TAG} tag" if failed else \
            f"the finished trials reported no number for it (NaN or none): check what the trials report as {metric!r}"
        if not failed and parent.data.tags.get(STOP_REASON_TAG) == "time_budget":
            see = "sweep.stop.time_budget_s ran out before any trial reported it; raise sweep.stop.time_budget_s"
        raise RaySweepError(f"sweep {parent.info.run_name!r} has no finished trial reporting {metric!r} "
                            f"({len(frame)} trial runs, {failed} failed); {see}")
    best_value = float(values.iloc[best])
    best = finished.iloc[best]
    # The searched and fixed hyperparameters (the parent's search_space.*), not what a trial's own code or
    # mlflow.autolog logged beside them on its run (worker mode); a sweep recorded without them: all.
    searched = {k[len(_SEARCH_SPACE_PARAM):] for k in params if k.startswith(_SEARCH_SPACE_PARAM)}
    best_params = {c[len("params."):]: best[c] for c in frame.columns
                   if c.startswith("params.") and isinstance(best[c], str)
                   and (not searched or c[len("params."):] in searched)}
    # The values the trial ended with: PBT changes a trial's hyperparameters as it runs, and MLflow's params
    # keep the first ones, so each change is a config.NAME tag on the run.
    best_params.update({k: best[f"tags.{CONFIG_PREFIX}{k}"] for k in best_params
                        if isinstance(best.get(f"tags.{CONFIG_PREFIX}{k}"), str)})
    return SweepSummary(
        experiment_id=parent.info.experiment_id,
        parent_run_id=parent.info.run_id,
        sweep_run_name=parent.info.run_name,
        metric=metric,
        mode=mode,
        best_run_id=best["run_id"],
        best_run_name=best.get(_RUN_NAME_COLUMN, best["run_id"]),
        best_value=best_value,
        best_params=best_params,
        trials=frame,
        extra_objectives={k[len(_OBJECTIVE_PARAM):]: v for k, v in params.items() if k.startswith(_OBJECTIVE_PARAM)},
        stop_reason=parent.data.tags.get(STOP_REASON_TAG),
        planned=int(parent.data.tags[TRIALS_PLANNED_TAG]) if TRIALS_PLANNED_TAG in parent.data.tags else None,
    )


def model_values(trials: pd.DataFrame, metric: str) -> pd.Series:
    """Each trial's one number: its model's value (``raysweep.model_value``), else the metric's last value."""
    import pandas as pd

    last = trials[f"metrics.{metric}"].astype(float)
    tag = f"tags.{MODEL_VALUE_TAG}"
    if tag not in trials:
        return last
    recorded = trials[tag]
    return pd.to_numeric(recorded, errors="coerce").where(recorded.notna(), last)


def pareto_front(frame: pd.DataFrame, objectives: dict[str, str]) -> pd.DataFrame:
    """Rows of ``frame`` not dominated on ``objectives`` (``metrics.NAME`` columns, ``max``/``min`` each).

    A row is dominated when another row is at least as good on every objective and better on one.
    Rows missing an objective are left out.
    """
    columns = [f"metrics.{m}" for m in objectives]
    if not set(columns) <= set(frame.columns):
        return frame.iloc[0:0]
    rows = frame.dropna(subset=columns)
    # Turn every objective into "larger is better".
    values = rows[columns].to_numpy(dtype=float) * [1.0 if mode == "max" else -1.0 for mode in objectives.values()]
    keep = [
        not any((other >= mine).all() and (other > mine).any() for other in values)
        for mine in values
    ]
    return rows[keep]


def validation_data(client: MlflowClient, parent: Run):
    """Rebuild the data a sweep trained on from the config recorded on its parent run.

    Args:
        client: Client bound to the sweep's tracking store (the config is read through it, not through MLflow's
            process-wide tracking URI).
        parent: The sweep's parent run.

    Returns:
        The :class:`raysweep.data.Dataset` (same generator seed or file, same split).
    """
    from raysweep import data

    return data.load(queries.parent_config(client, parent.info.run_id).data)


def record_best(client: MlflowClient, summary: SweepSummary) -> None:
    """Write the best child's run id, params and metric onto the parent run (idempotent)."""
    recorded = client.get_run(summary.parent_run_id).data
    params = [
        Param(f"best.{k}", str(v)) for k, v in summary.best_params.items() if f"best.{k}" not in recorded.params
    ]
    name = f"best_{summary.metric}"
    value = summary.best_value if math.isfinite(summary.best_value) else 0.0
    # Once per value: a retried or repeated analysis adds no second point to the metric's history.
    metrics = [] if recorded.metrics.get(name) == value else [Metric(name, value, _now_ms(), 0)]
    client.log_batch(
        summary.parent_run_id,
        metrics=metrics,
        params=params,
        tags=[RunTag(BEST_RUN_TAG, summary.best_run_id), RunTag(BEST_RUN_NAME_TAG, summary.best_run_name)],
    )
    if summary.extra_objectives:
        front = summary.pareto
        columns = ["run_id", _RUN_NAME_COLUMN, *(f"metrics.{m}" for m in summary.objectives)]
        columns += [c for c in front.columns if c.startswith("params.")]
        client.log_dict(summary.parent_run_id, {
            "objectives": summary.objectives,
            "trials": front[[c for c in columns if c in front.columns]].to_dict(orient="records"),
        }, PARETO_ARTIFACT)
        client.set_tag(summary.parent_run_id, PARETO_TAG, ",".join(front["run_id"]))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def main(argv: list[str] | None = None) -> int:
    """``python -m raysweep.analysis [ARGS]``: an alias of ``raysweep analyse [ARGS]``; returns the exit status."""
    import importlib

    # The command line sits above this module (cli -> analysis -> registry), so it is looked up by name when
    # the alias runs rather than imported here, which would point the flow back up.
    cli = importlib.import_module("raysweep.cli")
    return cli.analyse(sys.argv[1:] if argv is None else argv)


#: What each of sweep.stop's criteria says when it ends a sweep (the parent's raysweep.stop_reason).
_STOPS = {"time_budget": "sweep.stop.time_budget_s ran out",
          "metric_threshold": "a trial reached sweep.stop.metric_threshold"}


def format_summary(summary: SweepSummary, registration=None, look: str | None = None,
                   checkpoints: str | None = None) -> str:
    """The terminal report of a sweep: best trial, params, registration, checkpoints kept, and how to look at it."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.status_counts.items()))
    params = " ".join(f"{k}={v}" for k, v in sorted(summary.best_params.items()))
    lines = [
        f"sweep       {summary.sweep_run_name}  ({summary.n_trials} trials: {counts})",
        f"parent run  {summary.parent_run_id}",
        f"best trial  {summary.best_run_name}  {summary.metric}={summary.best_value:.4f} ({summary.mode})"
        f"  run {summary.best_run_id}",
        f"best params {params}",
    ]
    if summary.stop_reason in _STOPS:
        planned = f" of {summary.planned}" if summary.planned else ""
        lines.append(f"stopped     {_STOPS[summary.stop_reason]}: trials still running were stopped early, no more "
                     f"started ({summary.n_trials}{planned} ran)")
    if summary.extra_objectives:
        objectives = ", ".join(f"{mode} {m}" for m, mode in summary.objectives.items())
        lines.append(f"pareto      {len(summary.pareto)} trials not beaten on all of {objectives} ({PARETO_ARTIFACT})")
    if registration is not None:
        lines.append(f"registered  {registration}")
    if checkpoints:
        lines.append(f"checkpoints {checkpoints}")
    if look:
        lines.append(f"look        {look}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
