"""``resume=true``: find the sweep run to continue and the config it was started with."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from raysweep import config as config_mod
from raysweep.errors import RaySweepError
from raysweep.plan import SweepPlan


def resume_target(cfg: DictConfig, plan: SweepPlan) -> tuple[DictConfig, str]:
    """Find the sweep run to resume and the config it was started with.

    The sweep run is the one named ``sweep.run_name`` if it exists, else the latest run of this sweep. Its
    recorded config is used as it was (a resumed sweep trains what it started with); only the connection
    settings (``mlflow.*``, ``cluster.*``) come from this invocation (``mlflow.tags`` too, when it gives any).

    Returns:
        ``(config to run, parent run id to reopen)``.

    Raises:
        RaySweepError: No such sweep, it already finished, its driver still runs, or its Tune state is gone.
    """
    from mlflow import MlflowClient
    from ray import tune

    from raysweep.tracking import queries
    from raysweep.tracking.parent import driver_alive
    from raysweep.tracking.tags import DRIVER_PID_TAG

    client = MlflowClient(plan.tracking_uri, plan.registry_uri)
    experiment = client.get_experiment_by_name(plan.experiment_name)
    parents = [] if experiment is None else queries.sweeps(client, experiment.experiment_id, cfg.sweep.name)
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
        pid = parent.data.tags.get(DRIVER_PID_TAG)
        raise RaySweepError(f"resume=true: sweep run {name!r} is still running (pid {pid}); stop it first")
    run_dir = f"{plan.storage_path.rstrip('/')}/{name}"
    if not tune.Tuner.can_restore(run_dir):
        raise RaySweepError(
            f"resume=true: no Tune state for sweep run {name!r} at {run_dir}; "
            "pass the cluster.storage_path the sweep was started with"
        )
    recorded = queries.parent_config(client, parent.info.run_id)
    # A resume command that repeats only the connection settings keeps the tags the sweep started with.
    started_tags = recorded.mlflow.get("tags") or {}
    recorded.mlflow = cfg.mlflow
    if not cfg.mlflow.tags and started_tags:
        recorded.mlflow.tags = started_tags
    recorded.cluster = cfg.cluster
    recorded.sweep.run_name = name
    recorded.resume = True
    merged = OmegaConf.merge(OmegaConf.structured(config_mod.RaySweepConfig), recorded)
    return merged, parent.info.run_id
