"""``raysweep submit +sweep=NAME [overrides]``: run a sweep as a Ray job on an existing cluster.

The job brings your project and raysweep with it, so a cluster that has only the dependencies (Ray, MLflow, the
frameworks) runs exactly the submitted code: the working directory (your ``conf/``, modules and data files) as
the job's working_dir, which Ray makes every worker's current directory and puts on its path, and the
``raysweep`` package with its built-in configs inside (``raysweep/conf``, as the wheel lays it out) as a
py_module, which Ray puts on the path of the job's driver and of every worker on every node, ahead of any older
installed copy. MLflow's variables go with it in the runtime_env.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from raysweep.errors import RaySweepError

#: Never uploaded: environments, local stores, results, caches (Ray caps a working_dir at 100 MiB).
EXCLUDES = [
    ".venv", "venv", ".git", "mlflow.db", "*.db", "mlruns", "mlartifacts", "ray_results", "outputs", "multirun",
    "__pycache__", ".pytest_cache", ".ipynb_checkpoints", "*.egg-info", "dist", "build",
]
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


#: Prefix of the variables that carry an override's secret value to the job instead of its entrypoint.
SECRET_VAR = "RAYSWEEP_SECRET_"


def entrypoint(overrides: Sequence[str]) -> str:
    """The job's shell command: the sweep CLI on the cluster with ``cluster=remote`` unless told otherwise.

    Anyone who can list the cluster's jobs reads this command: pass it through :func:`secret_overrides` first.
    """
    args = list(overrides)
    if not any(a.startswith(("cluster=", "+cluster=")) for a in args):
        args.append("cluster=remote")
    return shlex.join(["python", "-m", "raysweep", *args])


def secret_overrides(overrides: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Overrides whose values carry a secret, moved into variables the job reads them from.

    ``data.path=s3://KEY:SECRET@bucket/x.csv`` becomes ``data.path=${oc.env:RAYSWEEP_SECRET_0}`` (Hydra reads the
    variable when the job composes its config) and ``{"RAYSWEEP_SECRET_0": "s3://KEY:SECRET@bucket/x.csv"}``
    joins the job's ``env_vars``, which only the job's processes and the node's Ray logs see, never the job list.

    Returns:
        The overrides to put in the entrypoint, and the variables to add to the job's ``env_vars``.
    """
    from raysweep.secrets import scrub

    kept, env = [], {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and scrub(value, [value]) != value:
            name = f"{SECRET_VAR}{len(env)}"
            env[name] = value
            override = f"{key}=${{oc.env:{name}}}"
        kept.append(override)
    return kept, env


def runtime_env(project_dir: Path, package_dir: Path, environ: Mapping[str, str],
                secret_vars: Mapping[str, str] | None = None) -> dict:
    """The job's runtime_env: the project as working_dir, raysweep as a py_module, MLflow's variables.

    Ray shows a job's runtime_env (``env_vars`` included) to whoever can reach the cluster's dashboard, and its
    runtime env agent writes it into ``runtime_env_agent.log`` on every node the job uses (see
    docs/team-server-and-cluster.md): secrets in here are the cluster's to keep.

    Args:
        project_dir: The user's project, the working directory (uploaded as the job's working_dir).
        package_dir: The ``raysweep`` package folder, built-in configs inside (uploaded as a py_module).
        environ: The submitting shell's environment; only MLflow's variables are taken.
        secret_vars: The variables :func:`secret_overrides` moved secret override values into.
    """
    from raysweep.remote import forwarded_env

    env = {"working_dir": str(project_dir), "excludes": EXCLUDES, "py_modules": [str(package_dir)]}
    env_vars = {**forwarded_env(environ), **(secret_vars or {})}
    if env_vars:
        env["env_vars"] = env_vars
    return env


def check_tracking_uri(environ: Mapping[str, str], overrides: Sequence[str]) -> str:
    """The tracking URI the job will use, refused when the cluster cannot reach it.

    Raises:
        RaySweepError: No tracking URI, or one that names a file on this machine.
    """
    from raysweep.remote import check_server, is_local_store, redact

    uri = next((o.split("=", 1)[1] for o in overrides if o.startswith("mlflow.tracking_uri=")), None)
    uri = uri or environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise RaySweepError(
            "MLFLOW_TRACKING_URI is not set; a submitted sweep needs a tracking server the cluster reaches "
            "(export MLFLOW_TRACKING_URI=http://...)"
        )
    if is_local_store(uri):
        raise RaySweepError(
            f"MLFLOW_TRACKING_URI={redact(uri)} is a file on this machine, which the cluster cannot "
            "reach; point it at a tracking server (see README: team server)"
        )
    from raysweep import checks

    checks.store_uri(uri, "MLFLOW_TRACKING_URI")  # an unknown scheme: one line now, not from the job later
    check_server(uri)
    return uri


def main(argv: Sequence[str] | None = None) -> int:
    """Submit the sweep, stream the job's logs, and return the job's exit status."""
    parser = argparse.ArgumentParser(
        prog="raysweep submit",
        description="Run a raysweep sweep as a Ray job: raysweep submit [--address URL] +sweep=NAME [overrides]",
    )
    parser.add_argument("--address", default=None,
                        help="Ray dashboard address, e.g. http://head:8265 (default: RAY_ADDRESS)")
    parser.add_argument("--no-wait", action="store_true", help="submit and print the job id without following it")
    parser.add_argument("--submission-id", default=None, help="job id to use (default: Ray picks one)")
    args, overrides = parser.parse_known_args(argv)
    if not any(o.startswith("+sweep=") for o in overrides):
        raise RaySweepError("say which sweep to run: raysweep submit +sweep=NAME [overrides]")

    from raysweep.search_space import quote_cli_overrides

    overrides = quote_cli_overrides(overrides)
    tracking_uri = check_tracking_uri(os.environ, overrides)
    public, secret_vars = secret_overrides(overrides)
    client = _client(args.address)
    # Ray's packaging notes (each file skipped, each upload) would bury the job's own log.
    logging.getLogger("ray").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as staging:  # uploaded by submit_job before it returns
        job_id = client.submit_job(
            entrypoint=entrypoint(public),
            runtime_env=runtime_env(Path.cwd(), package_with_conf(Path(staging)), os.environ, secret_vars),
            submission_id=args.submission_id,
            metadata={"raysweep.sweep": next(o for o in overrides if o.startswith("+sweep="))[7:]},
            # The driver only coordinates: it must not take a CPU a trial could use.
            entrypoint_num_cpus=0,
        )
    print(f"raysweep: submitted job {job_id} to {client.get_address()}", file=sys.stderr, flush=True)
    if args.no_wait:
        print(job_id)
        return 0
    try:
        _follow(client, job_id)
    except KeyboardInterrupt:
        _stop(client, tracking_uri, job_id)
        return 130
    info = client.get_job_info(job_id)
    status = str(getattr(info.status, "value", info.status))
    print(f"raysweep: job {job_id} {status}", file=sys.stderr, flush=True)
    if status == "SUCCEEDED":
        return 0
    return info.driver_exit_code or 1


def _stop(client, tracking_uri: str, job_id: str) -> None:
    """Ctrl-C while following: stop the job as ``raysweep stop`` does (``stop_job`` alone SIGKILLs its driver 3 s
    after SIGTERM, before it has ended its runs); a second Ctrl-C stops waiting and leaves it to Ray."""
    from raysweep import stopping
    from raysweep.tracking.queries import open_store

    def say(line: str) -> None:
        print(f"raysweep: {line}", file=sys.stderr, flush=True)

    say(f"interrupted; stopping job {job_id} (Ctrl-C again to stop waiting)")
    try:
        say(str(stopping.stop(client, open_store(tracking_uri), job_id, say=say)))
    except KeyboardInterrupt:
        client.stop_job(job_id)
        say(f"asked Ray to stop job {job_id}")


def package_with_conf(staging: Path) -> Path:
    """The ``raysweep`` package folder with the built-in configs in ``raysweep/conf``, as the wheel lays it out.

    An installed raysweep is that already; a checkout's ``src/raysweep`` gets copied into ``staging`` with the
    repository's ``conf/``, so the job finds the built-ins whatever folder it was submitted from.
    """
    from raysweep.config import CONF_DIR

    package_dir = Path(__file__).resolve().parent
    if (package_dir / "conf").is_dir():
        return package_dir
    staged = staging / "raysweep"
    shutil.copytree(package_dir, staged, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(CONF_DIR, staged / "conf")
    return staged


def _client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RaySweepError(
            f"cannot reach the Ray cluster at {address or os.environ.get('RAY_ADDRESS') or 'the default address'}: "
            f"{first} (pass --address http://HEAD:DASHBOARD_PORT or set RAY_ADDRESS)"
        ) from None


def _follow(client, job_id: str) -> None:
    """Print the job's log as it grows until the job ends."""
    import asyncio

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(tail())
    # The log stream can close a moment before the status turns terminal.
    deadline = time.monotonic() + 30
    while str(client.get_job_status(job_id)) not in _TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)


if __name__ == "__main__":
    from raysweep.__main__ import _fail

    try:
        sys.exit(main())
    except RaySweepError as e:
        _fail(str(e), 2)
