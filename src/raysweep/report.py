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

from raysweep.tracking.tags import RUN_NAME, STOPPED_EARLY_TAG

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from mlflow import MlflowClient

    from raysweep.analysis import SweepSummary

#: Artifact folder of the parent run that holds the report.
REPORT_DIR = "report"
#: The ``search_runs`` column of a trial's run name.
_RUN_NAME_COLUMN = f"tags.{RUN_NAME}"
#: The ``search_runs`` column that says what stopped a trial early (empty for trials that ran to the end).
_STOPPED_COLUMN = f"tags.{STOPPED_EARLY_TAG}"
#: Hyperparameters the stored summary lists by importance.
TOP_IMPORTANCES = 5
#: fANOVA's forest grows faster than linearly with the trials: ~6 s for 500 trials here, 154 s and 600 MiB for
#: 10,000. Beyond this many finished trials, importance is computed on a seeded random sample of them.
IMPORTANCE_TRIALS = 500


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
    from matplotlib.collections import LineCollection

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
    # One collection of all trials' lines, not an artist per trial (10 s against 0.6 s at 10,000 trials).
    xs = np.broadcast_to(np.arange(len(axes_names), dtype=float), matrix.shape)
    lines = LineCollection(np.stack([xs, matrix], axis=-1), colors=colormaps["viridis"](np.nan_to_num(norm)), alpha=0.8)
    ax.add_collection(lines)
    ax.autoscale_view()
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


def stopped_early(trials: pd.DataFrame) -> set[str]:
    """Run ids of the trials a scheduler (or a sweep stop criterion) ended before their last iteration.

    Read from the ``raysweep.stopped_early`` tag, which the sweep writes on such a trial's run once Tune is done.
    """
    if _STOPPED_COLUMN not in trials:
        return set()
    marked = trials[_STOPPED_COLUMN].fillna("").astype(str).str.len() > 0
    return set(trials.loc[marked, "run_id"])


def learning_curves(histories: pd.DataFrame, metric: str, stopped: set[str] | None = None) -> Figure:
    """The metric of every trial over its iterations; an ``x`` ends the curves of trials that were stopped early.

    Args:
        histories: What :func:`metric_histories` returns.
        metric: The metric drawn (the axis label).
        stopped: Run ids to mark as stopped early (:func:`stopped_early`).
    """
    stopped = stopped or set()
    fig = _figure()
    ax = fig.subplots()
    marked = False
    for run_id, curve in histories.groupby("run_id"):
        ax.plot(curve["step"], curve["value"], marker=".", alpha=0.7)
        if run_id in stopped and len(curve):
            ax.plot(curve["step"].iloc[-1], curve["value"].iloc[-1], marker="x", markersize=10, markeredgewidth=2,
                    linestyle="none", color="black", label=None if marked else "stopped early")
            marked = True
    ax.set_xlabel("iteration")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial over iterations")
    if marked:
        ax.legend()
    return fig


