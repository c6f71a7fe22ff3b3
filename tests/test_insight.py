"""Watching and reading a sweep: live progress on the parent run, the dashboard, importance, early-stop marks,
and removing the other trials' checkpoints after registration."""

from __future__ import annotations

import itertools

import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import SMOKE
from raysweep import report, retention, runtime, sweep
from raysweep.errors import RaySweepError
from raysweep.retention import TrialCheckpoints
from raysweep.tracking import progress
from raysweep.tracking.reconcile import TrialOutcome
from raysweep.tracking.tags import (
    CHECKPOINT_TAG,
    PARENT_ROLE,
    PROGRESS_TAG,
    ROLE_TAG,
    STOPPED_EARLY_TAG,
    TRIAL_ID_TAG,
    TRIALS_PLANNED_TAG,
)

# --- Live progress: the pure count, then the callback against a real store.


PROGRESS_TABLE = [
    ([], "max", (0, 0, math.nan)),
    ([("RUNNING", 0.9), ("PENDING", None)], "max", (0, 0, math.nan)),
    ([("TERMINATED", 0.5), ("TERMINATED", 0.7)], "max", (2, 0, 0.7)),
    ([("TERMINATED", 0.5), ("TERMINATED", 0.7)], "min", (2, 0, 0.5)),
    # A failed trial counts as ended, never as the best, even with a value.
    ([("TERMINATED", 0.5), ("ERROR", 0.99), ("RUNNING", 0.95)], "max", (2, 1, 0.5)),
    # NaN, a missing value and a non-number never win.
    ([("TERMINATED", float("nan")), ("TERMINATED", None), ("TERMINATED", "x"), ("TERMINATED", 0.1)], "max",
     (4, 0, 0.1)),
    ([("TERMINATED", np.float32(0.25)), ("TERMINATED", True)], "max", (2, 0, 0.25)),
    ([("TERMINATED", 0.3), ("ERROR", None), ("TERMINATED", 0.2), ("TERMINATED", 0.9)], "min", (4, 1, 0.2)),
]


@pytest.mark.parametrize(("outcomes", "mode", "expected"), PROGRESS_TABLE)
def test_progress_counts_ended_trials_and_picks_the_best_finished_one(outcomes, mode, expected):
    state = progress.progress(outcomes, 8, mode)
    finished, failed, best = expected
    assert (state.finished, state.failed, state.planned) == (finished, failed, 8)
    assert (math.isnan(state.best) and math.isnan(best)) or state.best == pytest.approx(best)


@pytest.mark.parametrize(("outcomes", "mode", "expected"), PROGRESS_TABLE)
def test_progress_advanced_trial_by_trial_is_the_count_of_them_all(outcomes, mode, expected):
    """The callback counts Tune's list once and then adds each trial as it ends: the same numbers."""
    state = progress.progress([], 8, mode)
    for status, value in outcomes:
        state = progress.advance(state, status, value, mode)
    finished, failed, best = expected
    assert (state.finished, state.failed, state.planned) == (finished, failed, 8)
    assert (math.isnan(state.best) and math.isnan(best)) or state.best == pytest.approx(best)


@pytest.mark.parametrize(("finished", "failed", "text"), [(0, 0, "0/8"), (5, 0, "5/8"), (5, 2, "5/8, 2 failed")])
def test_progress_tag_text(finished, failed, text):
    assert progress.Progress(finished, failed, 8, math.nan).text == text


def _trial(status, value=None, kept=()):
    """A Tune trial as the callbacks read it: its last result and the values of the checkpoints Tune kept."""
    manager = SimpleNamespace(best_checkpoint_results=[SimpleNamespace(checkpoint=None, metrics={"val_auc": v})
                                                       for v in kept], latest_checkpoint_result=None)
    return SimpleNamespace(status=status, last_result={} if value is None else {"val_auc": value},
                           trial_id=f"t{next(_IDS)}", path=None,
                           run_metadata=SimpleNamespace(checkpoint_manager=manager))


_IDS = itertools.count()


