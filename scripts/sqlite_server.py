"""A throwaway ``mlflow server`` over a sqlite file on a free loopback port, stopped and started again at will.

For the outage tests and ``bench/mlflow_logging.py``: a real server whose outages are real (the process gone, its
port refusing), restarted on the same port with the same store.

    from sqlite_server import sqlite_server
    with sqlite_server(folder) as server:   # server.url, server.db; server.stop() / server.start()
        ...
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from team_server import free_port  # noqa: E402


class SqliteServer:
    """``mlflow server --workers 1`` over ``FOLDER/mlflow.db`` with its artifacts in ``FOLDER/artifacts``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.db = folder / "mlflow.db"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it (on the same port as before) and wait until it answers."""
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
        env.pop("MLFLOW_TRACKING_URI", None)
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.db}",
                   "--serve-artifacts", "--artifacts-destination", str(self.folder / "artifacts"),
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        with open(self.folder / "server.log", "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + 90
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start: " + (self.folder / "server.log").read_text()[-3000:])
            time.sleep(0.3)

    def answers(self) -> bool:
        """Whether its health endpoint answers now."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """Stop it (its whole process group) and wait until nothing answers on its port."""
        if self.process is None or self.process.poll() is not None:
            return
        for signum, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, signum)
                self.process.wait(wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        while self.answers():  # the next start binds the same port
            time.sleep(0.2)


@contextmanager
def sqlite_server(folder: Path, running: SqliteServer | None = None) -> Iterator[SqliteServer]:
    """A started :class:`SqliteServer` in ``folder`` (``running`` when given), stopped afterwards (only one this
    started)."""
    if running is not None:
        yield running
        return
    folder.mkdir(parents=True, exist_ok=True)
    server = SqliteServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
