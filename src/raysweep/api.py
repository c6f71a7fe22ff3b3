"""``raysweep.run``: a sweep from Python (a notebook, a script), the command line's path without a shell.

``raysweep.run("fraud", ["sweep.num_samples=4"])`` does what ``python -m raysweep +sweep=fraud
sweep.num_samples=4`` does in the working directory (``./conf`` first, then ``config_dir``, then the built-ins)
and returns a :class:`SweepResult`. It borrows the caller's process politely: a Ray the caller started stays up,
MLflow's tracking and registry URIs and the caller's active run are as they were afterwards, and from a thread
other than the main one no signal handler is installed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raysweep.errors import RaySweepError


@dataclass(frozen=True)
class SweepResult:
    """What :func:`run` did.

    Attributes:
        parent_run_id: The sweep's MLflow parent run.
        best_run_id: The best trial's child run.
        best_metric: The best trial's value of ``sweep.metric``.
        model_version: The registered model version (``"3"``), or ``None`` when nothing was registered
            (``sweep.register=false``, or a trainable whose checkpoints hold no model).
        model_name: The registered model's name, or ``None`` with ``model_version``.
        outcome: The full :class:`raysweep.sweep.SweepOutcome` (plan, summary with the trials table, registration).
    """

    parent_run_id: str
    best_run_id: str
    best_metric: float
    model_version: str | None
    model_name: str | None
    outcome: Any

    @property
    def model_uri(self) -> str | None:
        """``models:/NAME/VERSION`` of the registered version, or ``None``."""
        return f"models:/{self.model_name}/{self.model_version}" if self.model_version else None

    def report(self) -> str:
        """The summary the command line prints after a sweep."""
        return self.outcome.report()


def run(sweep: str, overrides: Sequence[str] = (), config_dir: str | os.PathLike | None = None) -> SweepResult:
    """Run the sweep ``+sweep=NAME`` with command-line style overrides and register its best model.

    Args:
        sweep: A sweep's name: a file ``sweep/NAME.yaml`` in ``./conf``, ``config_dir`` or raysweep's own configs.
        overrides: Overrides as on the command line (``"sweep.num_samples=4"``,
            ``"search_space.max_depth=choice(4, 8)"``, ``"mlflow=worker"``).
        config_dir: A folder of your own config groups, searched after ``./conf`` and before the built-ins
            (the command line's ``--config-dir``).

    Returns:
        The :class:`SweepResult`.

    Raises:
        RaySweepError: Bad input (an unknown sweep or key, a value that cannot work), with the command line's
            one-line message, before Ray starts or any run is created where it can be seen that early.
        SweepInterrupted: Ctrl-C or SIGTERM (main thread only); the sweep's runs were ended KILLED.
    """
    from raysweep import compat
    from raysweep import sweep as sweep_mod
    from raysweep.compose import compose
    from raysweep.search_space import quote_cli_overrides

    if not isinstance(sweep, str) or not sweep or "=" in sweep:
        raise RaySweepError(f"sweep={sweep!r}: give a sweep's name, e.g. raysweep.run('fraud')")
    if isinstance(overrides, (str, bytes)):
        raise RaySweepError(f"overrides={overrides!r} is one string; pass a list, e.g. ['sweep.num_samples=4']")
    args = [f"+sweep={sweep}", *map(str, overrides)]
    cfg = compose(args, config_dir)
    # The user's modules (trainer.function=train:train) import from the working directory, as on the command line.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    import mlflow

    # The sweep points MLflow's process-wide URIs at its stores and logs models outside the caller's run: put
    # back exactly what the caller had (URIs, environment variables, active run), whatever happens.
    with compat.mlflow_store(mlflow.get_tracking_uri()), compat.detached_active_run():
        outcome = sweep_mod.run(cfg, overrides=quote_cli_overrides(args))
    summary, registration = outcome.summary, outcome.registration
    version = getattr(registration, "version", None)
    return SweepResult(
        parent_run_id=summary.parent_run_id,
        best_run_id=summary.best_run_id,
        best_metric=float(summary.best_value),
        model_version=str(version) if version is not None else None,
        model_name=getattr(registration, "name", None) if version is not None else None,
        outcome=outcome,
    )
