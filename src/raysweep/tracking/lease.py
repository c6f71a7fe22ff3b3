"""The lease on a sweep: which driver holds its parent run, and a heartbeat saying it still does.

MLflow has no locks and no compare-and-set, so the lease is two tags on the parent run
(:data:`~raysweep.tracking.tags.LEASE_HOLDER_TAG`, :data:`~raysweep.tracking.tags.LEASE_HEARTBEAT_TAG`): the holder
(``HOST:PID:CREATED_MS``, a process named by its pid *and* its start time, so a recycled pid is no holder) and the
time of its last heartbeat, written every :func:`heartbeat_s` seconds by a daemon thread while the sweep runs.

Whether the holder is alive (:func:`alive`):

- on this host, its process is looked up: gone means dead at once, even right after a SIGKILL;
- on another host, a heartbeat younger than :func:`ttl_s` means alive; an older one means *unknown* (``None``):
  this host cannot see that process, so it never ends that sweep's runs unless told to
  (``raysweep analyse --end-orphans``), but ``resume=true`` may take the sweep over.

Two drivers taking the lease at the same moment (two ``resume=true``) both write and then read back after a short
settle time: the later write stands, and the driver that reads another holder refuses.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from raysweep.errors import RaySweepError, TrackingOutage
from raysweep.tracking.tags import LEASE_HEARTBEAT_TAG, LEASE_HOLDER_TAG

log = logging.getLogger(__name__)

#: How long a driver on another host may stay silent before its lease counts as expired (seconds).
TTL_S = 60.0
#: Environment variable overriding :data:`TTL_S` (tests, or clusters whose store answers slowly).
TTL_ENV = "RAYSWEEP_LEASE_TTL_S"
#: How long a contended take waits before reading the holder back: longer than one store round trip.
SETTLE_S = 1.0
#: Leases this process holds now (run ids): a holder naming this process but not listed here is a leftover.
_HELD: set[str] = set()


def ttl_s() -> float:
    """Seconds after the last heartbeat when a lease held from another host expires."""
    try:
        return max(float(os.environ.get(TTL_ENV, TTL_S)), 0.1)
    except ValueError:
        raise RaySweepError(f"{TTL_ENV}={os.environ[TTL_ENV]!r} is not a number of seconds; "
                            f"set it to e.g. {TTL_S:g} or unset it") from None


def heartbeat_s() -> float:
    """Seconds between heartbeats: six of them fit in :func:`ttl_s`, so a few lost writes do not expire it."""
    return ttl_s() / 6


def _created_ms(pid: int) -> int | None:
    import psutil

    try:
        return int(psutil.Process(pid).create_time() * 1000)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def me() -> str:
    """This process as a lease holder: ``HOST:PID:CREATED_MS``."""
    return f"{socket.gethostname()}:{os.getpid()}:{_created_ms(os.getpid())}"


@dataclass(frozen=True)
class Lease:
    """A lease as read from a parent run's tags."""

    holder: str
    heartbeat_ms: int

    @property
    def host(self) -> str:
        return self.holder.rsplit(":", 2)[0]

    @property
    def pid(self) -> int | None:
        parts = self.holder.rsplit(":", 2)
        return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None

    @property
    def created_ms(self) -> int | None:
        parts = self.holder.rsplit(":", 2)
        return int(parts[2]) if len(parts) == 3 and parts[2].isdigit() else None

    def age_s(self, now_ms: int | None = None) -> float:
        """Seconds since the last heartbeat."""
        return ((now_ms if now_ms is not None else _now_ms()) - self.heartbeat_ms) / 1000

    def describe(self) -> str:
        """``pid 123 on host-a, heartbeat 4 s ago``, for messages."""
        return f"pid {self.pid} on {self.host}, heartbeat {self.age_s():.0f} s ago"


def read(run) -> Lease | None:
    """The lease recorded on a parent run; ``None`` when it was never taken or was released."""
    tags = run.data.tags
    holder = tags.get(LEASE_HOLDER_TAG, "")
    if not holder:
        return None
    beat = tags.get(LEASE_HEARTBEAT_TAG, "")
    return Lease(holder, int(beat) if beat.isdigit() else 0)


def released(run) -> bool:
    """Whether the run's lease was taken once and then let go (its holder tag is empty)."""
    return run.data.tags.get(LEASE_HOLDER_TAG) == ""