def test_progress_callback_writes_one_step_per_ended_trial_and_keeps_only_a_masked_uri(tracking_uri):
    import pickle

    client = MlflowClient(tracking_uri)
    parent = client.create_run(client.create_experiment("progress")).info.run_id
    callback = progress.SweepProgressCallback(tracking_uri=tracking_uri, parent_run_id=parent, metric="val_auc",
                                              mode="max", planned=3)
    masked = progress.SweepProgressCallback(tracking_uri="http://alice:secret@mlflow.example:5000",
                                            parent_run_id=parent, metric="val_auc", mode="max", planned=3)
    assert b"secret" not in pickle.dumps(masked)
    callback = pickle.loads(pickle.dumps(callback))  # as Tune restores it from the sweep's state
    # The second trial's best kept checkpoint (what it registers) counts, not its last report.
    trials = [_trial("RUNNING", 0.6), _trial("RUNNING", 0.8, kept=[0.85, 0.8]), _trial("RUNNING")]
    callback.setup()
    # Tune calls on_trial_complete while the trial still says RUNNING, on_trial_error once it says ERROR.
    callback.on_trial_complete(1, trials, trials[0])
    trials[0].status = "TERMINATED"
    callback.on_trial_complete(2, trials, trials[1])
    trials[1].status = "TERMINATED"
    trials[2].status = "ERROR"
    callback.on_trial_error(3, trials, trials[2])
    callback.on_experiment_end(trials)

    finished = client.get_metric_history(parent, progress.FINISHED_METRIC)
    assert [(m.step, m.value) for m in sorted(finished, key=lambda m: m.step)] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    best = client.get_metric_history(parent, "sweep_best_val_auc")
    assert [(m.step, m.value) for m in sorted(best, key=lambda m: m.step)] == [(1, 0.6), (2, 0.85), (3, 0.85)]
    run = client.get_run(parent)
    assert run.data.metrics[progress.FAILED_METRIC] == 1.0
    assert run.data.tags[PROGRESS_TAG] == "3/3, 1 failed" and run.data.tags[TRIALS_PLANNED_TAG] == "3"
    client.set_terminated(parent)


def test_progress_counts_the_trials_a_sweep_wide_stop_ended_and_not_those_it_never_started(tracking_uri):
    client = MlflowClient(tracking_uri)
    parent = client.create_run(client.create_experiment("progress")).info.run_id
    callback = progress.SweepProgressCallback(tracking_uri=tracking_uri, parent_run_id=parent, metric="val_auc",
                                              mode="max", planned=4, stop=SimpleNamespace(reason="time_budget"))
    trials = [_trial("RUNNING", 0.6), _trial("RUNNING", 0.9), _trial("RUNNING"), _trial("PENDING")]
    for trial in trials[:2]:
        trial.last_result["training_iteration"] = 2
    callback.setup()
    for trial in trials[:3]:  # the third started, and reported nothing before the stop
        callback.on_trial_start(0, trials, trial)
    callback.on_trial_complete(1, trials, trials[0])
    for trial in trials:  # sweep.stop.time_budget_s: Tune ends the rest, started or not, without hooks
        trial.status = "TERMINATED"
    callback.on_experiment_end(trials)
    run = client.get_run(parent)
    assert run.data.tags[PROGRESS_TAG] == "3/4" and run.data.metrics["sweep_best_val_auc"] == 0.9
    client.set_terminated(parent)


def test_progress_of_trials_ending_within_a_second_goes_in_one_write(tracking_uri):
    # Short trials end several a second: each end written on its own cost the driver a request per trial.
    client = MlflowClient(tracking_uri)
    parent = client.create_run(client.create_experiment("progress")).info.run_id
    callback = progress.SweepProgressCallback(tracking_uri=tracking_uri, parent_run_id=parent, metric="val_auc",
                                              mode="max", planned=8)
    trials = [_trial("RUNNING", i / 10) for i in range(8)]
    callback.setup()
    for i, trial in enumerate(trials, 1):
        callback.on_trial_complete(i, trials, trial)
        trial.status = "TERMINATED"
        time.sleep(0.08)  # an end every 80 ms: eight in well under the second a write waits
    callback.on_experiment_end(trials)

    finished = client.get_metric_history(parent, progress.FINISHED_METRIC)
    assert sorted(m.step for m in finished) == list(range(1, 9))  # every step kept
    assert len({m.timestamp for m in finished}) <= 2, "a write per trial end, not one a second"
    client.set_terminated(parent)


