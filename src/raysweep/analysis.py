"""Read a finished (or interrupted) sweep back from MLflow and pick its best trial.

Usable from Python (:func:`summarize`) and from the command line on an existing sweep::

    python -m raysweep.analysis --experiment fraud-detection            # latest sweep, then register
    python -m raysweep.analysis --parent-run-id 1f2e... --no-register
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from raysweep.errors import RaySweepError
from raysweep.tracking.parent import end_orphans
from raysweep.tracking.tags import PARENT_ROLE, ROLE_TAG

if TYPE_CHECKING:
    import pandas as pd

BEST_RUN_TAG = "raysweep.best_run_id"
PARETO_ARTIFACT = "pareto_front.json"
_OBJECTIVE_PARAM = "search_alg.objectives."


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


def find_sweep(client: MlflowClient, experiment_name: str, parent_run_id: str | None = None):
    """Return the parent run of a sweep: the given id, or the latest sweep of the experiment.

    Raises:
        RaySweepError: The experiment or run does not exist, or the run is not a sweep's parent.
    """
    if parent_run_id:
        try:
            run = client.get_run(parent_run_id)
        except Exception:
            raise RaySweepError(f"no MLflow run {parent_run_id!r}; pass the parent run id of a sweep") from None
        if run.data.tags.get(ROLE_TAG) != PARENT_ROLE:
            raise RaySweepError(f"run {parent_run_id!r} is not a raysweep sweep's parent run; pass the parent's id")
        return run
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise RaySweepError(f"no MLflow experiment {experiment_name!r}; run a sweep first or check MLFLOW_TRACKING_URI")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = '{PARENT_ROLE}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise RaySweepError(f"experiment {experiment_name!r} has no sweep; run one with python -m raysweep +sweep=NAME")
    return runs[0]


def trials(experiment_id: str, parent_run_id: str, metric: str, mode: str) -> pd.DataFrame:
    """All child runs of a sweep, best first, as ``mlflow.search_runs`` returns them."""
    import mlflow

    order = "DESC" if mode == "max" else "ASC"
    return mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent_run_id}'",
        order_by=[f"metrics.`{metric}` {order}", "attributes.start_time ASC"],
        max_results=100_000,
    )


def summarize(client: MlflowClient, parent) -> SweepSummary:
    """Pick the best FINISHED child of a sweep by the sweep's metric and mode.

    Args:
        client: Client bound to the sweep's tracking store.
        parent: The sweep's parent run (see :func:`find_sweep`).

    Raises:
        RaySweepError: The sweep has no finished trial that reported the metric.
    """
    params = parent.data.params
    metric, mode = params["sweep.metric"], params["sweep.mode"]
    frame = trials(parent.info.experiment_id, parent.info.run_id, metric, mode)
    column = f"metrics.{metric}"
    finished = frame[frame["status"] == "FINISHED"] if len(frame) else frame
    if column in finished:
        finished = finished[finished[column].notna()]
    if len(finished) == 0 or column not in finished:
        raise RaySweepError(
            f"sweep {parent.info.run_name!r} has no finished trial reporting {metric!r} "
            f"({len(frame)} trial runs); see the failed child runs' raysweep.error tag"
        )
    best = finished.iloc[0]
    best_params = {c[len("params."):]: best[c] for c in frame.columns if c.startswith("params.") and isinstance(best[c], str)}
    return SweepSummary(
        experiment_id=parent.info.experiment_id,
        parent_run_id=parent.info.run_id,
        sweep_run_name=parent.info.run_name,
        metric=metric,
        mode=mode,
        best_run_id=best["run_id"],
        best_run_name=best.get("tags.mlflow.runName", best["run_id"]),
        best_value=float(best[column]),
        best_params=best_params,
        trials=frame,
        extra_objectives={k[len(_OBJECTIVE_PARAM):]: v for k, v in params.items() if k.startswith(_OBJECTIVE_PARAM)},
    )


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


def validation_data(parent):
    """Rebuild the data a sweep trained on from the config recorded on its parent run.

    Returns:
        The :class:`raysweep.data.Dataset` (same generator seed or file, same split).
    """
    import mlflow
    from omegaconf import OmegaConf

    from raysweep import data

    config = OmegaConf.create(mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/config.yaml"))
    return data.load(config.data)


def record_best(client: MlflowClient, summary: SweepSummary) -> None:
    """Write the best child's run id, params and metric onto the parent run (idempotent)."""
    existing = client.get_run(summary.parent_run_id).data.params
    params = [
        Param(f"best.{k}", str(v)) for k, v in summary.best_params.items() if f"best.{k}" not in existing
    ]
    value = summary.best_value if math.isfinite(summary.best_value) else 0.0
    client.log_batch(
        summary.parent_run_id,
        metrics=[Metric(f"best_{summary.metric}", value, _now_ms(), 0)],
        params=params,
        tags=[RunTag(BEST_RUN_TAG, summary.best_run_id), RunTag("raysweep.best_run_name", summary.best_run_name)],
    )
    if summary.extra_objectives:
        front = summary.pareto
        columns = ["run_id", "tags.mlflow.runName", *(f"metrics.{m}" for m in summary.objectives)]
        columns += [c for c in front.columns if c.startswith("params.")]
        client.log_dict(summary.parent_run_id, {
            "objectives": summary.objectives,
            "trials": front[[c for c in columns if c in front.columns]].to_dict(orient="records"),
        }, PARETO_ARTIFACT)
        client.set_tag(summary.parent_run_id, "raysweep.pareto_front", ",".join(front["run_id"]))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def main(argv: list[str] | None = None) -> int:
    """Command line: summarize an existing sweep, register its best model (unless ``--no-register``), redraw its report."""
    import os

    import mlflow

    parser = argparse.ArgumentParser(prog="python -m raysweep.analysis", description=main.__doc__)
    parser.add_argument("--experiment", default=os.environ.get("MLFLOW_EXPERIMENT_NAME", "fraud-detection"),
                        help="experiment whose latest sweep to analyse (default: %(default)s)")
    parser.add_argument("--parent-run-id", help="analyse this sweep instead of the latest one")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
                        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or %(default)s)")
    parser.add_argument("--no-register", action="store_true", help="only print the best trial")
    args = parser.parse_args(argv)

    from raysweep import registry, report

    try:
        mlflow.set_tracking_uri(args.tracking_uri)
        client = MlflowClient(args.tracking_uri, os.environ.get("MLFLOW_REGISTRY_URI"))
        parent = find_sweep(client, args.experiment, args.parent_run_id)
        if end_orphans(client, parent):
            print(f"raysweep: sweep {parent.info.run_name!r} had lost its driver; its open runs are now KILLED",
                  file=sys.stderr)
            parent = client.get_run(parent.info.run_id)
        summary = summarize(client, parent)
        record_best(client, summary)
        registration = None if args.no_register else registry.register_best(client, parent, summary)
        report.log_report(client, summary, registration)
    except RaySweepError as e:
        print(f"raysweep: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary, registration))
    return 0


def format_summary(summary: SweepSummary, registration=None, look: str | None = None) -> str:
    """The terminal report of a sweep: best trial, params, registration, and how to look at it."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.status_counts.items()))
    params = " ".join(f"{k}={v}" for k, v in sorted(summary.best_params.items()))
    lines = [
        f"sweep       {summary.sweep_run_name}  ({summary.n_trials} trials: {counts})",
        f"parent run  {summary.parent_run_id}",
        f"best trial  {summary.best_run_name}  {summary.metric}={summary.best_value:.4f} ({summary.mode})"
        f"  run {summary.best_run_id}",
        f"best params {params}",
    ]
    if summary.extra_objectives:
        objectives = ", ".join(f"{mode} {m}" for m, mode in summary.objectives.items())
        lines.append(f"pareto      {len(summary.pareto)} trials not beaten on all of {objectives} ({PARETO_ARTIFACT})")
    if registration is not None:
        lines.append(f"registered  {registration}")
    if look:
        lines.append(f"look        {look}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