def alive(lease: Lease, *, run_id: str | None = None) -> bool | None:
    """Whether the holder of ``lease`` still runs: ``None`` when it is on another host and its heartbeat is stale.

    Args:
        lease: The lease (:func:`read`).
        run_id: The run it is on; a lease naming this very process that it no longer holds is a leftover (dead).
    """
    if lease.host == socket.gethostname():
        if lease.holder == me():
            return run_id is None or run_id in _HELD
        if lease.pid is None or lease.created_ms is None:
            return None
        created = _created_ms(lease.pid)
        # Same pid, other start time: the pid was recycled by a process started later.
        return created is not None and abs(created - lease.created_ms) <= 10
    return True if lease.age_s() <= ttl_s() else None


def held_by_other(run) -> Lease | None:
    """The lease of a live driver other than this process, else ``None`` (free to take)."""
    lease = read(run)
    if lease is None or lease.holder == me():
        return None
    return lease if alive(lease) is True else None


@contextmanager
def hold(client, parent_run_id: str, *, contended: bool = True) -> Iterator[str]:
    """Hold the lease on a sweep's parent run while the block runs, with a heartbeat thread; release it after.

    Args:
        client: ``MlflowClient`` of the sweep's tracking store.
        parent_run_id: The sweep's parent run.
        contended: Whether another driver may try to take it too (an existing run, resumed): then the holder
            is read back after :data:`SETTLE_S` and the later of two writers wins. A run just created is not.

    Yields:
        This holder's id (``HOST:PID:CREATED_MS``).

    Raises:
        RaySweepError: Another live driver holds it (or took it while this one did).
    """
    run = client.get_run(parent_run_id)
    other = held_by_other(run)
    name = run.info.run_name
    if other is not None:
        raise RaySweepError(f"sweep run {name!r} is held by another driver ({other.describe()}); "
                            "stop that driver first or wait until it ends")
    mine = me()
    _write(client, parent_run_id, mine)
    if contended:
        time.sleep(SETTLE_S)
        now = read(client.get_run(parent_run_id))
        if now is None or now.holder != mine:
            raise RaySweepError(f"sweep run {name!r} was taken by another driver at the same moment "
                                f"({now.describe() if now else 'released'}); let that one run")
    _HELD.add(parent_run_id)
    stop = threading.Event()
    beat = threading.Thread(target=_beat, args=(client, parent_run_id, stop), daemon=True,
                            name=f"raysweep-lease-{parent_run_id[:8]}")
    beat.start()
    outage = False
    try:
        yield mine
    except TrackingOutage:
        outage = True  # the store does not answer: the lease expires with this process instead
        raise
    finally:
        stop.set()
        # A heartbeat stuck in MLflow's HTTP retries must not hold up the end of the sweep: it is a daemon.
        beat.join(timeout=2)
        _HELD.discard(parent_run_id)
        if not outage:
            release(client, parent_run_id, mine)


def release(client, parent_run_id: str, holder: str) -> None:
    """Let go of the lease if ``holder`` still holds it; a store that does not answer leaves it to expire."""
    from raysweep.tracking.outage import driver_http_retries

    try:
        with driver_http_retries():  # seconds, not MLflow's minutes of retries, for a store gone quiet at the end
            lease = read(client.get_run(parent_run_id))
            if lease is not None and lease.holder == holder:
                _write(client, parent_run_id, "")
    except Exception as error:  # noqa: BLE001 - the lease expires by itself when this process ends
        log.warning("sweep lease not released (%s); it expires when this process ends", type(error).__name__)


def _write(client, parent_run_id: str, holder: str) -> None:
    from mlflow.entities import RunTag

    client.log_batch(parent_run_id, tags=[RunTag(LEASE_HOLDER_TAG, holder),
                                          RunTag(LEASE_HEARTBEAT_TAG, str(_now_ms()))])


def _beat(client, parent_run_id: str, stop: threading.Event) -> None:
    while not stop.wait(heartbeat_s()):
        try:
            client.set_tag(parent_run_id, LEASE_HEARTBEAT_TAG, str(_now_ms()))
        except Exception as error:  # noqa: BLE001 - an outage: the next beat tries again, the TTL allows for it
            log.debug("lease heartbeat not written: %s", error)


def _now_ms() -> int:
    return int(time.time() * 1000)
