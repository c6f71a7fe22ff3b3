"""The sweep's lease: a live driver keeps others out, a dead one frees the sweep, another host is left alone, and
two drivers taking it at the same moment end with one holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from mlflow import MlflowClient

from raysweep.errors import RaySweepError
from raysweep.tracking import lease
from raysweep.tracking import parent as parent_mod
from raysweep.tracking.tags import (
    ENDED_BY_TAG,
    LEASE_HEARTBEAT_TAG,
    LEASE_HOLDER_TAG,
    PARENT_ROLE,
    PARENT_RUN_ID,
    ROLE_TAG,
)

#: A driver stand-in: holds the lease on a parent run (heartbeat every 0.1 s) until it is killed.
HOLDER = textwrap.dedent("""
    import sys, time
    from mlflow import MlflowClient
    from raysweep.tracking import lease
    with lease.hold(MlflowClient(sys.argv[1]), sys.argv[2], contended=False):
        print("held", flush=True)
        time.sleep(120)
""")


def _sweep(client: MlflowClient, name: str = "sweep") -> tuple[str, str]:
    """A RUNNING parent run with one RUNNING child, as a driver leaves them mid-sweep."""
    experiment_id = client.get_experiment_by_name("lease").experiment_id if client.get_experiment_by_name(
        "lease") else client.create_experiment("lease")
    parent = client.create_run(experiment_id, run_name=name, tags={ROLE_TAG: PARENT_ROLE}).info.run_id
    client.log_param(parent, "sweep.metric", "val_auc")
    client.log_param(parent, "sweep.mode", "max")
    child = client.create_run(experiment_id, tags={PARENT_RUN_ID: parent}).info.run_id
    return parent, child


def test_a_live_holder_keeps_the_sweep_and_its_death_frees_it_at_once(tracking_uri, tmp_path):
    client = MlflowClient(tracking_uri)
    parent_id, child_id = _sweep(client)
    env = {**os.environ, lease.TTL_ENV: "0.6"}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, tracking_uri, parent_id], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        first = client.get_run(parent_id).data.tags[LEASE_HEARTBEAT_TAG]
        time.sleep(0.5)
        run = client.get_run(parent_id)
        assert int(run.data.tags[LEASE_HEARTBEAT_TAG]) > int(first), "no heartbeat"
        assert run.data.tags[LEASE_HOLDER_TAG].split(":")[1] == str(holder.pid)
        assert parent_mod.driver_alive(run) is True
        # A second driver, and analysis with or without --end-orphans, leave a live driver's sweep alone.
        with pytest.raises(RaySweepError, match=r"^sweep run 'sweep' is held by another driver \(pid \d+ on "):
            with lease.hold(client, parent_id):
                pass
        assert parent_mod.end_orphans(client, run, other_hosts=True) == 0
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    run = client.get_run(parent_id)
    assert run.info.status == "RUNNING" and lease.read(run).pid == holder.pid  # SIGKILL released nothing
    assert parent_mod.driver_alive(run) is False  # no waiting for the heartbeat to age: the process is gone
    assert parent_mod.end_orphans(client, run) == 2
    assert client.get_run(parent_id).info.status == "KILLED"
    assert client.get_run(child_id).info.status == "KILLED"


def test_a_released_lease_frees_the_sweep_and_a_running_run_without_holder_is_orphaned(tracking_uri):
    client = MlflowClient(tracking_uri)
    parent_id, _ = _sweep(client)
    with lease.hold(client, parent_id) as me:
        assert lease.read(client.get_run(parent_id)).holder == me == lease.me()
        assert parent_mod.driver_alive(client.get_run(parent_id)) is True
    run = client.get_run(parent_id)
    assert run.data.tags[LEASE_HOLDER_TAG] == "" and lease.read(run) is None
    assert parent_mod.driver_alive(run) is False  # RUNNING, but its driver let go
    with lease.hold(client, parent_id, contended=False):  # free to take again
        pass


@pytest.mark.parametrize("age_s, alive", [(0, True), (3600, None)])
def test_a_driver_on_another_host_is_ended_only_when_asked_and_silent(age_s, alive, tracking_uri, capsys):
    client = MlflowClient(tracking_uri)
    parent_id, child_id = _sweep(client)
    beat = int(time.time() * 1000) - age_s * 1000
    client.set_tag(parent_id, LEASE_HOLDER_TAG, f"gpu-box-7:{os.getpid()}:12345")
    client.set_tag(parent_id, LEASE_HEARTBEAT_TAG, str(beat))
    run = client.get_run(parent_id)
    assert parent_mod.driver_alive(run) is alive
    assert parent_mod.end_orphans(client, run) == 0  # this host never ends another host's sweep by itself
    assert client.get_run(parent_id).info.status == "RUNNING"
    if alive:  # a fresh heartbeat: the other host's driver runs; even --end-orphans and a resume leave it
        assert parent_mod.end_orphans(client, run, other_hosts=True) == 0
        with pytest.raises(RaySweepError, match="held by another driver"):
            with lease.hold(client, parent_id):
                pass
        return
    from raysweep import analysis

    analysis.main(["--parent-run-id", parent_id, "--tracking-uri", tracking_uri])
    assert "its driver, on another host, has gone silent; if it is gone, end its runs with --end-orphans" in \
        capsys.readouterr().err
    assert client.get_run(parent_id).info.status == "RUNNING"
    # --end-orphans is the explicit ask: its runs end KILLED, saying who ended them.
    assert analysis.main(["--parent-run-id", parent_id, "--tracking-uri", tracking_uri, "--end-orphans"]) == 2
    ended = client.get_run(parent_id)
    assert ended.info.status == "KILLED" and "another host" in ended.data.tags[ENDED_BY_TAG]
    assert client.get_run(child_id).info.status == "KILLED"


#: Two ``resume=true`` driver stand-ins for the race: one process imports MLflow once and forks the two drivers
#: (each its own process, pid and store connection). Each says it is ready, then in each round waits for the go file,
#: takes the lease on that round's run (contended), prints the outcome on one line, and, if it holds the lease,
#: keeps it until the test says release (so the other driver decides while it is held).
RACERS = textwrap.dedent("""
    import os, sys, time, traceback
    from pathlib import Path
    from mlflow import MlflowClient
    from raysweep.errors import RaySweepError
    from raysweep.tracking import lease

    uri, folder, run_ids = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]

    def wait(path):
        deadline = time.monotonic() + 60
        while not path.exists():
            assert time.monotonic() < deadline, path
            time.sleep(0.001)

    def race():
        client = MlflowClient(uri)
        client.get_run(run_ids[0])  # the store is open before the race, as a driver's is when it takes the lease
        lease.me()
        (folder / f"ready-{os.getpid()}").touch()
        for round, run_id in enumerate(run_ids):
            wait(folder / f"go-{round}")
            try:
                with lease.hold(client, run_id) as me:
                    print("held", me, lease.read(client.get_run(run_id)).holder, flush=True)
                    wait(folder / f"release-{round}")
            except RaySweepError as error:
                print("refused", error, flush=True)

    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            try:
                race()
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        children.append(pid)
    sys.exit(max(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children))
