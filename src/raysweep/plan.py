"""Config -> :class:`SweepPlan`: everything a sweep needs to start, derived and checked before anything runs.

:func:`make_plan` is pure (it imports the trainer's framework to check hyperparameter names, and starts
nothing); :func:`check_strategy` builds the searcher and scheduler once so their errors, too, come before Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from raysweep import config as config_mod
from raysweep import search_space
from raysweep.remote import absolute_tracking_uri


@dataclass(frozen=True)
class SweepPlan:
    """Everything a sweep needs to start, derived from the config before anything runs."""

    run_name: str
    experiment_name: str
    tracking_uri: str
    registry_uri: str | None
    metric: str
    mode: str
    num_samples: int
    max_concurrent_trials: int | None
    search_space: dict[str, Any]  # name -> search_space.Dimension or a fixed value
    storage_path: str
    register: bool
    num_trials: int  # trials the sweep plans: num_samples, or every grid combination
    search_alg: str
    scheduler: str
    max_failures: int
    resume: bool

    @property
    def run_dir(self) -> str:
        """The Tune experiment folder of this sweep run (its state, results and checkpoints)."""
        return f"{self.storage_path.rstrip('/')}/{self.run_name}"


def make_plan(cfg: DictConfig) -> SweepPlan:
    """Validate the config and derive the sweep's plan; starts nothing.

    Args:
        cfg: The composed raysweep config.

    Raises:
        RaySweepError: A config value is missing, malformed or inconsistent.
    """
    config_mod.validate(cfg)
    parsed = search_space.parse(OmegaConf.to_container(cfg.search_space, resolve=True))
    config_mod.validate_trainer(cfg)
    storage = cfg.cluster.storage_path or str(Path("~/ray_results").expanduser())
    num_trials = search_space.grid_size(parsed) if cfg.search_alg.name == "grid" else cfg.sweep.num_samples
    return SweepPlan(
        run_name=cfg.sweep.run_name,
        experiment_name=cfg.mlflow.experiment_name,
        tracking_uri=absolute_tracking_uri(cfg.mlflow.tracking_uri),
        registry_uri=cfg.mlflow.registry_uri or None,
        metric=cfg.sweep.metric,
        mode=cfg.sweep.mode.value,
        num_samples=cfg.sweep.num_samples,
        max_concurrent_trials=cfg.sweep.max_concurrent_trials,
        search_space=parsed,
        storage_path=str(Path(storage).expanduser().resolve()) if "://" not in storage else storage,
        register=cfg.sweep.register,
        num_trials=num_trials,
        search_alg=cfg.search_alg.name,
        scheduler=cfg.scheduler.name,
        max_failures=cfg.sweep.max_failures,
        resume=cfg.resume,
    )


def check_strategy(cfg: DictConfig, plan: SweepPlan) -> None:
    """Build the searcher and scheduler once before anything starts, so their errors come first.

    Raises:
        RaySweepError: A searcher or scheduler that cannot be built from the config.
    """
    from raysweep import strategy

    strategy.searcher(cfg.search_alg, plan.search_space, plan.metric, plan.mode, None)
    strategy.scheduler(cfg.scheduler, plan.search_space, cfg.trainer.iterations)
