"""Signals and stopping: a sweep stopped at any moment, however often, leaves no MLflow run RUNNING.

``kill`` (SIGTERM) exits 143 and Ctrl-C 130, from before the parent run exists until after it ended; a second
Ctrl-C during the clean-up does not cut it short; ``raysweep stop JOB_ID`` stops a submitted sweep with its runs
ended KILLED, where ``ray job stop`` would SIGKILL the driver 3 s after SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow import MlflowClient

from raysweep import runtime
from raysweep.config import CONF_DIR
from raysweep.errors import SweepInterrupted

#: A sweep whose trials run long enough to be interrupted mid-way (20 iterations each, 4 trials).
LONG = ["+sweep=fraud", "data.n_samples=4000", "trainer.iterations=20", "sweep.num_samples=4", "cluster.verbose=0"]
#: LONG with trials enough to outlast `raysweep stop`'s own start and the driver's next look (seconds on a busy
#: machine): four trials once all finished first, and the stop then found no trial to kill. A stop that works
#: ends the sweep long before these trials would.
OUTLASTS_STOP = [*(o for o in LONG if not o.startswith("sweep.num_samples=")), "sweep.num_samples=40"]


# --- StopSignals, in this process ----------------------------------------------------------------------------


@contextmanager
def _run_that_signals_itself(events: list[str], on_create: int | None, on_end: tuple[int, ...]):
    """A stand-in for the parent run whose creation and clean-up are hit by signals half-way."""
    if on_create:
        os.kill(os.getpid(), on_create)
    events.append("created")
    try:
        yield "run-id"
        events.append("finished")
    except BaseException:
        events.append("killed")
        raise
    finally:
        for signum in on_end:
            os.kill(os.getpid(), signum)
            events.append(f"ended-{signal.Signals(signum).name}")


def test_a_signal_while_the_parent_run_is_created_ends_it_once_it_exists():
    events: list[str] = []
    with pytest.raises(SweepInterrupted) as raised:
        with runtime.StopSignals() as signals, signals.guard(_run_that_signals_itself(events, signal.SIGTERM, ())):
            events.append("body")
    assert events == ["created", "killed"], "the run was left half-created or its body ran"
    assert raised.value.exit_code == 143


def test_a_second_and_third_signal_during_the_clean_up_let_it_finish():
    events: list[str] = []
    with pytest.raises(SweepInterrupted) as raised:
        with runtime.StopSignals() as signals, signals.guard(
            _run_that_signals_itself(events, None, (signal.SIGINT, signal.SIGTERM))
        ):
            os.kill(os.getpid(), signal.SIGINT)
            events.append("body went on")
    assert events == ["created", "killed", "ended-SIGINT", "ended-SIGTERM"]
    assert raised.value.exit_code == 130, "the first signal decides the exit status"


def test_a_signal_during_a_clean_end_is_raised_after_the_run_ended():
    events: list[str] = []
    with pytest.raises(SweepInterrupted):
        with runtime.StopSignals() as signals, signals.guard(_run_that_signals_itself(events, None, (signal.SIGINT,))):
            events.append("body")
    assert events == ["created", "body", "finished", "ended-SIGINT"]


def test_ctrl_c_before_tune_listens_raises_instead_of_killing_the_process():
    """Tune installs its SIGUSR1 stop handler some way into ``fit``: a stop request before that must not hit
    SIGUSR1's default action (the process dies at once, its runs RUNNING)."""
    script = (
        "import os, signal, sys\n"
        "from raysweep import runtime\n"
        "from raysweep.errors import SweepInterrupted\n"
        "try:\n"
        "    with runtime.StopSignals() as s, s.tune_running():\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        sys.exit('not raised')\n"
        "except SweepInterrupted as e:\n"
        "    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL, 'SIGUSR1 handler not restored'\n"
        "    sys.exit(e.exit_code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130, (done.returncode, done.stderr[-2000:])


# --- The CLI, as a user stops it ------------------------------------------------------------------------------


def _status(db: Path, sql: str) -> list[str]:
    try:
        with sqlite3.connect(db, timeout=0.2) as connection:
            return [row[0] for row in connection.execute(sql)]
    except sqlite3.Error:
        return []


_PARENTS = ("select r.status from runs r join tags t on r.run_uuid = t.run_uuid "
            "where t.key = 'raysweep.role' and t.value = 'sweep'")
_CHILDREN = ("select r.status from runs r join tags t on r.run_uuid = t.run_uuid "
             "where t.key = 'mlflow.parentRunId'")


def _runs(tracking_uri: str):
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments) if experiments else []
    parents = [r for r in runs if r.data.tags.get("raysweep.role") == "sweep"]
    return parents, [r for r in runs if r not in parents]


