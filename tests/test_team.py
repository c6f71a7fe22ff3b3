"""A team setup, for real, on loopback: sweeps submitted as Ray jobs to a two-node cluster, tracked on a shared
MLflow server (PostgreSQL backend store with a password, Ceph radosgw S3 artifact store, ``--serve-artifacts``,
``--app-name basic-auth``: the server checks every client's MLFLOW_TRACKING_USERNAME/PASSWORD).

The cluster's Python has the dependencies but not raysweep: every job brings the submitted code with it.
Run alone with ``uv run pytest -m team``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from raysweep.config import CONF_DIR

ROOT = CONF_DIR.parent
sys.path.insert(0, str(ROOT / "scripts"))
from local_cluster import HEAD_IP, WORKER_IP, two_node_cluster  # noqa: E402

pytestmark = [pytest.mark.team, pytest.mark.slow]

# Two trials of one CPU on two nodes of one CPU each: they run at the same time, one on each node.
SWEEP = ["+sweep=fraud", "data.n_samples=4000", "trainer.iterations=2", "sweep.num_samples=2",
         "search_space.n_estimators='range(10, 31, 10)'", "cluster.verbose=0"]
MODES = ("driver", "worker")


@pytest.fixture(scope="module")
def cluster(cluster_python, tmp_path_factory):
    """The two-node cluster (~20 s), beside the session's team server (tests/conftest.py), stopped after."""
    with two_node_cluster(cluster_python, tmp_path_factory.mktemp("cluster")) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def cluster_python(tmp_path_factory) -> str:
    """A Python with this project's dependencies but without raysweep, as a cluster's image would have."""
    venv = tmp_path_factory.mktemp("cluster-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    # A path line, not a site dir: the project's own editable-install .pth in there is not processed.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return str(venv / "bin" / "python")


@pytest.fixture(scope="module")
def client_env(team, cluster) -> dict[str, str]:
    """What a team member's shell has: the server URL, their MLflow user, the cluster's address and auth.
    No S3 keys, no database password."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "RAY_"))}
    return {**env, **cluster.env, **team.client_env(), "RAY_ADDRESS": cluster.dashboard_url, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def study_uri(team) -> str:
    """An Optuna study storage in the team's PostgreSQL, its password in the URI (a searcher's storage)."""
    import psycopg

    with psycopg.connect(team.backend_store_uri, autocommit=True) as db:
        db.execute("CREATE DATABASE optuna_team")  # Optuna's tables beside MLflow's would clash (alembic)
    return team.backend_store_uri.rsplit("/", 1)[0] + "/optuna_team"


def _names(mode: str) -> list[str]:
    return [f"mlflow={mode}", f"mlflow.experiment_name=team-{mode}", f"mlflow.registered_model=fraud-team-{mode}"]


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    """Tune's storage for both jobs: one machine, so both nodes see it, as on NFS."""
    return tmp_path_factory.mktemp("ray-results")


@pytest.fixture(scope="module")
def jobs(client_env, storage, study_uri):
    """Both logging modes, submitted the two documented ways: ``raysweep submit`` (its Optuna study in the team's
    PostgreSQL, password in the override) and plain ``ray job submit``."""
    done = {}
    for mode in MODES:
        overrides = [*SWEEP, *_names(mode), f"cluster.storage_path={storage}"]
        if mode == "driver":
            overrides += ["search_alg=optuna", f"+search_alg.params.storage={study_uri}"]
            cmd = [sys.executable, "-m", "raysweep", "submit", f"--submission-id=team-{mode}", *overrides]
        else:
            runtime_env = {"py_modules": ["src/raysweep"], "env_vars": {
                k: client_env[k] for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}}
            cmd = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--working-dir", ".",
                   "--runtime-env-json", json.dumps(runtime_env), "--entrypoint-num-cpus", "0", "--",
                   "python", "-m", "raysweep", *overrides, "cluster=remote"]
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=client_env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        done[mode] = (proc, time.perf_counter() - started)
    return done


@pytest.fixture
def tracking_uri(team, monkeypatch):
    """This module's store is the team server (overrides the per-test sqlite store), as the team's user."""
    import mlflow

    for key, value in team.client_env().items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(team.url)
    yield team.url


