"""Start a team MLflow server on this machine, to try raysweep's shared setup (and for its tests).

The real thing, on loopback, in one temp folder: a throwaway PostgreSQL cluster with a password as the backend
store, a single-node Ceph radosgw as the S3 artifact store (RAM-backed, no disks), and ``mlflow server
--serve-artifacts --app-name basic-auth`` in front of both, so clients need only ``MLFLOW_TRACKING_URI`` and
their MLflow user (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``): no database URL, no S3 keys.
Every password is made up at start-up and printed once, for you to export.

    uv run python scripts/team_server.py            # prints the URI to export; Ctrl-C stops everything

Needs Debian's ``postgresql`` and ``radosgw ceph-mon ceph-osd`` packages (``.ci/run`` installs them).
Every process is started here and stopped here by its PID; nothing is left behind but the temp folder,
which is removed too.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
BUCKET = "mlflow"


@dataclass(frozen=True)
class S3Store:
    """An S3 endpoint with a bucket and the keys only the tracking server gets."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str

    def client(self):
        """A boto3 S3 client for this store."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1")


@dataclass(frozen=True)
class TeamServer:
    """A running team server: its URL and a team member's MLflow user, and what stands behind it."""

    url: str
    backend_store_uri: str  # postgresql://mlflow:PASSWORD@...: only the server has it
    s3: S3Store
    log_dir: Path
    username: str
    password: str
    admin_password: str

    def client_env(self) -> dict[str, str]:
        """What a team member exports: the server's URL and their MLflow user (basic auth)."""
        return {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_TRACKING_USERNAME": self.username,
                "MLFLOW_TRACKING_PASSWORD": self.password}

    def secrets(self) -> dict[str, str]:
        """Every secret of the stack by what it is, for tests that look for them where they must not be."""
        from urllib.parse import urlsplit

        return {"MLFLOW_TRACKING_PASSWORD": self.password, "admin password": self.admin_password,
                "database password": urlsplit(self.backend_store_uri).password or "",
                "S3 secret key": self.s3.secret_key}


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], bool], what: str, timeout: float, log: Path | None = None) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` and the tail of ``log`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s\n{tail}")


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    """Whether ``url`` answers a GET with a 2xx status."""
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as response:
        return 200 <= response.status < 300


