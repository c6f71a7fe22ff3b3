"""The sweep's parent run: open for the whole sweep, always ended with an explicit status."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.entities import Param, RunTag

from raysweep.tracking import queries
from raysweep.tracking.tags import DRIVER_HOST_TAG, DRIVER_PID_TAG, ENDED_BY_TAG, PARENT_ROLE, RESUMED_TAG, ROLE_TAG

#: MLflow's limit on a param value's length.
_MAX_PARAM_LENGTH = 6000


def driver_tags() -> dict[str, str]:
    """Where this sweep's driver runs, so a later command can tell a live sweep from an orphaned one."""
    return {DRIVER_HOST_TAG: socket.gethostname(), DRIVER_PID_TAG: str(os.getpid())}


def driver_alive(parent) -> bool | None:
    """Whether the driver process of a RUNNING parent run still exists: ``None`` when it ran on another host."""
    tags = parent.data.tags
    if tags.get(DRIVER_HOST_TAG) != socket.gethostname() or not tags.get(DRIVER_PID_TAG, "").isdigit():
        return None
    import psutil

    try:
        process = psutil.Process(int(tags[DRIVER_PID_TAG]))
    except psutil.NoSuchProcess:
        return False
    # A recycled pid belongs to a process started after the sweep began.
    return process.create_time() * 1000 <= parent.info.start_time + 5_000 and process.is_running()


def end_orphans(client: MlflowClient, parent) -> int:
    """End KILLED a sweep whose driver died (SIGKILL) while its runs were RUNNING; returns runs ended.

    Only acts when the parent is RUNNING and its driver, on this host, is gone.
    """
    if parent.info.status != "RUNNING" or driver_alive(parent) is not False:
        return 0
    ended = end_open_children(client, parent.info.experiment_id, parent.info.run_id)
    client.log_batch(parent.info.run_id, tags=[RunTag(ENDED_BY_TAG, "driver gone (orphaned run)")])
    client.set_terminated(parent.info.run_id, "KILLED")
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

    Any child run still RUNNING when the parent ends is ended too (KILLED), so no run is left RUNNING.

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
    """
    status = "FAILED"
    if resume_run_id is None:
        run_id = client.create_run(experiment_id, run_name=run_name, tags={ROLE_TAG: PARENT_ROLE, **tags}).info.run_id
    else:
        run_id = resume_run_id
        end_open_children(client, experiment_id, run_id)
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
    finally:
        end_open_children(client, experiment_id, run_id)
        client.set_terminated(run_id, status)


def end_open_children(client: MlflowClient, experiment_id: str, parent_run_id: str, status: str = "KILLED") -> int:
    """End every RUNNING child of ``parent_run_id`` with ``status``; returns how many were ended."""
    open_runs = queries.children(client, experiment_id, parent_run_id, status="RUNNING")
    for run in open_runs:
        client.log_batch(run.info.run_id, tags=[RunTag(ENDED_BY_TAG, "parent run ended")])
        client.set_terminated(run.info.run_id, status, end_time=int(time.time() * 1000))
    return len(open_runs)
