"""Start a two-node Ray cluster on this machine, to try ``raysweep submit`` (and for its tests).

A head node on 127.0.0.2 and a second node on 127.0.0.3, each with its own temp folder and every port pinned
to free ones away from Ray's defaults, with token authentication on (Ray's default since 2.59) and one shared
token file, so jobs, drivers and both nodes authenticate alike.

    uv run python scripts/local_cluster.py      # prints the variables to export; Ctrl-C stops both nodes

``--python`` picks the Python the nodes run (and with it what the cluster has installed): a cluster usually
has Ray, MLflow and the frameworks, but not raysweep, which each job then brings with it.

For tests: :func:`head_node` starts the head alone (a job server), :func:`two_node_cluster` both nodes, and
:func:`kill_node` takes the second one down mid-run the way a lost machine goes: every process SIGKILLed.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from team_server import free_port, http_ok, wait_for  # noqa: E402

HEAD_IP = "127.0.0.2"
WORKER_IP = "127.0.0.3"


@dataclass(frozen=True)
class LocalCluster:
    """A running two-node cluster: where to submit jobs, where drivers connect, and the auth settings."""

    dashboard_url: str  # JobSubmissionClient / `ray job submit --address`
    gcs_address: str  # ray.init(address=...) / RAY_ADDRESS for a driver
    env: dict[str, str] = field(repr=False)  # RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH: needed by every client
    temp_dirs: tuple[Path, Path] = ()


#: Worker ports of both nodes: 400 from a random base in this range (far from Ray's defaults, 10002-19999).
_WORKER_PORTS = (30000, 38400)


#: Ports handed out in this process: the kernel may give a port it freed again, and two of a node's processes
#: asked to bind one port fail its `ray start` (the dashboard and its agent drew the same one once).
_TAKEN: set[int] = set()


def _port(host: str = HEAD_IP) -> int:
    """A free port outside every node's worker-port range, never one handed out before (Ray refuses a port used
    twice)."""
    while True:
        port = free_port(host)
        if not _WORKER_PORTS[0] <= port < _WORKER_PORTS[1] + 400 and port not in _TAKEN:
            _TAKEN.add(port)
            return port


def _node_ports(first_worker_port: int) -> list[str]:
    return [
        "--node-manager-port", str(_port()), "--object-manager-port", str(_port()),
        "--min-worker-port", str(first_worker_port), "--max-worker-port", str(first_worker_port + 199),
        "--dashboard-agent-listen-port", str(_port()), "--dashboard-agent-grpc-port", str(_port()),
        "--runtime-env-agent-port", str(_port()), "--metrics-export-port", str(_port()),
    ]


def _ray(python: str, env: dict[str, str], *args: str, log: Path) -> None:
    with open(log, "ab") as out:
        subprocess.run([python, "-m", "ray.scripts.scripts", *args], env=env, check=True, stdout=out,
                       stderr=subprocess.STDOUT, timeout=120)


@contextmanager
def two_node_cluster(python: str = sys.executable, work: Path | None = None, cpus_per_node: int = 1) -> Iterator[LocalCluster]:
    """Start a head (127.0.0.2) and a second node (127.0.0.3); stop both on exit.

    Args:
        python: Interpreter the nodes (and so every worker and job driver) run.
        work: Folder for the token, logs and both nodes' temp folders (default: a new temp folder).
        cpus_per_node: CPUs each node offers.
    """
    with _cluster(python, work, cpus_per_node, nodes=2) as cluster:
        yield cluster


@contextmanager
def head_node(python: str = sys.executable, work: Path | None = None, cpus: int = 1) -> Iterator[LocalCluster]:
    """Start the head (127.0.0.2) alone, with its job server and dashboard; stop it on exit.

    Args:
        python: Interpreter the node (and so every worker and job driver) runs.
        work: Folder for the token, logs and the node's temp folder (default: a new temp folder).
        cpus: CPUs the node offers.
    """
    with _cluster(python, work, cpus, nodes=1) as cluster:
        yield cluster


def kill_node(cluster: LocalCluster, index: int = 1) -> list[int]:
    """SIGKILL every process of one node (default: the second), as when its machine is lost; returns their PIDs.

    A node's processes are the ones whose command line names its temp folder (raylet, agents, log monitor) and
    their descendants (the workers): the other node, the caller and its own Ray stay untouched.
    """
    folder = str(cluster.temp_dirs[index])
    parents = _parents()
    pids = set()
    for pid in parents:
        try:
            if folder.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.add(pid)
        except OSError:
            continue
    pids = _with_descendants(pids, parents)
    _signal_all(pids, (signal.SIGKILL,))
    return sorted(pids)


@contextmanager
def _cluster(python: str, work: Path | None, cpus_per_node: int, nodes: int) -> Iterator[LocalCluster]:
    with ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="raysweep-ray-")))
        token = work / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_USAGE_STATS_ENABLED": "0",
            # A job's `python ...` entrypoint resolves through PATH: make it the nodes' interpreter.
            "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            # Ray's own metric exporters would take fixed default ports.
            "AUTOSCALER_METRIC_PORT": str(_port()),
            "DASHBOARD_METRIC_PORT": str(_port()),
        }
        for name in ("RAY_ADDRESS", "VIRTUAL_ENV"):
            env.pop(name, None)
        base = random.randrange(*_WORKER_PORTS, 400)
        # Separate temp folders: on a shared one, one node's runtime-env agent deletes the other's job files.
        head_tmp, node_tmp = Path(tempfile.mkdtemp(prefix="rh-")), Path(tempfile.mkdtemp(prefix="rn-"))
        stack.callback(shutil.rmtree, head_tmp, True)
        stack.callback(shutil.rmtree, node_tmp, True)
        gcs_port, dashboard_port = _port(), _port()
        log = work / "ray-start.log"
        stack.callback(_stop_cluster, token)
        _ray(python, env, "start", "--head", f"--node-ip-address={HEAD_IP}", f"--port={gcs_port}",
             f"--num-cpus={cpus_per_node}", "--num-gpus=0", "--include-dashboard=true",
             f"--dashboard-host={HEAD_IP}", f"--dashboard-port={dashboard_port}",
             f"--ray-client-server-port={_port()}", f"--temp-dir={head_tmp}", "--disable-usage-stats",
             *_node_ports(base), log=log)
        gcs = f"{HEAD_IP}:{gcs_port}"
        if nodes > 1:
            _ray(python, env, "start", f"--address={gcs}", f"--node-ip-address={WORKER_IP}",
                 f"--num-cpus={cpus_per_node}", "--num-gpus=0", f"--temp-dir={node_tmp}", "--disable-usage-stats",
                 *_node_ports(base + 200), log=log)
        dashboard = f"http://{HEAD_IP}:{dashboard_port}"
        auth = {"Authorization": f"Bearer {token.read_text()}"}
        wait_for(lambda: http_ok(f"{dashboard}/api/version", auth), "Ray dashboard", 60, log)
        yield LocalCluster(dashboard, gcs, {k: env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")},
                           (head_tmp, node_tmp)[:nodes])


def _stop_cluster(token: Path) -> None:
    """Stop every process of the cluster by PID: those started with its token file, and their descendants.

    ``ray stop`` would stop every Ray on the machine, the caller's own included. Node processes are found by
    the token path in their environment; the agents and workers they start rename themselves over that
    memory (``ray::IDLE``), so those are found as their descendants, before anything is stopped.
    """
    marker = f"RAY_AUTH_TOKEN_PATH={token}".encode()
    parents = _parents()
    pids = set()
    for pid in parents:
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                pids.add(pid)
        except OSError:
            continue
    _signal_all(_with_descendants(pids, parents), (signal.SIGTERM, signal.SIGKILL))


def _parents() -> dict[int, int]:
    """PID -> parent PID of every process but this one."""
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return parents


def _with_descendants(pids: set[int], parents: dict[int, int]) -> set[int]:
    pids = set(pids)
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in pids} - pids - {os.getpid()}
        pids |= children
        grew = bool(children)
    return pids


def _signal_all(pids: set[int], signals: tuple[signal.Signals, ...]) -> None:
    """Send each signal to every PID in turn, waiting up to 5 s after each for them to be gone."""
    for sig in signals:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter the nodes run (default: this one)")
    parser.add_argument("--cpus-per-node", type=int, default=1)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with two_node_cluster(args.python, cpus_per_node=args.cpus_per_node) as cluster:
        print(f"export RAY_ADDRESS={cluster.dashboard_url}")
        for key, value in cluster.env.items():
            print(f"export {key}={value}")
        print("# Ctrl-C stops both nodes", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
