"""Typed config schema, registered in Hydra's ConfigStore, and the checks Hydra cannot express.

``conf/config.yaml`` lists ``raysweep_schema`` first in its defaults, so every YAML file is merged onto these
dataclasses: an unknown key or an ill-typed value stops composition with a message naming the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from raysweep import checks
from raysweep.errors import RaySweepError
from raysweep.keys import did_you_mean, dotted_keys
from raysweep.remote import DEFAULT_TRACKING_URI


def _conf_dir() -> Path:
    # RAYSWEEP_CONF_DIR names it outright. An installed wheel (or the package `raysweep submit` ships to a
    # cluster) carries it inside the package; a checkout keeps the one source of truth next to src/.
    if os.environ.get("RAYSWEEP_CONF_DIR"):
        return Path(os.environ["RAYSWEEP_CONF_DIR"]).resolve()
    packaged = Path(__file__).resolve().parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


#: raysweep's built-in config groups: ``raysweep/conf`` in an installed package, ``conf/`` in a checkout.
CONF_DIR = _conf_dir()
#: The folder of the user's own configs, relative to the working directory; searched before :data:`CONF_DIR`.
USER_CONF = "conf"


def search_path(config_dir: str | os.PathLike | None = None, cwd: str | os.PathLike | None = None) -> list[Path]:
    """The folders Hydra searches for config files, first match first: the user's before raysweep's own.

    ``./conf`` in the working directory (when it exists), then ``config_dir`` (``--config-dir``), then :data:`CONF_DIR`.
    A same-named file in an earlier folder replaces a built-in one (``sweep/fraud.yaml``); new ones add options.

    Args:
        config_dir: An extra folder of configs (the CLI's ``--config-dir``, the API's ``config_dir``).
        cwd: The working directory; default the process's.

    Raises:
        RaySweepError: ``config_dir`` is not a folder.
    """
    cwd = Path(cwd or os.getcwd())
    folders = [cwd / USER_CONF] if (cwd / USER_CONF).is_dir() else []
    if config_dir is not None:
        extra = (cwd / Path(config_dir).expanduser()).resolve()
        if not extra.is_dir():
            raise RaySweepError(f"--config-dir {config_dir}: no such folder; point it at a folder of config groups "
                                "(e.g. one holding sweep/NAME.yaml)")
        folders.append(extra)
    # From the checkout's root ./conf is the built-ins themselves: they stay last.
    user = [folder.resolve() for folder in folders if folder.resolve() != CONF_DIR.resolve()]
    builtin = [CONF_DIR.resolve()] if CONF_DIR.is_dir() else []  # a job that shipped only the package's code
    if not user and not builtin:
        raise RaySweepError(f"raysweep's built-in configs are missing ({CONF_DIR}); reinstall raysweep (its wheel "
                            "carries them), run from a folder with conf/, or set RAYSWEEP_CONF_DIR")
    return list(dict.fromkeys([*user, *builtin]))


class Mode(str, Enum):
    """Whether the sweep metric is maximised or minimised."""

    max = "max"
    min = "min"


class LoggingMode(str, Enum):
    """Where trial metrics are written to MLflow from."""

    driver = "driver"
    worker = "worker"


class DataSource(str, Enum):
    """Where the training data comes from."""

    synthetic = "synthetic"
    file = "file"
    none = "none"  # the trainable loads its own data


class Task(str, Enum):
    """What the target is; ``auto`` decides from the target column (see :mod:`raysweep.data`)."""

    auto = "auto"
    binary = "binary"
    multiclass = "multiclass"
    regression = "regression"


class Split(str, Enum):
    """How rows are split into train, validation and test."""

    random = "random"  # stratified by class for classification
    group = "group"  # all rows of a data.group_column value on one side
    time = "time"  # ordered by data.time_column: the latest rows are validation, then test


@dataclass
class StopConfig:
    time_budget_s: Optional[float] = None
    metric_threshold: Optional[float] = None


@dataclass
class SweepConfig:
    name: str = MISSING
    run_name: str = MISSING
    metric: str = "val_auc"
    mode: Mode = Mode.max
    num_samples: int = 16
    max_concurrent_trials: Optional[int] = None
    max_failures: int = 0
    stop: StopConfig = field(default_factory=StopConfig)
    register: bool = True
    warm_start: Optional[str] = None


@dataclass
class DataConfig:
    source: DataSource = DataSource.synthetic
    n_samples: int = 20_000
    fraud_rate: float = 0.015
    n_noise_features: int = 4
    path: Optional[str] = None
    target: str = "is_fraud"
    task: Task = Task.auto
    drop: list[str] = field(default_factory=list)
    val_fraction: float = 0.25
    test_fraction: float = 0.2
    split: Split = Split.random
    group_column: Optional[str] = None
    time_column: Optional[str] = None
    seed: int = 0
    sep: str = ","
    decimal: str = "."
    encoding: str = "utf-8"


@dataclass
class TrainerConfig:
    name: str = "sklearn"
    family: str = "random_forest"
    iterations: int = 5
    cpus_per_trial: float = 1.0
    num_workers: int = 1
    cpus_per_worker: Optional[float] = None
    use_gpu: bool = False
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    function: Optional[str] = None  # trainer=function: MODULE:FUNC, a Ray Tune function trainable
    estimator: Optional[dict[str, Any]] = None  # trainer=estimator: {_target_: CLASS, ...constructor arguments}
    model: Optional[dict[str, Any]] = None  # trainer=torch: {_target_: FACTORY, ...} of the user's nn.Module
    train_loop: Optional[str] = None  # trainer=torch: MODULE:FUNC, a Ray Train train_loop_per_worker


@dataclass
class MLflowConfig:
    mode: LoggingMode = LoggingMode.driver
    tracking_uri: str = DEFAULT_TRACKING_URI
    registry_uri: Optional[str] = None
    experiment_name: str = MISSING
    registered_model: str = MISSING
    autolog: bool = False
    system_metrics: bool = False
    log_models: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    save_artifact: bool = False
    max_outage_s: float = 300.0


@dataclass
class SearchAlgConfig:
    name: str = "random"
    seed: Optional[int] = 0
    objectives: dict[str, Mode] = field(default_factory=dict)
    _target_: Optional[str] = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SchedulerConfig:
    name: str = "fifo"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClusterConfig:
    name: str = "local"
    address: Optional[str] = None
    num_cpus: Optional[int] = None
    storage_path: Optional[str] = None
    reuse_actors: bool = True
    verbose: int = 0
    dashboard_port: Optional[int] = None
    keep_checkpoints: bool = False
    tensorboard: bool = False


@dataclass
class RaySweepConfig:
    sweep: SweepConfig = field(default_factory=SweepConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)
    search_alg: SearchAlgConfig = field(default_factory=SearchAlgConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    search_space: dict[str, Any] = field(default_factory=dict)
    resume: bool = False


#: search_alg.name -> what it needs; ``custom`` builds any Tune searcher from ``search_alg._target_``.
SEARCH_ALGS = ("random", "grid", "optuna", "custom")
#: scheduler.name values; each maps to a Ray Tune scheduler in :mod:`raysweep.strategy`.
SCHEDULERS = ("fifo", "asha", "median_stopping", "pbt")


def register_schema() -> None:
    """Register :class:`RaySweepConfig` as ``raysweep_schema`` in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    schema = OmegaConf.structured(RaySweepConfig)
    # Free-form keyword-argument maps: keys are the user's to add (trainer.params={class_weight: balanced}).
    for node in (schema.trainer.params, schema.search_alg.params, schema.search_alg.objectives, schema.scheduler.params,
                 schema.mlflow.tags):
        OmegaConf.set_struct(node, False)
    ConfigStore.instance().store(name="raysweep_schema", node=schema)
    # sweep.run_name's suffix: a clock alone gives sweeps started in the same second one name and one Tune
    # folder. Cached, so one composed config keeps one value however often it is read.
    OmegaConf.register_new_resolver("raysweep.unique", lambda: os.urandom(3).hex(), use_cache=True, replace=True)


