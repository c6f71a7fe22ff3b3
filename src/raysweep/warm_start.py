"""Warm start: seed Optuna with an earlier sweep's finished trials (``sweep.warm_start=<parent run id | latest>``).

:func:`find` reads the MLflow store once, before Ray starts: the earlier sweep's parent run (``latest`` = the newest
FINISHED sweep of the same ``sweep.name`` in the experiment) and its finished child runs. :func:`points` is pure:
those runs (a frame shaped like ``mlflow.search_runs``'s) and the current parsed search space give the
configurations and results that ``OptunaSearch(points_to_evaluate=..., evaluated_rewards=...)`` adds to its study as
completed trials, so the sampler starts from what the earlier sweep learned instead of from scratch; they are not
run again.

Only points inside the current search space are kept, since Optuna refuses a value outside a distribution: each
searched dimension's value must be one of its ``choice``/``range`` values or inside its interval's bounds, and a
fixed value the earlier trial recorded must be the current one. MLflow keeps params as strings (``'8'``, ``'None'``,
``'0.1'``); they are read back as the dimension's own values.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raysweep.errors import RaySweepError
from raysweep.search_space import Dimension
from raysweep.tracking.tags import WARM_START_POINTS_TAG, WARM_START_TAG

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: ``sweep.warm_start`` value that picks the newest finished sweep of the same name.
LATEST = "latest"

_OUTSIDE = object()


@dataclass(frozen=True)
class Seed:
    """An earlier sweep's trials, ready for ``OptunaSearch``."""

    parent_run_id: str  # the earlier sweep's parent run
    points: tuple[dict[str, Any], ...]  # one value per searched dimension
    rewards: tuple[float, ...]  # the sweep metric each point reached
    finished: int  # the earlier sweep's finished trials with the metric (points keeps those inside this space)

    def tags(self) -> dict[str, str]:
        """The parent-run tags that record where the sweep started from."""
        return {WARM_START_TAG: self.parent_run_id, WARM_START_POINTS_TAG: str(len(self.points))}


def points(runs: pd.DataFrame, parsed: Mapping[str, Any], metric: str) -> tuple[list[dict], list[float]]:
    """The configurations and results of the finished runs that lie inside the search space.

    Args:
        runs: Child runs of the earlier sweep, with ``params.NAME`` (strings), ``metrics.METRIC`` and optionally
            ``status`` columns, as ``mlflow.search_runs`` returns them.
        parsed: The current parsed search space (:func:`raysweep.search_space.parse`).
        metric: The sweep metric.

    Returns:
        ``(points, rewards)``: for each kept run, its searched dimensions' values (typed as the dimensions' own
        values) and its metric.
    """
    dimensions = {name: v for name, v in parsed.items() if isinstance(v, Dimension)}
    fixed = {name: v for name, v in parsed.items() if not isinstance(v, Dimension)}
    column = f"metrics.{metric}"
    found_points: list[dict] = []
    rewards: list[float] = []
    if column not in runs.columns:
        return found_points, rewards
    for _, run in runs.iterrows():
        if run.get("status", "FINISHED") != "FINISHED" or not _is_number(run[column]):
            continue
        point = {name: _value(_param(run, name), dimension) for name, dimension in dimensions.items()}
        if any(value is _OUTSIDE for value in point.values()):
            continue
        recorded = {name: _param(run, name) for name in fixed}
        if any(text is not None and not _same(text, fixed[name]) for name, text in recorded.items()):
            continue  # run with another fixed value: its result says nothing about this space
        found_points.append(point)
        rewards.append(float(run[column]))
    return found_points, rewards


