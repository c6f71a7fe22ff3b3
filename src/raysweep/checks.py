"""Checks of what a command is handed - store URIs, names, a Ray address - made before anything starts.

Each refuses with one :class:`~raysweep.errors.RaySweepError` line naming the problem and the fix, so a typo
fails in a second with exit 2: before Ray starts, before any MLflow run, experiment or version exists, and
before MLflow's own HTTP retries (minutes) or Ray's wait for a cluster that is not there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from raysweep.errors import RaySweepError

#: The variable that sets how long a server (MLflow, a Ray cluster) gets to answer before raysweep gives up.
SERVER_TIMEOUT_ENV = "RAYSWEEP_SERVER_TIMEOUT_S"
#: Seconds a server gets when :data:`SERVER_TIMEOUT_ENV` is not set.
DEFAULT_SERVER_TIMEOUT_S = 10.0
#: Store schemes MLflow itself serves (databases by their SQLAlchemy dialect, ``+driver`` dropped).
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "uc", "databricks-uc")
#: Entry-point groups through which MLflow plugins add schemes: a plugin's scheme is accepted as well.
_PLUGIN_GROUPS = {"MLFLOW_TRACKING_URI": "mlflow.tracking_store", "MLFLOW_REGISTRY_URI": "mlflow.model_registry_store"}
#: Ray's own address for "whichever Ray this machine runs", which raysweep never follows.
AUTO = "auto"


def server_timeout(environ: Mapping[str, str] = os.environ) -> float:
    """Seconds a tracking server or Ray cluster gets to answer: :data:`SERVER_TIMEOUT_ENV`, else 10.

    Raises:
        RaySweepError: The variable is not a positive number.
    """
    raw = environ.get(SERVER_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_SERVER_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise RaySweepError(f"{SERVER_TIMEOUT_ENV}={raw!r} is not a number of seconds; set it to e.g. 10, or unset it")
    return value


def store_uri(uri: str | None, variable: str = "MLFLOW_TRACKING_URI", setting: str | None = None) -> None:
    """Refuse an MLflow store URI that MLflow would refuse later, or take as a folder: ``file:``, a plain path,
    an unknown scheme. ``None`` (no separate registry) passes.

    Args:
        uri: The tracking or registry URI.
        variable: Where a user sets it: ``MLFLOW_TRACKING_URI`` or ``MLFLOW_REGISTRY_URI`` (named in the fix).
        setting: The config key or flag it came from as well (``mlflow.tracking_uri``), named in the message.

    Raises:
        RaySweepError: A plain-folder store or an unknown scheme.
    """
    if uri is None:
        return
    from raysweep.secrets import redact

    where = f"{setting} / {variable}" if setting else variable
    what = "model registry" if variable == "MLFLOW_REGISTRY_URI" else "tracking store"
    scheme = uri.strip() if uri.strip() in ("databricks", "databricks-uc", "uc") else \
        uri.partition(":")[0].lower() if ":" in uri else ""
    if scheme in ("", "file") or len(scheme) == 1:  # a path (C:\\... on Windows) or file:///...
        raise RaySweepError(
            f"{where}={redact(uri)!r}: a plain folder is no MLflow {what} raysweep can use (MLflow 3 refuses "
            f"file stores); set {variable} to sqlite:///mlflow.db (a file) or an http(s):// tracking server"
        )
    if scheme.split("+")[0] not in (*TRACKING_SCHEMES, *_plugin_schemes(variable)):
        raise RaySweepError(
            f"{where}={redact(uri)!r}: unknown scheme {scheme + ':'!r} for an MLflow {what}; set {variable} to "
            "sqlite:///FILE.db, postgresql://..., mysql://... or http(s)://HOST:PORT"
        )


def _plugin_schemes(variable: str) -> tuple[str, ...]:
    from importlib.metadata import entry_points

    return tuple(ep.name for ep in entry_points(group=_PLUGIN_GROUPS.get(variable, "mlflow.tracking_store")))


def model_name(name: str | None, what: str) -> None:
    """Refuse a registered model name MLflow or a ``models:/`` URI cannot take: empty, ``/``, ``:``, ``@``,
    ``.``/``..``, or whitespace at either end.

    Args:
        name: The name.
        what: Where it was given, for the message (``DEST_NAME``, ``mlflow.registered_model``).

    Raises:
        RaySweepError: The name cannot be a registered model's.
    """
    text = "" if name is None else str(name)
    bad = next((c for c in ("/", ":", "@") if c in text), None)
    if not text.strip():
        problem = "is empty"
    elif bad:
        # '@' starts an alias and '/' a version in models:/NAME@ALIAS and models:/NAME/VERSION.
        problem = f"contains {bad!r}"
    elif text != text.strip() or text in (".", ".."):
        problem = "is not a name"
    else:
        return
    raise RaySweepError(f"{what} {text!r} {problem}; a registered model name takes letters, digits, '-', '_' and "
                        "'.', without '/', ':' or '@' (e.g. fraud-rf-prod)")


def run_name(name: str) -> None:
    """Refuse a ``sweep.run_name`` that is not one folder name (it names the sweep's Tune folder).

    Raises:
        RaySweepError: Empty, ``.``/``..``, or a path separator in it.
    """
    separators = {"/", "\\", os.sep, *([os.altsep] if os.altsep else [])}
    if not name.strip() or name in (".", "..") or any(s in name for s in separators) or "\0" in name:
        raise RaySweepError(
            f"sweep.run_name={name!r} is not a folder name (it names the sweep's Tune folder under "
            "cluster.storage_path); use letters, digits, '-' and '_', without '/' or '\\'"
        )


def ray_address(address: str | None, environ: Mapping[str, str] = os.environ, *, required: bool = False,
                timeout: float | None = None) -> str | None:
    """The Ray cluster to join (``cluster.address``, else ``RAY_ADDRESS``), checked to answer; ``None``: start one.

    Ray's ``auto`` joins whichever Ray happens to run on this machine (another user's, a test's), so it is
    refused. A ``HOST:PORT`` or ``ray://HOST:PORT`` address must accept a TCP connection within ``timeout``
    (default :func:`server_timeout`), instead of Ray's long wait for a cluster that is not there.

    Args:
        address: ``cluster.address``.
        environ: The environment (``RAY_ADDRESS``; a Ray job's driver has it set).
        required: The cluster profile joins an existing cluster (``cluster=remote``): no address is an error.
        timeout: Seconds the address gets to accept a connection.

    Raises:
        RaySweepError: ``auto``, a missing address where one is required, a malformed or unreachable one.
    """
    given, source = (address, "cluster.address") if address else (environ.get("RAY_ADDRESS") or None, "RAY_ADDRESS")
    if given is None:
        if required:
            raise RaySweepError("cluster=remote joins an existing Ray cluster but none is named; set "
                                "cluster.address=HOST:PORT (or RAY_ADDRESS), or submit with raysweep submit")
        return None
    given = str(given).strip()
    if given.lower() == AUTO:
        raise RaySweepError(f"{source}=auto would join whichever Ray runs on this machine; name the cluster: "
                            f"{source}=HOST:PORT (its GCS address), or leave it unset for a local Ray")
    host, port = _host_port(given, source)
    _connect(host, port, f"{source}={given}", server_timeout(environ) if timeout is None else timeout)
    return given


def _host_port(address: str, source: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    # ray://HOST:PORT is Ray Client (default port 10001); HOST[:PORT] the cluster's GCS (default 6379).
    default = 10001 if address.startswith("ray://") else 6379
    try:
        parts = urlsplit(address if "://" in address else f"gcs://{address}")
        scheme, host, port = parts.scheme, parts.hostname, parts.port or default
    except ValueError:  # a port that is no number, a malformed IPv6 host
        scheme, host, port = "", None, 0
    if scheme in ("http", "https"):
        raise RaySweepError(f"{source}={address} is a dashboard URL, which raysweep submit and ray job take; a sweep "
                            "joins the cluster's GCS address HOST:PORT (or use raysweep submit, or unset it for a "
                            "local Ray)")
    if not host or scheme not in ("gcs", "ray"):
        raise RaySweepError(f"{source}={address!r} is not a Ray address; use HOST:PORT (the head's GCS port, "
                            "e.g. 10.0.0.5:6379) or ray://HOST:10001")
    return host, port


def _connect(host: str, port: int, what: str, timeout: float) -> None:
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as error:
        reason = "no answer within {:g} s".format(timeout) if isinstance(error, TimeoutError) else \
            (error.strerror or type(error).__name__)
    raise RaySweepError(f"{what}: no Ray cluster answers there ({reason}); start the cluster or fix the address "
                        f"(raise {SERVER_TIMEOUT_ENV} for a slow network)")


def places(cfg) -> None:
    """Check where a sweep's config says it writes and runs: store URIs, run and model names, outage, local CPUs.

    Args:
        cfg: The composed raysweep config (its ``mlflow``, ``sweep`` and ``cluster`` sections).

    Raises:
        RaySweepError: The first value that cannot work, in one line.
    """
    store_uri(cfg.mlflow.tracking_uri, "MLFLOW_TRACKING_URI", "mlflow.tracking_uri")
    store_uri(cfg.mlflow.registry_uri or None, "MLFLOW_REGISTRY_URI", "mlflow.registry_uri")
    run_name(str(cfg.sweep.run_name))
    if cfg.sweep.register:  # else the name is never used (a trainer with no model says registered_model: unused)
        model_name(cfg.mlflow.registered_model, "mlflow.registered_model")
    outage = cfg.mlflow.get("max_outage_s", 300)
    if outage is None or outage <= 0:
        raise RaySweepError(f"mlflow.max_outage_s={outage}; it must be > 0 (seconds a sweep waits for a tracking "
                            "server that does not answer), e.g. 300")
    num_cpus = cfg.cluster.num_cpus
    if num_cpus is not None and num_cpus < 1:
        raise RaySweepError(f"cluster.num_cpus={num_cpus}; a local Ray needs at least 1 CPU, or null for all of "
                            "this machine's")