@contextmanager
def process(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` in its own process group, output to ``log``; stop the group on exit (TERM, then KILL)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it started."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; on a developer's machine the current user runs it.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres(log_dir: Path, password: str) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port whose user ``mlflow`` logs in with ``password``
    over TCP; yields the backend store URI (password included)."""
    bin_dir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
    # Its own folder under /tmp: a test's temp folder is private to root, which the postgres user cannot enter.
    data = Path(tempfile.mkdtemp(prefix="raysweep-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    log = log_dir / "postgres.log"
    try:
        pwfile = data / "pwfile"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        # Passwords over TCP, where every client connects; the Unix socket (only pg_ctl's) stays trusted.
        subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data / "db"), "--auth-local=trust",
                                     "--auth-host=scram-sha-256", "--pwfile", str(pwfile), "-U", "mlflow"]),
                       check=True, capture_output=True)
        pwfile.unlink()
        options = f"-p {port} -k {data} -c listen_addresses={HOST} -c fsync=off"
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-o", options,
                                     "-l", str(data / "server.log"), "-w", "start"]), check=True, capture_output=True)
        try:
            subprocess.run([str(bin_dir / "createdb"), "-h", HOST, "-p", str(port), "-U", "mlflow", "mlflow"],
                           check=True, capture_output=True, env={**os.environ, "PGPASSWORD": password})
            yield f"postgresql://mlflow:{password}@{HOST}:{port}/mlflow"
        finally:
            subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"]),
                           capture_output=True)
    finally:
        if (data / "server.log").exists():
            shutil.copy(data / "server.log", log)
        shutil.rmtree(data, ignore_errors=True)


_CEPH_CONF = """\
[global]
fsid = {fsid}
mon host = v2:{host}:{mon_port}
mon initial members = a
# One node, no keys: every daemon and client trusts the others (loopback only).
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
mon allow pool size one = true
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
# RAM-backed object store: nothing to format, gone when the OSD stops.
osd objectstore = memstore
memstore device bytes = 2147483648
run dir = {dir}/run
admin socket = {dir}/run/$name.asok
log file = {dir}/log/$name.log
[mon.a]
mon data = {dir}/mon
[osd.0]
osd data = {dir}/osd
[client.rgw]
rgw frontends = beast endpoint={host}:{rgw_port}
rgw data = {dir}/rgw
"""


@contextmanager
def ceph_s3(work: Path) -> Iterator[S3Store]:
    """A single-node Ceph (one monitor, one RAM-backed OSD) with radosgw serving S3; yields the store."""
    fsid = str(uuid.uuid4())
    mon_port, rgw_port = free_port(), free_port()
    for sub in ("run", "log", "mon", "osd", "rgw"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    conf = work / "ceph.conf"
    conf.write_text(_CEPH_CONF.format(fsid=fsid, host=HOST, mon_port=mon_port, rgw_port=rgw_port, dir=work))
    c = ["-c", str(conf)]
    run = lambda *cmd: subprocess.run([*cmd, *c], check=True, capture_output=True, timeout=60)  # noqa: E731
    subprocess.run(["monmaptool", "--create", "--addv", "a", f"[v2:{HOST}:{mon_port}]", "--fsid", fsid,
                    str(work / "monmap")], check=True, capture_output=True)
    run("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(work / "monmap"))
    log = work / "log" / "daemons.log"
    with ExitStack() as stack:
        stack.enter_context(process(["ceph-mon", "-f", "-i", "a", *c], log))
        run("ceph", "osd", "create")
        run("ceph-osd", "-i", "0", "--mkfs")
        stack.enter_context(process(["ceph-osd", "-f", "-i", "0", *c], log))
        stack.enter_context(process(["radosgw", "-f", "-n", "client.rgw", *c], log))
        endpoint = f"http://{HOST}:{rgw_port}"
        wait_for(lambda: http_ok(endpoint), "radosgw", 90, log)
        access, secret = uuid.uuid4().hex[:20].upper(), uuid.uuid4().hex
        run("radosgw-admin", "user", "create", "--uid=mlflow", "--display-name=mlflow",
            f"--access-key={access}", f"--secret-key={secret}")
        store = S3Store(endpoint, access, secret, BUCKET)
        store.client().create_bucket(Bucket=BUCKET)
        yield store


_AUTH_INI = """\
[mlflow]
# Users see each other's experiments and models; only their own (and the admin) may change them.
default_permission = READ
database_uri = sqlite:///{db}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# A password is checked (PBKDF2) once a minute per user, not at every request: trials log many.
auth_cache_ttl_seconds = 60
"""


@contextmanager
def mlflow_server(backend_store_uri: str, s3: S3Store, log_dir: Path, admin_password: str) -> Iterator[str]:
    """``mlflow server --serve-artifacts --app-name basic-auth`` over ``backend_store_uri`` and ``s3``; yields its
    URL. Every request but ``/health`` needs a user: ``admin`` with ``admin_password`` to start with."""
    port = free_port()
    auth_ini = log_dir.parent / "basic_auth.ini"
    auth_ini.write_text(_AUTH_INI.format(db=log_dir.parent / "basic_auth.db"))
    env = {
        **os.environ,
        # Only the server holds storage credentials; clients upload and download through it.
        "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        # No job-execution workers (~2 GiB, slow start-up): this server only tracks and serves artifacts.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,  # the auth app's CSRF protection needs one
        # Its password stays off the command line, which every user of the machine can read (ps).
        "MLFLOW_BACKEND_STORE_URI": backend_store_uri,
    }
    cmd = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
           "--artifacts-destination", f"s3://{s3.bucket}/artifacts", "--serve-artifacts",
           "--host", HOST, "--port", str(port), "--workers", "1"]
    log = log_dir / "mlflow-server.log"
    with process(cmd, log, env=env):
        url = f"http://{HOST}:{port}"
        wait_for(lambda: http_ok(f"{url}/health"), "mlflow server", 120, log)
        yield url


def create_user(url: str, admin_password: str, username: str, password: str) -> None:
    """Add an MLflow user through the basic-auth app's REST API, as the admin."""
    import base64
    import json
    import urllib.request

    basic = base64.b64encode(f"admin:{admin_password}".encode()).decode()
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/users/create", data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass


@contextmanager
def team_server(work: Path | None = None) -> Iterator[TeamServer]:
    """PostgreSQL + Ceph radosgw + ``mlflow server --serve-artifacts --app-name basic-auth``, all on loopback,
    with one team member's user (``raysweep``); stopped on exit."""
    import secrets

    with ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="raysweep-team-")))
        log_dir = work / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        # Made up here, each recognisable by its prefix when a test finds one where it must not be.
        db_password, admin_password, password = (f"{what}-{secrets.token_hex(8)}" for what in ("pgpw", "adminpw", "userpw"))
        backend = stack.enter_context(postgres(log_dir, db_password))
        s3 = stack.enter_context(ceph_s3(work / "ceph"))
        url = stack.enter_context(mlflow_server(backend, s3, log_dir, admin_password))
        create_user(url, admin_password, "raysweep", password)
        yield TeamServer(url, backend, s3, log_dir, "raysweep", password, admin_password)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="keep state and logs here (default: a temp folder)")
    args = parser.parse_args()
    # SIGTERM (a supervisor, `timeout`) stops everything as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    started = time.perf_counter()
    with team_server(args.dir) as server:
        print(f"team server up in {time.perf_counter() - started:.1f} s (logs: {server.log_dir})")
        print(f"  backend store: {server.backend_store_uri.replace(server.secrets()['database password'], '***')}")
        print(f"  artifacts:     s3://{server.s3.bucket}/artifacts at {server.s3.endpoint} (only the server has keys)")
        print(f"  MLflow admin:  admin / {server.admin_password} (manage users at {server.url}/signup)")
        print("\n".join(f"export {k}={v}" for k, v in server.client_env().items()), flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        print("stopping", flush=True)


if __name__ == "__main__":
    main()
