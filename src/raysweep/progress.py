"""What a sweep prints while it runs (``cluster.verbose=0``): one line per finished trial, a live bar on a terminal.

A line names the trial, its hyperparameters, its metric, the best so far and how many trials are left (one line,
wrapped here)::

    trial 3/16  train_34f55_00002  n_estimators=150 max_depth=None  val_auc=0.9483  best=0.9489 (train_34f55_00000)
      left=13

The bar (tqdm) is drawn only when stdout is a terminal, so a redirected sweep's output holds plain lines and no
escape codes. :class:`TrialProgress` is the Tune callback; the formatting is pure functions.
"""

from __future__ import annotations

import numbers
import sys
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.tune import Callback

from raysweep import ranking

# Tune's trial states (ray.tune.experiment.Trial.TERMINATED / .ERROR).
_TERMINATED, _ERROR = "TERMINATED", "ERROR"


def format_value(value: Any) -> str:
    """A hyperparameter or metric value, short: floats to 4 significant digits, everything else as ``str``."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float) or type(value).__name__.startswith("float"):  # numpy floats too
        return f"{float(value):.4g}"
    return str(value)


def format_params(config: Mapping[str, Any], names: Sequence[str] = ()) -> str:
    """``name=value`` pairs of a trial's config: only ``names`` (the search space's dimensions) when given."""
    keys = [n for n in names if n in config] if names else list(config)
    return " ".join(f"{key}={format_value(config[key])}" for key in keys)


def trial_line(*, done: int, planned: int, name: str, params: str, metric: str, value: float | None,
               best: tuple[str, float] | None, failed: str | None = None, stopped: bool = False) -> str:
    """The line printed when a trial ends.

    Args:
        done: Trials ended so far, this one included.
        planned: Trials the sweep plans.
        name: The trial's name (Tune's, also its MLflow run's).
        params: Its :func:`format_params`.
        metric: The sweep's metric.
        value: The trial's value of ``metric``, that of the model it would register (:func:`trial_value`;
            ``None``: it reported none).
        best: ``(trial name, value)`` of the best trial so far, or ``None``.
        failed: For a trial that errored: its error in one line (``""`` when unknown), else ``None``.
        stopped: The sweep's own stop (``sweep.stop``) ended it before its last iteration.
    """
    parts = [f"trial {done}/{planned}", name]
    if params:
        parts.append(params)
    if failed is not None:
        parts.append(f"FAILED {failed}" if failed else "FAILED")
    else:
        parts.append(f"{metric}={'-' if value is None else format_value(value)}" + (" (stopped by sweep.stop)"
                                                                                    if stopped else ""))
    if best is not None:
        parts.append(f"best={format_value(best[1])} ({best[0]})")
    parts.append(f"left={max(planned - done, 0)}")
    return "  ".join(parts)


def ran(trial, started: Collection[str] = ()) -> bool:
    """Whether a Tune trial that ended had run (``started``: the ids of trials seen starting): a sweep-wide stop
    ends the trials it never started as well."""
    return trial.status == "ERROR" or trial.trial_id in started \
        or bool((trial.last_result or {}).get("training_iteration"))


def fired(stop) -> bool:
    """Whether the sweep's own stop (a :class:`raysweep.strategy.SweepStopper`, or ``None``) ended the sweep."""
    return getattr(stop, "reason", None) is not None


def best_trial(values: Iterable[tuple[str, float | None]], mode: str) -> tuple[str, float] | None:
    """The best ``(name, value)`` by the sweep's mode (the first of equals); ``None`` when no value is a number."""
    scored = [(name, float(value)) for name, value in values
              if isinstance(value, numbers.Real) and not isinstance(value, bool)]
    index = ranking.best_index((value for _, value in scored), mode)
    return None if index is None else scored[index]


def trial_value(trial, metric: str, mode: str, final_model: bool = False) -> float | None:
    """A finished trial's one number as the sweep's summary ranks it: the value reported with its best kept
    checkpoint (the model registration takes; a later report may be worse), else its last reported value.

    ``final_model``: each trial logs its final model (``mlflow=worker``, ``mlflow.log_models``), which is what
    registration takes: its last reported value.
    """
    from raysweep import compat

    kept = [] if final_model else [metrics.get(metric) for _, metrics in compat.trial_result(trial).best_checkpoints]
    kept = [float(v) for v in kept if isinstance(v, numbers.Real) and not isinstance(v, bool)]
    if kept:
        return kept[ranking.best_index(kept, mode)]
    value = (trial.last_result or {}).get(metric)
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None


