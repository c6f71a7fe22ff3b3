"""What a sweep prints: the trial line and bar as tables, and a real sweep's whole output with stdout in a file."""

from __future__ import annotations

import io
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import SMOKE
from raysweep import progress
from raysweep.progress import TrialProgress, best_trial, format_params, format_value, trial_line


@pytest.mark.parametrize(
    "value, text",
    [
        (150, "150"),
        (None, "None"),
        (True, "True"),
        ("sqrt", "sqrt"),
        (0.5, "0.5"),
        (0.948337, "0.9483"),
        (0.0012345, "0.001234"),
        (123456.0, "1.235e+05"),
        (float("nan"), "nan"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


def test_format_value_takes_numpy_floats():
    import numpy as np
    assert format_value(np.float32(0.25)) == "0.25"


@pytest.mark.parametrize(
    "config, names, text",
    [
        ({"n_estimators": 150, "max_depth": None, "criterion": "gini"}, ["n_estimators", "max_depth"],
         "n_estimators=150 max_depth=None"),
        ({"a": 1, "b": 0.25}, [], "a=1 b=0.25"),  # no dimensions known: the whole config
        ({"a": 1}, ["a", "missing"], "a=1"),
        ({}, ["a"], ""),
    ],
)
def test_format_params(config, names, text):
    assert format_params(config, names) == text


@pytest.mark.parametrize(
    "kwargs, line",
    [
        (dict(done=3, planned=16, name="train_1_00002", params="n=150", metric="val_auc", value=0.94834,
              best=("train_1_00000", 0.9489)),
         "trial 3/16  train_1_00002  n=150  val_auc=0.9483  best=0.9489 (train_1_00000)  left=13"),
        (dict(done=1, planned=4, name="t_00000", params="", metric="loss", value=None, best=None),
         "trial 1/4  t_00000  loss=-  left=3"),
        (dict(done=2, planned=4, name="t_00001", params="n=1", metric="loss", value=None, best=("t_00000", 0.1),
              failed="ValueError: boom"),
         "trial 2/4  t_00001  n=1  FAILED ValueError: boom  best=0.1 (t_00000)  left=2"),
        (dict(done=5, planned=4, name="t", params="", metric="m", value=1, best=None, failed=""),
         "trial 5/4  t  FAILED  left=0"),  # a resumed sweep's extra trial never gives a negative count
    ],
)
def test_trial_line(kwargs, line):
    assert trial_line(**kwargs) == line


@pytest.mark.parametrize(
    "values, mode, best",
    [
        ([("a", 0.5), ("b", 0.7), ("c", 0.7)], "max", ("b", 0.7)),  # the first of equals
        ([("a", 0.5), ("b", 0.7)], "min", ("a", 0.5)),
        ([("a", None), ("b", float("nan")), ("c", 2)], "max", ("c", 2.0)),
        ([("a", None), ("b", "x")], "max", None),
        ([], "min", None),
    ],
)
def test_best_trial(values, mode, best):
    assert best_trial(values, mode) == best


RAY_TRACEBACK = """Failure # 1 (occurred at 2026-12-04_18-00-00)
ray::ImplicitFunc.train() (pid=1, ip=127.0.0.1, actor_id=a)
  File "/venv/ray/tune/trainable/function_trainable.py", line 261, in _trainable_func
    output = fn()
             ^^^^
  File "/home/me/train.py", line 9, in train
    raise ValueError(f"column 'amount' has negative values{hint}")
{exception}
"""


@pytest.mark.parametrize(("text", "line"), [
    ("Failure # 1\nTraceback\nKeyError: 'x'\n", "KeyError: 'x'"),  # no frames: the last line
    (RAY_TRACEBACK.format(hint="", exception="ValueError: column 'amount' has negative values"),
     "ValueError: column 'amount' has negative values"),
    # A message of several lines: its first, which names the exception, not its last.
    (RAY_TRACEBACK.format(hint="\\n\\nHint: clean it", exception="ValueError: column 'amount' has negative values\n\n"
                                                         "Hint: clean the file first.\n  indented detail"),
     "ValueError: column 'amount' has negative values"),
    ("Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nmlflow.exceptions.MlflowException: "
     "Untrusted types\nOnly add the specific types you trust", "mlflow.exceptions.MlflowException: Untrusted types"),
    ("", ""),
])
def test_exception_line(text, line):
    assert progress.exception_line(text) == line


@pytest.mark.parametrize("text, line", [("Failure # 1\nTraceback\nKeyError: 'x'\n", "KeyError: 'x' (traceback: {path})"),
                                        (RAY_TRACEBACK.format(hint="", exception="KeyError: 'x'\nmore"),
                                         "KeyError: 'x' (traceback: {path})"),
                                        ("", ""), (None, "")])
def test_error_line(tmp_path, text, line):
    path = None
    if text is not None:
        path = tmp_path / "error.txt"
        path.write_text(text)
    assert progress.error_line(path) == line.format(path=path)
    assert progress.error_line(tmp_path / "missing.txt") == ""


def test_bar_postfix():
    assert progress.bar_postfix(2, "val_auc", None) == "running=2"
    assert progress.bar_postfix(0, "val_auc", ("t", 0.91234)) == "running=0 best val_auc=0.9123"


# --- the callback, with stand-ins for Tune's trials ------------------------------------------------------


class _Trial(SimpleNamespace):
    """What the callback reads of a Tune trial."""

    def __str__(self):
        return self.name


def _trials(*specs):
    """Trials ``(index, status[, val_auc[, the val_auc of each checkpoint Tune kept]])``: config ``n`` = index plus
    a fixed value."""
    trials = []
    for i, status, *auc in specs:
        name = f"train_ab_{i:05d}"
        kept = [SimpleNamespace(checkpoint=None, metrics={"val_auc": v}) for v in (auc[1] if len(auc) > 1 else ())]
        manager = SimpleNamespace(best_checkpoint_results=kept, latest_checkpoint_result=None)
        trials.append(_Trial(trial_id=f"ab_{i:05d}", name=name, status=status, config={"n": i, "fixed": 1},
                             last_result={"val_auc": auc[0], "training_iteration": 2} if auc else {},
                             error_file=None, path=None, run_metadata=SimpleNamespace(checkpoint_manager=manager)))
    return trials


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_line_per_ended_trial_with_the_best_so_far_and_no_escapes(tmp_path, capsys):
    callback = TrialProgress(planned=3, metric="val_auc", mode="max", params=["n"])
    callback.setup()
    trials = _trials((0, "RUNNING", 0.8), (1, "RUNNING", 0.9), (2, "RUNNING"))
    trials[2].error_file = tmp_path / "error.txt"
    trials[2].error_file.write_text("Failure # 1\nTraceback (most recent call last):\n  ...\nValueError: boom\n\n")
    callback.on_trial_complete(1, trials, trials[0])
    trials[0].status = "TERMINATED"
    callback.on_trial_complete(2, trials, trials[1])
    trials[2].status = "ERROR"
    callback.on_trial_error(3, trials, trials[2])
    callback.on_experiment_end(trials)
    assert capsys.readouterr().out.splitlines() == [
        "trial 1/3  train_ab_00000  n=0  val_auc=0.8  best=0.8 (train_ab_00000)  left=2",
        "trial 2/3  train_ab_00001  n=1  val_auc=0.9  best=0.9 (train_ab_00001)  left=1",
        f"trial 3/3  train_ab_00002  n=2  FAILED ValueError: boom (traceback: {trials[2].error_file})  "
        "best=0.9 (train_ab_00001)  left=0",
    ]


@pytest.mark.parametrize("specs, ending, final_models, best", [
    # A trial's best kept checkpoint counts (registration takes it), not its last, worse report ...
    ([(0, "RUNNING", 0.90), (1, "RUNNING", 0.80, [0.95, 0.80])], [0, 1], False, "best=0.95 (train_ab_00001)"),
    # ... unless each trial logs its final model (worker mode): then its last report is its model's.
    ([(0, "RUNNING", 0.90), (1, "RUNNING", 0.80, [0.95, 0.80])], [0, 1], True, "best=0.9 (train_ab_00000)"),
    # Of equal trials, the one Tune made first, whichever ended first: as the summary picks.
    ([(0, "RUNNING", 0.9), (1, "RUNNING", 0.9)], [1, 0], False, "best=0.9 (train_ab_00000)"),
    ([(0, "RUNNING", 0.9), (1, "RUNNING", 0.9)], [0, 1], False, "best=0.9 (train_ab_00000)"),
])
def test_the_live_best_is_the_trial_the_summary_will_name(specs, ending, final_models, best, capsys):
    callback = TrialProgress(planned=len(specs), metric="val_auc", mode="max", params=["n"],
                             final_models=final_models)
    trials = _trials(*specs)
    for index in ending:
        callback.on_trial_complete(1, trials, trials[index])
        trials[index].status = "TERMINATED"
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].endswith(f"{best}  left=0")
    if len(specs[1]) > 3 and not final_models:  # the trial's own value is its kept model's too
        assert "train_ab_00001  n=1  val_auc=0.95  best=0.95" in "\n".join(lines)


@pytest.mark.parametrize("one_ended_first", [True, False])
def test_trials_a_sweep_wide_stop_ended_get_their_lines_and_those_it_never_started_none(one_ended_first, capsys):
    # sweep.stop.*: Tune ends every trial left, running or not yet started, without a hook of its own for them.
    fired = SimpleNamespace(reason="time_budget")
    callback = TrialProgress(planned=4, metric="val_auc", mode="max", params=["n"], stop=fired)
    trials = _trials((0, "RUNNING", 0.8), (1, "RUNNING", 0.9), (2, "RUNNING"), (3, "PENDING"))
    for trial in trials[:3]:  # the third started and had reported nothing when the stop came
        callback.on_trial_start(0, trials, trial)
    if one_ended_first:
        callback.on_trial_complete(1, trials, trials[0])
    for trial in trials:
        trial.status = "TERMINATED"
    callback.on_experiment_end(trials)
    stopped = " (stopped by sweep.stop)"
    first = "trial 1/4  train_ab_00000  n=0  val_auc=0.8" + ("" if one_ended_first else stopped)
    assert capsys.readouterr().out.splitlines() == [
        f"{first}  best=0.8 (train_ab_00000)  left=3",
        f"trial 2/4  train_ab_00001  n=1  val_auc=0.9{stopped}  best=0.9 (train_ab_00001)  left=2",
        f"trial 3/4  train_ab_00002  n=2  val_auc=-{stopped}  best=0.9 (train_ab_00001)  left=1",
    ]


def test_trials_ctrl_c_ended_get_no_line_they_go_on_when_the_sweep_resumes(capsys):
    callback = TrialProgress(planned=2, metric="val_auc", mode="max", params=["n"],
                             stop=SimpleNamespace(reason=None))  # the sweep's own stop did not fire
    trials = _trials((0, "RUNNING", 0.8), (1, "RUNNING", 0.9))
    for trial in trials:
        callback.on_trial_start(0, trials, trial)
    callback.on_trial_complete(1, trials, trials[0])
    for trial in trials:
        trial.status = "TERMINATED"
    callback.on_experiment_end(trials)
    assert capsys.readouterr().out.splitlines() == ["trial 1/2  train_ab_00000  n=0  val_auc=0.8  best=0.8 "
                                                    "(train_ab_00000)  left=1"]


def test_a_restored_callback_counts_the_trials_the_sweep_had_already_ended(capsys):
    callback = TrialProgress(planned=4, metric="val_auc", mode="max", params=["n"])
    restored = pickle.loads(pickle.dumps(callback))  # as Tune keeps it in the sweep's state
    trials = _trials((0, "TERMINATED", 0.95), (1, "ERROR"), (2, "RUNNING", 0.9))
    restored.on_trial_complete(1, trials, trials[2])
    line = "trial 3/4  train_ab_00002  n=2  val_auc=0.9  best=0.95 (train_ab_00000)  left=1"
    assert capsys.readouterr().out == line + "\n"


def test_the_trial_list_is_read_at_the_first_end_only(capsys):
    """Each end adds to the count: reading Tune's list of every trial at each end costs O(trials^2) in a sweep."""

    class Trials(list):
        reads = 0

        def __iter__(self):
            Trials.reads += 1
            return super().__iter__()

    callback = TrialProgress(planned=4, metric="val_auc", mode="max", params=["n"])
    trials = Trials(_trials((0, "TERMINATED", 0.5), (1, "RUNNING", 0.7), (2, "RUNNING", 0.6), (3, "RUNNING")))
    for trial in trials[1:3]:
        callback.on_trial_complete(1, trials, trial)
        trial.status = "TERMINATED"
    callback.on_trial_error(2, trials, trials[3])
    callback.on_trial_complete(3, trials, trials[2])  # told twice: counted once
    assert Trials.reads == 1
    assert [line.split("  ")[0] + " " + line.split("best=")[1] for line in capsys.readouterr().out.splitlines()] == [
        "trial 2/4 0.7 (train_ab_00001)  left=2",
        "trial 3/4 0.7 (train_ab_00001)  left=1",
        "trial 4/4 0.7 (train_ab_00001)  left=0",
        "trial 4/4 0.7 (train_ab_00001)  left=0",
    ]


def test_a_bar_only_on_a_terminal_and_never_in_the_pickled_state(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    callback = TrialProgress(planned=2, metric="val_auc", mode="max")
    callback.setup()
    assert callback._bar is not None
    assert pickle.loads(pickle.dumps(callback))._bar is None
    trials = _trials((0, "RUNNING", 0.7), (1, "RUNNING"))
    callback.on_trial_complete(1, trials, trials[0])
    callback.on_step_end(2, trials)
    callback.on_experiment_end(trials)
    drawn = terminal.getvalue()
    assert "trial 1/2  train_ab_00000" in drawn and "1/2" in drawn and "running=1" in drawn

    plain = io.StringIO()
    monkeypatch.setattr(sys, "stdout", plain)
    callback = TrialProgress(planned=2, metric="val_auc", mode="max")
    callback.setup()
    callback.on_trial_complete(1, trials, trials[0])
    callback.on_step_end(2, trials)
    callback.on_experiment_end(trials)
    assert callback._bar is None
    line = "trial 1/2  train_ab_00000  n=0 fixed=1  val_auc=0.7  best=0.7 (train_ab_00000)  left=1"
    assert plain.getvalue() == line + "\n"


# --- a real sweep, as a user runs it, stdout and stderr in one file ---------------------------------------

#: What Ray, Tune and MLflow printed before raysweep silenced them at their source.
NOISE = [
    "TensorBoard",
    "Checkpoint successfully created",
    "authentication",
    "Inferred schema contains integer",
    "Creating initial MLflow database tables",
    "Updating database tables",
    "View detailed results here",
    "Configuration for experiment",
    "Failed to resolve installed pip version",
    "Validating input example",
    "Downloading artifacts",
    "deduplicates logs",
]
MAX_LINES = 30
TRIAL_LINE = re.compile(r"^trial (\d+)/4  (train_\w+)  ")


def _sweep_output(tmp_path, store: str, *overrides: str, ray_address: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_EXPERIMENT_NAME")}
    env |= {"MLFLOW_TRACKING_URI": store, "PYTHONUNBUFFERED": "1"}
    for name in ("RAY_COLOR_PREFIX", "RAY_DEDUP_LOGS", "MLFLOW_LOGGING_LEVEL", "RAY_AIR_NEW_OUTPUT"):
        env.pop(name, None)  # as a user's shell has them: raysweep decides
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    out = tmp_path / "out.txt"
    with out.open("w") as sink:
        proc = subprocess.run(
            [sys.executable, "-m", "raysweep", "+sweep=fraud", *SMOKE, f"cluster.storage_path={tmp_path / 'ray'}",
             *overrides],
            env=env, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT, timeout=300,
        )
    text = out.read_text()
    assert proc.returncode == 0, text
    return text


@pytest.fixture(scope="module", params=["driver", "worker"])
def sweep_output(request, tmp_path_factory):
    """The whole output of a 4-trial sweep that starts its own Ray, in each logging mode."""
    tmp = tmp_path_factory.mktemp(f"out-{request.param}")
    return request.param, _sweep_output(tmp, f"sqlite:///{tmp / 'mlflow.db'}", f"mlflow={request.param}")


def test_a_small_sweep_prints_a_line_per_trial_then_the_summary(sweep_output):
    mode, text = sweep_output
    lines = text.splitlines()
    assert len(lines) <= MAX_LINES, f"{mode}: {len(lines)} lines:\n{text}"
    assert "\x1b[" not in text and "\r" not in text, f"{mode}: escape codes or a bar in a file:\n{text!r}"
    for noise in NOISE:
        assert noise not in text, f"{mode}: {noise!r} printed:\n{text}"
    trial_lines = [m for m in map(TRIAL_LINE.match, lines) if m]
    assert sorted(int(m[1]) for m in trial_lines) == [1, 2, 3, 4], text
    assert len({m[2] for m in trial_lines}) == 4, text
    assert all("val_auc=" in m.string and "max_depth=" in m.string and "left=" in m.string for m in trial_lines)
    summary = lines.index(next(line for line in lines if line.startswith("raysweep: sweep finished")))
    assert summary > max(lines.index(m.string) for m in trial_lines)
    assert any(line.startswith("best trial") for line in lines[summary:]), text


def test_verbose_1_brings_back_tunes_status_table(ray_address, tmp_path, tracking_uri):
    text = _sweep_output(tmp_path, tracking_uri, "cluster.verbose=1", ray_address=ray_address)
    assert "Trial status:" in text and "Configuration for experiment" in text, text
    assert not any(TRIAL_LINE.match(line) for line in text.splitlines()), text


def test_a_failed_trial_is_one_line_naming_its_error_and_traceback_file(ray_address, tmp_path, tracking_uri):
    # A grid of two: one trial trains, the other's oob_score without bootstrap is refused by scikit-learn when
    # it fits (each value alone passes its rules, which are checked before Ray starts).
    text = _sweep_output(tmp_path, tracking_uri, "search_alg=grid", "search_space.n_estimators=10",
                         "search_space.max_depth=4", "search_space.min_samples_leaf=1",
                         "search_space.max_features=sqrt", "+trainer.params.bootstrap=false",
                         "+search_space.oob_score='choice(false, true)'",
                         ray_address=ray_address)
    assert len(text.splitlines()) <= MAX_LINES and "\x1b[" not in text, text
    assert "Traceback (most recent call last)" not in text, text
    (failed,) = [line for line in text.splitlines() if line.startswith("trial ") and " FAILED " in line]
    assert "ValueError: Out of bag estimation only available if bootstrap=True" in failed, failed
    # The whole error stays in the trial's folder of the sweep's storage, after Ray's session folder is gone.
    kept = Path(failed.split("(traceback: ")[1].split(")")[0])
    assert kept.name == "error.txt" and kept.is_relative_to(tmp_path / "ray"), failed
    assert '  File "' in kept.read_text() and kept.read_text().rstrip().endswith("only available if bootstrap=True")