def test_progress_callback_warns_once_and_never_raises_when_the_store_refuses(tracking_uri, caplog):
    callback = progress.SweepProgressCallback(tracking_uri=tracking_uri, parent_run_id="no-such-run",
                                              metric="val_auc", mode="max", planned=2)
    trials = [_trial("RUNNING", 0.5), _trial("RUNNING", 0.7)]
    with caplog.at_level(logging.WARNING, logger=progress.__name__):
        callback.setup()
        callback.on_trial_complete(1, trials, trials[0])
        callback.on_trial_complete(2, trials, trials[1])
        callback.on_experiment_end(trials)
    warnings = [r for r in caplog.records if r.name == progress.__name__]
    assert len(warnings) == 1 and "the sweep goes on" in warnings[0].getMessage()


def _parent(client: MlflowClient, experiment: str):
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], f"tags.`{ROLE_TAG}` = '{PARENT_ROLE}'")
    return runs[0] if runs else None


@pytest.mark.slow
def test_parent_run_shows_progress_while_the_sweep_runs(ray_address, make_cfg, tracking_uri):
    # One trial at a time, each sleeping 5 x 0.4 s: the count moves while the sweep is still running.
    cfg = make_cfg("+sweep=overhead", "sweep.num_samples=3", "sweep.max_concurrent_trials=1",
                   "trainer.params.seconds_per_iteration=0.4", "cluster.verbose=0")
    outcome, failure = [], []

    def run():
        try:
            outcome.append(sweep.run(cfg))
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            failure.append(error)

    # The store first: MLflow makes a new one's tables without a lock, so a client opening it while the sweep
    # makes it could fail on a half-made schema.
    client = MlflowClient(tracking_uri)
    client.search_experiments(max_results=1)
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    seen_while_running = set()
    while worker.is_alive():
        parent = _parent(client, "raysweep-overhead")
        if parent is not None:
            history = client.get_metric_history(parent.info.run_id, progress.FINISHED_METRIC)
            if client.get_run(parent.info.run_id).info.status == "RUNNING":
                seen_while_running |= {int(m.value) for m in history}
        time.sleep(0.1)
    worker.join()
    if failure:
        raise failure[0]
    # Before the sweep ended, the parent already showed trials finished: at least one count below the total.
    assert seen_while_running & {1, 2}, seen_while_running
    parent = client.get_run(outcome[0].summary.parent_run_id)
    history = sorted(client.get_metric_history(parent.info.run_id, progress.FINISHED_METRIC), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert parent.data.tags[PROGRESS_TAG] == "3/3" and parent.data.tags[TRIALS_PLANNED_TAG] == "3"
    assert parent.data.metrics["sweep_best_score"] == pytest.approx(outcome[0].summary.best_value)
    # register=false: nothing registered, so no checkpoint is touched and the summary says nothing of them.
    assert outcome[0].checkpoints is None and "checkpoints" not in outcome[0].report()


# --- Importance and early-stop marks: pure, on frames shaped like search_runs' output.


def _trials(n: int, seed: int = 0) -> pd.DataFrame:
    """Trials whose metric depends on max_depth only; n_estimators is noise; criterion never varies."""
    rng = np.random.default_rng(seed)
    depth = rng.choice(["4", "8", "None"], n)
    frame = pd.DataFrame({
        "run_id": [f"run{i}" for i in range(n)],
        "status": ["FINISHED"] * n,
        "params.max_depth": depth,
        "params.n_estimators": [str(v) for v in rng.choice([10, 20, 30], n)],
        "params.criterion": ["gini"] * n,
    })
    frame["metrics.val_auc"] = [{"4": 0.6, "8": 0.7, "None": 0.9}[d] + rng.normal(0, 0.001) for d in depth]
    return frame


def test_importance_puts_the_parameter_that_drives_the_metric_first():
    table = report.importance(_trials(30), "val_auc", "max")
    assert list(table.columns) == ["param", "importance"]
    assert set(table["param"]) == {"max_depth", "n_estimators"}  # criterion has one value
    assert table["param"].iloc[0] == "max_depth" and table["importance"].iloc[0] > 0.8
    assert table["importance"].is_monotonic_decreasing and table["importance"].sum() == pytest.approx(1.0)
    # Same trials, same answer (fANOVA's forest has a fixed seed); the mode does not change what matters.
    pd.testing.assert_frame_equal(table, report.importance(_trials(30), "val_auc", "max"))
    assert report.importance(_trials(30), "val_auc", "min")["param"].iloc[0] == "max_depth"


def test_importance_of_the_one_parameter_that_varies_is_all_of_it_without_fitting_a_forest(monkeypatch):
    import optuna

    monkeypatch.setattr(optuna.importance, "get_param_importances", lambda *a, **k: pytest.fail("fANOVA fitted"))
    trials = _trials(20).assign(**{"params.n_estimators": "10"})  # criterion and n_estimators never vary
    table = report.importance(trials, "val_auc", "min")
    assert table.to_dict("list") == {"param": ["max_depth"], "importance": [1.0]}


def _with(frame: pd.DataFrame, **columns) -> pd.DataFrame:
    return frame.assign(**columns)


@pytest.mark.parametrize(("trials", "params"), [
    (_trials(1), set()),                                                   # one trial
    (_trials(0), set()),                                                   # none
    (_with(_trials(6), **{"metrics.val_auc": 0.5}), set()),                # a metric that never moved
    (_trials(6)[["run_id", "status", "params.criterion", "metrics.val_auc"]], set()),  # nothing varies
    (_with(_trials(6), status=["FINISHED", "FAILED", "FAILED", "FAILED", "FAILED", "RUNNING"]), set()),
    (_trials(6).drop(columns="metrics.val_auc"), set()),                   # the metric was never reported
    # Trials without a finite value are left out: two remain, and they differ in max_depth only.
    (_with(_trials(4).assign(**{"params.n_estimators": "10"}), **{"params.max_depth": ["4", "8", "8", "4"],
                                                                  "metrics.val_auc": [0.6, 0.7, np.inf, np.nan]}),
     {"max_depth"}),
    # A trial without the param (NaN) is its own category; "10" and "10.0" are one value.
    (_with(_trials(8), **{"params.max_depth": [None, "4", "8", "4", "8", "4", "8", "4"],
                          "params.n_estimators": ["10", "10.0"] * 4}), {"max_depth"}),
    (_with(_trials(8), **{"params.lr": ["0.1", "0.01"] * 4}), {"max_depth", "n_estimators", "lr"}),
    # Values apart by rounding only: fANOVA's forest finds no variance (its RuntimeError lost the whole report).
    (_with(_trials(4), **{"params.max_depth": ["4", "8"] * 2, "params.n_estimators": ["10", "10", "20", "20"],
                          "metrics.val_auc": [0.9999999999999999, 1.0] * 2}), set()),
])
def test_importance_covers_what_can_be_explained_and_nothing_else(trials, params):
    table = report.importance(trials, "val_auc", "max")
    assert set(table["param"]) == params and list(table.columns) == ["param", "importance"]


def test_importance_plot_draws_bars_or_says_why_not():
    bars = report.importance_plot(_trials(12), "val_auc", "max")
    assert [t.get_text() for t in bars.axes[0].get_yticklabels()][-1] == "max_depth"  # most important on top
    empty = report.importance_plot(_trials(1), "val_auc", "max")
    assert "two finished trials" in empty.axes[0].texts[0].get_text()


@pytest.mark.parametrize(("column", "expected"), [
    (None, set()),
    ([None, None, None], set()),
    (["asha", None, ""], {"run0"}),
    (["asha", "time_budget", float("nan")], {"run0", "run1"}),
])
def test_stopped_early_reads_the_tag(column, expected):
    trials = _trials(3)
    if column is not None:
        trials[f"tags.{STOPPED_EARLY_TAG}"] = column
    assert report.stopped_early(trials) == expected


def test_importance_of_a_large_sweep_reads_a_fixed_sample_and_still_finds_what_matters(monkeypatch):
    # fANOVA on every trial of a 10,000-trial sweep took minutes; a seeded sample of them keeps the answer.
    monkeypatch.setattr(report, "IMPORTANCE_TRIALS", 40)
    studied, study = [], report._study
    monkeypatch.setattr(report, "_study", lambda finished, *args: studied.append(list(finished["run_id"])) or study(
        finished, *args))
    trials = _trials(400, seed=3)
    table = report.importance(trials, "val_auc", "max")
    assert table["param"].iloc[0] == "max_depth" and table["importance"].iloc[0] > 0.8
    pd.testing.assert_frame_equal(table, report.importance(trials, "val_auc", "max"))
    assert len(studied[0]) == 40 and studied[0] == studied[1]
    report.importance(trials.head(30), "val_auc", "max")  # under the cap: every trial
    assert len(studied[2]) == 30


def test_parallel_coordinates_draws_every_trial_across_its_axes_coloured_by_the_metric():
    trials = _trials(12)
    axes = report.parallel_coordinates(trials, "val_auc").axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["max_depth", "n_estimators", "val_auc"]
    (lines,) = axes.collections
    segments = lines.get_segments()
    assert len(segments) == 12 and all(len(s) == 3 for s in segments)  # criterion never varies: no axis
    # Scaled to [0, 1] on each axis; the best trial ends at the top in the colour map's top colour.
    best = int(trials["metrics.val_auc"].to_numpy().argmax())
    assert segments[best][-1][1] == pytest.approx(1.0) and 0.0 <= min(p[1] for s in segments for p in s)
    assert tuple(lines.get_colors()[best][:3]) == pytest.approx(matplotlib.colormaps["viridis"](1.0)[:3])


def _histories() -> pd.DataFrame:
    rows = [(run, run, step, 0.5 + 0.1 * step) for run in ("a", "b") for step in (1, 2, 3)]
    rows += [("c", "c", 1, 0.4)]  # stopped after one iteration
    return pd.DataFrame(rows, columns=["run_id", "run_name", "step", "value"])


def test_learning_curves_end_stopped_trials_with_a_mark():
    ax = report.learning_curves(_histories(), "val_auc", stopped={"c"}).axes[0]
    marks = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [1] and list(marks[0].get_ydata()) == [0.4]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["stopped early"]
    plain = report.learning_curves(_histories(), "val_auc").axes[0]
    assert not [line for line in plain.get_lines() if line.get_marker() == "x"] and plain.get_legend() is None


# A fresh process that imported what a sweep warms while Ray starts, then draws every report figure: the heavy
# packages were all loaded ahead (fANOVA's scikit-learn alone is 1.2 s, after the last trial, without the warm-up).
REPORT_AFTER_WARM_UP = """
import io, sys
import numpy as np, pandas as pd
from raysweep import runtime, sweep
runtime.import_modules(sweep._REPORT_IMPORTS)
before = set(sys.modules)
from raysweep import report
n, rng = 12, np.random.default_rng(0)
trials = pd.DataFrame({"run_id": [f"r{i}" for i in range(n)], "status": ["FINISHED"] * n,
                       "start_time": pd.date_range("2026-01-01", periods=n, freq="s"),
                       "params.depth": [str(v) for v in rng.choice([4, 8], n)], "metrics.auc": rng.random(n)})
curves = pd.DataFrame([("r0", "r0", 1, 0.1), ("r0", "r0", 2, 0.2)], columns=["run_id", "run_name", "step", "value"])
for figure in (report.parallel_coordinates(trials, "auc"), report.metric_vs_params(trials, "auc"),
               report.learning_curves(curves, "auc"), report.best_so_far(trials, "auc", "max"),
               report.importance_plot(trials, "auc", "max")):
    figure.savefig(io.BytesIO(), dpi=100)
print(" ".join(sorted({m.split(".")[0] for m in set(sys.modules) - before} & {"sklearn", "scipy", "optuna"})))
"""


def test_what_the_report_imports_is_warmed_while_ray_starts():
    out = subprocess.run([sys.executable, "-c", REPORT_AFTER_WARM_UP], capture_output=True, text=True, timeout=300,
                         check=True)
    assert out.stdout.split() == []


def test_summary_lists_the_top_importances():
    summary = SimpleNamespace(metric="val_auc", mode="max", sweep_run_name="s", n_trials=30,
                              status_counts={"FINISHED": 30}, best_run_name="t", best_value=0.9,
                              best_params={"max_depth": "None"}, trials=_trials(30))
    text = report.summary_markdown(summary, None, report.importance(_trials(30), "val_auc", "max"))
    assert "| hyperparameter | importance for val_auc |\n|---|---|\n| max_depth | " in text


# --- Retention: the pure split and line, then the listing and removal on a folder, then real sweeps.


def _ck(trial_id: str, size: int, *folders: str) -> TrialCheckpoints:
    return TrialCheckpoints(trial_id, tuple(folders) or (f"/r/{trial_id}/checkpoint_000001",), size)


@pytest.mark.parametrize(("trials", "keep", "keep_all", "protected", "kept", "removed"), [
    ([_ck("a", 1), _ck("b", 2), _ck("c", 3)], "b", False, [], ["b"], ["a", "c"]),
    ([_ck("a", 1), _ck("b", 2)], "b", True, [], ["a", "b"], []),
    # No registered trial id: nothing is kept by id, only what is protected by path.
    ([_ck("a", 1), _ck("b", 2)], None, False, ["/r/a/checkpoint_000001"], ["a"], ["b"]),
    # The registered checkpoint wins over a trial id that does not match (a renamed trial folder).
    ([_ck("a", 1), _ck("b", 2)], "zzz", False, ["/r/b/checkpoint_000001/"], ["b"], ["a"]),
    # A prefix of a folder name is not that folder.
    ([_ck("a", 1, "/r/a/checkpoint_1"), _ck("b", 2)], "b", False, ["/r/a/checkpoint_10"], ["b"], ["a"]),
    # Trials without checkpoints are in neither list.
    ([TrialCheckpoints("a", (), 0), _ck("b", 2)], "b", False, [], ["b"], []),
])
def test_plan_removal_keeps_the_registered_trial_only(trials, keep, keep_all, protected, kept, removed):
    kept_trials, removed_trials = retention.plan_removal(trials, keep, keep_all, protected)
    assert [t.trial_id for t in kept_trials] == kept and [t.trial_id for t in removed_trials] == removed


@pytest.mark.parametrize(("kept", "removed", "keep_all", "line"), [
    ([_ck("a", 2_100_000)], [_ck("b", 31_000_000), _ck("c", 400_000)], False,
     "kept 1 trial (2.1 MB), removed 2 (31.4 MB); cluster.keep_checkpoints=true keeps all"),
    ([_ck("a", 1500), _ck("b", 500)], [], True, "kept 2 trials (2.0 kB): all of them (cluster.keep_checkpoints=true)"),
    ([], [], False, "kept 0 trials (0 B), removed 0 (0 B); cluster.keep_checkpoints=true keeps all"),
])
def test_summary_line(kept, removed, keep_all, line):
    assert retention.summary_line(kept, removed, keep_all) == line


@pytest.mark.parametrize(("size", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (31_400_000, "31.4 MB"),
                                            (2_500_000_000, "2.5 GB"), (12_000_000_000_000, "12000.0 GB")])
def test_format_size(size, text):
    assert retention.format_size(size) == text


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def test_apply_removes_other_trials_checkpoints_and_keeps_their_results(tmp_path):
    run_dir = tmp_path / "sweep"
    results = []
    for trial_id in ("t1", "t2"):
        folder = run_dir / f"train_{trial_id}_0_x=1"
        _write(folder / "checkpoint_000000" / "model.pkl", 1000)
        _write(folder / "checkpoint_000001" / "model.pkl", 1000)
        _write(folder / "result.json", 10)
        results.append(TrialOutcome(trial_id, str(folder), failed=False))
    # An errored trial without a result, and a distributed trial's Ray Train folder (named by its trial id).
    _write(run_dir / "train_t3_0_x=3" / "checkpoint_000000" / "m", 500)
    results.append(TrialOutcome(None, str(run_dir / "train_t3_0_x=3"), failed=True))
    _write(run_dir / "train" / "t2" / "checkpoint_2026-01-01" / "m", 300)
    _write(run_dir / "train" / "t1" / "checkpoint_2026-01-01" / "m", 300)

    done = retention.apply(results, str(run_dir), "t2", keep_all=False)
    assert [(t.trial_id, t.size) for t in done.kept] == [("t2", 2300)]
    assert sorted((t.trial_id, t.size) for t in done.removed) == [("t1", 2300), ("train_t3_0_x=3", 500)]
    left = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("checkpoint_*"))
    assert left == ["train/t2/checkpoint_2026-01-01", "train_t2_0_x=1/checkpoint_000000",
                    "train_t2_0_x=1/checkpoint_000001"]
    assert (run_dir / "train_t1_0_x=1" / "result.json").exists()
    again = retention.apply(results, str(run_dir), "t2", keep_all=False)  # nothing left to remove
    assert again.removed == () and len(again.kept) == 1


