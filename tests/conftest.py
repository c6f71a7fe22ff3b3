"""Shared fixtures: one Ray for the whole session, a fresh sqlite MLflow store per test, composed configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from raysweep.config import CONF_DIR, register_schema

register_schema()
# Tests run offline: no usage reporting from MLflow or Ray.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

#: Overrides that shrink a sweep to seconds: small data, few trees, two iterations.
SMOKE = [
    "data.n_samples=4000",
    "trainer.iterations=2",
    "sweep.num_samples=4",
    "search_space.n_estimators='range(10, 31, 10)'",
    "search_space.max_depth='choice(4, 8, none)'",
    "cluster.verbose=0",
]
# A weak forest and a strong one, as fixed search spaces: a known worse and a known better one-trial sweep.
WEAK = ["sweep.num_samples=1", "search_space.n_estimators=3", "search_space.max_depth=1",
        "search_space.min_samples_leaf=1", "search_space.max_features=sqrt"]
STRONG = ["sweep.num_samples=1", "search_space.n_estimators=60", "search_space.max_depth=none",
          "search_space.min_samples_leaf=4", "search_space.max_features=sqrt"]


def use_store(uri: str, monkeypatch: pytest.MonkeyPatch):
    """Point MLflow (env and fluent API) at ``uri``; fail the test if it leaves a run active."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    active = mlflow.active_run()
    if active is not None:
        mlflow.end_run()
        pytest.fail(f"test left MLflow run {active.info.run_id} active")


@pytest.fixture(autouse=True)
def tracking_uri(tmp_path, monkeypatch) -> str:
    """Every test gets its own sqlite store (a module may share one by overriding this fixture)."""
    yield from use_store(f"sqlite:///{tmp_path / 'mlflow.db'}", monkeypatch)


def compose_cfg(storage_dir: Path, *overrides: str) -> DictConfig:
    """Compose the real config from conf/ with overrides, as ``python -m raysweep`` would."""
    unique = [f"sweep.run_name=test-{uuid.uuid4().hex[:8]}", f"cluster.storage_path={storage_dir}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[*unique, *overrides])


@pytest.fixture(scope="module")
def module_store(tmp_path_factory) -> str:
    """One sqlite store for a whole test module, for modules whose tests read the same (expensive) sweeps.

    Such a module overrides ``tracking_uri`` with ``yield from use_store(module_store, monkeypatch)``.
    """
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def sweep_into(store: str, storage_dir: Path, *overrides: str):
    """Run a sweep in this process against ``store`` (for module-scoped fixtures, outside any test)."""
    from raysweep import sweep

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", store)
        mlflow.set_tracking_uri(store)
        return sweep.run(compose_cfg(storage_dir, *overrides), overrides=list(overrides))


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg(*overrides)``: compose a config whose Ray results go to this test's temp folder."""
    return lambda *overrides: compose_cfg(tmp_path / "ray", *overrides)


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray for the whole test session (2 CPUs, no dashboard); its GCS address for subprocesses."""
    import ray

    from raysweep import runtime

    # Tests switch stores per test: MLflow's variables must not be pinned into this long-lived Ray's workers.
    runtime.start(num_cpus=2, forward_mlflow_env=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def team():
    """The team MLflow server (scripts/team_server.py: PostgreSQL with a password, Ceph S3, basic auth), started
    once for every module that needs one (~25 s) and stopped at the end of the session.

    Clients authenticate with ``team.client_env()``; ``team.secrets()`` are what must never leak.
    """
    sys.path.insert(0, str(CONF_DIR.parent / "scripts"))
    from team_server import team_server

    with team_server() as server:
        yield server


@pytest.fixture
def repo_root() -> Path:
    """The checkout's root, where README.md and conf/ are."""
    return CONF_DIR.parent


@pytest.fixture
def cli_env(tracking_uri) -> dict[str, str]:
    """Environment for running the CLI in a subprocess against this test's store."""
    return {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONUNBUFFERED": "1"}


def serve_and_post(uri: str, body: dict, folder: Path) -> list[dict]:
    """Start ``mlflow models serve`` on a free loopback port, post ``body`` to /invocations, stop it by its PID."""
    from raysweep.runtime import free_port

    port = free_port()
    command = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", uri, "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    # mlflow's server runs `uvicorn` by name: the environment's bin/ comes first, with or without `uv run`.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), "PATH": path}
    with open(folder / "serve.log", "w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            started = time.monotonic()
            while True:
                assert server.poll() is None, (folder / "serve.log").read_text()[-3000:]
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() - started < 120, "server did not answer /ping in 120 s"
                time.sleep(0.3)
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as reply:
                    return json.loads(reply.read())["predictions"]
            except urllib.error.HTTPError as error:
                pytest.fail(f"/invocations answered {error.code}: {error.read()[:2000]!r}")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
