"""Config -> :class:`SweepPlan`: everything a sweep needs to start, derived and checked before anything runs.

:func:`make_plan` is pure (it imports the trainer's framework to check hyperparameter names, and starts
nothing); :func:`check_strategy` builds the searcher and scheduler once so their errors, too, come before Ray.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from raysweep import config as config_mod
from raysweep import search_space
from raysweep.errors import RaySweepError
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
    warm_start: Any = None  # warm_start.Seed: an earlier sweep's trials that seed Optuna (sweep.warm_start)

    @property
    def run_dir(self) -> str:
        """The Tune experiment folder of this sweep run (its state, results and checkpoints)."""
        return f"{self.storage_path.rstrip('/')}/{self.run_name}"


def make_plan(cfg: DictConfig, overrides: Sequence[str] = ()) -> SweepPlan:
    """Validate the config and derive the sweep's plan; starts nothing.

    With ``MLFLOW_EXPERIMENT_ID`` set, the experiment's name is read from the tracking store
    (:func:`raysweep.tracking.queries.env_experiment`), so an unknown id fails here, before Ray starts; an
    override naming ``mlflow.experiment_name`` wins over it.

    Args:
        cfg: The composed raysweep config.
        overrides: The command line's (or ``raysweep.run``'s) overrides that composed ``cfg``.

    Raises:
        RaySweepError: A config value is missing, malformed or inconsistent.
    """
    from raysweep.tracking.metadata import user_tags

    config_mod.validate(cfg)
    user_tags(cfg.mlflow.get("tags"))  # reserved tag names refused before anything starts
    space = cfg.get("search_space")  # None once removed: ~search_space
    parsed = search_space.parse(OmegaConf.to_container(space, resolve=True) if space is not None else {})
    _check_searchable(cfg, parsed)
    config_mod.validate_trainer(cfg)
    storage = cfg.cluster.storage_path or str(Path("~/ray_results").expanduser())
    num_trials = search_space.grid_size(parsed) if cfg.search_alg.name == "grid" else cfg.sweep.num_samples
    experiment = _experiment_name(cfg, explicit=any(_key(o) == "mlflow.experiment_name" for o in overrides))
    return SweepPlan(
        run_name=cfg.sweep.run_name,
        experiment_name=experiment,
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
        warm_start=_warm_start(cfg, parsed, experiment),
    )


def _check_searchable(cfg: DictConfig, parsed: dict[str, Any]) -> None:
    """Refuse a search space with nothing to search where the sweep needs something searched.

    An empty space, a searcher (Optuna, a custom one) given only fixed values, and several random trials of
    one fixed configuration (the same trial run again) are mistakes; one trial of fixed values is a plain run.

    Raises:
        RaySweepError: Naming the fix: a sweep expression, another searcher, or ``sweep.num_samples=1``.
    """
    from raysweep.errors import RaySweepError

    if not parsed:
        raise RaySweepError("search_space is empty, so there is nothing to search; add a dimension, e.g. "
                            "search_space.NAME='choice(a, b)' (see docs/search-spaces.md)")
    if any(isinstance(value, search_space.Dimension) for value in parsed.values()):
        return
    fixed, name, trials = ", ".join(parsed), cfg.search_alg.name, cfg.sweep.num_samples
    if name in ("optuna", "custom"):
        raise RaySweepError(f"search_alg={name} has nothing left to search: every search_space value is fixed "
                            f"({fixed}); make one a sweep expression (choice, range, interval) or use search_alg=random")
    if name == "random" and trials > 1:
        raise RaySweepError(f"nothing left to search: every search_space value is fixed ({fixed}), so the {trials} "
                            "trials would all be the same; make one a sweep expression or set sweep.num_samples=1")


def _warm_start(cfg: DictConfig, parsed: dict[str, Any], experiment_name: str):
    """The earlier sweep's trials ``sweep.warm_start`` names: only then is the store read (before Ray starts).

    A resumed sweep restores its searcher, seeded points included, from its Tune state.
    """
    if not cfg.sweep.warm_start or cfg.resume:
        return None
    from raysweep import warm_start

    return warm_start.find(
        cfg.sweep.warm_start,
        tracking_uri=absolute_tracking_uri(cfg.mlflow.tracking_uri),
        experiment_name=experiment_name,
        sweep_name=cfg.sweep.name,
        metric=cfg.sweep.metric,
        parsed=parsed,
    )


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def _experiment_name(cfg: DictConfig, explicit: bool = False) -> str:
    """``mlflow.experiment_name``, or the experiment ``MLFLOW_EXPERIMENT_ID`` names unless the name was given
    ``explicit``ly (``mlflow.set_experiment`` in a notebook sets that variable): only then is the store read."""
    import os

    if explicit or not os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return cfg.mlflow.experiment_name
    from mlflow import MlflowClient

    from raysweep.remote import check_server
    from raysweep.tracking.queries import env_experiment

    tracking_uri = absolute_tracking_uri(cfg.mlflow.tracking_uri)
    check_server(tracking_uri)  # a server that does not answer fails in one line, not after MLflow's retries
    return env_experiment(MlflowClient(tracking_uri, cfg.mlflow.registry_uri or None), cfg.mlflow.experiment_name)


def claim_run_dir(plan: SweepPlan) -> None:
    """Create the sweep run's Tune folder, failing when it exists: the claim that keeps two sweeps out of one folder.

    ``mkdir`` either creates the folder or fails, in one step, also when another process claims the same name at
    the same moment; a check for existence followed by Tune creating the folder lets both pass. A URI storage
    path (``s3://...``) has no such step: there the random suffix of the default ``sweep.run_name`` keeps runs apart.

    Raises:
        RaySweepError: The folder exists (an earlier or concurrent sweep run of that name).
    """
    if "://" in plan.storage_path:
        return
    folder = Path(plan.run_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()
    except FileExistsError:
        raise RaySweepError(f"sweep run {plan.run_dir!r} already exists; pick a new sweep.run_name "
                            "(the default is unique) or add resume=true") from None


@contextmanager
def released_on_failure(plan: SweepPlan) -> Iterator[None]:
    """Remove the claimed Tune folder (:func:`claim_run_dir`) when what runs inside fails before Tune wrote to it: a
    sweep refused after Ray started (a store its nodes cannot reach) leaves no empty folder behind. A folder
    holding Tune's state is kept, for ``resume=true``."""
    try:
        yield
    except BaseException:
        if "://" not in plan.storage_path:
            with suppress(OSError):  # not empty: Tune saved its state
                Path(plan.run_dir).rmdir()
        raise


def check_strategy(cfg: DictConfig, plan: SweepPlan) -> None:
    """Build the searcher and scheduler once before anything starts, so their errors come first.

    Raises:
        RaySweepError: A searcher or scheduler that cannot be built from the config.
    """
    from raysweep import strategy, trainables

    strategy.searcher(cfg.search_alg, plan.search_space, plan.metric, plan.mode, None, warm=plan.warm_start)
    fixed = trainables.load(cfg.trainer.name).fixed_under_pbt(cfg.trainer, plan.search_space)  # shape the model
    strategy.scheduler(cfg.scheduler, plan.search_space, cfg.trainer.iterations, fixed=fixed)
