"""Run a sweep: config -> plan -> Ray Tune -> MLflow -> analysis -> registry.

:func:`run` is the whole pipeline; :func:`make_plan` is its pure first step.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from raysweep import config as config_mod
from raysweep import search_space
from raysweep.errors import RaySweepError, SweepInterrupted

log = logging.getLogger(__name__)

#: Config sections logged as params on the parent run (credentials live in mlflow.* and cluster.*).
_PARAM_SECTIONS = ("sweep", "data", "trainer", "search_alg", "scheduler", "search_space")
_VERSIONED_PACKAGES = ("raysweep", "ray", "mlflow", "hydra-core", "scikit-learn", "numpy", "pandas")


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


@dataclass(frozen=True)
class SweepOutcome:
    """What :func:`run` did: the summary of the sweep and, when registered, the model version."""

    plan: SweepPlan
    summary: Any
    registration: Any
    seconds: float

    def report(self) -> str:
        """Terminal summary: best trial and params, registered version and aliases, how to look."""
        from raysweep.analysis import format_summary

        head = f"raysweep: sweep finished in {self.seconds:.1f} s"
        return head + "\n" + format_summary(self.summary, self.registration, look_command(self.plan.tracking_uri))


def absolute_tracking_uri(uri: str, cwd: str | os.PathLike | None = None) -> str:
    """Make a relative ``sqlite:///file.db`` URI absolute, so every process agrees on the file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = Path(cwd or os.getcwd()) / uri[len(prefix):]
        return prefix + str(path.resolve())
    return uri


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


def run(cfg: DictConfig, overrides: Sequence[str] = ()) -> SweepOutcome:
    """Run the sweep described by ``cfg`` end to end and register its best model.

    Args:
        cfg: The composed raysweep config.
        overrides: The command-line overrides, recorded on the parent run.

    Returns:
        The :class:`SweepOutcome`.

    Raises:
        RaySweepError: Bad input (before Ray starts), or a sweep in which no trial finished.
        SweepInterrupted: Ctrl-C or SIGTERM; the parent run and open children end KILLED.
    """
    from raysweep import data, remote, trainables

    started = time.perf_counter()
    plan = make_plan(cfg)
    # Before anything waits on MLflow's own retries (minutes) or starts Ray.
    for uri in {plan.tracking_uri, plan.registry_uri or plan.tracking_uri}:
        remote.check_server(uri)
    resume_from = None
    if plan.resume:
        cfg, resume_from = _resume_target(cfg, plan)
        plan = make_plan(cfg)
    elif "://" not in plan.storage_path and Path(plan.run_dir).exists():
        raise RaySweepError(f"sweep run {plan.run_dir!r} already exists; pick a new sweep.run_name or add resume=true")
    _check_strategy(cfg, plan)
    trainer = trainables.get(cfg.trainer.name)
    dataset = data.load(cfg.data) if getattr(trainer, "NEEDS_DATA", True) else None

    import mlflow
    import ray
    from mlflow import MlflowClient

    from raysweep import analysis, registry, resources
    from raysweep.tracking.parent import parent_run

    with _ray(cfg.cluster):
        nodes = sum(1 for node in ray.nodes() if node["Alive"])
        remote.check_reachable_from_nodes(plan.tracking_uri, nodes)
        if plan.registry_uri:
            remote.check_reachable_from_nodes(plan.registry_uri, nodes, what="model registry")
        fit = resources.plan(
            cluster=ray.cluster_resources(),
            max_concurrent_trials=plan.max_concurrent_trials,
            **trainer.resource_needs(cfg.trainer),
        )
        mlflow.set_tracking_uri(plan.tracking_uri)
        if plan.registry_uri:
            mlflow.set_registry_uri(plan.registry_uri)
        client = MlflowClient(plan.tracking_uri, plan.registry_uri)
        experiment_id = _experiment_id(client, plan.experiment_name)
        with parent_run(
            client,
            experiment_id,
            plan.run_name,
            tags=_parent_tags(cfg, overrides),
            params=parent_params(cfg),
            config_yaml=OmegaConf.to_yaml(_public_config(cfg)),
            resume_run_id=resume_from,
        ) as parent_id, _StopSignals() as signals:
            context = _trial_context(plan, cfg, fit, experiment_id, parent_id)
            trainable = trainer.make_trainable(cfg.trainer, dataset, context)
            with signals.tune_running():
                grid = _tune(plan, cfg, trainable, fit, trainer.METRICS, context, parent_id)
            _record_outcomes(client, experiment_id, parent_id, grid, trainer, plan, stopped=signals.received)
            parent = client.get_run(parent_id)
            summary = analysis.summarize(client, parent)
            analysis.record_best(client, summary)
            registration = registry.register_best(client, parent, summary) if plan.register else None
            _log_report(client, summary, registration)
    return SweepOutcome(plan, summary, registration, time.perf_counter() - started)


