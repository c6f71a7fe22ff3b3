"""The command line as a user runs it: one smoke sweep, Ctrl-C, --help (bad input: tests/test_bad_input.py)."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import SMOKE
from sweep_contract import assert_sweep_contract


def _cli(args, env, cwd, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "raysweep", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


# Bad input, every kind in one table: tests/test_bad_input.py.


@pytest.mark.parametrize("command", [[sys.executable, "-m", "raysweep"], [str(Path(sys.executable).parent / "raysweep")]])
def test_help_lists_the_config_groups(command, tmp_path, cli_env):
    out = subprocess.run([*command, "--help"], env=cli_env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    section = out.stdout.split("== Config groups (GROUP=OPTION) ==")[1].split("\n== ")[0]
    listed = dict(line.split(": ", 1) for line in section.splitlines() if ": " in line and not line.startswith(" "))
    for group in ("sweep: fraud, fraud_hgb, fraud_torch, overhead", "trainer: fixed_cost, hist_gradient_boosting, mlp, random_forest",
                  "data: csv, fraud", "mlflow: driver, worker", "search_alg: custom, grid, optuna, random",
                  "scheduler: asha, fifo, median_stopping, pbt"):
        name, options = group.split(": ")
        assert set(options.split(", ")) <= set(listed[name].split(", ")), group
    assert "built-in: fraud, fraud_hgb, fraud_torch" in out.stdout  # the sweeps, by folder


@pytest.mark.slow
def test_smoke_sweep_from_the_command_line(ray_address, tmp_path, cli_env, tracking_uri):
    env = {**cli_env, "RAY_ADDRESS": ray_address}
    # The unquoted form a user types: raysweep quotes it before Hydra sees it.
    args = ["+sweep=fraud", *SMOKE, "search_space.max_depth=choice(3,6)", f"cluster.storage_path={tmp_path / 'ray'}"]
    out = _cli(args, env, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "registered  fraud-rf v1 (new version; @challenger, @champion)" in out.stdout
    assert f"mlflow ui --backend-store-uri {tracking_uri}" in out.stdout

    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("fraud-detection").experiment_id])
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.params["max_depth"] for r in runs if "max_depth" in r.data.params} <= {"3", "6"}
    assert_sweep_contract(client, "fraud-detection", "fraud-rf", min_children=4)
    # The version records its task: a sweep of another task into this name is refused (tests/test_model_tasks.py).
    assert client.get_model_version_by_alias("fraud-rf", "champion").tags["raysweep.task"] == "binary"
    # Tune's result.json (what a resume re-logs) and progress.csv in every trial folder; TensorBoard's event files
    # (and torch in the driver for them) only with cluster.tensorboard=true.
    trials = [d for d in (tmp_path / "ray").glob("*/*") if (d / "params.json").exists()]
    assert len(trials) == 4 and all((d / "result.json").exists() and (d / "progress.csv").exists() for d in trials)
    assert not list((tmp_path / "ray").rglob("events.out.tfevents*"))


# The end of a finished sweep, as `python -m raysweep` does it: the user's exit handlers, a thread still writing,
# an executor nobody shut down (its idle worker is no daemon) and output without a newline all come through; only
# the interpreter's teardown is skipped.
EXIT_AFTER_A_SWEEP = """
import atexit, concurrent.futures, sys, threading, time
from pathlib import Path
from raysweep.__main__ import _exit_finished

folder = Path(sys.argv[1])
atexit.register(lambda: (folder / "handler").write_text("ran"))
def late():
    time.sleep(0.3)
    (folder / "thread").write_text("joined")
threading.Thread(target=late).start()
pool = concurrent.futures.ThreadPoolExecutor(1)
pool.submit(lambda: (folder / "pool").write_text("ran")).result()
print("last line", end="")
sys.stderr.write("last warning")
_exit_finished()
print("never")
"""


def test_a_finished_sweep_exits_0_after_its_threads_exit_handlers_and_output(tmp_path):
    done = subprocess.run([sys.executable, "-c", EXIT_AFTER_A_SWEEP, str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "last line", "last warning")
    assert (tmp_path / "handler").read_text() == "ran" and (tmp_path / "thread").read_text() == "joined"
    assert (tmp_path / "pool").read_text() == "ran"


def _running_children(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute(
                "select count(*) from runs r join tags t on r.run_uuid = t.run_uuid "
                "where t.key = 'mlflow.parentRunId' and r.status = 'RUNNING'"
            ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_ctrl_c_ends_the_parent_and_open_children_killed(ray_address, tmp_path, cli_env):
    env = {**cli_env, "RAY_ADDRESS": ray_address}
    args = ["+sweep=fraud", "data.n_samples=4000", "sweep.num_samples=8", "trainer.iterations=20",
            "cluster.verbose=0", f"cluster.storage_path={tmp_path / 'ray'}"]
    proc = subprocess.Popen([sys.executable, "-m", "raysweep", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _running_children(tmp_path / "mlflow.db") == 0:
            assert proc.poll() is None and time.monotonic() < deadline, "sweep never started a trial"
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr[-2000:]
    assert "raysweep: interrupted by SIGINT" in stderr
    # Stopped while trials ran: the line says how to continue this very sweep run.
    assert re.search(r"; continue it with resume=true sweep\.run_name=fraud-\S+$", stderr.strip()), stderr[-500:]
    assert "Tuner.restore" not in stderr  # Tune's own hint names its API, not how a raysweep sweep continues
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("fraud-detection").experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.status for p in parent] == ["KILLED"]
    assert "RUNNING" not in {r.info.status for r in runs}
    assert "KILLED" in {r.info.status for r in runs if r is not parent[0]}
    assert not client.search_registered_models(), "an interrupted sweep registered a model"
