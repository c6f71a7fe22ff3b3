"""Reaching a shared MLflow server from every Ray node: what to forward, what to check, what to refuse.

Ray workers on other nodes see neither the driver's environment nor its files: MLflow's connection variables
travel to them in the runtime_env, and a tracking store that is a file on the driver's disk is refused on a
multi-node cluster. Credentials only ever travel in environment variables; whatever raysweep writes or prints
goes through :func:`raysweep.secrets.redact` or :func:`raysweep.secrets.scrub` first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from raysweep.errors import RaySweepError
from raysweep.secrets import redact, without_userinfo  # redact: importable from here as before raysweep.secrets

#: The tracking store when neither config nor MLFLOW_TRACKING_URI names one: a sqlite file in the working directory.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: MLflow's variables every process of a sweep needs alike, on every node.
FORWARDED_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING",
    # MLflow's own retries of each call: a trial's writes (and the user's mlflow.log_* calls) retry as set here.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)

def forwarded_env(environ: Mapping[str, str], already_set: Mapping[str, str] | None = None) -> dict[str, str]:
    """The MLflow variables of ``environ`` to hand to Ray workers.

    Args:
        environ: The driver's environment.
        already_set: Variables the surrounding Ray job's runtime_env sets already; Ray refuses a driver
            that sets one of them again, and workers get them anyway.
    """
    return {k: environ[k] for k in FORWARDED_ENV if environ.get(k) and k not in (already_set or {})}


def absolute_tracking_uri(uri: str, cwd: str | os.PathLike | None = None) -> str:
    """Make a relative ``sqlite:///file.db`` URI absolute, so every process agrees on the file."""
    from pathlib import Path

    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = Path(cwd or os.getcwd()) / uri[len(prefix):]
        return prefix + str(path.resolve())
    return uri


#: Full store URIs by their masked form, known only to this process (the sweep's driver). What Tune pickles into
#: a sweep's state (its callbacks, its stopper) keeps the masked form and finds the full URI here when it connects.
_FULL_URIS: dict[str, str] = {}


def remember_uri(uri: str | None) -> str | None:
    """Keep ``uri`` in this process and return the form safe to store (credentials masked).

    A resumed sweep calls this before Tune restores its state, whose objects then find the full URI again.
    """
    if uri is None:
        return None
    from raysweep import secrets

    secrets.remember(uri)  # error lines and stored tracebacks get its secrets masked too
    safe = redact(uri)
    _FULL_URIS[safe] = uri
    return safe


def full_uri(safe: str | None) -> str | None:
    """The full URI :func:`remember_uri` masked (``safe`` itself when it had nothing to mask)."""
    return None if safe is None else _FULL_URIS.get(safe, safe)


def job_env_vars(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``env_vars`` of the Ray job this driver runs in (empty outside a job)."""
    from raysweep import compat

    raw = compat.job_config_json(environ)
    if not raw:
        return {}
    return dict((json.loads(raw).get("runtime_env") or {}).get("env_vars") or {})


def is_local_store(uri: str) -> bool:
    """Whether ``uri`` is a store on this machine's disk (sqlite, file, a plain path)."""
    if uri.split(":")[0] in ("databricks", "databricks-uc", "uc"):
        return False  # a hosted service, named by profile
    scheme = urlsplit(uri).scheme
    return scheme in ("", "file", "sqlite") or (len(scheme) == 1 and uri[1:3] in (":\\", ":/"))


def check_server(uri: str, timeout: float | None = None, variable: str = "MLFLOW_TRACKING_URI") -> None:
    """Fail in one line when an HTTP tracking server does not answer; other stores pass unchecked.

    Args:
        uri: The tracking or registry URI.
        timeout: Seconds the server gets to answer; default :func:`raysweep.checks.server_timeout` (10 s, or
            ``RAYSWEEP_SERVER_TIMEOUT_S``). A server that accepts the connection and never answers fails too.
        variable: The variable the fix names (``MLFLOW_REGISTRY_URI`` for a registry).

    Raises:
        RaySweepError: The server is unreachable or answers its health check with an error.
    """
    if urlsplit(uri).scheme not in ("http", "https"):
        return
    if timeout is None:
        from raysweep.checks import server_timeout

        timeout = server_timeout()
    import urllib.error
    import urllib.request

    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(urllib.request.Request(without_userinfo(health)), timeout=timeout):
            return
    except urllib.error.HTTPError as error:
        problem = f"answers {error.code} {error.reason}"
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        problem = f"does not answer ({reason})"
    raise RaySweepError(
        f"MLflow {'registry' if 'REGISTRY' in variable else 'tracking'} server {redact(uri)} {problem}; start it or "
        f"point {variable} at a running one"
    )


def check_reachable_from_nodes(uri: str, alive_nodes: int, what: str = "tracking store") -> None:
    """Refuse a store on the driver's disk when trials may run on other machines.

    Raises:
        RaySweepError: ``uri`` is a local file and the cluster has more than one node.
    """
    if alive_nodes > 1 and is_local_store(uri):
        raise RaySweepError(
            f"the MLflow {what} {redact(uri)} is a file on this machine, which the other {alive_nodes - 1} node(s) of "
            "the Ray cluster cannot reach; set MLFLOW_TRACKING_URI to a tracking server (see README: team server)"
        )


def ray_runtime_env(connecting: bool, environ: Mapping[str, str] = os.environ) -> dict:
    """runtime_env fields that give every Ray worker the driver's MLflow connection and raysweep's code.

    A local Ray's workers are children of the raylet this driver started, so they inherit its environment,
    secrets included: nothing is forwarded then, because Ray's runtime env agent writes every ``env_vars`` it
    sets up, verbatim, into ``runtime_env_agent.log`` (readable by whoever reads the node's Ray logs).

    Args:
        connecting: The driver joins an existing cluster, whose workers see only what ``env_vars`` carries.
            Unless it runs as a Ray job (which brought the code already), the raysweep package goes along as a
            py_module: the cluster may not have it installed, or have another version.
        environ: The driver's environment.
    """
    from pathlib import Path

    fields: dict = {}
    env_vars = forwarded_env(environ, job_env_vars(environ)) if connecting else {}
    if env_vars:
        fields["env_vars"] = env_vars
    if connecting and not _in_job(environ):
        fields["py_modules"] = [str(Path(__file__).resolve().parent)]
    return fields


def _in_job(environ: Mapping[str, str]) -> bool:
    from raysweep import compat

    return compat.job_config_json(environ) is not None