def test_apply_with_keep_all_only_measures(tmp_path):
    folder = tmp_path / "sweep" / "train_t1"
    _write(folder / "checkpoint_000000" / "m", 100)
    done = retention.apply([TrialOutcome("t1", str(folder), failed=False)], str(tmp_path / "sweep"),
                           "other", keep_all=True)
    assert done.removed == () and done.kept[0].size == 100 and (folder / "checkpoint_000000").exists()


def _trial_checkpoints(run_dir: Path) -> dict[str, list[Path]]:
    """Trial folder name -> its checkpoint folders, for every trial folder (those with Tune's params.json)."""
    return {p.parent.name: sorted(p.parent.glob("checkpoint_*")) for p in run_dir.glob("*/params.json")}


@pytest.mark.slow
def test_worker_mode_sweep_shows_progress_stores_importance_and_keeps_only_the_registered_checkpoints(
        ray_address, make_cfg, tracking_uri, tmp_path):
    outcome = sweep.run(make_cfg("+sweep=fraud", *SMOKE, "mlflow=worker"))
    client = MlflowClient(tracking_uri)
    parent_id = outcome.summary.parent_run_id
    # Progress in worker mode too: one step per trial.
    history = sorted(client.get_metric_history(parent_id, progress.FINISHED_METRIC), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(i, float(i)) for i in range(1, 5)]
    assert client.get_run(parent_id).data.metrics["sweep_best_val_auc"] == pytest.approx(outcome.summary.best_value)
    # The report: importance next to the other plots, and in the summary.
    names = {Path(a.path).name for a in client.list_artifacts(parent_id, "report")}
    assert {"importance.png", "learning_curves.png", "summary.md"} <= names
    text = Path(client.download_artifacts(parent_id, "report/summary.md", str(tmp_path))).read_text()
    assert "| hyperparameter | importance for val_auc |" in text
    # Retention: the registered trial's checkpoints stay, the other three trials' are gone.
    best = client.get_run(outcome.summary.best_run_id)
    registered = Path(best.data.tags[CHECKPOINT_TAG])
    checkpoints = _trial_checkpoints(Path(outcome.plan.run_dir))
    assert len(checkpoints) == 4 and registered.is_dir()
    assert {name for name, folders in checkpoints.items() if folders} == {registered.parent.name}
    assert best.data.tags[TRIAL_ID_TAG] in registered.parent.name
    kept, removed = outcome.checkpoints.kept, outcome.checkpoints.removed
    assert len(kept) == 1 and len(removed) == 3 and all(t.size > 0 for t in (*kept, *removed))
    assert "checkpoints kept 1 trial (" in outcome.report() and "removed 3 (" in outcome.report()


