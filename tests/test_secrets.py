"""Secrets stay secret: a password or token in a URI, or in MLFLOW_TRACKING_PASSWORD/TOKEN, appears nowhere raysweep
writes or prints - and, for a local sweep run for real against the basic-auth team server, nowhere at all: not in
the terminal, Tune's storage (pickles included), MLflow's params, tags and config.yaml, nor Ray's own logs.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from raysweep import secrets, submit
from raysweep.sweep import look_command
from raysweep.tracking.metadata import config_yaml, parent_params, parent_tags, public_overrides

PG = "postgresql://mlflow:pg-s3cret-pw@db.internal:5432/mlflow"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("https://alice:s3cret@mlflow.example.com/", "https://***@mlflow.example.com/"),
        ("http://token@10.0.0.1:8080/path?q=1", "http://***@10.0.0.1:8080/path?***"),
        (PG + "?sslmode=require", "postgresql://***@db.internal:5432/mlflow?***"),
        ("postgresql://u:p@ss@db/x", "postgresql://***@db/x"),  # an unescaped @ in the password
        ("s3://bucket/x.csv?X-Amz-Signature=abc", "s3://bucket/x.csv?***"),
        ("http://u:pw@[::1", "http://***"),  # not a URI urllib can parse: everything masked
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("databricks", "databricks"),
        (None, None),
    ],
)
def test_redact_masks_user_info_and_query(uri, expected):
    assert secrets.redact(uri) == expected


def test_secret_values_come_from_mlflow_variables_and_uris():
    environ = {"MLFLOW_TRACKING_PASSWORD": "pw-from-env", "MLFLOW_TRACKING_TOKEN": "tok-from-env",
               "MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_URI": "http://h:1",
               "MLFLOW_REGISTRY_URI": "postgresql://reg:reg%40pw@db/r"}
    found = secrets.secret_values(environ, [PG, "http://bearer-token@h:1", "s3://b/k?sig=deadbeef&part=2"])
    assert {"pw-from-env", "tok-from-env", "reg@pw", "reg%40pw", "pg-s3cret-pw", "bearer-token", "deadbeef"} <= found
    # User names are no secrets (a postgres user, MLflow's user): masking them would hide every "mlflow" in a text.
    assert not {"alice", "mlflow", "reg", "2"} & found


def test_scrub_masks_uris_in_text_and_bare_secret_values(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-hunter2")
    text = (f"could not connect to {PG}: FATAL password authentication failed (password pg-s3cret-pw); "
            "basic auth hunter2-hunter2 refused; see http://h:1/#/experiments/1")
    scrubbed = secrets.scrub(text, [PG])
    assert "pg-s3cret-pw" not in scrubbed and "hunter2-hunter2" not in scrubbed
    assert "postgresql://***@db.internal:5432/mlflow" in scrubbed and "http://h:1/#/experiments/1" in scrubbed


def test_config_yaml_params_and_tags_mask_every_credential(make_cfg):
    storage = "postgresql://optuna:optuna-pw-123@db/optuna"
    overrides = ["+sweep=fraud", "search_alg=optuna", f"+search_alg.params.storage={storage}",
                 "mlflow.tracking_uri=http://u:tracking-pw-1@h:1", "mlflow.tags={team: risk}",
                 "cluster.storage_path=s3://AKIA:storage-pw-2@bucket/results", "data=csv",
                 "data.path=https://u:data-pw-3@files.example.com/fraud.csv", "data.target=is_fraud"]
    cfg = make_cfg(*overrides)
    recorded = " ".join([config_yaml(cfg), *parent_params(cfg).values(), *parent_tags(cfg, overrides).values(),
                         *public_overrides(overrides)])
    for secret in ("optuna-pw-123", "tracking-pw-1", "storage-pw-2", "data-pw-3"):
        assert secret not in recorded
    assert "postgresql://***@db/optuna" in recorded  # where the searcher's study lives stays readable


def test_look_line_never_prints_a_database_password():
    assert look_command(PG) == "mlflow ui --backend-store-uri postgresql://***@db.internal:5432/mlflow"
    assert look_command("https://u:p@mlflow.example.com") == "open https://***@mlflow.example.com"


def test_submitted_entrypoint_carries_no_secret_and_the_job_reads_it_from_its_env_vars():
    overrides = ["+sweep=fraud", f"+search_alg.params.storage={PG}", "sweep.num_samples=2"]
    public, secret_vars = submit.secret_overrides(overrides)
    command = submit.entrypoint(public)
    assert "pg-s3cret-pw" not in command
    assert "'+search_alg.params.storage=${oc.env:RAYSWEEP_SECRET_0}'" in command and "sweep.num_samples=2" in command
    assert submit.runtime_env(Path("."), Path("raysweep"), {}, secret_vars)["env_vars"] == {"RAYSWEEP_SECRET_0": PG}


def test_a_failed_trials_error_tag_is_scrubbed(tracking_uri, monkeypatch):
    from raysweep.tracking.lifecycle import TrialRuns

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "env-password-77")
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("errors")
    parent = client.create_run(experiment_id).info.run_id
    runs = TrialRuns(client, experiment_id, parent, metrics=["score"])
    runs.start("t1", "train_t1", {"lr": 0.1})
    # Long enough that a cut at 500 characters before masking would leave half a password behind.
    runs.end("t1", "FAILED", "x" * 440 + f" login env-password-77 to {PG} failed")
    error = client.get_run(runs.run_id("t1")).data.tags["raysweep.error"]
    assert "env-pass" not in error and "pg-s3cret" not in error and "login *** to postgresql://***@" in error


def test_a_failed_trials_printed_line_is_scrubbed(tmp_path, monkeypatch):
    from raysweep.progress import error_line

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "token-in-env-42")
    error = tmp_path / "error.txt"
    error.write_text(f"Traceback ...\nMlflowException: cannot reach {PG} with token-in-env-42\n")
    line = error_line(str(error))
    assert "pg-s3cret-pw" not in line and "token-in-env-42" not in line and line.startswith("MlflowException")


def test_cli_errors_are_scrubbed(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://u:cli-pw-99@127.0.0.1:9", "PYTHONUNBUFFERED": "1",
           "RAYSWEEP_SERVER_TIMEOUT_S": "2"}
    proc = subprocess.run([sys.executable, "-m", "raysweep", "+sweep=fraud"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "cli-pw-99" not in proc.stderr and "http://***@127.0.0.1:9" in proc.stderr


@pytest.mark.filterwarnings("ignore:Query string argument")  # sqlite takes no password: this one is only seen
def test_the_optuna_storage_is_pickled_without_its_password():
    from raysweep.optuna_storage import storage

    url = f"sqlite:///{tempfile.mkdtemp()}/optuna.db?password=sqlite-pw-55"
    state = pickle.dumps(storage(url))
    assert b"sqlite-pw-55" not in state
    assert pickle.loads(state).url == url  # this process knows the full URI: the restored searcher connects


# --- a real local sweep against the basic-auth team server -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.team
def test_local_sweep_leaks_no_secret_anywhere(team, tmp_path):
    """Worker mode (trials talk to MLflow themselves, so the password must reach them) with Optuna's study in
    the team's PostgreSQL (its password in the override): the sweep succeeds against a server that checks the
    password, and no secret is in the terminal, Tune's storage, MLflow or Ray's logs."""
    import psycopg

    with psycopg.connect(team.backend_store_uri, autocommit=True) as db:
        db.execute("CREATE DATABASE optuna_secrets")  # Optuna's tables beside MLflow's would clash (alembic)
    study_uri = team.backend_store_uri.rsplit("/", 1)[0] + "/optuna_secrets"
    name = f"secrets-{uuid.uuid4().hex[:6]}"
    results = tmp_path / "results"
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs-ray-"))  # short: Ray's socket paths must fit 107 bytes
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_", "AWS_"))},
           **team.client_env(), "RAY_TMPDIR": str(ray_tmp), "PYTHONUNBUFFERED": "1"}
    overrides = ["+sweep=fraud", "data.n_samples=4000", "trainer.iterations=2", "sweep.num_samples=2",
                 "search_space.n_estimators='range(10, 31, 10)'", "cluster.verbose=0", "cluster.num_cpus=2",
                 "mlflow=worker", f"mlflow.experiment_name={name}", f"mlflow.registered_model={name}",
                 f"cluster.storage_path={results}", "search_alg=optuna", f"+search_alg.params.storage={study_uri}"]
    try:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "raysweep", *overrides], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        print(f"sweep took {time.perf_counter() - started:.1f} s")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        leaks = _secrets_in(team, proc.stdout + proc.stderr, results, ray_tmp, name)
    finally:
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert leaks == [], leaks


def _secrets_in(team, terminal: str, results: Path, ray_tmp: Path, name: str) -> list[str]:
    """Where each of the team's secrets turns up: the terminal, files under Tune's storage and Ray's session
    folders (bytes, so pickles count), the sweep's runs, config.yaml and model versions."""
    import json

    values = {what: value for what, value in team.secrets().items() if value}
    places = {"terminal": terminal.encode()}
    for root in (results, ray_tmp):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.suffix != ".sock":
                places[str(path)] = path.read_bytes()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in team.client_env().items():
            mp.setenv(key, value)
        client = MlflowClient(team.url)
        experiment = client.get_experiment_by_name(name)
        runs = client.search_runs([experiment.experiment_id], max_results=100)
        assert runs, "the sweep logged no run"
        for run in runs:
            places[f"run {run.info.run_name}"] = json.dumps([run.data.params, run.data.tags]).encode()
        parent = next(r for r in runs if r.data.tags.get("raysweep.role") == "sweep")
        places["config.yaml"] = Path(client.download_artifacts(parent.info.run_id, "config.yaml", str(results))).read_bytes()
        for version in client.search_model_versions(f"name = '{name}'"):
            places[f"version {version.version}"] = json.dumps([version.tags, version.description]).encode()
    assert any(p.endswith("tuner.pkl") for p in places), "no Tune state found under cluster.storage_path"
    assert any("session_" in p and p.endswith(".log") for p in places), "no Ray logs found under RAY_TMPDIR"
    return [f"{what} in {place}" for place, blob in places.items() for what, value in values.items()
            if value.encode() in blob]
