"""Pictures and a summary of a finished sweep, for notebooks and as artifacts of the parent run.

Every function takes what :mod:`raysweep.analysis` returns (the ``search_runs`` DataFrame of a sweep's
trials) and returns a matplotlib ``Figure`` or text; :func:`log_report` stores them on the parent run so
the MLflow UI shows them without a notebook.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from raysweep.tracking.tags import RUN_NAME

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from mlflow import MlflowClient

    from raysweep.analysis import SweepSummary

#: Artifact folder of the parent run that holds the report.
REPORT_DIR = "report"
#: The ``search_runs`` column of a trial's run name.
_RUN_NAME_COLUMN = f"tags.{RUN_NAME}"


def _figure(width: float = 8.0, height: float = 4.5):
    # A bare Figure, not pyplot: no GUI backend, no global figure registry to leak memory in long sweeps.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def param_columns(trials: pd.DataFrame) -> list[str]:
    """Hyperparameters that vary between trials (``params.*`` columns with more than one value)."""
    return [c for c in trials.columns if c.startswith("params.") and trials[c].nunique(dropna=False) > 1]


def _numeric(column: pd.Series) -> tuple[np.ndarray, list[str] | None]:
    """Values of a params column as numbers; categorical ones as codes, with their labels."""
    import pandas as pd

    as_number = pd.to_numeric(column, errors="coerce")
    if as_number.notna().all():
        return as_number.to_numpy(dtype=float), None
    labels = sorted(column.astype(str).unique())
    return column.astype(str).map({v: i for i, v in enumerate(labels)}).to_numpy(dtype=float), labels


def metric_vs_params(trials: pd.DataFrame, metric: str) -> Figure:
    """One scatter plot of the final metric against each varying hyperparameter."""
    params = param_columns(trials) or [c for c in trials.columns if c.startswith("params.")][:1]
    fig = _figure(4.0 * max(len(params), 1), 3.5)
    axes = fig.subplots(1, max(len(params), 1), squeeze=False)[0]
    values = trials[f"metrics.{metric}"]
    for ax, column in zip(axes, params):
        x, labels = _numeric(trials[column])
        ax.scatter(x, values, alpha=0.8)
        ax.set_xlabel(column.removeprefix("params."))
        ax.set_ylabel(metric)
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, rotation=30)
    fig.suptitle(f"{metric} per hyperparameter")
    return fig


def parallel_coordinates(trials: pd.DataFrame, metric: str) -> Figure:
    """Each trial as a line across its hyperparameters (scaled to [0, 1]) and the metric, coloured by the metric."""
    from matplotlib import colormaps

    params = param_columns(trials)
    axes_names = [c.removeprefix("params.") for c in params] + [metric]
    columns = [_numeric(trials[c])[0] for c in params] + [trials[f"metrics.{metric}"].to_numpy(dtype=float)]
    scaled = []
    for col in columns:
        lo, hi = np.nanmin(col), np.nanmax(col)
        scaled.append((col - lo) / (hi - lo) if hi > lo else np.full_like(col, 0.5))
    matrix = np.vstack(scaled).T
    score = columns[-1]
    norm = (score - np.nanmin(score)) / (np.nanmax(score) - np.nanmin(score) or 1.0)
    fig = _figure(max(6.0, 1.6 * len(axes_names)), 4.5)
    ax = fig.subplots()
    cmap = colormaps["viridis"]
    for row, shade in zip(matrix, norm):
        ax.plot(range(len(axes_names)), row, color=cmap(float(np.nan_to_num(shade))), alpha=0.8)
    ax.set_xticks(range(len(axes_names)), axes_names, rotation=20)
    ax.set_yticks([])
    for x in range(len(axes_names)):
        ax.axvline(x, color="grey", linewidth=0.5)
    ax.set_title(f"parallel coordinates, coloured by {metric}")
    return fig


#: Trials (best first) whose learning curves the stored report draws.
LEARNING_CURVES = 25


def metric_histories(client: MlflowClient, trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Every trial's ``metric`` per step, as rows of (run_id, run_name, step, value)."""
    import pandas as pd

    rows = []
    for run_id, name in zip(trials["run_id"], trials.get(_RUN_NAME_COLUMN, trials["run_id"])):
        for m in client.get_metric_history(run_id, metric):
            rows.append((run_id, name, m.step, m.value))
    return pd.DataFrame(rows, columns=["run_id", "run_name", "step", "value"]).sort_values(["run_id", "step"])