""")


def test_two_drivers_taking_the_lease_at_the_same_moment_end_with_one_holder(tracking_uri, tmp_path):
    client = MlflowClient(tracking_uri)
    runs = [_sweep(client, f"race-{i}")[0] for i in range(3)]
    racers = subprocess.Popen([sys.executable, "-c", RACERS, tracking_uri, str(tmp_path), *runs],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(ready := list(tmp_path.glob("ready-*"))) < 2:
            assert racers.poll() is None, racers.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the racers never got ready"
            time.sleep(0.05)
        pids = {int(path.name.split("-")[1]) for path in ready}
        for round, run_id in enumerate(runs):
            (tmp_path / f"go-{round}").touch()  # both drivers see it within a few ms: they race
            lines = [racers.stdout.readline().strip() for _ in pids]
            held = [line.split(" ") for line in lines if line.startswith("held ")]
            refused = [line for line in lines if line.startswith("refused ")]
            assert len(held) == 1 and len(refused) == 1, (round, lines)
            # The one that holds it is the one the run names, and the other gave up naming it, in one line.
            [[_, me, recorded]] = held
            assert me == recorded == lease.read(client.get_run(run_id)).holder
            winner = int(me.split(":")[1])
            assert winner in pids
            assert refused[0].startswith((
                f"refused sweep run 'race-{round}' was taken by another driver at the same moment (pid {winner} on ",
                f"refused sweep run 'race-{round}' is held by another driver (pid {winner} on ")), refused
            (tmp_path / f"release-{round}").touch()
        out, err = racers.communicate(timeout=60)
        assert racers.returncode == 0 and not out, err[-3000:]
    finally:
        if racers.poll() is None:
            os.killpg(racers.pid, signal.SIGKILL)  # the forked drivers too
            racers.wait()
    assert all(lease.read(client.get_run(run_id)) is None for run_id in runs)  # the winners let go
