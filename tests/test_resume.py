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


def _resume_and_analyse_midway(args, env, cwd, client, parent_id) -> subprocess.CompletedProcess:
    """Resume in the background; once its driver holds the sweep, analyse it (which must leave it running)."""
    from raysweep.tracking.lease import read

    resumed = subprocess.Popen([sys.executable, "-m", "raysweep", *args, "resume=true"], env=env, cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            run = client.get_run(parent_id)
            lease = read(run)
            if run.info.status == "RUNNING" and lease is not None and lease.pid == resumed.pid:
                break
            assert resumed.poll() is None, resumed.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the resumed driver never took the sweep's lease"
            time.sleep(0.3)
        analysed = _cli(["analyse", "--no-register", "--parent-run-id", parent_id], env, cwd)
        assert analysed.returncode == 0, analysed.stderr[-3000:]
        assert "lost its driver" not in analysed.stderr
        run = client.get_run(parent_id)
        assert run.info.status == "RUNNING" and ENDED_BY_TAG not in run.data.tags
        out, err = resumed.communicate(timeout=240)
        return subprocess.CompletedProcess(resumed.args, resumed.returncode, out, err)
    finally:
        if resumed.poll() is None:
            resumed.kill()
            resumed.wait()


@pytest.mark.slow
@pytest.mark.parametrize("signum, mode, interrupted_status", [
    # Ctrl-C (its runs end KILLED; resumed in driver mode) is tested on a torch sweep whose trial must also go on
    # from its checkpoint, which saves the suite a third sweep here (the body below still handles SIGINT, "KILLED"):
    # tests/test_faults.py::test_an_interrupted_torch_sweep_resumes_its_trial_from_its_last_checkpoint.
    (signal.SIGKILL, "driver", "RUNNING"),
    (signal.SIGKILL, "worker", "RUNNING"),
])
def test_interrupted_sweep_resumes_into_the_same_runs(signum, mode, interrupted_status, ray_address, cli_env,
                                                      tmp_path, tracking_uri):
    env = {**cli_env, "RAY_ADDRESS": ray_address}
    args = [*SWEEP, f"mlflow={mode}", f"cluster.storage_path={tmp_path / 'ray'}"]
    code = _interrupt_midway(args, env, tmp_path, tmp_path / "mlflow.db", signum)
    assert code == (130 if signum == signal.SIGINT else -signal.SIGKILL)

    client = MlflowClient(tracking_uri)
    (parent,), children = _sweep_runs(client)
    assert parent.info.status == interrupted_status
    assert 2 <= len(children) < 6 or any(c.info.status != "FINISHED" for c in children)

    if signum == signal.SIGKILL:
        # The killed driver's process is gone: its lease does not hold the sweep, and analysis, run while the
        # resumed driver trains, must see that driver alive.
        out = _resume_and_analyse_midway(args, env, tmp_path, client, parent.info.run_id)
    else:
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


def test_a_signal_while_the_sweep_registers_names_the_resume_that_finishes_it(ray_address, make_cfg, tracking_uri,
                                                                              monkeypatch):
    from raysweep import registry, sweep
    from raysweep.errors import SweepInterrupted

    def interrupted(*args, **kwargs):  # Ctrl-C arriving after the trials, while the version is registered
        raise SweepInterrupted(signal.SIGINT)

    args = ["+sweep=fraud", "data.n_samples=1000", "sweep.num_samples=2", "trainer.iterations=1", "cluster.verbose=0",
            "sweep.run_name=registering"]
    with monkeypatch.context() as patch:
        patch.setattr(registry, "register_best", interrupted)
        with pytest.raises(SweepInterrupted) as stopped:
            sweep.run(make_cfg(*args))
    assert stopped.value.run_name == "registering"  # the exit line's "continue it with resume=true ..."
    outcome = sweep.run(make_cfg(*args, "resume=true"))  # trains nothing again, and registers
    client = MlflowClient(tracking_uri)
    (parent,), children = _sweep_runs(client)
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert outcome.registration.version == "1" and "champion" in outcome.registration.aliases


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


def _recorded_sweep(client, name: str, status: str, cfg, **tags: str) -> str:
    """A parent run of sweep ``fraud`` as a driver records it (config.yaml included), ended ``status``."""
    from raysweep.tracking import metadata
    from raysweep.tracking.queries import CONFIG_ARTIFACT, experiment_id
    from raysweep.tracking.tags import SWEEP_TAG

    run = client.create_run(experiment_id(client, "fraud-detection"), run_name=name,
                            tags={ROLE_TAG: PARENT_ROLE, SWEEP_TAG: "fraud", **tags})
    client.log_text(run.info.run_id, metadata.config_yaml(cfg), CONFIG_ARTIFACT)
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    time.sleep(0.01)  # distinct start times: "latest" is by start time
    return run.info.run_id


def test_resume_takes_the_latest_unfinished_run_and_refuses_one_another_driver_holds(make_cfg, tracking_uri):
    from raysweep import plan as plan_mod
    from raysweep.errors import RaySweepError
    from raysweep.resume import resume_target
    from raysweep.tracking.tags import LEASE_HEARTBEAT_TAG, LEASE_HOLDER_TAG

    client = MlflowClient(tracking_uri)
    cfg = make_cfg("+sweep=fraud", "resume=true")
    plan = plan_mod.make_plan(cfg)
    _recorded_sweep(client, "killed-first", "KILLED", cfg)
    _recorded_sweep(client, "finished-later", "FINISHED", cfg)
    # Not the newest run, which finished: the newest one still to finish (whose Tune state is missing here).
    with pytest.raises(RaySweepError, match=r"^resume=true: no Tune state for sweep run 'killed-first' at "):
        resume_target(cfg, plan)
    # A driver on another host that still beats holds the sweep: resume refuses, naming it.
    beat = str(int(time.time() * 1000))
    _recorded_sweep(client, "held", "RUNNING", cfg, **{LEASE_HOLDER_TAG: "gpu-box-7:4242:1", LEASE_HEARTBEAT_TAG: beat})
    with pytest.raises(RaySweepError, match=r"^resume=true: sweep run 'held' is still running \(driver pid 4242 on "
                                            r"gpu-box-7, heartbeat \d+ s ago\); stop it first"):
        resume_target(cfg, plan)


def test_resume_names_the_overrides_it_ignores(make_cfg, tracking_uri, tmp_path, caplog):
    from raysweep import plan as plan_mod
    from raysweep.resume import resume_target

    client = MlflowClient(tracking_uri)
    started = make_cfg("+sweep=fraud", "data.n_samples=4000", "sweep.run_name=first")
    parent_id = _recorded_sweep(client, "first", "KILLED", started)
    (tmp_path / "ray" / "first").mkdir(parents=True)
    (tmp_path / "ray" / "first" / "tuner.pkl").write_bytes(b"")
    overrides = ["+sweep=fraud", "resume=true", "data.n_samples=4000", "sweep.num_samples=99", "search_alg.seed=7",
                 "cluster.verbose=1", "sweep.run_name=first"]
    cfg = make_cfg(*overrides)
    with caplog.at_level("WARNING", logger="raysweep.resume"):
        merged, resumed = resume_target(cfg, plan_mod.make_plan(cfg), overrides)
    assert resumed == parent_id
    assert merged.sweep.num_samples == started.sweep.num_samples and merged.search_alg.seed == started.search_alg.seed
    assert merged.cluster.verbose == 1  # connection and cluster settings come from this command
    [warning] = [r.getMessage() for r in caplog.records if r.name == "raysweep.resume"]
    assert warning.startswith("resume=true ignores sweep.num_samples=99 search_alg.seed=7: sweep run 'first' resumes "
                              "with the config it started with"), warning


def test_resume_takes_masked_secrets_from_the_command_line_only(make_cfg, tracking_uri, tmp_path, caplog):
    from raysweep import plan as plan_mod
    from raysweep.errors import RaySweepError
    from raysweep.resume import resume_target

    client = MlflowClient(tracking_uri)
    secret = "search_alg.params.storage=postgresql://optuna:hunter22@db:5432/optuna"
    started = make_cfg("+sweep=fraud", "search_alg=optuna", secret, "sweep.run_name=secretive")
    _recorded_sweep(client, "secretive", "KILLED", started)
    (tmp_path / "ray" / "secretive").mkdir(parents=True)
    (tmp_path / "ray" / "secretive" / "tuner.pkl").write_bytes(b"")
    again = make_cfg("+sweep=fraud", "search_alg=optuna", secret, "sweep.run_name=secretive", "resume=true")
    overrides = ["+sweep=fraud", "search_alg=optuna", secret, "sweep.run_name=secretive", "resume=true"]
    merged, _ = resume_target(again, plan_mod.make_plan(again), overrides)
    assert merged.search_alg.params.storage == "postgresql://optuna:hunter22@db:5432/optuna"
    assert "hunter22" not in caplog.text
    bare = make_cfg("+sweep=fraud", "search_alg=optuna", "sweep.run_name=secretive", "resume=true")
    with pytest.raises(RaySweepError, match=r"^resume=true: the stored config hides a secret in "
                                            r"search_alg.params.storage \('postgresql://\*\*\*@db:5432/optuna'\)"):
        resume_target(bare, plan_mod.make_plan(bare))