def _resume_target(cfg: DictConfig, plan: SweepPlan) -> tuple[DictConfig, str]:
    """Find the sweep run to resume and the config it was started with.

    The sweep run is the one named ``sweep.run_name`` if it exists, else the latest run of this sweep. Its
    recorded config is used as it was (a resumed sweep trains what it started with); only the connection
    settings (``mlflow.*``, ``cluster.*``) come from this invocation.

    Raises:
        RaySweepError: No such sweep, it already finished, its driver still runs, or its Tune state is gone.
    """
    import mlflow
    from mlflow import MlflowClient

    from raysweep.tracking.parent import driver_alive
    from raysweep.tracking.tags import PARENT_ROLE, ROLE_TAG

    client = MlflowClient(plan.tracking_uri, plan.registry_uri)
    experiment = client.get_experiment_by_name(plan.experiment_name)
    parents = [] if experiment is None else client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = '{PARENT_ROLE}' and tags.`raysweep.sweep` = '{cfg.sweep.name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    named = [p for p in parents if p.info.run_name == plan.run_name]
    if not (named or parents):
        raise RaySweepError(
            f"resume=true: no sweep {cfg.sweep.name!r} in experiment {plan.experiment_name!r} to resume; "
            "run it without resume=true"
        )
    parent = (named or parents)[0]
    name = parent.info.run_name
    if parent.info.status == "FINISHED":
        raise RaySweepError(f"resume=true: sweep run {name!r} already finished; start a new sweep without resume=true")
    if parent.info.status == "RUNNING" and driver_alive(parent):
        pid = parent.data.tags.get("raysweep.driver.pid")
        raise RaySweepError(f"resume=true: sweep run {name!r} is still running (pid {pid}); stop it first")
    from ray import tune

    run_dir = f"{plan.storage_path.rstrip('/')}/{name}"
    if not tune.Tuner.can_restore(run_dir):
        raise RaySweepError(
            f"resume=true: no Tune state for sweep run {name!r} at {run_dir}; "
            "pass the cluster.storage_path the sweep was started with"
        )
    recorded = OmegaConf.create(mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/config.yaml"))
    recorded.mlflow = cfg.mlflow
    recorded.cluster = cfg.cluster
    recorded.sweep.run_name = name
    recorded.resume = True
    merged = OmegaConf.merge(OmegaConf.structured(config_mod.RaySweepConfig), recorded)
    return merged, parent.info.run_id


def _check_strategy(cfg: DictConfig, plan: SweepPlan) -> None:
    """Build the searcher and scheduler once before anything starts, so their errors come first."""
    from raysweep import strategy

    strategy.searcher(cfg.search_alg, plan.search_space, plan.metric, plan.mode, None)
    strategy.scheduler(cfg.scheduler, plan.search_space, cfg.trainer.iterations)


def _log_report(client, summary, registration) -> None:
    """Draw the report onto the parent run; a drawing problem must not fail a sweep that trained and registered."""
    from raysweep import report

    try:
        report.log_report(client, summary, registration)
    except Exception as error:  # noqa: BLE001 - reported, and the notebooks can draw it again
        log.warning("sweep report not stored on the parent run: %s: %s", type(error).__name__, error)


def _trial_context(plan: SweepPlan, cfg: DictConfig, fit, experiment_id: str, parent_id: str):
    from raysweep.config import LoggingMode
    from raysweep.trainables import TrialContext
    from raysweep.tracking.worker import WorkerLogging

    child_tags = {"raysweep.world_size": str(fit.num_workers)} if fit.num_workers else {}
    logging_spec = None
    if cfg.mlflow.mode == LoggingMode.worker:
        logging_spec = WorkerLogging(
            tracking_uri=plan.tracking_uri,
            registry_uri=plan.registry_uri,
            experiment_id=experiment_id,
            parent_run_id=parent_id,
            autolog=cfg.mlflow.autolog,
            system_metrics=cfg.mlflow.system_metrics,
            tags=child_tags,
            track_config=cfg.scheduler.name == "pbt",
            step_metric=plan.metric,
            log_models=cfg.mlflow.log_models,
        )
    return TrialContext(
        metric=plan.metric,
        mode=plan.mode,
        logging=logging_spec,
        resources=fit,
        storage_path=str(Path(plan.storage_path) / plan.run_name / "train"),
        child_tags=child_tags,
    )


def _record_outcomes(client, experiment_id: str, parent_id: str, grid, trainer, plan: SweepPlan, stopped) -> None:
    """Square the child runs with Tune's account of the trials once ``fit`` returns.

    Each finished trial's run is tagged with its best checkpoint (the model registration takes) and, when
    it ended before its last iteration, with what stopped it; a worker-mode run that Tune stopped early
    is FINISHED, not KILLED. On a resumed sweep, a run whose trial Tune's restored state never knew (the
    driver died before saving it; Tune ran that trial again under a new id) is deleted, so each trial
    has exactly one run.
    """
    from mlflow.entities import RunTag
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from raysweep.tracking.tags import CHECKPOINT_TAG, ENDED_BY_TAG, STOPPED_EARLY_TAG, STOP_REASON_TAG, TRIAL_ID_TAG
    from raysweep.trainables import PROGRESS

    children = client.search_runs(
        [experiment_id], filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent_id}'", max_results=50_000
    )
    runs = {r.data.tags.get(TRIAL_ID_TAG): r for r in children}
    stop_reason = client.get_run(parent_id).data.tags.get(STOP_REASON_TAG)
    causes = ", ".join(c for c in (plan.scheduler if plan.scheduler != "fifo" else None, stop_reason) if c)
    known = set()
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id")
        known.add(trial_id)
        run = runs.get(trial_id)
        if run is None or result.error is not None:
            continue
        tags = {}
        path = trainer.best_checkpoint(result, plan.metric, plan.mode)
        if path:
            tags[CHECKPOINT_TAG] = path
        if stopped is None and metrics.get(PROGRESS, 1.0) < 1.0:
            tags[STOPPED_EARLY_TAG] = causes or "stopped"
        if tags:
            client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        if stopped is None and run.info.status in ("RUNNING", "KILLED"):
            client.set_terminated(run.info.run_id, "FINISHED")
    if plan.resume and stopped is None:
        for trial_id, run in runs.items():
            if trial_id not in known and run.info.status == "KILLED":
                client.log_batch(run.info.run_id, tags=[RunTag(ENDED_BY_TAG, "superseded: trial re-run after resume")])
                client.delete_run(run.info.run_id)