def _sweep_runs(team, mode: str):
    client = MlflowClient(team.url)
    experiment = client.get_experiment_by_name(f"team-{mode}")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("raysweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("raysweep.role") == "trial"]
    return client, parents, children


def test_cluster_python_lacks_raysweep(cluster_python):
    proc = subprocess.run([cluster_python, "-c", "import raysweep"], capture_output=True, text=True)
    assert proc.returncode != 0 and "No module named 'raysweep'" in proc.stderr
    assert subprocess.run([cluster_python, "-c", "import ray, mlflow, sklearn"]).returncode == 0


@pytest.mark.parametrize("mode", MODES)
def test_job_succeeds_with_one_parent_and_finished_children_on_both_nodes(jobs, team, mode):
    proc, seconds = jobs[mode]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in (proc.stdout + proc.stderr).lower()
    client, parents, children = _sweep_runs(team, mode)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    assert len({c.data.tags["raysweep.trial_id"] for c in children}) == 2
    assert {c.data.tags["raysweep.node_ip"] for c in children} == {HEAD_IP, WORKER_IP}
    best = parent.data.tags["raysweep.best_run_id"]
    assert best in {c.info.run_id for c in children}


@pytest.mark.parametrize("mode", MODES)
def test_champion_loads_in_a_fresh_process_with_only_the_tracking_uri_and_user(jobs, team, mode, tmp_path):
    client, parents, _ = _sweep_runs(team, mode)
    champion = client.get_model_version_by_alias(f"fraud-team-{mode}", "champion")
    assert champion.run_id == parents[0].data.tags["raysweep.best_run_id"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update(team.client_env())  # the URL and the user: no storage keys
    code = (
        "import mlflow, pandas as pd, sys\n"
        f"m = mlflow.pyfunc.load_model('models:/fraud-team-{mode}@champion')\n"
        "example = m.input_example if m.input_example is not None else None\n"
        "p = m.predict(example)[['0', '1']].to_numpy()  # a probability column per class, and label\n"
        "print(len(p), float(p.min()) >= 0.0, float(p.max()) <= 1.0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[1:] == ["True", "True"]


def test_worker_mode_models_reach_s3_from_both_nodes_through_the_proxy(jobs, team):
    client, _, children = _sweep_runs(team, "worker")
    keys = [o["Key"] for page in team.s3.client().get_paginator("list_objects_v2").paginate(Bucket=team.s3.bucket)
            for o in page.get("Contents", [])]
    # Each trial logged its final model from its own node; the server stored it in the bucket.
    for child in children:
        model_uri = child.data.tags["raysweep.model_uri"]
        model_id = model_uri.removeprefix("models:/")
        assert any(model_id in k and k.endswith("MLmodel") for k in keys), model_uri
    assert {c.data.tags["raysweep.node_ip"] for c in children if "raysweep.model_uri" in c.data.tags} == {HEAD_IP, WORKER_IP}
    # Nothing in MLflow points clients at S3: artifacts go through the server.
    assert all(c.info.artifact_uri.startswith("mlflow-artifacts:") for c in children)


@pytest.mark.parametrize("mode", MODES)
def test_no_credential_anywhere_in_mlflow_the_job_or_tune_storage(jobs, team, client_env, storage, mode):
    proc, _ = jobs[mode]
    secrets = {what: value for what, value in team.secrets().items() if value}
    found = []

    def look(place: str, blob: str | bytes) -> None:
        blob = blob.encode() if isinstance(blob, str) else blob
        found.extend(f"{what} in {place}" for what, value in secrets.items() if value.encode() in blob)

    look("the submitting terminal", proc.stdout + proc.stderr)
    client, parents, children = _sweep_runs(team, mode)
    for run in [*parents, *children]:
        look(f"run {run.info.run_name}", json.dumps({"params": run.data.params, "tags": run.data.tags}))
    import mlflow

    look("config.yaml", mlflow.artifacts.load_text(f"runs:/{parents[0].info.run_id}/config.yaml"))
    for mv in client.search_model_versions(f"name = 'fraud-team-{mode}'"):
        look(f"version {mv.version}", json.dumps({"tags": mv.tags, "description": mv.description}))
    # Tune's state of this job (pickles included): the Optuna study's URL is masked in the searcher's pickles.
    for path in storage.rglob("*"):
        if path.is_file():
            look(str(path), path.read_bytes())
    if mode == "driver":  # `ray job list` shows every job's entrypoint to whoever reaches the dashboard
        code = ("import os; from ray.job_submission import JobSubmissionClient as C; "
                "print(C(os.environ['RAY_ADDRESS']).get_job_info('team-driver').entrypoint)")
        # A process of its own: Ray reads its token settings (the cluster's) once per process.
        entrypoint = subprocess.run([sys.executable, "-c", code], env=client_env, capture_output=True, text=True,
                                    timeout=60, check=True).stdout
        look("the job's entrypoint", entrypoint)
        assert "${oc.env:RAYSWEEP_SECRET_0}" in entrypoint
    assert found == []


def test_server_down_stops_the_sweep_before_ray_in_seconds(client_env, tmp_path):
    env = {**client_env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # discard port: nothing listens
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "raysweep", "+sweep=fraud", "cluster=remote"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "MLflow tracking server http://127.0.0.1:9 does not answer" in lines[0]
    assert time.perf_counter() - started < 30  # not MLflow's minutes of retries (generous on a busy machine)
    submit = subprocess.run([sys.executable, "-m", "raysweep", "submit", "+sweep=fraud"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert submit.returncode == 2 and "does not answer" in submit.stderr


def test_sqlite_is_refused_on_a_multi_node_cluster(client_env, cluster, tmp_path):
    store = tmp_path / "mlflow.db"
    env = {**client_env, "MLFLOW_TRACKING_URI": f"sqlite:///{store}", "RAY_ADDRESS": cluster.gcs_address}
    proc = subprocess.run([sys.executable, "-m", "raysweep", "+sweep=fraud", "cluster=remote", "cluster.verbose=0"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "is a file on this machine, which the other 1 node(s) of the Ray cluster cannot reach" in proc.stderr
    # Refused before any run was created.
    assert not store.exists() or not MlflowClient(f"sqlite:///{store}").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{store}").search_experiments()])
    submit = subprocess.run([sys.executable, "-m", "raysweep", "submit", "+sweep=fraud"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert submit.returncode == 2 and "is a file on this machine, which the cluster cannot reach" in submit.stderr
