"""Run a sweep: config -> plan -> Ray Tune -> MLflow -> analysis -> registry, one step after the other.

:func:`run` is the whole pipeline; each step lives in the module named for it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from raysweep.errors import RaySweepError, SweepInterrupted
from raysweep.plan import SweepPlan, check_strategy, claim_run_dir, make_plan, released_on_failure
from raysweep.tabular import INTEGER_COLUMNS_HINT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepOutcome:
    """What :func:`run` did: the summary of the sweep and, when registered, the model version."""

    plan: SweepPlan
    summary: Any
    registration: Any
    seconds: float
    checkpoints: Any = None  # raysweep.retention.Retention: what was kept and removed after registration

    def report(self) -> str:
        """Terminal summary: best trial and params, registered version and aliases, how to look."""
        from raysweep.analysis import format_summary

        head = f"raysweep: sweep finished in {self.seconds:.1f} s"
        kept = self.checkpoints.line() if self.checkpoints is not None else None
        return head + "\n" + format_summary(self.summary, self.registration, look_command(self.plan.tracking_uri),
                                             checkpoints=kept)


def run(cfg: DictConfig, overrides: Sequence[str] = ()) -> SweepOutcome:
    """Run the sweep described by ``cfg`` end to end and register its best model.

    Args:
        cfg: The composed raysweep config.
        overrides: The command-line overrides, recorded on the parent run.

    Returns:
        The :class:`SweepOutcome`.

    Raises:
        RaySweepError: Bad input (before Ray starts), or a sweep in which no trial finished.
        SweepInterrupted: Ctrl-C or SIGTERM (or ``raysweep stop``) at any moment; every open run ends KILLED.
    """
    from raysweep import runtime

    # From before anything exists until Ray is stopped: no moment where a signal leaves a run RUNNING.
    with runtime.StopSignals() as signals:
        return _run(cfg, overrides, signals)


def _run(cfg: DictConfig, overrides: Sequence[str], signals) -> SweepOutcome:
    from raysweep import compat, data, remote, runtime, trainables

    started = time.perf_counter()
    compat.quiet_mlflow()  # its INFO lines, artifact progress bars and pip notice; warnings still show
    # For the whole process, before threads start: a thread leaving warnings.catch_warnings puts back the filters
    # as they were when it entered, dropping what another thread's catch_warnings added meanwhile (the warm-up's
    # imports enter it hundreds of times, skops.io's alone, while the data's signature is inferred).
    warnings.filterwarnings("ignore", message=INTEGER_COLUMNS_HINT)
    if cfg.data.get("path") and Path(cfg.data.path).expanduser().exists():
        # Recorded whole: promote, reproduce and the notebooks read the data from other folders.
        cfg.data.path = str(Path(cfg.data.path).expanduser().absolute())
    plan = make_plan(cfg, overrides)
    # Before anything waits on MLflow's own retries (minutes) or starts Ray.
    remote.check_server(plan.tracking_uri)
    if plan.registry_uri and plan.registry_uri != plan.tracking_uri:
        remote.check_server(plan.registry_uri, variable="MLFLOW_REGISTRY_URI")
    runtime.cluster_address(cfg.cluster)  # "auto", a missing or silent Ray address: refused before anything exists
    resume_from = None
    if plan.resume:
        from raysweep.resume import resume_target

        cfg, resume_from = resume_target(cfg, plan, overrides)
        plan = make_plan(cfg, overrides)
    elif "://" not in plan.storage_path and Path(plan.run_dir).exists():
        raise RaySweepError(f"sweep run {plan.run_dir!r} already exists; pick a new sweep.run_name or add resume=true")
    check_strategy(cfg, plan)
    trainer = trainables.load(cfg.trainer.name)
    dataset = data.load(cfg.data) if trainer.NEEDS_DATA else None
    task = dataset.task if dataset is not None else None
    trainables.check_metrics(trainer, cfg, task)  # metrics that depend on the data's task, now it is known
    if trainer.check_task is not None:
        trainer.check_task(cfg.trainer, cfg.search_space, task)  # and the values the task's model takes
    log.debug("phase checked and data loaded")

    import ray

    from raysweep import resources, stopping, tuning

    if resume_from is None:  # last check before Ray: a concurrent sweep of the same name fails here, in one line
        claim_run_dir(plan)
    # Every check has passed: the store is readied and what comes next imported while Ray starts (seconds).
    # The report is drawn with or without registration: its imports are warmed either way.
    warm = (*_REPORT_IMPORTS, *(trainer.REGISTRATION_IMPORTS if plan.register else ()))
    prepared = runtime.Background(_prepare, plan, warm, name="raysweep-prepare")
    # Logging and registering a model and mlflow.search_runs go through MLflow's process-wide URIs.
    claimed = released_on_failure(plan) if resume_from is None else nullcontext()
    mlflow_uris = compat.mlflow_store(plan.tracking_uri, plan.registry_uri)
    with claimed, runtime.session(cfg.cluster) as release_ray, mlflow_uris:
        log.debug("phase ray started")
        client = prepared.result()
        log.debug("phase store ready")
        if plan.register:  # before anything is created: a name whose champion learned another task
            from raysweep.aliases import check_task

            check_task(client, cfg.mlflow.registered_model, task)
        # Imported once MLflow is (by _prepare, while Ray started), not before ray.init: 0.7 s of start-up.
        from raysweep.tracking import lineage, metadata, outage, queries, reconcile
        from raysweep.tracking.parent import driver_tags, parent_run

        nodes = runtime.alive_nodes()
        for uri, what in ((plan.tracking_uri, "tracking store"), (plan.registry_uri, "model registry")):
            if uri:
                remote.check_reachable_from_nodes(uri, nodes, what=what)
        fit = resources.plan(
            cluster=ray.cluster_resources(),
            max_concurrent_trials=plan.max_concurrent_trials,
            home=runtime.driver_node_resource(),
            **trainer.resource_needs(cfg.trainer),
        )
        experiment_id = queries.experiment_id(client, plan.experiment_name)
        data_record = lineage.record(dataset)
        # Signals wait while the parent run is created and while it ends with its children (signals.guard).
        with signals.guard(parent_run(
            client,
            experiment_id,
            plan.run_name,
            # A warm-started sweep records which sweep it started from, and with how many of its trials.
            tags={**metadata.parent_tags(cfg, overrides), **driver_tags(), **stopping.job_tags(),
                  **(plan.warm_start.tags() if plan.warm_start is not None else {})},
            params=metadata.parent_params(cfg),
            config_yaml=metadata.config_yaml(cfg),
            resume_run_id=resume_from,
        )) as parent_id, stopping.watch_requests(client, parent_id, signals):
            if resume_from is None:
                lineage.log(client, parent_id, data_record)
            context = tuning.trial_context(plan, cfg, fit, experiment_id, parent_id, data_record)
            trainable = trainer.make_trainable(cfg.trainer, dataset, context)
            log.debug("phase parent run created")
            # A tracking server that stops answering is waited for while trials go on, up to mlflow.max_outage_s;
            # longer, Tune stops and TrackingOutage (exit 1) ends the parent FAILED once the server answers.
            store = outage.clock(plan.tracking_uri, cfg.mlflow.max_outage_s)
            try:
                with signals.tune_running(), outage.watch(store, lambda: client.get_experiment(experiment_id),
                                                          compat.request_tune_stop):
                    # Only each trial's outcome is kept: Tune's ResultGrid holds every trial's history as a
                    # DataFrame.
                    trials = reconcile.outcomes(
                        tuning.fit(plan, cfg, trainable, fit, trainer.reported_metrics(cfg.trainer, task), context,
                                   experiment_id, parent_id, data_record, trainer.LOGS_FINAL_MODEL),
                        lambda result: trainer.best_checkpoint(result, plan.metric, plan.mode), plan.metric,
                    )
            except SweepInterrupted as interrupted:
                interrupted.run_name = plan.run_name  # Tune stopped and saved its state: resume=true continues it
                raise
            release_ray()  # nothing after Tune needs Ray: it stops while the sweep registers its model
            log.debug("phase tune finished")
            try:
                summary, registration, checkpoints = after_training(
                    client, plan, cfg, dataset, experiment_id, parent_id, trials,
                    interrupted=signals.received is not None,
                )
            except SweepInterrupted as interrupted:
                interrupted.run_name = plan.run_name  # resume=true registers and reports without training again
                raise
    log.debug("phase ray stopped")
    return SweepOutcome(plan, summary, registration, time.perf_counter() - started, checkpoints)


def after_training(client, plan: SweepPlan, cfg: DictConfig, dataset, experiment_id: str, parent_id: str,
                   trials, *, interrupted: bool = False) -> tuple[Any, Any, Any]:
    """Everything after ``Tuner.fit`` returned: square the runs with Tune, summarize, register, report, clean up.

    Against a tracking server the phase rides out an outage as the trials do: MLflow's calls give up within seconds
    (:func:`raysweep.tracking.outage.driver_http_retries`) and the whole phase is tried again, every 1-2 s, until it
    goes through; each step is idempotent (a version registered, a model logged or a report drawn by an attempt
    the outage cut short is found again, not repeated). A store that is a file runs it once and raises at once.

    Args:
        client: Client bound to the sweep's tracking and registry stores.
        plan: The sweep's plan.
        cfg: The composed config (``mlflow.max_outage_s``, ``cluster.keep_checkpoints``).
        dataset: The sweep's data (the new version's test score), or ``None``.
        experiment_id: The sweep's experiment.
        parent_id: The sweep's parent run.
        trials: Each trial's :class:`raysweep.tracking.reconcile.TrialOutcome`.
        interrupted: A signal stopped the trials: their runs stay as the signal left them.

    Returns:
        ``(summary, registration, checkpoints)``: the :class:`raysweep.analysis.SweepSummary`, the registration
        (``None`` with ``sweep.register=false``) and what :func:`raysweep.retention.after_registration` kept.

    Raises:
        TrackingOutage: The server did not answer for longer than ``mlflow.max_outage_s``: one line, exit 1; the
            parent run is ended FAILED when the server answers (:func:`raysweep.tracking.parent.parent_run`),
            and ``resume=true`` registers the best trial without training again.
    """
    from raysweep import analysis, memory, registry
    from raysweep.tracking import outage
    from raysweep.tracking.reconcile import record_outcomes

    store = outage.clock(plan.tracking_uri, cfg.mlflow.max_outage_s)
    first_look: dict[str, Any] = {}  # the sweep's version when first looked: None, and a later one is this phase's

    def attempt():
        record_outcomes(client, experiment_id, parent_id, trials, scheduler=plan.scheduler, resumed=plan.resume,
                        interrupted=interrupted)
        parent = client.get_run(parent_id)
        summary = analysis.summarize(client, parent)
        analysis.record_best(client, summary)
        log.debug("phase summarized")
        memory.trim()  # the store's answer for every child, freed, before registration and the report allocate
        registration = None
        if plan.register:
            first_look.setdefault("version", registry.sweep_version(client, parent, summary))
            registration = registry.register_best(client, parent, summary, dataset)
            if first_look["version"] is None and isinstance(registration, registry.Registration):
                # An earlier attempt registered it before the outage: this sweep's new version all the same.
                registration = dataclasses.replace(registration, created=True)
        log.debug("phase registered")
        _log_report(client, summary, registration, raise_outage=store.enabled)
        log.debug("phase report drawn")
        checkpoints = None
        if isinstance(registration, registry.Registration):  # only now: a resume needs them until here
            from raysweep import retention

            checkpoints = retention.after_registration(outage.patient(client, store), summary, trials, plan.run_dir,
                                                       cfg.cluster.keep_checkpoints)
        return summary, registration, checkpoints

    if not store.enabled:
        return attempt()
    with outage.driver_http_retries():
        return outage.after_training(store, attempt)


#: What summarizing, registering and drawing the report import (seconds): loaded while Ray starts and trials run,
#: not after the last trial; the trainer adds what its model logging imports (``REGISTRATION_IMPORTS``).
#: ``optuna.importance`` is the report's fANOVA, which imports scikit-learn (1.2 s where no trial needs it).
_REPORT_IMPORTS = ("raysweep.analysis", "raysweep.registry", "raysweep.report", "matplotlib.figure",
                   "optuna.importance")


def _prepare(plan: SweepPlan, warm: Sequence[str]):
    """Ready the sweep's tracking store and return a client bound to it; then, in a thread of its own, import
    ``warm`` (what registration and the report need). Runs while Ray starts (:class:`raysweep.runtime.Background`).
    """
    from mlflow import MlflowClient

    from raysweep import runtime
    from raysweep.tracking import sqlite_store

    sqlite_store.ready_store(plan.tracking_uri)  # two sweeps on a new sqlite file: its tables are made once
    client = MlflowClient(plan.tracking_uri, plan.registry_uri)
    import mlflow.models  # noqa: F401 - the data's lineage record infers a signature with it, next

    if warm:
        runtime.Background(runtime.import_modules, warm, name="raysweep-warm-up")
    return client


def _log_report(client, summary, registration, *, raise_outage: bool = False) -> None:
    """Draw the report onto the parent run; a drawing problem must not fail a sweep that trained and registered.

    With ``raise_outage``, a store that does not answer is raised, so that the phase waits for it and draws again.
    """
    from raysweep import report
    from raysweep.tracking.outage import unreachable

    try:
        report.log_report(client, summary, registration)
    except Exception as error:  # noqa: BLE001 - reported, and the notebooks can draw it again
        if raise_outage and unreachable(error):
            raise
        log.warning("sweep report not stored on the parent run: %s: %s", type(error).__name__, error)


def look_command(tracking_uri: str) -> str:
    """How to open the MLflow UI on a tracking store (its credentials masked: the terminal is no place for them)."""
    from raysweep.secrets import redact

    if tracking_uri.startswith(("http://", "https://")):
        return f"open {redact(tracking_uri)}"
    return f"mlflow ui --backend-store-uri {redact(tracking_uri)}"