def available_sweeps(folders: list[Path] | None = None) -> list[str]:
    """Names usable with ``+sweep=NAME``: the ``sweep/*.yaml`` files of the folders (default :func:`search_path`)."""
    return sorted({p.stem for folder in (search_path() if folders is None else folders)
                   for p in (folder / "sweep").glob("*.yaml")})


def config_keys() -> list[str]:
    """Every key of raysweep's typed config, dotted (``sweep.num_samples``); free-form maps are one key each."""
    # The schema's free-form maps (trainer.params, search_space) are empty: only typed nodes have keys below.
    return dotted_keys(OmegaConf.to_container(OmegaConf.structured(RaySweepConfig), resolve=False))


def _check_schema(cfg: DictConfig) -> None:
    # Hydra lets `+key=value` add keys even to typed nodes; merging onto the schema again catches those.
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.merge(OmegaConf.structured(RaySweepConfig), OmegaConf.to_container(cfg, resolve=False))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        reason = str(e).splitlines()[0]
        close = did_you_mean(key, config_keys()) if "not in" in reason else []
        fix = f"did you mean {' or '.join(close)}?" if close else "remove or fix it"
        raise RaySweepError(f"config key {key}: {reason}; {fix} (see --cfg job)") from None


def validate(cfg: DictConfig) -> None:
    """Check what the schema cannot: a sweep is selected and the values make sense together.

    Args:
        cfg: The composed config.

    Raises:
        RaySweepError: With one line naming the problem and the fix.
    """
    _check_schema(cfg)
    if OmegaConf.is_missing(cfg.sweep, "name"):
        raise RaySweepError(f"no sweep selected; run with +sweep=NAME (available: {', '.join(available_sweeps())})")
    for key in ("experiment_name", "registered_model"):
        if OmegaConf.is_missing(cfg.mlflow, key) or not cfg.mlflow[key]:
            raise RaySweepError(f"mlflow.{key} is not set; set it in the sweep file or with mlflow.{key}=...")
    checks.places(cfg)  # store URIs, run and model names, local CPUs
    if cfg.sweep.num_samples < 1:
        raise RaySweepError(f"sweep.num_samples={cfg.sweep.num_samples}; it must be at least 1")
    if cfg.sweep.max_concurrent_trials is not None and cfg.sweep.max_concurrent_trials < 1:
        raise RaySweepError("sweep.max_concurrent_trials must be at least 1, or null to fill the cluster")
    # The data section: sizes, fractions, split keys, and for a file its header's columns (not its rows).
    from raysweep.data import check_config as check_data

    check_data(cfg.data)
    if cfg.trainer.iterations < 1:
        raise RaySweepError(f"trainer.iterations={cfg.trainer.iterations}; it must be at least 1")
    if cfg.trainer.cpus_per_trial <= 0:
        raise RaySweepError("trainer.cpus_per_trial must be > 0")
    _validate_strategy(cfg)
    if cfg.mlflow.autolog and cfg.mlflow.mode != LoggingMode.worker:
        raise RaySweepError("mlflow.autolog=true patches the training code, so it needs mlflow=worker; add mlflow=worker")
    if cfg.mlflow.log_models and cfg.mlflow.mode != LoggingMode.worker:
        raise RaySweepError("mlflow.log_models=true logs models from the trials, so it needs mlflow=worker; add mlflow=worker")
    if cfg.trainer.num_workers < 1:
        raise RaySweepError(f"trainer.num_workers={cfg.trainer.num_workers}; it must be at least 1")
    if cfg.trainer.cpus_per_worker is not None and cfg.trainer.cpus_per_worker <= 0:
        raise RaySweepError("trainer.cpus_per_worker must be > 0, or null to fit the cluster")

    _validate_trainer_fit(cfg)