def find(reference: str, *, tracking_uri: str, experiment_name: str, sweep_name: str, metric: str,
         parsed: Mapping[str, Any]) -> Seed:
    """Read the earlier sweep named by ``sweep.warm_start`` and the points it gives this search space.

    Args:
        reference: A sweep's parent run id, or ``latest``.
        tracking_uri: The store to read.
        experiment_name: Where ``latest`` looks.
        sweep_name: The ``sweep.name`` whose newest finished sweep ``latest`` takes.
        metric: The sweep metric; the earlier sweep must have ranked its trials by it too.
        parsed: The current parsed search space.

    Raises:
        RaySweepError: The reference names no sweep, a sweep of another metric, or one with no finished trial
            inside this search space.
    """
    from mlflow import MlflowClient

    from raysweep import remote
    from raysweep.tracking import queries

    where = f"sweep.warm_start={reference}"
    if not any(isinstance(v, Dimension) for v in parsed.values()):
        raise RaySweepError(f"{where}: search_space has no searched dimension to seed; drop sweep.warm_start")
    remote.check_server(tracking_uri)
    client = MlflowClient(tracking_uri)
    if reference == LATEST:
        parent = _latest(client, queries, experiment_name, sweep_name, where)
    else:
        try:
            parent = queries.find_sweep(client, parent_run_id=reference)
        except RaySweepError as error:
            raise RaySweepError(f"{where}: {error}, or latest") from None
    name = f"sweep {parent.info.run_name} ({parent.info.run_id})"
    earlier_metric = parent.data.params.get("sweep.metric")
    if earlier_metric is not None and earlier_metric != metric:
        raise RaySweepError(f"{where}: {name} ranked its trials by {earlier_metric}, this sweep by {metric}; "
                            "warm-start from a sweep of the same sweep.metric")
    runs = queries.children(client, parent.info.experiment_id, parent.info.run_id, status="FINISHED")
    frame = _frame(runs)
    found, rewards = points(frame, parsed, metric)
    finished = int(frame[f"metrics.{metric}"].map(_is_number).sum()) if f"metrics.{metric}" in frame else 0
    if not finished:
        raise RaySweepError(f"{where}: {name} has no finished trial with {metric} to start from; "
                            "drop sweep.warm_start or name another sweep")
    if not found:
        raise RaySweepError(f"{where}: none of the {finished} finished trials of {name} lies inside this "
                            "search_space; widen it or drop sweep.warm_start")
    log.info("raysweep: warm start from %s: %d of %d finished trials inside the search space", name, len(found),
             finished)
    return Seed(parent.info.run_id, tuple(found), tuple(rewards), finished)


def _latest(client, queries, experiment_name: str, sweep_name: str, where: str):
    experiment = client.get_experiment_by_name(experiment_name)
    sweeps = queries.sweeps(client, experiment.experiment_id, sweep=sweep_name) if experiment else []
    finished = [run for run in sweeps if run.info.status == "FINISHED"]
    if not finished:
        raise RaySweepError(f"{where}: experiment {experiment_name!r} has no finished sweep named {sweep_name!r}; "
                            "run one first or give a sweep's parent run id")
    return finished[0]


def _frame(runs) -> pd.DataFrame:
    """Runs as ``mlflow.search_runs`` would frame them (``params.*``, ``metrics.*``, ``status``), oldest first."""
    import pandas as pd

    rows = [
        {"run_id": r.info.run_id, "status": r.info.status, "start_time": r.info.start_time,
         **{f"params.{k}": v for k, v in r.data.params.items()},
         **{f"metrics.{k}": v for k, v in r.data.metrics.items()}}
        for r in runs
    ]
    frame = pd.DataFrame(rows)
    return frame.sort_values("start_time", kind="stable") if rows else frame


def _param(run, name: str) -> str | None:
    value = run.get(f"params.{name}")
    return value if isinstance(value, str) else None  # a missing param is NaN in a frame


def _value(text: str | None, dimension: Dimension) -> Any:
    """The value ``text`` (an MLflow param) stands for in ``dimension``, or ``_OUTSIDE``."""
    if text is None:
        return _OUTSIDE  # the earlier sweep did not have this dimension: Optuna needs every one
    if dimension.kind == "choice":
        return next((option for option in dimension.args if _same(text, option)), _OUTSIDE)
    number = _number(text)
    if number is None:
        return _OUTSIDE
    lo, hi = dimension.args
    if dimension.kind in ("randint", "lograndint"):  # hi is exclusive, as in ray.tune.randint
        return int(number) if number.is_integer() and lo <= number < hi else _OUTSIDE
    return number if lo <= number <= hi else _OUTSIDE


def _same(text: str, value: Any) -> bool:
    """Whether an MLflow param string records ``value`` (params are logged as ``str(value)``)."""
    if text == str(value):
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(text) == value  # '1.0' for 1, '1e-05' for 0.00001
    return False


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
