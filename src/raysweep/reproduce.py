"""Retrain the trial behind a registered model version from what MLflow recorded, and compare its metrics.

The version's run is a sweep's child run: its params are the trial's hyperparameters (as strings), its metric
history the trial's per-iteration metrics. The parent run holds the resolved ``config.yaml`` (trainer, seed,
iterations, fixed params, data spec). The trainer's own ``retrain`` trains the trial again outside Ray Tune
through the same code path as the trial, so with fixed seeds the metrics match exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlflow import MlflowClient

from raysweep import registry
from raysweep.errors import RaySweepError
from raysweep.tracking import queries
from raysweep.tracking.tags import PARENT_RUN_ID, VALUE_TAG

#: Largest difference between a recorded and a reproduced metric that still counts as the same.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Reproduction:
    """Recorded and reproduced metrics of a trial at the iteration whose model was registered."""

    uri: str
    name: str
    version: str
    run_id: str
    trial: str
    step: int
    metric: str
    recorded: dict[str, float]
    reproduced: dict[str, float]
    tolerance: float = TOLERANCE

    @property
    def differences(self) -> dict[str, float]:
        """Absolute difference per metric both sides have."""
        return {k: abs(self.recorded[k] - self.reproduced[k]) for k in self.recorded if k in self.reproduced}

    @property
    def matches(self) -> bool:
        """Every metric within :attr:`tolerance`."""
        return bool(self.differences) and all(d <= self.tolerance for d in self.differences.values())

    def __str__(self) -> str:
        lines = [
            f"reproduce   {self.uri} -> {self.name} v{self.version}, trial {self.trial} (run {self.run_id}), "
            f"iteration {self.step}",
            f"{'metric':<24}{'recorded':>22}{'reproduced':>22}{'|diff|':>12}",
        ]
        ordered = [self.metric, *sorted(k for k in self.differences if k != self.metric)]
        for key in ordered:
            lines.append(f"{key:<24}{self.recorded[key]:>22.15g}{self.reproduced[key]:>22.15g}"
                         f"{self.differences[key]:>12.3g}")
        verdict = "match" if self.matches else "MISMATCH"
        lines.append(f"result      {verdict} (tolerance {self.tolerance:g})")
        return "\n".join(lines)


def registered_step(history: Mapping[int, float], value: str | None) -> int:
    """The iteration whose model a version holds: the last one that reported the version's recorded value.

    A trial registers its best kept checkpoint, which is earlier than its last iteration when a later one scored
    worse. A version without a recorded value, or one no iteration reported: the last iteration.

    Args:
        history: The sweep metric by step, as the trial's run recorded it.
        value: The version's recorded value of the metric (``raysweep.metric_value``), or ``None``.
    """
    last = max(history, default=0)
    try:
        recorded = float(value)
    except (TypeError, ValueError):
        return last
    return max((step for step, reported in history.items() if reported == recorded), default=last)


def parse_param(text: str):
    """An MLflow param string back to the Python value the trial had (``'7'`` -> 7, ``'None'`` -> None,
    ``'(64, 32)'`` -> (64, 32))."""
    import ast

    if text in ("None", "True", "False"):
        return {"None": None, "True": True, "False": False}[text]
    if text.startswith(("(", "[")):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        return tuple(value) if isinstance(value, (list, tuple)) else value
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def reproduce(client: MlflowClient, uri: str, *, tolerance: float = TOLERANCE,
              overrides: Sequence[str] = ()) -> Reproduction:
    """Retrain the trial behind ``uri`` and score it on the sweep's validation data.

    The recorded config is data: the trainer and any ``_target_`` it names are used only when this invocation
    composes the same for that sweep (its sweep file and ``overrides``, see :func:`raysweep.trust.check_recorded`).

    Args:
        client: Client bound to the tracking store and registry.
        uri: ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.
        tolerance: Largest metric difference that counts as reproduced.
        overrides: Overrides composed with the recorded sweep's file, e.g. the ``trainer.function=MODULE:FUNC``
            the sweep was run with: what this command trusts.

    Raises:
        RaySweepError: The version has no sweep trial behind it, its recorded config names code this command does
            not compose, its trainer cannot retrain outside Tune, or the trial's hyperparameters changed during
            the sweep (PBT).
    """
    from raysweep import data, trainables, trust
    from raysweep.metrics import metric_names

    mv = registry.resolve(client, uri)
    run = client.get_run(mv.run_id) if mv.run_id else None
    parent_id = run.data.tags.get(PARENT_RUN_ID) if run else None
    if not parent_id:
        raise RaySweepError(f"{uri} (v{mv.version}) was not registered from a sweep trial; nothing to retrain")
    config = queries.parent_config(client, parent_id)
    # Before anything the stored config names is imported.
    trust.check_recorded(config, overrides, command="reproduce",
                         where=f"the sweep behind {uri} (parent run {parent_id})")
    trainer = trainables.load(config.trainer.name)
    if trainer.retrain is None:
        raise RaySweepError(f"trainer {config.trainer.name!r} cannot retrain outside Ray Tune; reproduce supports "
                            "the sklearn and estimator trainers")
    if config.scheduler.name == "pbt":
        raise RaySweepError(f"{uri} comes from a PBT sweep, whose trials change hyperparameters midway; "
                            "it cannot be retrained from its params")
    metric = config.sweep.metric
    dataset = data.load(config.data)
    # The task's validation metrics, and the sweep's own metric whatever it is.
    compared = dict.fromkeys([metric, *metric_names(dataset.task)])
    history = {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)} for key in compared}
    step = registered_step(history[metric], mv.tags.get(VALUE_TAG))
    if not step:
        raise RaySweepError(f"run {run.info.run_id} recorded no {metric}; nothing to compare with")
    # Only the search space's keys: autolog (worker mode) adds the estimator's every argument to the params.
    params = {key: parse_param(run.data.params[key]) for key in config.search_space if key in run.data.params}
    per_iteration = trainer.retrain(config.trainer, dataset, params, until=step)
    reproduced = per_iteration[step - 1] if len(per_iteration) >= step else {}
    return Reproduction(
        uri=uri, name=mv.name, version=str(mv.version), run_id=run.info.run_id, trial=run.info.run_name,
        step=step, metric=metric,
        recorded={key: values[step] for key, values in history.items() if step in values},
        reproduced={key: reproduced[key] for key in compared if key in reproduced},
        tolerance=tolerance,
    )