def _validate_trainer_fit(cfg: DictConfig) -> None:
    # What the sweep asks of the trainer (metrics, a model, checkpoint restore) against what it declares; its
    # hyperparameters wait for validate_trainer, which may import the training framework.
    from raysweep import trainables

    trainer = trainables.load(cfg.trainer.name)
    name = cfg.trainer.name
    task = None if cfg.data.get("task", "auto") == "auto" else getattr(cfg.data.task, "value", str(cfg.data.task))
    trainables.check_metrics(trainer, cfg, task, data_pending=cfg.data.source != DataSource.none)
    if cfg.trainer.use_gpu and not trainer.resource_needs(cfg.trainer).get("use_gpu"):
        raise RaySweepError(f"trainer.use_gpu=true, but trainer {name!r} has no GPU path (its trials ask Ray for CPUs "
                            "only); set trainer.use_gpu=false, or use a trainer that trains on GPUs (trainer=mlp)")
    if cfg.sweep.register and not trainer.MAKES_MODELS:
        raise RaySweepError(f"trainer {name!r} makes no model to register; add sweep.register=false")
    if cfg.scheduler.name == "pbt" and not trainer.RESTORES_CHECKPOINTS:
        raise RaySweepError(
            f"scheduler=pbt moves checkpoints between trials, which trainer {name!r} cannot restore; "
            "use scheduler=asha or a trainer that restores (sklearn, torch)"
        )


