"""Interrupted sweeps: Ctrl-C or SIGKILL of the real CLI mid-sweep, then ``resume=true``; orphaned runs."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from raysweep.tracking import parent as parent_mod
from raysweep.tracking.tags import ENDED_BY_TAG, PARENT_ROLE, ROLE_TAG

#: A sweep slow enough to interrupt halfway: 6 trials of 4 iterations, two at a time.
SWEEP = ["+sweep=fraud", "data.n_samples=4000", "trainer.iterations=4", "sweep.num_samples=6",
         "sweep.max_concurrent_trials=2", "search_space.n_estimators=range(100,301,100)", "cluster.verbose=0",
         "sweep.run_name=resumable"]


def _finished_runs(db) -> int:
    try:
        with sqlite3.connect(db) as connection:
            return connection.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _interrupt_midway(args, env, cwd, db, signum) -> int:
    """Start the CLI, wait until two trials finished, send ``signum``; return the exit code."""
    process = subprocess.Popen([sys.executable, "-m", "raysweep", *args], env=env, cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while _finished_runs(db) < 2:
            assert process.poll() is None, "the sweep ended before it could be interrupted"
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.3)
        process.send_signal(signum)
        return process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _cli(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "raysweep", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _sweep_runs(client):
    runs = client.search_runs([client.get_experiment_by_name("fraud-detection").experiment_id])
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == PARENT_ROLE]
    return parents, [r for r in runs if r not in parents]


@pytest.mark.slow
@pytest.mark.parametrize("signum, interrupted_status", [(signal.SIGINT, "KILLED"), (signal.SIGKILL, "RUNNING")])
def test_interrupted_sweep_resumes_into_the_same_runs(signum, interrupted_status, ray_address, cli_env, tmp_path,
                                                      tracking_uri):
    env = {**cli_env, "RAY_ADDRESS": ray_address}
    args = [*SWEEP, f"cluster.storage_path={tmp_path / 'ray'}"]
    code = _interrupt_midway(args, env, tmp_path, tmp_path / "mlflow.db", signum)
    assert code == (130 if signum == signal.SIGINT else -signal.SIGKILL)

    client = MlflowClient(tracking_uri)
    (parent,), children = _sweep_runs(client)
    assert parent.info.status == interrupted_status
    assert 2 <= len(children) < 6 or any(c.info.status != "FINISHED" for c in children)

    out = _cli([*args, "resume=true"], env, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]

    (resumed,), children = _sweep_runs(client)
    assert resumed.info.run_id == parent.info.run_id and resumed.info.status == "FINISHED"
    assert resumed.data.tags["raysweep.resumed"] == "1"
    assert len(children) == 6 and {c.info.status for c in children} == {"FINISHED"}
    assert len({c.data.tags["raysweep.trial_id"] for c in children}) == 6
    assert not any(ENDED_BY_TAG in c.data.tags for c in children)
    for child in children:
        for metric in ("val_auc", "train_time_s"):
            steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, metric))
            assert steps == [1, 2, 3, 4], (child.info.run_name, metric, steps)
    deleted = client.search_runs([parent.info.experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert all(d.data.tags.get(ENDED_BY_TAG, "").startswith("superseded") for d in deleted)
    assert str(client.get_model_version_by_alias("fraud-rf", "champion").run_id) == resumed.data.tags[
        "raysweep.best_run_id"]

    again = _cli([*args, "resume=true"], env, tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        "raysweep: resume=true: sweep run 'resumable' already finished; start a new sweep without resume=true"
    ]


def test_analysis_ends_a_dead_drivers_runs_killed(tracking_uri):
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("fraud-detection")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tags = {ROLE_TAG: PARENT_ROLE, **parent_mod.driver_tags(), "raysweep.driver.pid": str(dead.pid)}
    parent = client.create_run(experiment_id, run_name="orphan", tags=tags)
    client.log_param(parent.info.run_id, "sweep.metric", "val_auc")
    client.log_param(parent.info.run_id, "sweep.mode", "max")
    child = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent.info.run_id})
    live = client.create_run(experiment_id, run_name="live", tags={ROLE_TAG: PARENT_ROLE, **parent_mod.driver_tags()})

    assert parent_mod.driver_alive(client.get_run(live.info.run_id)) is True
    assert parent_mod.end_orphans(client, client.get_run(live.info.run_id)) == 0
    assert parent_mod.driver_alive(client.get_run(parent.info.run_id)) is False

    from raysweep import analysis

    assert analysis.main(["--experiment", "fraud-detection", "--parent-run-id", parent.info.run_id,
                          "--tracking-uri", tracking_uri]) == 2  # no finished trial, but the orphans are ended
    assert client.get_run(parent.info.run_id).info.status == "KILLED"
    assert client.get_run(child.info.run_id).info.status == "KILLED"
    assert client.get_run(live.info.run_id).info.status == "RUNNING"
    client.set_terminated(live.info.run_id)


@pytest.mark.parametrize(
    "lines, after, expected",
    [
        ([{"training_iteration": 1, "val_auc": 0.5}, {"training_iteration": 2, "val_auc": 0.6}], 1, [(2, 0.6)]),
        ([{"training_iteration": 1, "val_auc": 0.5}, {"training_iteration": 2, "val_auc": 0.6}], 2, []),
        ([{"training_iteration": 1, "val_auc": 0.5}, {"training_iteration": 2, "pid": 7}], 0, [(1, 0.5)]),
        # A restored trial replays steps Tune had already recorded: the first record of a step counts.
        ([{"training_iteration": 2, "val_auc": 0.6}, {"training_iteration": 2, "val_auc": 0.7}], 1, [(2, 0.6)]),
        ([{"training_iteration": 1, "val_auc": 0.5}, '{"training_iteration": 2, "val_a'], 0, [(1, 0.5)]),
    ],
)
def test_results_tune_recorded_fill_what_a_killed_driver_never_wrote(lines, after, expected, tmp_path):
    import json

    from raysweep.tracking.lifecycle import recorded_results

    (tmp_path / "result.json").write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines))
    got = recorded_results(str(tmp_path), ["val_auc"], after)
    assert [(step, values["val_auc"]) for step, values in got] == expected
    assert recorded_results(str(tmp_path / "missing"), ["val_auc"], 0) == []
