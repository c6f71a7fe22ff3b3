"""Tracking-server outages: a real ``mlflow server`` stopped mid-sweep and started again on the same port.

The sweeps are the real CLI in subprocesses, joining the session's Ray; the server is a real ``mlflow server``
over a sqlite file. What a user relies on: a sweep rides out a short outage with every step of every trial in
the store afterwards (both logging modes), and an outage longer than ``mlflow.max_outage_s`` stops the sweep
with one line and exit 1, its parent run FAILED once the server answers again. The same after the trials (results,
registration, report): ridden out or one line, and a resume registers the best trial once.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
from conftest import SMOKE
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from raysweep import report, sweep
from raysweep.errors import TrackingOutage
from raysweep.runtime import free_port
from raysweep.tracking import outage
from raysweep.tracking.buffer import MetricBuffer
from raysweep.tracking.tags import PARENT_ROLE, ROLE_TAG, TRIAL_ID_TAG

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from sqlite_server import SqliteServer as Server  # noqa: E402
from sqlite_server import sqlite_server as mlflow_server  # noqa: E402

#: How long the server is down in the ride-out test (the issue's "30 s mid-sweep").
OUTAGE_S = 30
#: MLflow's own retries of each call (7 by default, about 4 minutes) would hide a 30 s outage behind one blocked
#: call; with one retry the sweep has to wait the outage out itself, as it must for any outage up to
#: mlflow.max_outage_s whatever MLflow's settings (which raysweep forwards to every trial's process).
MLFLOW_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
#: Fixed-cost trials that sleep, two per sweep at a quarter CPU each (both sweeps run at once even where the shared
#: Ray has only one CPU free), ITERATIONS x 1 s: the outage begins after their first steps and ends about when they do.
ITERATIONS = 36
SWEEP = ["+sweep=overhead", "sweep.num_samples=2", "sweep.max_concurrent_trials=2", "trainer.cpus_per_trial=0.25",
         f"trainer.iterations={ITERATIONS}", "trainer.params.seconds_per_iteration=1", "cluster.verbose=0"]


def _dead_server() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_a_write_waits_for_the_server_and_gives_up_in_one_line_after_max_outage_s(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(_dead_server())
    clock = outage.Outage(1.0, what="MLflow tracking server X")
    started = time.monotonic()
    with pytest.raises(TrackingOutage) as raised:
        clock.call(client.get_experiment, "0")
    assert time.monotonic() - started >= 1.0  # it kept trying until the limit
    assert clock.expired and raised.value.exit_code == 1
    message = str(raised.value)
    assert "\n" not in message and "mlflow.max_outage_s" in message and message.startswith("MLflow tracking server X")


def test_buffered_metrics_stay_until_written(monkeypatch, tracking_uri):
    """A write that finds the server down keeps its values without holding the trial up; the next one writes them
    all, once. Only an unreachable server is waited for."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    store = MlflowClient(tracking_uri)
    run_id = store.create_run(store.create_experiment("buffer")).info.run_id
    clock = outage.Outage(60.0)
    buffer = MetricBuffer(MlflowClient(_dead_server()), interval_s=0, outage=clock)
    buffer.tag(run_id, {"node": "10.0.0.1"})
    buffer.add(run_id, {"score": 1.0}, step=1)  # due at once; the server does not answer and the trial goes on
    buffer.add(run_id, {"score": 2.0}, step=2)
    assert clock.down_s > 0
    buffer._client = store  # the server is back
    buffer.flush()
    assert [(m.step, m.value) for m in store.get_metric_history(run_id, "score")] == [(1, 1.0), (2, 2.0)]
    assert store.get_run(run_id).data.tags["node"] == "10.0.0.1"  # kept with the metrics through the outage
    assert clock.down_s == 0
    store.set_terminated(run_id)

    with pytest.raises(MlflowException) as raised:  # 404: the request's fault, not the server's: raised at once
        clock.call(store.get_run, "0" * 32)
    assert not outage.unreachable(raised.value) and clock.down_s == 0
    # A store that is a file has no outages; a server can have them.
    assert not outage.clock(tracking_uri).enabled and outage.clock("http://127.0.0.1:5000").enabled


