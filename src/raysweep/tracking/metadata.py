"""What the parent run records about a sweep: its config (credentials masked), overrides, versions, git commit.

Pure functions of the config (plus the environment's package versions and git), so they are tested as tables.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from raysweep.errors import RaySweepError
from raysweep.tracking.tags import (
    CONFIG_PREFIX,
    GIT_COMMIT,
    NOTE,
    OVERRIDES_TAG,
    SWEEP_TAG,
    TRIAL_NAME_TAG,
    VERSION_TAG_PREFIX,
)

#: Config sections logged as params on the parent run (credentials live in mlflow.* and cluster.*).
_PARAM_SECTIONS = ("sweep", "data", "trainer", "search_alg", "scheduler", "search_space")
#: Tag names a user's ``mlflow.tags`` may not take: MLflow's own (``mlflow.*``, e.g. the parent link and the run
#: name) and raysweep's (``raysweep.*``, ``config.*`` of PBT, ``trial_name``), which analysis and resume read back.
RESERVED_TAG_PREFIXES = ("mlflow.", "raysweep.", CONFIG_PREFIX)
RESERVED_TAGS = (TRIAL_NAME_TAG,)
#: Packages whose installed versions the parent run records.
_VERSIONED_PACKAGES = ("raysweep", "ray", "mlflow", "hydra-core", "scikit-learn", "numpy", "pandas")


def public_config(cfg: DictConfig) -> DictConfig:
    """The resolved config without secrets: the store URIs left out, every other value scrubbed.

    Any value may quote a URI with credentials (``cluster.storage_path``, ``data.path``, a searcher's
    ``storage``) or a password itself: :func:`raysweep.secrets.scrub` masks both.
    """
    from raysweep.secrets import scrub

    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    uris = [container.get("mlflow", {}).get(k) for k in ("tracking_uri", "registry_uri")]
    public = OmegaConf.create(_scrubbed(container, lambda text: scrub(text, uris)))
    for key in ("tracking_uri", "registry_uri"):
        public.mlflow[key] = "<from environment>" if public.mlflow.get(key) else None
    return public


def _scrubbed(node: Any, scrub) -> Any:
    """``node`` with ``scrub`` applied to every string in it (keys included: a dict of URIs is possible)."""
    if isinstance(node, dict):
        return {scrub(k) if isinstance(k, str) else k: _scrubbed(v, scrub) for k, v in node.items()}
    if isinstance(node, list):
        return [_scrubbed(v, scrub) for v in node]
    return scrub(node) if isinstance(node, str) else node


def config_yaml(cfg: DictConfig) -> str:
    """The ``config.yaml`` artifact of the parent run: :func:`public_config` as YAML."""
    return OmegaConf.to_yaml(public_config(cfg))


def public_overrides(overrides: Sequence[str]) -> list[str]:
    """Command-line overrides with credentials (in URI values, or passwords themselves) masked."""
    from raysweep.secrets import scrub

    uris = [value for _, sep, value in (o.partition("=") for o in overrides) if sep]
    return [scrub(o, uris) for o in overrides]


def parent_params(cfg: DictConfig) -> dict[str, str]:
    """Key config values as flat ``section.key`` params for the parent run."""
    public = OmegaConf.to_container(public_config(cfg))
    params = {"mlflow.registered_model": cfg.mlflow.registered_model, "mlflow.mode": cfg.mlflow.mode.value}
    source = str(getattr(cfg.data.source, "value", cfg.data.source))
    for section in _PARAM_SECTIONS:
        for key, value in _flatten(public[section], section).items():
            unused = source == "none" or key in _UNUSED.get(source, ())
            if key.startswith("data.") and key != "data.source" and unused:
                continue
            params[key] = "None" if value is None else str(value)
    return params


#: The data keys a source never reads, left out of the parent's params (a CSV's sweep logged data.n_samples=20000);
#: with data=none, every one but the source.
_UNUSED = {"file": ("data.n_samples", "data.fraud_rate", "data.n_noise_features"),
           "synthetic": ("data.path", "data.sep", "data.decimal", "data.encoding")}


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}"))
        return out
    return {prefix: node}


def user_tags(tags: Any) -> dict[str, str]:
    """The user's ``mlflow.tags`` as strings, set on the parent and on every trial's run.

    Args:
        tags: ``cfg.mlflow.tags`` (a mapping of tag name to value; ``None`` for none).

    Raises:
        RaySweepError: A key MLflow or raysweep writes itself (see :data:`RESERVED_TAG_PREFIXES`).
    """
    out = {str(key): "" if value is None else str(value) for key, value in (tags or {}).items()}
    reserved = sorted(k for k in out if k.startswith(RESERVED_TAG_PREFIXES) or k in RESERVED_TAGS)
    if reserved:
        raise RaySweepError(
            f"mlflow.tags key {reserved[0]!r} is reserved (MLflow's mlflow.*, raysweep's raysweep.*, config.*, "
            "trial_name); rename it, e.g. mlflow.tags={team: risk}"
        )
    return out


def parent_tags(cfg: DictConfig, overrides: Sequence[str], project_dir: Path | None = None) -> dict[str, str]:
    """The parent run's tags: the user's ``mlflow.tags``, sweep name, overrides, a one-line note, package versions,
    git commit.

    Args:
        cfg: The composed config.
        overrides: The command-line overrides.
        project_dir: Where to ask git for the commit (default: the working directory, else raysweep's checkout).
    """
    from importlib.metadata import PackageNotFoundError, version

    from raysweep.secrets import scrub

    tags = {
        **{k: scrub(v) for k, v in user_tags(cfg.mlflow.get("tags")).items()},
        SWEEP_TAG: cfg.sweep.name,
        OVERRIDES_TAG: " ".join(public_overrides(overrides)) or "(none)",
        NOTE: f"raysweep sweep {cfg.sweep.run_name}: {cfg.search_alg.name} search, {cfg.scheduler.name} scheduler, "
        f"{cfg.sweep.mode.value} {cfg.sweep.metric}",
    }
    for pkg in _VERSIONED_PACKAGES:
        try:
            tags[f"{VERSION_TAG_PREFIX}{pkg}"] = version(pkg)
        except PackageNotFoundError:
            pass
    if project_dir is None:
        from raysweep.config import CONF_DIR

        # The user's code is in the working directory; raysweep's own checkout when that is no git checkout.
        commit = git_commit(Path.cwd()) or git_commit(CONF_DIR.parent)
    else:
        commit = git_commit(project_dir)
    if commit:
        tags[GIT_COMMIT] = commit
    return tags


def git_commit(folder: Path) -> str | None:
    """The commit checked out in ``folder``, or ``None`` outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