@pytest.mark.slow
def test_keep_checkpoints_keeps_every_trials_checkpoints(ray_address, make_cfg):
    outcome = sweep.run(make_cfg("+sweep=fraud", *SMOKE, "sweep.num_samples=2", "cluster.keep_checkpoints=true"))
    checkpoints = _trial_checkpoints(Path(outcome.plan.run_dir))
    assert len(checkpoints) == 2 and all(checkpoints.values())
    assert "checkpoints kept 2 trials (" in outcome.report() and "all of them" in outcome.report()


# --- The dashboard.


def test_a_dashboard_port_in_use_is_refused_in_one_line_before_ray_starts():
    import ray

    running = ray.is_initialized()  # the session's Ray, when an earlier test started it
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RaySweepError, match=rf"^cluster.dashboard_port={port} is in use; pick a free port"):
            runtime.start(num_cpus=1, dashboard_port=port)
    with pytest.raises(RaySweepError, match="not a TCP port"):
        runtime.check_dashboard_port(70000)
    with pytest.raises(RaySweepError, match="joins 127.0.0.1:1; open that cluster's own dashboard"):
        runtime.start("127.0.0.1:1", dashboard_port=port)
    assert ray.is_initialized() == running  # refused before ray.init


@pytest.mark.slow
def test_dashboard_port_starts_rays_dashboard_there(tmp_path, cli_env):
    """A sweep in its own process and its own Ray (the session's Ray has no dashboard) answers HTTP on the port."""
    port = runtime.free_port()
    env = {k: v for k, v in cli_env.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, "-m", "raysweep", "+sweep=overhead", "sweep.num_samples=3",
               "sweep.max_concurrent_trials=1", "trainer.params.seconds_per_iteration=0.4", "cluster.num_cpus=1",
               f"cluster.storage_path={tmp_path / 'ray'}", f"cluster.dashboard_port={port}", "cluster.verbose=0"]
    answer = None
    with open(tmp_path / "out.log", "w") as out:
        proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            while proc.poll() is None and answer is None:
                try:
                    # The page itself: Ray's API routes behind it want Ray's token (`ray get-auth-token`).
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
                        answer = reply.read().decode()
                except OSError:
                    time.sleep(0.3)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
    log = (tmp_path / "out.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert answer is not None and "<title>Ray Dashboard</title>" in answer, log[-3000:]
    assert f"raysweep: Ray dashboard at http://127.0.0.1:{port}" in log


@pytest.mark.slow
def test_a_resumed_sweep_continues_the_count(ray_address, cli_env, tmp_path, tracking_uri):
    """Ctrl-C after two trials, then resume=true: the restored callback counts on from Tune's restored trials."""
    import signal
    import sqlite3

    args = [sys.executable, "-m", "raysweep", "+sweep=overhead", "sweep.num_samples=5", "sweep.max_concurrent_trials=1",
            "trainer.params.seconds_per_iteration=0.3", "sweep.run_name=resumable", "cluster.verbose=0",
            f"cluster.storage_path={tmp_path / 'ray'}"]
    env = {**cli_env, "RAY_ADDRESS": ray_address}

    def finished_children() -> int:
        try:
            with sqlite3.connect(tmp_path / "mlflow.db") as db:
                return db.execute("select count(*) from runs join tags using (run_uuid) where status = 'FINISHED' "
                                  "and tags.key = 'mlflow.parentRunId'").fetchone()[0]
        except sqlite3.Error:
            return 0

    process = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while finished_children() < 2:
            assert process.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    client = MlflowClient(tracking_uri)
    parent = _parent(client, "raysweep-overhead")
    before = client.get_metric_history(parent.info.run_id, progress.FINISHED_METRIC)
    assert 2 <= len(before) < 5

    out = subprocess.run([*args, "resume=true"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    history = sorted(client.get_metric_history(parent.info.run_id, progress.FINISHED_METRIC), key=lambda m: m.step)
    # Each count once, each equal to its step, up to all five: the resumed driver did not start again at 1.
    assert [m.step for m in history] == [1, 2, 3, 4, 5] and all(m.value == m.step for m in history)
    assert client.get_run(parent.info.run_id).data.tags[PROGRESS_TAG] == "5/5"