def learning_curves(histories: pd.DataFrame, metric: str) -> Figure:
    """The metric of every trial over its iterations."""
    fig = _figure()
    ax = fig.subplots()
    for _, curve in histories.groupby("run_id"):
        ax.plot(curve["step"], curve["value"], marker=".", alpha=0.7)
    ax.set_xlabel("iteration")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial over iterations")
    return fig


def best_so_far(trials: pd.DataFrame, metric: str, mode: str) -> Figure:
    """The best metric reached as trials finished, in start order."""
    ordered = trials.sort_values("start_time")
    values = ordered[f"metrics.{metric}"].to_numpy(dtype=float)
    running = np.fmax.accumulate(values) if mode == "max" else np.fmin.accumulate(values)
    fig = _figure()
    ax = fig.subplots()
    ax.scatter(range(1, len(values) + 1), values, alpha=0.6, label="trial")
    ax.step(range(1, len(values) + 1), running, where="post", color="C3", label=f"best so far ({mode})")
    ax.set_xlabel("trial (start order)")
    ax.set_ylabel(metric)
    ax.legend()
    ax.set_title(f"best {metric} so far")
    return fig


def summary_markdown(summary: SweepSummary, registration=None) -> str:
    """A short Markdown summary: trials, best trial and params, top five, registration."""
    metric = summary.metric
    lines = [
        f"# Sweep {summary.sweep_run_name}",
        "",
        f"- trials: {summary.n_trials} ({', '.join(f'{n} {s}' for s, n in sorted(summary.status_counts.items()))})",
        f"- best: `{summary.best_run_name}` with **{metric} = {summary.best_value:.4f}** ({summary.mode})",
        f"- best params: {', '.join(f'`{k}={v}`' for k, v in sorted(summary.best_params.items()))}",
    ]
    if registration is not None:
        lines.append(f"- registered: {registration}")
    top = summary.trials.dropna(subset=[f"metrics.{metric}"]).head(5)
    lines += ["", f"| trial | {metric} |", "|---|---|"]
    lines += [f"| {n} | {v:.4f} |" for n, v in zip(top.get(_RUN_NAME_COLUMN, top["run_id"]), top[f"metrics.{metric}"])]
    return "\n".join(lines) + "\n"


def log_report(client: MlflowClient, summary: SweepSummary, registration=None) -> list[str]:
    """Store the sweep's plots and summary as artifacts of its parent run; returns their artifact paths."""
    finished = summary.trials[summary.trials["status"] == "FINISHED"].dropna(subset=[f"metrics.{summary.metric}"])
    figures = {
        "parallel_coordinates.png": parallel_coordinates(finished, summary.metric),
        "metric_vs_params.png": metric_vs_params(finished, summary.metric),
        # The best trials' curves: readable, and one history query per drawn trial, not per trial of the sweep.
        "learning_curves.png": learning_curves(
            metric_histories(client, finished.head(LEARNING_CURVES), summary.metric), summary.metric
        ),
        "best_so_far.png": best_so_far(finished, summary.metric, summary.mode),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, fig in figures.items():
            fig.savefig(Path(tmp) / name, dpi=100)
        (Path(tmp) / "summary.md").write_text(summary_markdown(summary, registration))
        client.log_artifacts(summary.parent_run_id, tmp, REPORT_DIR)
    return [f"{REPORT_DIR}/{name}" for name in [*figures, "summary.md"]]
