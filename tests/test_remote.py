"""Pure parts of the team setup: what is forwarded to workers, what is masked, what a job carries."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from raysweep import remote, submit
from raysweep.errors import RaySweepError
from raysweep.tracking.metadata import public_overrides


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("https://alice:s3cret@mlflow.example.com/", "https://***@mlflow.example.com/"),
        ("http://token@10.0.0.1:8080/path?q=1", "http://***@10.0.0.1:8080/path?***"),
        ("postgresql://mlflow:pw@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
        ("postgresql://a:b@db.internal:5432/mlflow?sslmode=require&password=x", "postgresql://***@db.internal:5432/mlflow?***"),
        ("databricks-uc", "databricks-uc"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("databricks", "databricks"),
        (None, None),
    ],
)
def test_redact_masks_user_info_and_query(uri, expected):
    assert remote.redact(uri) == expected


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        ("sqlite:///mlflow.db", True),
        ("sqlite:////abs/mlflow.db", True),
        ("file:///tmp/mlruns", True),
        ("./mlruns", True),
        ("/tmp/mlruns", True),
        ("http://127.0.0.1:5000", False),
        ("https://mlflow.example.com", False),
        ("postgresql://db/mlflow", False),
        ("databricks", False),  # a hosted service named by profile, not a path
    ],
)
def test_is_local_store(uri, local):
    assert remote.is_local_store(uri) is local


def test_forwarded_env_takes_only_mlflow_connection_variables_not_already_in_the_job():
    environ = {"MLFLOW_TRACKING_URI": "http://h:1", "MLFLOW_TRACKING_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "k",
               "MLFLOW_REGISTRY_URI": "", "HOME": "/root", "MLFLOW_EXPERIMENT_NAME": "e"}
    assert remote.forwarded_env(environ) == {"MLFLOW_TRACKING_URI": "http://h:1", "MLFLOW_TRACKING_TOKEN": "t",
                                             "MLFLOW_EXPERIMENT_NAME": "e"}
    assert remote.forwarded_env(environ, {"MLFLOW_TRACKING_URI": "x"}) == {"MLFLOW_TRACKING_TOKEN": "t",
                                                                           "MLFLOW_EXPERIMENT_NAME": "e"}


def test_ray_runtime_env_ships_the_package_only_when_joining_a_cluster_outside_a_job():
    environ = {"MLFLOW_TRACKING_TOKEN": "t"}
    # A local Ray's workers inherit the driver's environment: nothing for Ray's agent to write into its log.
    assert remote.ray_runtime_env(False, environ) == {}
    joining = remote.ray_runtime_env(True, environ)
    assert Path(joining["py_modules"][0]).name == "raysweep"
    assert joining["env_vars"] == {"MLFLOW_TRACKING_TOKEN": "t"}
    job = {"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": {"env_vars": {"MLFLOW_TRACKING_TOKEN": "t"}}}),
           **environ}
    # Inside a job that set the token already: Ray refuses a driver that sets it again.
    assert remote.ray_runtime_env(True, job) == {}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["mlflow.tracking_uri=http://u:p@h:1", "sweep.num_samples=2"], ["mlflow.tracking_uri=http://***@h:1", "sweep.num_samples=2"]),
        (["+sweep=fraud"], ["+sweep=fraud"]),
        (["~search_space.max_depth"], ["~search_space.max_depth"]),
    ],
)
def test_public_overrides_mask_credentials(overrides, expected):
    assert public_overrides(overrides) == expected


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["+sweep=fraud"], "python -m raysweep +sweep=fraud cluster=remote"),
        (["+sweep=fraud", "cluster=local"], "python -m raysweep +sweep=fraud cluster=local"),
        (["+sweep=fraud", "search_space.max_depth='choice(4, 8)'"],
         "python -m raysweep +sweep=fraud 'search_space.max_depth='\"'\"'choice(4, 8)'\"'\"'' cluster=remote"),
    ],
)
def test_entrypoint(overrides, expected):
    assert submit.entrypoint(overrides) == expected


def test_job_runtime_env_uploads_project_and_package_without_local_state(tmp_path):
    env = submit.runtime_env(tmp_path, tmp_path / "src" / "raysweep", {"MLFLOW_TRACKING_URI": "http://h:1", "PATH": "/bin"})
    assert env["working_dir"] == str(tmp_path)
    assert env["py_modules"] == [str(tmp_path / "src" / "raysweep")]
    assert env["env_vars"] == {"MLFLOW_TRACKING_URI": "http://h:1"}
    assert {".venv", "mlflow.db", "mlruns", "ray_results"} <= set(env["excludes"])


@pytest.mark.parametrize(
    ("environ", "overrides", "message"),
    [
        ({}, [], "MLFLOW_TRACKING_URI is not set"),
        ({"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}, [], "is a file on this machine"),
        ({"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, ["mlflow.tracking_uri=sqlite:///x.db"], "is a file on this machine"),
        ({"MLFLOW_TRACKING_URI": "http://u:pw@127.0.0.1:9"}, [], "http://***@127.0.0.1:9 does not answer"),
    ],
)
def test_submit_refuses_stores_the_cluster_cannot_reach(environ, overrides, message):
    with pytest.raises(RaySweepError, match=message.replace("*", r"\*").replace(".", r"\.")):
        submit.check_tracking_uri(environ, overrides)


def test_a_server_that_never_answers_fails_within_seconds():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts connections in the kernel, never answers them
        started = time.perf_counter()
        with pytest.raises(RaySweepError, match="does not answer .*timed out"):
            remote.check_server(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=1.0)
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("nodes", [1, 2])
def test_local_store_refused_only_on_multi_node(nodes):
    if nodes == 1:
        remote.check_reachable_from_nodes("sqlite:///mlflow.db", nodes)
    else:
        with pytest.raises(RaySweepError, match="other 1 node"):
            remote.check_reachable_from_nodes("sqlite:///mlflow.db", nodes)
    remote.check_reachable_from_nodes("http://h:1", nodes)