def _one_line_exit(stderr: str, line: str) -> None:
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith(line), stderr[-3000:]


def test_sigterm_before_the_parent_run_exists_exits_143(cli_env, tmp_path, tracking_uri):
    """Killed while it imports the user's trainer (a slow import, as torch's): one line, 143, no run."""
    (tmp_path / "slow_trainer.py").write_text(
        "import pathlib, time\npathlib.Path('importing').write_text('')\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-m", "raysweep", "+sweep=fraud", "trainer.name=slow_trainer",
                             f"cluster.storage_path={tmp_path / 'ray'}"], env=cli_env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "importing").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, stderr[-3000:]
    _one_line_exit(stderr, "raysweep: interrupted by SIGTERM")
    assert _status(tmp_path / "mlflow.db", "select status from runs") == [], "a run was created"


@pytest.mark.slow
def test_sigterm_then_ctrl_c_again_and_again_leaves_nothing_running(ray_address, cli_env, tmp_path, tracking_uri):
    """SIGTERM mid-trial, then Ctrl-C every 10 ms until the parent run has ended: the clean-up still completes."""
    db, log = tmp_path / "mlflow.db", tmp_path / "stderr.txt"
    with open(log, "w") as stderr_file:
        proc = subprocess.Popen([sys.executable, "-m", "raysweep", *LONG, f"cluster.storage_path={tmp_path / 'ray'}"],
                                env={**cli_env, "RAY_ADDRESS": ray_address}, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=stderr_file, text=True)
    try:
        deadline = time.monotonic() + 120
        while "RUNNING" not in _status(db, _CHILDREN):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        # Once it is handled: Python runs pending handlers in signal-number order, SIGINT (2) before SIGTERM (15).
        while "raysweep: SIGTERM received" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.01)
        ctrl_c = 0
        deadline = time.monotonic() + 120
        while proc.poll() is None and _status(db, _PARENTS) in ([], ["RUNNING"]) and time.monotonic() < deadline:
            proc.send_signal(signal.SIGINT)
            ctrl_c += 1
            time.sleep(0.01)
        proc.wait(timeout=120)
        stderr = log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert ctrl_c >= 2, "the clean-up was over before a second Ctrl-C could reach it"
    print(f"{ctrl_c} Ctrl-C sent after SIGTERM")
    assert proc.returncode == 143, stderr[-3000:]
    _one_line_exit(stderr, "raysweep: interrupted by SIGTERM")
    (parent,), children = _runs(tracking_uri)
    assert parent.info.status == "KILLED"
    assert "RUNNING" not in {c.info.status for c in children} and "KILLED" in {c.info.status for c in children}


# --- raysweep stop JOB_ID ------------------------------------------------------------------------------------


class _UnansweringJob:
    """A job whose driver never reacts to the stop request (hung, or not a raysweep driver): only Ray stops it."""

    def __init__(self, status: str = "RUNNING"):
        self.status, self.stopped = status, False

    def get_job_status(self, job_id: str) -> str:
        if job_id != "job-1":
            raise RuntimeError(f"Request failed with status code 404: Job {job_id} does not exist.")
        return self.status

    def stop_job(self, job_id: str) -> bool:
        self.stopped, self.status = True, "STOPPED"
        return True


class _ExitingJob(_UnansweringJob):
    """A driver that has ended its runs and takes ``polls`` more looks to exit (Ray's shutdown on a busy node)."""

    def __init__(self, polls: int):
        super().__init__()
        self.polls = polls

    def get_job_status(self, job_id: str) -> str:
        self.polls -= 1
        return "FAILED" if self.polls < 0 else super().get_job_status(job_id)