def exception_line(text: str) -> str:
    """The line that names a traceback's exception (``ValueError: ...``): the first line at the margin after its
    last frame, not the last line, which is the end of a message of several lines; without frames, the last line.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    after = lines[frames[-1] + 1:] if frames else []
    return next((line.strip() for line in after if not line[0].isspace()), lines[-1].strip() if lines else "")


def error_line(error_file: str | None, kept_at: str | None = None) -> str:
    """The exception line of a trial's error file (:func:`exception_line`) and where the whole error is kept
    (``ValueError: ... (traceback: .../error.txt)``); at ``cluster.verbose=0`` Tune does not print it
    (:func:`raysweep.compat.tune_output`).

    Args:
        error_file: The file as Tune's driver wrote it (in Ray's session folder, gone with the session).
        kept_at: The trial's folder in the sweep's storage, where Tune copies it; default ``error_file``'s folder.
    """
    try:
        with open(error_file, encoding="utf-8", errors="replace") as f:
            line = exception_line(f.read())
    except (OSError, TypeError):
        return ""
    from raysweep.secrets import scrub

    kept = f"{kept_at.rstrip('/')}/{Path(error_file).name}" if kept_at else error_file
    # Printed: an error quoting a store URI or a password (MLflow's and Ray's do) shows it masked.
    return scrub(f"{line} (traceback: {kept})") if line else ""


def bar_postfix(running: int, metric: str, best: tuple[str, float] | None) -> str:
    """The live bar's right-hand text: trials running and the best value so far."""
    text = f"running={running}"
    return f"{text} best {metric}={format_value(best[1])}" if best is not None else text


