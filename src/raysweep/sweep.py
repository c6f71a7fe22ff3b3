"""Run a sweep: config -> plan -> Ray Tune -> MLflow -> analysis -> registry, one step after the other.

:func:`run` is the whole pipeline; each step lives in the module named for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from raysweep.errors import RaySweepError
from raysweep.plan import SweepPlan, check_strategy, claim_run_dir, make_plan

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
    plan = make_plan(cfg)
    # Before anything waits on MLflow's own retries (minutes) or starts Ray.
    remote.check_server(plan.tracking_uri)
    if plan.registry_uri and plan.registry_uri != plan.tracking_uri:
        remote.check_server(plan.registry_uri, variable="MLFLOW_REGISTRY_URI")
    runtime.cluster_address(cfg.cluster)  # "auto", a missing or silent Ray address: refused before anything exists
    resume_from = None
    if plan.resume:
        from raysweep.resume import resume_target

        cfg, resume_from = resume_target(cfg, plan, overrides)
        plan = make_plan(cfg)
    elif "://" not in plan.storage_path and Path(plan.run_dir).exists():
        raise RaySweepError(f"sweep run {plan.run_dir!r} already exists; pick a new sweep.run_name or add resume=true")
    check_strategy(cfg, plan)
    trainer = trainables.load(cfg.trainer.name)
    dataset = data.load(cfg.data) if trainer.NEEDS_DATA else None
    task = dataset.task if dataset is not None else None
    trainables.check_metrics(trainer, cfg, task)  # metrics that depend on the data's task, now it is known

    import ray
    from mlflow import MlflowClient

    from raysweep import analysis, registry, resources, stopping, tuning
    from raysweep.tracking import lineage, metadata, outage, queries
    from raysweep.tracking.parent import driver_tags, parent_run
    from raysweep.tracking.reconcile import record_outcomes

    if resume_from is None:  # last check before Ray: a concurrent sweep of the same name fails here, in one line
        claim_run_dir(plan)
    queries.ready_store(plan.tracking_uri)  # two sweeps on a new sqlite file: its tables are made once
    # Logging and registering a model and mlflow.search_runs go through MLflow's process-wide URIs.
    with runtime.session(cfg.cluster), compat.mlflow_store(plan.tracking_uri, plan.registry_uri):
        nodes = runtime.alive_nodes()
        for uri, what in ((plan.tracking_uri, "tracking store"), (plan.registry_uri, "model registry")):
            if uri:
                remote.check_reachable_from_nodes(uri, nodes, what=what)
        fit = resources.plan(
            cluster=ray.cluster_resources(),
            max_concurrent_trials=plan.max_concurrent_trials,
            **trainer.resource_needs(cfg.trainer),
        )
        client = MlflowClient(plan.tracking_uri, plan.registry_uri)
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
            # A tracking server that stops answering is waited for while trials go on, up to mlflow.max_outage_s;
            # longer, Tune stops and TrackingOutage (exit 1) ends the parent FAILED once the server answers.
            store = outage.clock(plan.tracking_uri, cfg.mlflow.max_outage_s)
            with signals.tune_running(), outage.watch(store, lambda: client.get_experiment(experiment_id),
                                                      compat.request_tune_stop):
                results = tuning.fit(plan, cfg, trainable, fit, trainer.reported_metrics(cfg.trainer, task), context,
                                     experiment_id, parent_id, data_record)
            record_outcomes(
                client, experiment_id, parent_id, results,
                lambda result: trainer.best_checkpoint(result, plan.metric, plan.mode),
                scheduler=plan.scheduler, resumed=plan.resume, interrupted=signals.received is not None,
            )
            parent = client.get_run(parent_id)
            summary = analysis.summarize(client, parent)
            analysis.record_best(client, summary)
            registration = registry.register_best(client, parent, summary, dataset) if plan.register else None
            _log_report(client, summary, registration)
            checkpoints = None
            if isinstance(registration, registry.Registration):  # only now: a resume needs them until here
                from raysweep import retention

                checkpoints = retention.after_registration(client, summary, results, plan.run_dir,
                                                           cfg.cluster.keep_checkpoints)
    return SweepOutcome(plan, summary, registration, time.perf_counter() - started, checkpoints)


def _log_report(client, summary, registration) -> None:
    """Draw the report onto the parent run; a drawing problem must not fail a sweep that trained and registered."""
    from raysweep import report

    try:
        report.log_report(client, summary, registration)
    except Exception as error:  # noqa: BLE001 - reported, and the notebooks can draw it again
        log.warning("sweep report not stored on the parent run: %s: %s", type(error).__name__, error)


def look_command(tracking_uri: str) -> str:
    """How to open the MLflow UI on a tracking store (its credentials masked: the terminal is no place for them)."""
    from raysweep.secrets import redact

    if tracking_uri.startswith(("http://", "https://")):
        return f"open {redact(tracking_uri)}"
    return f"mlflow ui --backend-store-uri {redact(tracking_uri)}"
