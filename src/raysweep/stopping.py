"""Stopping a submitted sweep cleanly: ``raysweep stop JOB_ID``, and the driver's side of it.

``ray job stop`` sends the job's driver SIGTERM and SIGKILLs it 3 s later: too soon for a sweep to stop its trials,
save Tune's state and end its MLflow runs, so runs stay RUNNING. ``raysweep stop`` asks through the tracking store
instead: it sets ``raysweep.stop_requested`` to the job id on the job's parent run (found by ``raysweep.job_id``).
The driver of a submitted sweep watches that tag (:func:`watch_requests`) and, when it appears, stops exactly as on
SIGTERM (:class:`raysweep.runtime.StopSignals`: Tune's graceful stop, every open run ended KILLED, exit 143).
``raysweep stop`` waits for the parent run to end, however long the clean-up takes, then lets Ray stop what is
left of the job. Only a driver that does not answer within ``--timeout`` is stopped by Ray alone; ``raysweep stop``
then ends the runs it left RUNNING itself (the job is over, so nothing else will).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from raysweep import compat
from raysweep.errors import RaySweepError
from raysweep.tracking.tags import ENDED_BY_TAG, JOB_ID_TAG, PARENT_ROLE, ROLE_TAG, STOP_REQUESTED_TAG

log = logging.getLogger(__name__)

#: How often the driver looks for a stop request, and ``raysweep stop`` for the job's progress (seconds).
POLL_S = 2.0
#: Default of ``raysweep stop --timeout``: how long the driver may take to stop before Ray stops it (seconds).
TIMEOUT_S = 600.0
#: Once the driver has ended its runs, how long its exit (Ray's shutdown, its last line) may take before Ray stops
#: the job: Ray's stop sends SIGKILL 3 s after SIGTERM, which a driver on a busy node can outlast (seconds).
EXIT_GRACE_S = 15.0
_TERMINAL = {"STOPPED", "SUCCEEDED", "FAILED"}


def job_tags(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The parent run's tag naming the Ray job this driver runs in (none outside a submitted job)."""
    job_id = compat.job_submission_id(environ)
    return {JOB_ID_TAG: job_id} if job_id else {}