def importance(trials: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """How much each hyperparameter explains the metric across the finished trials (Optuna's fANOVA).

    The trials become an in-memory Optuna study: a hyperparameter whose values are all numbers is a float
    range over the values seen, any other one (``None`` included) a set of categories. Hyperparameters with a
    single value are left out; fewer than two finished trials, or a metric that is the same in all of them,
    give an empty table. Of more than :data:`IMPORTANCE_TRIALS` finished trials, a seeded random sample of that
    many is used (the same trials give the same answer).

    Args:
        trials: The sweep's trials (``search_runs`` columns: ``status``, ``params.*``, ``metrics.<metric>``).
        metric: The sweep's metric.
        mode: ``max`` or ``min``.

    Returns:
        Columns ``param`` and ``importance`` (summing to 1), most important first.
    """
    import pandas as pd

    empty = pd.DataFrame({"param": pd.Series(dtype=str), "importance": pd.Series(dtype=float)})
    column = f"metrics.{metric}"
    if column not in trials:
        return empty
    finished = trials[trials["status"] == "FINISHED"] if "status" in trials else trials
    finished = finished[np.isfinite(pd.to_numeric(finished[column], errors="coerce").astype(float))]
    if len(finished) > IMPORTANCE_TRIALS:
        finished = finished.sample(IMPORTANCE_TRIALS, random_state=0)
    params = param_columns(finished)
    values = finished[column].to_numpy(dtype=float)
    if len(finished) < 2 or not params or np.allclose(values, values[0], rtol=1e-12, atol=0):
        # Nothing to compare, or a metric that never moved, rounding aside (fANOVA divides by its variance).
        return empty
    study = _study(finished, params, column, mode)
    varied = list(study.trials[0].distributions)
    if len(varied) < 2:  # none, or one: it explains all there is (fANOVA's forest would take 0.4 s to say so)
        return empty if not varied else pd.DataFrame({"param": varied, "importance": [1.0]})
    import optuna

    try:
        scores = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except RuntimeError as error:  # a forest that still finds no variance: no table rather than no report
        if "variance" not in str(error):
            raise
        return empty
    frame = pd.DataFrame({"param": list(scores), "importance": [float(v) for v in scores.values()]})
    return frame.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


def _study(finished: pd.DataFrame, params: list[str], column: str, mode: str):
    """An in-memory Optuna study holding one completed trial per row (Optuna's own log lines kept quiet)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    distributions, values = {}, {}
    for name in params:
        key = name.removeprefix("params.")
        texts = finished[name].fillna("None").astype(str)  # a trial without the param: its own "None"
        as_number, labels = _numeric(texts)
        if labels is None:
            if as_number.min() == as_number.max():  # "10" and "10.0": one value, nothing to explain
                continue
            distributions[key] = FloatDistribution(float(as_number.min()), float(as_number.max()))
            values[key] = as_number.tolist()
        else:
            distributions[key] = CategoricalDistribution(sorted(texts.unique()))
            values[key] = texts.tolist()
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory ..."
    try:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    scores = finished[column].astype(float).tolist()
    for i, score in enumerate(scores):
        study.add_trial(optuna.trial.create_trial(
            params={k: v[i] for k, v in values.items()}, distributions=distributions, value=score,
        ))
    return study


def importance_plot(trials: pd.DataFrame, metric: str, mode: str) -> Figure:
    """Hyperparameter importance (:func:`importance`) as horizontal bars, the most important on top."""
    return _importance_figure(importance(trials, metric, mode), metric)


def _importance_figure(table: pd.DataFrame, metric: str) -> Figure:
    fig = _figure(7.0, 0.5 * max(len(table), 2) + 1.5)
    ax = fig.subplots()
    if table.empty:
        ax.text(0.5, 0.5, "importance needs two finished trials and a hyperparameter that varies",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        ordered = table.iloc[::-1]
        ax.barh(ordered["param"], ordered["importance"], color="C0")
        ax.set_xlabel("importance (fANOVA, sums to 1)")
        ax.set_xlim(0, 1)
    ax.set_title(f"hyperparameter importance for {metric}")
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


def summary_markdown(summary: SweepSummary, registration=None, importances: pd.DataFrame | None = None) -> str:
    """A short Markdown summary: trials, best trial and params, top five, registration, top importances."""
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
    if importances is not None and not importances.empty:
        lines += ["", f"| hyperparameter | importance for {metric} |", "|---|---|"]
        lines += [f"| {p} | {v:.3f} |" for p, v in importances.head(TOP_IMPORTANCES).itertuples(index=False)]
    return "\n".join(lines) + "\n"


def log_report(client: MlflowClient, summary: SweepSummary, registration=None) -> list[str]:
    """Store the sweep's plots and summary as artifacts of its parent run; returns their artifact paths."""
    finished = summary.trials[summary.trials["status"] == "FINISHED"].dropna(subset=[f"metrics.{summary.metric}"])
    drawn = finished.head(LEARNING_CURVES)
    figures = {
        "parallel_coordinates.png": parallel_coordinates(finished, summary.metric),
        "metric_vs_params.png": metric_vs_params(finished, summary.metric),
        # The best trials' curves: readable, and one history query per drawn trial, not per trial of the sweep.
        "learning_curves.png": learning_curves(
            metric_histories(client, drawn, summary.metric), summary.metric, stopped=stopped_early(drawn)
        ),
        "best_so_far.png": best_so_far(finished, summary.metric, summary.mode),
    }
    importances = importance(finished, summary.metric, summary.mode)
    if not importances.empty:  # one trial, or nothing varied: no picture rather than an empty one
        figures["importance.png"] = _importance_figure(importances, summary.metric)
    with tempfile.TemporaryDirectory() as tmp:
        for name, fig in figures.items():
            fig.savefig(Path(tmp) / name, dpi=100)
        (Path(tmp) / "summary.md").write_text(summary_markdown(summary, registration, importances))
        client.log_artifacts(summary.parent_run_id, tmp, REPORT_DIR)
    return [f"{REPORT_DIR}/{name}" for name in [*figures, "summary.md"]]