def _tune(plan: SweepPlan, cfg: DictConfig, trainable, fit, metrics, context, parent_id: str):
    from ray import tune

    from raysweep import strategy

    trainable = tune.with_resources(trainable, fit.trial)
    # Checkpointing every iteration forces a state snapshot when old checkpoints are dropped; that is the
    # intent (no dangling checkpoint references, and a resumable state), not a problem to warn about.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if plan.resume:
        # Tune restores its searcher, scheduler, stopper and callbacks from the sweep's state; finished and
        # failed trials stay as they were, interrupted ones continue from their last checkpoint.
        return tune.Tuner.restore(plan.run_dir, trainable=trainable, resume_unfinished=True).fit()
    callbacks = []
    if context.logging is None:
        from raysweep.tracking.driver import SweepLoggerCallback

        callbacks.append(
            SweepLoggerCallback(
                tracking_uri=plan.tracking_uri,
                registry_uri=plan.registry_uri,
                experiment_name=plan.experiment_name,
                parent_run_id=parent_id,
                metrics=[plan.metric, *(m for m in metrics if m != plan.metric)],
                child_tags=context.child_tags,
                system_metrics=cfg.mlflow.system_metrics,
                track_config=cfg.scheduler.name == "pbt",
            )
        )
    search_alg, param_space = strategy.searcher(
        cfg.search_alg, plan.search_space, plan.metric, plan.mode, fit.max_concurrent_trials
    )
    stop = cfg.sweep.stop
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=plan.metric,
            mode=plan.mode,
            # A grid runs each combination once; its size is in plan.num_trials.
            num_samples=1 if cfg.search_alg.name == "grid" else plan.num_samples,
            search_alg=search_alg,
            scheduler=strategy.scheduler(cfg.scheduler, plan.search_space, cfg.trainer.iterations),
            reuse_actors=cfg.cluster.reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=plan.run_name,
            storage_path=plan.storage_path,
            callbacks=callbacks,
            stop=strategy.stopper(
                plan.metric, plan.mode, stop.time_budget_s, stop.metric_threshold,
                tracking_uri=plan.tracking_uri, parent_run_id=parent_id,
            ),
            failure_config=tune.FailureConfig(max_failures=plan.max_failures),
            # Keep each trial's two most recent checkpoints (registration takes the better of them). Pruning by
            # score instead would delete the checkpoint Tune's last saved state points at as soon as a better
            # one arrives, so a sweep resumed after SIGKILL, or a PBT exploit, would find it gone.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None if plan.scheduler == "pbt" else 2),
            verbose=cfg.cluster.verbose,
        ),
    )
    return tuner.fit()