@pytest.mark.parametrize(("polls", "grace_s", "stopped_by_ray"), [(5, 5.0, False), (1000, 0.2, True)])
def test_stop_lets_a_driver_that_ended_its_runs_exit_within_the_grace(tracking_uri, polls, grace_s, stopped_by_ray):
    from raysweep import stopping

    store = MlflowClient(tracking_uri)
    experiment = store.create_experiment("stop")
    parent = store.create_run(experiment, tags={"raysweep.role": "sweep", "raysweep.job_id": "job-1"}).info.run_id
    store.set_terminated(parent, "KILLED")  # as the driver does on the request, before its own exit
    jobs = _ExitingJob(polls)

    stopped = stopping.stop(jobs, store, "job-1", timeout_s=60, poll_s=0.01, grace_s=grace_s)

    assert jobs.stopped is stopped_by_ray and not stopped.forced  # not cut short while it exits (SIGKILL 3 s on)
    assert stopped.job_status == ("STOPPED" if stopped_by_ray else "FAILED") and stopped.parent_status == "KILLED"


def test_stop_falls_back_to_ray_and_ends_what_a_hung_driver_left_running(tracking_uri):
    from raysweep import stopping
    from raysweep.errors import RaySweepError

    store = MlflowClient(tracking_uri)
    experiment = store.create_experiment("stop")
    parent = store.create_run(experiment, tags={"raysweep.role": "sweep", "raysweep.job_id": "job-1"}).info.run_id
    child = store.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id
    jobs = _UnansweringJob()

    stopped = stopping.stop(jobs, store, "job-1", timeout_s=0.3, poll_s=0.05)

    assert store.get_run(parent).data.tags["raysweep.stop_requested"] == "job-1"
    assert jobs.stopped and stopped.forced and stopped.job_status == "STOPPED"
    assert [store.get_run(r).info.status for r in (parent, child)] == ["KILLED", "KILLED"]
    assert str(stopped).endswith("KILLED, 2 left RUNNING ended KILLED here, none RUNNING")
    with pytest.raises(RaySweepError, match="no job 'job-2'"):
        stopping.stop(jobs, store, "job-2")
    assert "STOPPED" in str(stopping.stop(_UnansweringJob("STOPPED"), store, "job-1"))



def _head_node(work: Path):
    """One Ray head node with its job server (127.0.0.2, every port pinned, token auth), stopped by PID after."""
    sys.path.insert(0, str(CONF_DIR.parent / "scripts"))
    from local_cluster import head_node

    return head_node(sys.executable, work, cpus=2)


@pytest.mark.slow
def test_raysweep_stop_ends_a_submitted_sweep_killed_with_nothing_running(tmp_path, tracking_uri):
    (tmp_path / "cluster").mkdir()
    with _head_node(tmp_path / "cluster") as cluster:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env = {**env, **cluster.env, "MLFLOW_TRACKING_URI": tracking_uri, "RAY_ADDRESS": cluster.dashboard_url,
               "PYTHONUNBUFFERED": "1"}
        job_id = f"raysweep-stop-{uuid.uuid4().hex[:6]}"
        submit = subprocess.run(
            [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--no-wait", "--submission-id", job_id,
             "--entrypoint-num-cpus", "0", "--", "python", "-m", "raysweep", *OUTLASTS_STOP, "cluster=remote",
             f"mlflow.tracking_uri={tracking_uri}", f"cluster.storage_path={tmp_path / 'ray'}"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert submit.returncode == 0, submit.stdout + submit.stderr
        deadline = time.monotonic() + 180
        while "RUNNING" not in _status(tmp_path / "mlflow.db", _CHILDREN):
            assert time.monotonic() < deadline, "the job never started a trial"
            time.sleep(0.3)

        started = time.monotonic()
        stop = subprocess.run([sys.executable, "-m", "raysweep", "stop", job_id, "--poll", "0.5"], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        took = time.monotonic() - started
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "asked the driver" in stop.stderr and "after --timeout" not in stop.stdout, stop.stdout + stop.stderr
        assert stop.stdout.startswith((f"job {job_id} STOPPED;", f"job {job_id} FAILED;")), stop.stdout
        logs = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "job", "logs", job_id], env=env,
                              capture_output=True, text=True, timeout=60).stdout
    (parent,), children = _runs(tracking_uri)
    assert parent.info.status == "KILLED", logs[-3000:]
    assert parent.data.tags["raysweep.job_id"] == job_id
    assert "RUNNING" not in {c.info.status for c in children} and "KILLED" in {c.info.status for c in children}
    assert "raysweep: interrupted by SIGTERM" in logs, logs[-3000:]
    print(f"raysweep stop took {took:.1f} s")