def test_a_driver_that_gave_up_leaves_a_record_for_resume_and_analyse(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(_dead_server())
    ended = outage.when_back(lambda: client.set_terminated("a" * 32, "FAILED"), "a" * 32, outage.Outage(1.0),
                             grace_s=0.5)
    assert not ended and outage.stopped_by_outage("a" * 32)
    assert outage.when_back(lambda: None, "a" * 32, outage.Outage(1.0))  # the server answers: ended, record dropped
    assert not outage.stopped_by_outage("a" * 32)


def test_the_driver_stops_tune_once_the_outage_outlasts_max_outage_s(monkeypatch):
    """The watch while trials run: MLflow's calls give up fast (raysweep retries them), an expired outage asks Tune
    to stop and ends the sweep with the one-line error; the user's own MLflow retry settings are left alone."""
    monkeypatch.setattr(outage, "PROBE_S", 0.05)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "77")
    client = MlflowClient(_dead_server())
    asked, seen = [], {}

    def probe():
        seen.update({k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")})
        client.get_experiment("0")

    with pytest.raises(TrackingOutage):
        with outage.watch(outage.Outage(0.3), probe, lambda: asked.append(True) or True):
            deadline = time.monotonic() + 30
            while not asked and time.monotonic() < deadline:
                time.sleep(0.05)
    assert asked == [True] and seen == {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "77"}
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # restored after the trials
    with outage.watch(outage.Outage(0.3), lambda: None, asked.append):  # a store that answers: nothing happens
        time.sleep(0.5)
    assert asked == [True]


def _steps_logged(db: Path, run_name_prefix: str) -> int:
    """Metric values the server's store holds for the children of the sweep run ``run_name_prefix`` (read directly:
    the test must not wait on the server it stopped)."""
    try:
        with sqlite3.connect(db, timeout=1) as connection:
            return connection.execute(
                "select count(*) from metrics m join tags t on t.run_uuid = m.run_uuid "
                "join runs p on p.run_uuid = t.value "
                "where t.key = 'mlflow.parentRunId' and p.name like ? and m.key = 'score'",
                (run_name_prefix + "%",),
            ).fetchone()[0]
    except sqlite3.Error:
        return 0


def _sweep(args, env, cwd: Path, name: str) -> subprocess.Popen:
    """The CLI in a subprocess; its output goes to ``NAME.out`` and ``NAME.err`` in ``cwd``."""
    with open(cwd / f"{name}.out", "w") as out, open(cwd / f"{name}.err", "w") as err:
        return subprocess.Popen([sys.executable, "-m", "raysweep", *args], env=env, cwd=cwd, stdout=out, stderr=err)


def _wait_for_steps(server: Server, names: list[str], processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + 180
    while not all(_steps_logged(server.db, name) >= 2 for name in names):
        for process in processes:
            assert process.poll() is None, "a sweep ended before the outage"
        assert time.monotonic() < deadline, "no trial logged a step in 180 s"
        time.sleep(0.3)


def _sweep_runs(client: MlflowClient, run_name: str):
    experiment = client.get_experiment_by_name("raysweep-overhead")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get(ROLE_TAG) == PARENT_ROLE and r.info.run_name.startswith(run_name)]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def _stop(processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


@contextmanager
def _two_sweeps(server: Server, ray_address: str, folder: Path, prefix: str, *overrides: str):
    """A driver-mode and a worker-mode sweep at once against ``server``, joining the session's Ray; yields their
    names and processes once both logged steps, and kills what still runs on exit."""
    env = {**os.environ, **MLFLOW_RETRIES, "MLFLOW_TRACKING_URI": server.url, "RAY_ADDRESS": ray_address,
           "PYTHONUNBUFFERED": "1"}
    names, processes = [], []
    try:
        for mode in ("driver", "worker"):
            names.append(f"{prefix}-{mode}")
            keys = {o.split("=", 1)[0] for o in overrides}  # an override here replaces SWEEP's value of its key
            args = [*(o for o in SWEEP if o.split("=", 1)[0] not in keys), f"mlflow={mode}",
                    f"sweep.run_name={names[-1]}", f"cluster.storage_path={folder / 'ray'}", *overrides]
            processes.append(_sweep(args, env, folder, names[-1]))
        _wait_for_steps(server, names, processes)
        yield names, processes
    finally:
        _stop(processes)


@pytest.mark.slow
def test_sweeps_ride_out_a_server_outage_with_every_step_stored(ray_address, tmp_path):
    """Both logging modes at once: the server is down OUTAGE_S seconds while the trials run."""
    with mlflow_server(tmp_path) as server, _two_sweeps(server, ray_address, tmp_path, "ride-out") as (names, processes):
        server.stop()
        time.sleep(OUTAGE_S)
        server.start()
        codes = [process.wait(timeout=300) for process in processes]
        logs = {name: (tmp_path / f"{name}.err").read_text()[-3000:] for name in names}
        assert codes == [0, 0], logs

        client = MlflowClient(server.url)
        for name in names:
            parent, children = _sweep_runs(client, name)
            assert parent.info.status == "FINISHED", logs[name]
            # One run per trial (no duplicate made by a retried create), each with every step of its trial.
            assert len(children) == 2 and len({c.data.tags[TRIAL_ID_TAG] for c in children}) == 2, name
            for child in children:
                assert child.info.status == "FINISHED", (name, child.data.tags)
                steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "score"))
                assert steps == list(range(1, ITERATIONS + 1)), (name, child.info.run_name, steps)


@pytest.mark.slow
def test_outage_longer_than_max_outage_s_stops_with_one_line_and_exit_1(ray_address, tmp_path):
    """Both logging modes at once; the parent ends FAILED as soon as the server answers again."""
    with mlflow_server(tmp_path) as server, \
            _two_sweeps(server, ray_address, tmp_path, "give-up", "mlflow.max_outage_s=3",
                        # Trials far longer than the test: whichever sweep starts first is still running at the outage.
                        "trainer.iterations=600",
                        # A quarter CPU a trial: both sweeps start even where the shared Ray has only one CPU free.
                        "trainer.cpus_per_trial=0.25") as (names, processes):
        server.stop()
        time.sleep(8)  # well past mlflow.max_outage_s
        server.start()
        for process in processes:
            process.wait(timeout=180)
        client = MlflowClient(server.url)
        for name, process in zip(names, processes):
            stderr = (tmp_path / f"{name}.err").read_text()
            assert process.returncode == 1, stderr[-3000:]
            assert "Traceback" not in stderr, stderr[-3000:]
            lines = [line for line in stderr.splitlines() if line.strip()]
            assert lines[-1].startswith("raysweep: ") and "mlflow.max_outage_s" in lines[-1], lines[-5:]
            parent, children = _sweep_runs(client, name)
            assert parent.info.status == "FAILED", name
            assert children and all(c.info.status != "RUNNING" for c in children), name


class Cable:
    """The network between the sweep and a running ``mlflow server``: a TCP relay on its own port. Unplugged, the
    server cannot be reached (connections refused, open ones cut), as in an outage; plugged in again at once (a
    restarted server takes 10-20 s to answer on a busy machine)."""

    def __init__(self, server: Server):
        self.target = server.port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def plug(self) -> None:
        with self._lock:
            self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port at once
            threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def unplug(self) -> None:
        with self._lock:  # no connection is accepted or relayed past this point
            listener, self._listener = self._listener, None
            for connection in [listener, *self._open]:
                _close(connection)
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                near, _ = listener.accept()
            except OSError:  # unplugged: the listener is closed
                return
            with self._lock:
                if self._listener is not listener:
                    _close(near)
                    return
                far = socket.create_connection(("127.0.0.1", self.target))
                self._open |= {near, far}
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= {source, sink}
            for end in (source, sink):
                _close(end)


def _close(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    connection.close()


def _outage_at_report(monkeypatch, cable: Cable, seconds: float) -> list:
    """The server becomes unreachable for ``seconds`` when the sweep goes to draw its report, after registering its
    version (the step chosen by wrapping raysweep's own report function; MLflow itself is untouched)."""
    drawn, original = [], report.log_report

    def plug_in_later():  # counted from the sweep's first unanswered call: drawing figures first takes a while
        store = outage.clock(cable.url)
        deadline = time.monotonic() + 120
        while store.down_s == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(seconds)
        cable.plug()

    def unplug_then_draw(*args, **kwargs):
        if not drawn:
            cable.unplug()
            threading.Thread(target=plug_in_later, daemon=True).start()
        drawn.append(args[1].parent_run_id)
        return original(*args, **kwargs)

    monkeypatch.setattr(report, "log_report", unplug_then_draw)
    return drawn


def test_after_training_the_phase_is_tried_again_as_a_whole_and_gives_up_in_one_line(monkeypatch):
    """A server: each attempt's MLflow call gives up within seconds (MLflow's own ~4 minutes would hide the limit),
    and the phase is tried again until mlflow.max_outage_s; a store that is a file: tried once, its error raised."""
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    client, attempts = MlflowClient(_dead_server()), []

    def phase():
        attempts.append(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES"))
        return client.get_experiment("0")

    with pytest.raises(TrackingOutage) as raised, outage.driver_http_retries():
        outage.after_training(outage.Outage(1.0, what="MLflow tracking server X"), phase)
    message = str(raised.value)
    assert "\n" not in message and raised.value.exit_code == 1 and len(attempts) > 1 and set(attempts) == {"0"}
    assert message.startswith("MLflow tracking server X") and "after the trials finished" in message
    assert "resume=true" in message and "mlflow.max_outage_s" in message

    def refused():
        attempts.append("file")
        raise ConnectionRefusedError("a file store's own error")

    with pytest.raises(ConnectionRefusedError):
        outage.after_training(outage.Outage(60.0, enabled=False), refused)
    assert attempts.count("file") == 1


@pytest.mark.slow
def test_an_outage_after_the_trials_stops_in_one_line_and_resume_registers_once(ray_address, make_cfg, tmp_path,
                                                                                 monkeypatch):
    """The server goes away once the version is registered: longer than mlflow.max_outage_s, the sweep stops in one
    line and its parent ends FAILED when the server is back; the resume meets the same outage, shorter this time,
    rides it out, and finishes the sweep with one version (the one registered before), one logged model, the
    aliases on it and the report drawn."""
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)  # MLflow's defaults: 4 minutes a call
    with mlflow_server(tmp_path) as server:
        cable = Cable(server)
        cable.plug()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", cable.url)
        mlflow.set_tracking_uri(cable.url)
        client = MlflowClient(cable.url)
        args = ["+sweep=fraud", *SMOKE, "sweep.num_samples=2", "sweep.run_name=after-training"]

        _outage_at_report(monkeypatch, cable, seconds=2.5)
        with pytest.raises(TrackingOutage) as raised:
            sweep.run(make_cfg(*args, "mlflow.max_outage_s=1"))
        assert "\n" not in str(raised.value) and "after the trials finished" in str(raised.value)
        (parent,) = client.search_runs([client.get_experiment_by_name("fraud-detection").experiment_id],
                                       filter_string="attributes.run_name = 'after-training'")
        assert parent.info.status == "FAILED"  # ended by the driver once the server answered again
        assert len(client.search_model_versions("name = 'fraud-rf'")) == 1  # registered before the outage

        drawn = _outage_at_report(monkeypatch, cable, seconds=1.5)
        outcome = sweep.run(make_cfg(*args, "resume=true", "mlflow.max_outage_s=120"))
        assert drawn == [parent.info.run_id] * 2  # drawn again once the server answered
        (version,) = client.search_model_versions("name = 'fraud-rf'")
        assert outcome.registration.version == version.version == "1" and version.description
        assert outcome.registration.aliases == ("challenger", "champion")
        assert client.get_run(parent.info.run_id).info.status == "FINISHED"
        assert "report/summary.md" in {f.path for f in client.list_artifacts(parent.info.run_id, "report")}
        best = client.get_run(outcome.summary.best_run_id)
        models = client.search_logged_models([best.info.experiment_id],
                                             filter_string=f"source_run_id = '{best.info.run_id}'")
        assert len(models) == 1 and best.info.status == "FINISHED"
        cable.unplug()