class _StopSignals:
    """Turn Ctrl-C and SIGTERM into :class:`SweepInterrupted`, letting Tune stop cleanly first.

    While Tune runs, the first signal asks Tune for its own graceful stop (SIGUSR1: trials stop, the
    experiment state is saved) and is raised once ``fit`` returns; a second signal, or one outside Tune,
    raises at once. Either way the parent run's context then ends every open run KILLED.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._in_tune = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self._SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self._in_tune and self.received is None:
            self.received = signum
            os.kill(os.getpid(), signal.SIGUSR1)
            return
        raise SweepInterrupted(signum)

    @contextmanager
    def tune_running(self) -> Iterator[None]:
        """Scope of ``Tuner.fit``: signals stop Tune gracefully, then raise after it returns."""
        previous = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours decides; Tune keeps its SIGUSR1 stop
        self._in_tune = True
        try:
            yield
        finally:
            self._in_tune = False
            if previous is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = previous
        if self.received is not None:
            raise SweepInterrupted(self.received)


@contextmanager
def _ray(cluster_cfg) -> Iterator[None]:
    """Use the Ray instance already running in this process, or start/connect one and stop it after."""
    import ray

    if ray.is_initialized():
        yield
        return
    from raysweep import remote
    from raysweep._workers import SETUP_HOOK

    address = cluster_cfg.address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        # Workers on other nodes see none of this process's environment: MLflow's variables go with them.
        "runtime_env": {"worker_process_setup_hook": SETUP_HOOK, **remote.ray_runtime_env(connecting=bool(address))},
    }
    if address:
        ray.init(address=address, **kwargs)
    else:
        # Away from Ray's default port, where another Ray on this machine may already be.
        ray.init(num_cpus=cluster_cfg.num_cpus, dashboard_port=free_port(), **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _experiment_id(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage != "active":
            raise RaySweepError(f"MLflow experiment {name!r} is deleted; restore it or set mlflow.experiment_name")
        return experiment.experiment_id
    return client.create_experiment(name)


def _public_config(cfg: DictConfig) -> DictConfig:
    """The resolved config without connection strings, which may carry credentials."""
    public = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    for key in ("tracking_uri", "registry_uri"):
        public.mlflow[key] = "<from environment>" if public.mlflow.get(key) else None
    return public


def _public_overrides(overrides: Sequence[str]) -> list[str]:
    """Command-line overrides with credentials in URI values masked."""
    from raysweep.remote import redact

    return [f"{key}={redact(value)}" if sep else key for key, sep, value in (o.partition("=") for o in overrides)]


def parent_params(cfg: DictConfig) -> dict[str, str]:
    """Key config values as flat ``section.key`` params for the parent run."""
    public = OmegaConf.to_container(_public_config(cfg))
    params = {"mlflow.registered_model": cfg.mlflow.registered_model, "mlflow.mode": cfg.mlflow.mode.value}
    for section in _PARAM_SECTIONS:
        for key, value in _flatten(public[section], section).items():
            params[key] = "None" if value is None else str(value)
    return params


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}"))
        return out
    return {prefix: node}


def _parent_tags(cfg: DictConfig, overrides: Sequence[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from raysweep.tracking.parent import driver_tags

    tags = {
        "raysweep.sweep": cfg.sweep.name,
        "raysweep.overrides": " ".join(_public_overrides(overrides)) or "(none)",
        **driver_tags(),
        "mlflow.note.content": f"raysweep sweep {cfg.sweep.run_name}: {cfg.search_alg.name} search, {cfg.scheduler.name} scheduler, "
        f"{cfg.sweep.mode.value} {cfg.sweep.metric}",
    }
    for pkg in _VERSIONED_PACKAGES:
        try:
            tags[f"raysweep.version.{pkg}"] = version(pkg)
        except PackageNotFoundError:
            pass
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=config_mod.CONF_DIR.parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def look_command(tracking_uri: str) -> str:
    """How to open the MLflow UI on a tracking store."""
    if tracking_uri.startswith(("http://", "https://")):
        from raysweep.remote import redact

        return f"open {redact(tracking_uri)}"
    return f"mlflow ui --backend-store-uri {tracking_uri}"