def _validate_strategy(cfg: DictConfig) -> None:
    search_alg, scheduler, stop = cfg.search_alg, cfg.scheduler, cfg.sweep.stop
    if search_alg.name not in SEARCH_ALGS:
        raise RaySweepError(f"search_alg.name={search_alg.name!r} is not known; use search_alg={'|'.join(SEARCH_ALGS)}")
    if search_alg.name == "custom" and not search_alg._target_:
        raise RaySweepError("search_alg=custom needs a searcher class; add search_alg._target_=module.Class")
    if search_alg.name != "custom" and search_alg._target_:
        raise RaySweepError(f"search_alg._target_ is only used by search_alg=custom, not {search_alg.name!r}")
    if search_alg.objectives and search_alg.name != "optuna":
        raise RaySweepError("search_alg.objectives (multi-objective) needs search_alg=optuna")
    if cfg.sweep.metric in search_alg.objectives:
        raise RaySweepError(f"search_alg.objectives repeats sweep.metric {cfg.sweep.metric!r}; list only the others")
    if cfg.sweep.warm_start:
        _validate_warm_start(cfg)
    if scheduler.name not in SCHEDULERS:
        raise RaySweepError(f"scheduler.name={scheduler.name!r} is not known; use scheduler={'|'.join(SCHEDULERS)}")
    if cfg.sweep.max_failures < -1:
        raise RaySweepError("sweep.max_failures must be >= 0 (retries per trial), or -1 to retry forever")
    if stop.time_budget_s is not None and stop.time_budget_s <= 0:
        raise RaySweepError(f"sweep.stop.time_budget_s={stop.time_budget_s}; it must be > 0, or null for no limit")


def _validate_warm_start(cfg: DictConfig) -> None:
    # Ray's OptunaSearch takes earlier trials as completed points with one reward each (evaluated_rewards).
    search_alg = cfg.search_alg
    if search_alg.name != "optuna":
        raise RaySweepError(f"sweep.warm_start seeds Optuna with an earlier sweep's trials, not search_alg="
                            f"{search_alg.name}; add search_alg=optuna or drop sweep.warm_start")
    if search_alg.objectives:
        raise RaySweepError("sweep.warm_start cannot seed a multi-objective search (Ray's OptunaSearch takes one "
                            "reward per earlier trial); drop search_alg.objectives or sweep.warm_start")
    given = sorted({"points_to_evaluate", "evaluated_rewards"} & set(search_alg.params or {}))
    if given:
        raise RaySweepError(f"sweep.warm_start and search_alg.params.{given[0]} both seed the search; use one")


def validate_trainer(cfg: DictConfig) -> None:
    """Check the search space and fixed params against the trainer (imports the training framework).

    Raises:
        RaySweepError: A hyperparameter the trainer's model does not take.
    """
    from raysweep import trainables

    trainables.load(cfg.trainer.name).validate(cfg.trainer, dict(cfg.search_space))
