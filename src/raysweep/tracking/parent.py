"""The sweep's parent run: open for the whole sweep, always ended with an explicit status."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.entities import Param, RunTag

from raysweep.errors import TrackingOutage
from raysweep.tracking import lease, queries
from raysweep.tracking.tags import DRIVER_HOST_TAG, DRIVER_PID_TAG, ENDED_BY_TAG, PARENT_ROLE, RESUMED_TAG, ROLE_TAG

#: MLflow's limit on a param value's length.
_MAX_PARAM_LENGTH = 6000


def driver_tags() -> dict[str, str]:
    """Where this sweep's driver runs, so a later command can tell a live sweep from an orphaned one."""
    return {DRIVER_HOST_TAG: socket.gethostname(), DRIVER_PID_TAG: str(os.getpid())}


def driver_alive(parent) -> bool | None:
    """Whether the driver of a RUNNING parent run still runs: ``None`` when this host cannot tell.

    The sweep's lease says (:mod:`raysweep.tracking.lease`): its holder on this host is alive while its process
    (pid and start time) exists, so a resumed driver counts as alive and a killed one as dead at once; a holder
    on another host is alive while its heartbeat is fresh, unknown (``None``) after that. A released lease on a
    RUNNING run means no driver holds it (``False``).

    A run recorded without a lease (an older raysweep) is judged by its driver's pid: ``None`` when that pid now
    belongs to a process started after the sweep, which may be a resumed driver or a recycled pid.
    """
    held = lease.read(parent)
    if held is not None:
        return lease.alive(held, run_id=parent.info.run_id)
    if lease.released(parent):
        return False
    tags = parent.data.tags
    if tags.get(DRIVER_HOST_TAG) != socket.gethostname() or not tags.get(DRIVER_PID_TAG, "").isdigit():
        return None
    import psutil

    try:
        process = psutil.Process(int(tags[DRIVER_PID_TAG]))
        started = process.create_time() * 1000
    except psutil.NoSuchProcess:
        return False
    return True if started <= parent.info.start_time + 5_000 else None


def end_orphans(client: MlflowClient, parent, *, other_hosts: bool = False, status: str | None = None) -> int:
    """End a sweep whose driver is gone while its runs were RUNNING; returns how many runs it ended.

    Acts only when the parent is RUNNING and its driver is dead (:func:`driver_alive` is ``False``), or, with
    ``other_hosts``, when this host cannot tell (a driver on another host whose lease expired). A live driver's
    sweep is never ended.

    Args:
        client: Client bound to the sweep's tracking store.
        parent: The sweep's parent run.
        other_hosts: Also end a sweep whose driver ran on another host and stopped its heartbeat
            (``raysweep analyse --end-orphans``).
        status: The end status of the parent and its open children; default :func:`stale_status` (KILLED, or
            FAILED after an outage).
    """
    alive = driver_alive(parent)
    if parent.info.status != "RUNNING" or alive is True or (alive is None and not other_hosts):
        return 0
    why = "driver gone (orphaned run)" if alive is False else (
        f"driver on another host silent (analyse --end-orphans on {socket.gethostname()})")
    status = status or stale_status(parent.info.run_id)
    ended = end_open_children(client, parent.info.experiment_id, parent.info.run_id, status)
    client.log_batch(parent.info.run_id, tags=[RunTag(ENDED_BY_TAG, why)])
    client.set_terminated(parent.info.run_id, status)
    return ended + 1


@contextmanager
def parent_run(
    client: MlflowClient,
    experiment_id: str,
    run_name: str,
    *,
    tags: Mapping[str, str],
    params: Mapping[str, object],
    config_yaml: str,
    resume_run_id: str | None = None,
) -> Iterator[str]:
    """Create the sweep's parent run (or re-open it to resume) and end it FINISHED, FAILED or KILLED.

    Any child run still RUNNING when the parent ends is ended too (KILLED), so no run is left RUNNING. The
    sweep's lease (:func:`raysweep.tracking.lease.hold`) is held from before a resumed run is re-opened until
    after it ended, so a second driver refuses to take it meanwhile and analysis sees a live driver.

    Args:
        client: Client bound to the sweep's tracking store.
        experiment_id: Experiment to create the run in.
        run_name: The parent run's name (the sweep run's name).
        tags: Tags for the parent run.
        params: Key config values, logged as params (only when the run is created).
        config_yaml: The resolved config, stored as the ``config.yaml`` artifact (only when created).
        resume_run_id: Re-open this parent run instead: runs a killed driver left RUNNING are ended
            KILLED first, then the parent is RUNNING again with a ``raysweep.resumed`` count.

    Yields:
        The parent run id.

    Raises:
        RaySweepError: Another live driver holds the sweep's lease.
    """
    status = "FAILED"
    if resume_run_id is None:
        run_id = client.create_run(experiment_id, run_name=run_name, tags={ROLE_TAG: PARENT_ROLE, **tags}).info.run_id
    else:
        run_id = resume_run_id
    # Taken before a resumed run is touched: a second driver refuses here, while the first still runs it.
    with lease.hold(client, run_id, contended=resume_run_id is not None):
        if resume_run_id is not None:
            end_open_children(client, experiment_id, run_id, stale_status(run_id))
            resumed = int(client.get_run(run_id).data.tags.get(RESUMED_TAG, "0")) + 1
            client.update_run(run_id, status="RUNNING")
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in {**tags, RESUMED_TAG: str(resumed)}.items()])
        try:
            if resume_run_id is None:
                client.log_batch(run_id, params=[Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in params.items()])
                client.log_text(run_id, config_yaml, queries.CONFIG_ARTIFACT)
            yield run_id
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except TrackingOutage:
            # The store does not answer: ending the runs now would fail and bury the one-line error.
            from raysweep.tracking import outage

            status = None
            outage.when_back(lambda: _end(client, experiment_id, run_id, "FAILED"), run_id,
                             outage.clock(client.tracking_uri))
            raise
        finally:
            if status == "FINISHED":
                from raysweep.tracking import outage

                # The sweep's work is done and recorded: a server that stops answering now is waited for too
                # (up to mlflow.max_outage_s), not left to MLflow's minutes of retries and a traceback.
                with outage.driver_http_retries():
                    outage.clock(client.tracking_uri).call(_end, client, experiment_id, run_id, status)
            elif status is not None:
                _end(client, experiment_id, run_id, status)


def _end(client: MlflowClient, experiment_id: str, run_id: str, status: str) -> None:
    end_open_children(client, experiment_id, run_id)
    client.set_terminated(run_id, status)


def stale_status(parent_run_id: str) -> str:
    """How a sweep its driver left RUNNING ends: FAILED when that driver gave up on an unreachable store.

    Reading it uses up that driver's local record, so a later end of the same sweep is judged afresh.
    """
    from raysweep.tracking import outage

    status = "FAILED" if outage.stopped_by_outage(parent_run_id) else "KILLED"
    outage.forget(parent_run_id)
    return status


def end_open_children(client: MlflowClient, experiment_id: str, parent_run_id: str, status: str = "KILLED") -> int:
    """End every RUNNING child of ``parent_run_id`` with ``status``; returns how many were ended."""
    open_runs = queries.children(client, experiment_id, parent_run_id, status="RUNNING")
    for run in open_runs:
        client.log_batch(run.info.run_id, tags=[RunTag(ENDED_BY_TAG, "parent run ended")])
        client.set_terminated(run.info.run_id, status, end_time=int(time.time() * 1000))
    return len(open_runs)
