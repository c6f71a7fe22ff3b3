"""``resume=true``: find the sweep run to continue and the config it was started with."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from raysweep import config as config_mod
from raysweep.errors import RaySweepError
from raysweep.plan import SweepPlan

log = logging.getLogger(__name__)

#: Config keys a resume takes from its own command line: where to connect, and the switches of resuming itself.
APPLIED = ("mlflow", "cluster", "resume", "sweep.run_name")


def resume_target(cfg: DictConfig, plan: SweepPlan, overrides: Sequence[str] = ()) -> tuple[DictConfig, str]:
    """Find the sweep run to resume and the config it was started with.

    The sweep run is the one named ``sweep.run_name`` if it exists, else the latest unfinished run of this sweep.
    Its recorded config is used as it was (a resumed sweep trains what it started with): only the connection
    settings (``mlflow.*``, ``cluster.*``) come from this invocation (``mlflow.tags`` too, when it gives any);
    the other overrides that would change it are named in a warning. The recorded config is data: the code it
    names must be what this invocation composes (:func:`raysweep.trust.check`).

    Args:
        cfg: The config this invocation composed (``+sweep=NAME ... resume=true``).
        plan: Its plan.
        overrides: This invocation's command-line overrides, to name those the resume ignores.

    Returns:
        ``(config to run, parent run id to reopen)``.

    Raises:
        RaySweepError: No such sweep, it already finished, another driver holds it, its config names code this
            command does not, or its Tune state is gone.
    """
    from mlflow import MlflowClient
    from ray import tune

    from raysweep import trust
    from raysweep.tracking import lease, queries

    client = MlflowClient(plan.tracking_uri, plan.registry_uri)
    experiment = client.get_experiment_by_name(plan.experiment_name)
    parents = [] if experiment is None else queries.sweeps(client, experiment.experiment_id, cfg.sweep.name)
    named = [p for p in parents if p.info.run_name == plan.run_name]
    if not (named or parents):
        raise RaySweepError(
            f"resume=true: no sweep {cfg.sweep.name!r} in experiment {plan.experiment_name!r} to resume; "
            "run it without resume=true"
        )
    unfinished = [p for p in parents if p.info.status != "FINISHED"]
    if not (named or unfinished):
        raise RaySweepError(f"resume=true: every run of sweep {cfg.sweep.name!r} finished (the latest is "
                            f"{parents[0].info.run_name!r}); start a new sweep without resume=true")
    parent = (named or unfinished)[0]
    name = parent.info.run_name
    if parent.info.status == "FINISHED":
        raise RaySweepError(f"resume=true: sweep run {name!r} already finished; start a new sweep without resume=true")
    holder = lease.held_by_other(parent)
    if holder is not None:
        raise RaySweepError(f"resume=true: sweep run {name!r} is still running (driver {holder.describe()}); "
                            "stop it first or wait until it ends")
    recorded = queries.parent_config(client, parent.info.run_id)
    trust.check(recorded, cfg, command="resume=true", where=f"sweep run {name!r}")
    run_dir = f"{plan.storage_path.rstrip('/')}/{name}"
    if not tune.Tuner.can_restore(run_dir):
        raise RaySweepError(
            f"resume=true: no Tune state for sweep run {name!r} at {run_dir}; "
            "pass the cluster.storage_path the sweep was started with"
        )
    ignored = ignored_overrides(overrides, cfg, recorded)
    if ignored:
        log.warning("resume=true ignores %s: sweep run %r resumes with the config it started with (only mlflow.* "
                    "and cluster.* apply); start a new sweep to change them", " ".join(ignored), name)
    # A resume command that repeats only the connection settings keeps the tags the sweep started with.
    started_tags = recorded.mlflow.get("tags") or {}
    recorded.mlflow = cfg.mlflow
    if not cfg.mlflow.tags and started_tags:
        recorded.mlflow.tags = started_tags
    recorded.cluster = cfg.cluster
    _unmask(recorded, cfg)
    recorded.sweep.run_name = name
    recorded.resume = True
    merged = OmegaConf.merge(OmegaConf.structured(config_mod.RaySweepConfig), recorded)
    return merged, parent.info.run_id


def ignored_overrides(overrides: Sequence[str], cfg: DictConfig, recorded: DictConfig) -> list[str]:
    """The overrides that ask for a value other than the recorded one, outside :data:`APPLIED`.

    Repeating the sweep's original overrides is fine (they equal what was recorded); ``sweep.num_samples=99``
    on a sweep that started with 16 is named.
    """
    from raysweep.secrets import MASK, scrub

    ignored = []
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        # `+sweep=NAME` picks the sweep being resumed; Hydra's own keys are no config.
        if key in ("", "sweep") or key.startswith("hydra") or any(key == a or key.startswith(f"{a}.") for a in APPLIED):
            continue
        wanted, stored = (_plain(OmegaConf.select(c, key, default=None)) for c in (cfg, recorded))
        if MASK in str(stored):  # a secret the store could not keep: the command's value is used (_unmask)
            continue
        if wanted != stored:
            ignored.append(scrub(override))
    return ignored


def _unmask(recorded: DictConfig, cfg: DictConfig) -> None:
    """Put back the secrets the stored config masked (``s3://***@...``) from this command's config, or refuse.

    A value is taken from ``cfg`` only when ``cfg`` records the same way (the same value, secret masked).

    Raises:
        RaySweepError: A masked value this command does not give again.
    """
    from raysweep.secrets import MASK
    from raysweep.tracking.metadata import public_config

    masked = [key for key, value in _leaves(OmegaConf.to_container(recorded, resolve=False))
              if isinstance(value, str) and MASK in value]
    if not masked:
        return
    public = public_config(cfg)
    for key in masked:
        stored = OmegaConf.select(recorded, key)
        if OmegaConf.select(public, key, default=None) != stored:
            raise RaySweepError(f"resume=true: the stored config hides a secret in {key} ({stored!r}); pass "
                                f"{key}=... with its secret on this command line, as when the sweep started")
        OmegaConf.update(recorded, key, OmegaConf.select(cfg, key), merge=False)


def _leaves(node, prefix: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, f"{prefix}{index}.")
    else:
        yield prefix.rstrip("."), node


def _plain(node):
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    return getattr(node, "value", node)  # an enum member compares by its name as recorded