class TrialProgress(Callback):
    """Tune callback printing :func:`trial_line` for every trial that ends, and a live bar when stdout is a terminal.

    Tune pickles its callbacks into the sweep's state and restores them on ``resume=true``: this object holds no
    stream, bar or thread when pickled, and counts the trials a restored sweep had already ended from their states.

    Args:
        planned: Trials the sweep plans (``SweepPlan.num_trials``).
        metric: The sweep's metric.
        mode: ``max`` or ``min``.
        params: The search space's dimensions, shown for each trial (empty: its whole config).
        stop: The sweep's own stop (:class:`raysweep.strategy.SweepStopper`), whose ``reason`` says it fired.
        final_models: Each trial logs its final model (see :func:`trial_value`).
    """

    # Defaults for a callback pickled by an earlier version into a sweep's state, restored on resume.
    final_models = False
    _best_order = sys.maxsize

    def __init__(self, planned: int, metric: str, mode: str, params: Sequence[str] = (), stop=None,
                 final_models: bool = False):
        self.planned = planned
        self.stop = stop
        self.final_models = final_models
        self.metric = metric
        self.mode = mode
        self.params = list(params)
        self._completed: set[str] = set()
        self._failed: set[str] = set()
        self._started: set[str] = set()
        self._bar = None
        self._last_draw = 0.0
        # Trials ended and the best so far: counted from Tune's list at the first end (a restored sweep's trials
        # ended before it), then advanced by each end; a recount per end costs O(trials^2) over a sweep.
        self._done: int | None = None
        self._best_so_far: tuple[str, float] | None = None
        self._best_order = sys.maxsize  # the best trial's place in Tune's order (ties go to the first)

    @classmethod
    def for_plan(cls, plan, stop=None, final_models: bool = False) -> TrialProgress:
        """The callback for a :class:`raysweep.plan.SweepPlan`: its planned trials, metric and searched names."""
        from raysweep.search_space import fixed_values

        fixed = fixed_values(plan.search_space)
        return cls(plan.num_trials, plan.metric, plan.mode, [n for n in plan.search_space if n not in fixed], stop,
                   final_models)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_bar"] = None  # a live bar holds the terminal's stream
        state["_done"] = None  # counted again from the trials Tune restores with it
        return state

    # --- Tune's hooks -----------------------------------------------------------------------------------

    def setup(self, **info) -> None:
        if sys.stdout.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.planned, desc="trials", unit="trial", file=sys.stdout, leave=False,
                             dynamic_ncols=True)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._started.add(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._count(trials, trial, failed=False)
        self._report(trials, trial, failed=None)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._count(trials, trial, failed=True)
        self._report(trials, trial, failed=error_line(getattr(trial, "error_file", None), getattr(trial, "path", None)))

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        # The bar's clock and running count move between trial ends too; at most one redraw a second.
        if self._bar is not None and time.monotonic() - self._last_draw >= 1.0:
            self._draw(trials)

    def on_experiment_end(self, trials: list, **info) -> None:
        # Trials a sweep-wide stop ended (sweep.stop.*) get no hook of their own from Tune: their lines come now (not
        # those Ctrl-C or a user error stopped: they go on when the sweep is resumed, or are no sweep.stop's).
        stopped = [t for t in trials if t.status == _TERMINATED and ran(t, self._started)
                   and t.trial_id not in self._completed and t.trial_id not in self._failed] if fired(self.stop) else []
        ending = {t.trial_id for t in stopped}
        for trial in stopped:
            self._count(trials, trial, failed=False, also_ending=ending)
            self._report(trials, trial, failed=None, stopped=True)
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # --- helpers ----------------------------------------------------------------------------------------

    def _count(self, trials: list, trial, failed: bool, also_ending: Collection[str] = ()) -> None:
        """Add ``trial``'s end to the count and the best so far (Tune marks its status only after the hook;
        ``also_ending``: the ids of trials ended with it, counted next)."""
        if self._done is None:
            others = [t for t in trials if t is not trial and t.trial_id not in also_ending]
            # The ids restored with this callback, and the trials Tune restored as ended.
            self._completed |= {t.trial_id for t in others
                                if t.status == _TERMINATED and ran(t, self._started) and t.trial_id not in self._failed}
            self._failed |= {t.trial_id for t in others if t.status == _ERROR and t.trial_id not in self._completed}
            self._done = len((self._completed | self._failed) - {trial.trial_id})
            self._best_so_far = self._best_of([t for t in others if t.trial_id in self._completed])
        if trial.trial_id not in self._completed and trial.trial_id not in self._failed:
            self._done += 1
        (self._failed if failed else self._completed).add(trial.trial_id)
        if not failed:
            self._best_so_far = self._best_of([trial], also=self._best_so_far)

    def _value(self, trial) -> float | None:
        return trial_value(trial, self.metric, self.mode, self.final_models)

    def _best_of(self, completed: list, also: tuple[str, float] | None = None) -> tuple[str, float] | None:
        # Ranked as the summary after the sweep ranks them, so the live best is the trial it names.
        candidates = {str(t): (ranking.trial_order(t.trial_id), self._value(t))
                      for t in completed}
        if also:
            candidates[also[0]] = (self._best_order, also[1])
        ordered = sorted(candidates.items(), key=lambda item: item[1][0])
        best = best_trial(((name, value) for name, (_, value) in ordered), self.mode)
        if best is not None:
            self._best_order = candidates[best[0]][0]
        return best

    def _report(self, trials: list, trial, failed: str | None, stopped: bool = False) -> None:
        line = trial_line(
            done=self._done,
            planned=self.planned,
            name=str(trial),
            params=format_params(trial.config or {}, self.params),
            metric=self.metric,
            value=self._value(trial),
            best=self._best_so_far,
            failed=failed,
            stopped=stopped,
        )
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
            self.on_step_end(0, trials)
        else:
            print(line, flush=True)

    def _draw(self, trials: list) -> None:
        running = sum(1 for t in trials if t.status == "RUNNING" and t.trial_id not in self._completed
                      and t.trial_id not in self._failed)
        self._bar.n = min(self._done or 0, self.planned)
        self._bar.set_postfix_str(bar_postfix(running, self.metric, self._best_so_far), refresh=False)
        self._bar.refresh()
        self._last_draw = time.monotonic()