@contextmanager
def watch_requests(client, parent_run_id: str, signals, environ: Mapping[str, str] = os.environ,
                   interval_s: float = POLL_S) -> Iterator[None]:
    """While open, stop this sweep as on SIGTERM once ``raysweep stop`` asks for it on the parent run.

    Watches only in a submitted job's driver whose signal handlers are raysweep's (a SIGTERM elsewhere would not
    reach them): a local sweep stops with Ctrl-C or ``kill``.

    Args:
        client: MlflowClient of the sweep's tracking store.
        parent_run_id: The sweep's parent run.
        signals: The sweep's :class:`raysweep.runtime.StopSignals`.
        environ: Where Ray tells a job's driver its job id.
        interval_s: Seconds between two looks.
    """
    job_id = compat.job_submission_id(environ)
    if job_id is None or not signals.installed:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(interval_s):
            try:
                asked = client.get_run(parent_run_id).data.tags.get(STOP_REQUESTED_TAG)
            except Exception:  # noqa: BLE001 - the store may be briefly unreachable; look again next time
                continue
            if asked == job_id:  # a resumed sweep's parent may still carry an earlier job's request
                log.warning("raysweep: stop requested (raysweep stop %s); stopping the sweep", job_id)
                os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread by StopSignals
                return

    thread = threading.Thread(target=watch, name="raysweep-stop-requests", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


@dataclass(frozen=True)
class Stopped:
    """What :func:`stop` did: the job's final status and the parent run's, and whether Ray had to step in."""

    job_id: str
    job_status: str
    parent_run_id: str | None = None
    parent_status: str | None = None
    ended_here: int = 0  # runs this command ended KILLED because the driver could not
    forced: bool = False  # the driver did not stop in time and Ray stopped it

    def __str__(self) -> str:
        if self.parent_run_id is None:
            return f"job {self.job_id} {self.job_status}; no raysweep parent run was found for it"
        how = "Ray stopped its driver after --timeout; " if self.forced else ""
        ended = f", {self.ended_here} left RUNNING ended KILLED here" if self.ended_here else ""
        return (f"job {self.job_id} {self.job_status}; {how}parent run {self.parent_run_id} "
                f"{self.parent_status}{ended}, none RUNNING")


def stop(jobs, store, job_id: str, *, timeout_s: float = TIMEOUT_S, poll_s: float = POLL_S,
         grace_s: float = EXIT_GRACE_S, say: Callable[[str], None] = lambda line: None) -> Stopped:
    """Stop the sweep running as Ray job ``job_id``, letting its driver end every run first.

    Args:
        jobs: ``ray.job_submission.JobSubmissionClient`` of the cluster.
        store: MlflowClient of the sweep's tracking store.
        job_id: The job's submission id.
        timeout_s: How long the driver may take to stop before Ray stops it (SIGTERM, SIGKILL 3 s later).
        poll_s: Seconds between two looks at the job and the store.
        grace_s: How long the driver may take to exit once its runs are ended, before Ray stops it.
        say: Where progress lines go.

    Returns:
        :class:`Stopped`.

    Raises:
        RaySweepError: No such job on the cluster.
    """
    status = _job_status(jobs, job_id)
    if status in _TERMINAL:
        return Stopped(job_id, status, *_parent_state(_find_parent(store, job_id)))
    deadline = time.monotonic() + timeout_s
    parent, forced, runs_ended = None, False, None
    while status not in _TERMINAL:
        if parent is None:
            parent = _find_parent(store, job_id)
            if parent is not None:
                store.set_tag(parent.info.run_id, STOP_REQUESTED_TAG, job_id)
                say(f"asked the driver of job {job_id} to stop; waiting while it ends sweep "
                    f"{parent.info.run_name!r} (parent run {parent.info.run_id})")
        elif runs_ended is None and store.get_run(parent.info.run_id).info.status != "RUNNING":
            runs_ended = time.monotonic()
        if runs_ended is not None and time.monotonic() - runs_ended >= grace_s:
            break  # its runs are ended: what is left (Ray's own shutdown) may be cut short
        if time.monotonic() >= deadline:
            forced = True
            say(f"the driver did not stop within {timeout_s:g} s; asking Ray to stop job {job_id}")
            break
        time.sleep(poll_s)
        status = _job_status(jobs, job_id)
    if status not in _TERMINAL:
        jobs.stop_job(job_id)
        status = _wait_terminal(jobs, job_id, poll_s)
    parent = parent or _find_parent(store, job_id)
    ended = _end_left_running(store, parent) if parent is not None else 0
    return Stopped(job_id, status, *_parent_state(store.get_run(parent.info.run_id) if parent else None),
                   ended_here=ended, forced=forced)


def _job_status(jobs, job_id: str) -> str:
    try:
        status = jobs.get_job_status(job_id)
    except RuntimeError as error:  # the job server's 404
        if "does not exist" in str(error) or "404" in str(error):
            raise RaySweepError(f"no job {job_id!r} on this Ray cluster; list them with `ray job list`") from None
        raise
    return str(getattr(status, "value", status))


def _wait_terminal(jobs, job_id: str, poll_s: float, wait_s: float = 60.0) -> str:
    deadline = time.monotonic() + wait_s
    status = _job_status(jobs, job_id)
    while status not in _TERMINAL and time.monotonic() < deadline:
        time.sleep(min(poll_s, 0.5))
        status = _job_status(jobs, job_id)
    return status


def _find_parent(store, job_id: str):
    """The newest parent run that job ``job_id``'s driver created (or resumed), ``None`` before it has one."""
    experiments = [e.experiment_id for e in store.search_experiments()]
    if not experiments:
        return None
    runs = store.search_runs(experiments, f"tags.`{JOB_ID_TAG}` = '{job_id}' and tags.`{ROLE_TAG}` = '{PARENT_ROLE}'",
                             order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def _parent_state(parent) -> tuple[str | None, str | None]:
    return (parent.info.run_id, parent.info.status) if parent is not None else (None, None)


def _end_left_running(store, parent) -> int:
    """End KILLED what a driver stopped by Ray left RUNNING: the job is over, nothing else will end them."""
    from mlflow.entities import RunTag

    from raysweep.tracking.parent import end_open_children

    parent = store.get_run(parent.info.run_id)
    if parent.info.status != "RUNNING":
        return 0
    ended = end_open_children(store, parent.info.experiment_id, parent.info.run_id)
    store.log_batch(parent.info.run_id, tags=[RunTag(ENDED_BY_TAG, "raysweep stop (job stopped by Ray)")])
    store.set_terminated(parent.info.run_id, "KILLED")
    return ended + 1
