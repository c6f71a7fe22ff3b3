"""Riding out a tracking server that stops answering; stopping the sweep when it stays away too long.

MLflow retries each HTTP call itself (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, default 7, backoff factor 2: sleeps of
0, 4, 8, 16, 32, 64 and 120 s, connection refused and POSTs included), so one call against a stopped server blocks
for about four minutes and then raises. That suits a user's own ``mlflow.log_*`` calls in a trial, but not the
sweep's bookkeeping: it has no deadline, it resumes up to two minutes after the server is back, and a write the
server took just before it died is sent again (a second child run for one trial).

So, against an HTTP server, raysweep's writes go through an :class:`Outage` clock: a write that finds the server
unreachable (a connection error, a timeout, a 5xx or 429 answer) is retried every second or two until it goes
through, and the clock counts how long the server has not answered. While the trials run, the driver makes each
MLflow call give up within seconds (:func:`watch`: unless the user set MLflow's variables) and probes the store,
so a sweep rides out an outage and writes everything it held back once the server answers again. An outage longer
than ``mlflow.max_outage_s`` stops Tune gracefully and raises :class:`~raysweep.errors.TrackingOutage` (one line,
exit 1); the parent run is ended FAILED when the server answers again (:func:`when_back`), or, when it never does
while this driver waits, by the next resume or analyse (:func:`stopped_by_outage`). After the trials, the phase
that records their results, registers and reports is tried again as a whole, under the same clock and with the same
fast-failing MLflow calls (:func:`after_training`; each of its steps finds what a cut-short attempt did).

Stores that are files (sqlite) have no outages: their errors are raised at once, as before.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from raysweep.errors import TrackingOutage

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds between attempts of a write that found the server unreachable: the first retry, and the most.
RETRY_S = (0.5, 2.0)
#: Seconds between the driver's probes of the store while trials run.
PROBE_S = 2.0
#: MLflow's own retry settings while the driver watches the store: one call gives up within seconds, so that
#: raysweep's loop (which knows the deadline) retries it. A variable the user set is left as it is.
DRIVER_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
#: How long a driver that gave up waits, at least and at most, for the server to answer so that it can end
#: the parent run FAILED itself.
GRACE_S = (15.0, 60.0)


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the tracking server could not be reached or could not answer now.

    Connection errors and timeouts, and answers 5xx or 429 (MLflow raises them as ``MlflowException``, 500 for a
    connection that failed); a 4xx answer is the request's own fault and is not retried.
    """
    if isinstance(error, TrackingOutage):
        return False
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    try:
        import requests

        if isinstance(error, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # pragma: no cover - requests comes with MLflow
        pass
    status = getattr(error, "get_http_status_code", None)
    if callable(status):
        try:
            code = int(status())
        except (TypeError, ValueError):
            return False
        return code >= 500 or code == 429
    return False


class Outage:
    """How long the tracking store has not answered, and the retry loop that waits for it.

    Args:
        max_outage_s: Give up once the store has not answered for this long (``mlflow.max_outage_s``).
        enabled: ``False`` for a store with no outages (a file): calls run once and raise as they are.
        what: The store, as shown in messages (credentials masked).
    """

    def __init__(self, max_outage_s: float, *, enabled: bool = True, what: str = "the MLflow tracking server"):
        self.max_outage_s = float(max_outage_s)
        self.enabled = enabled
        self.what = what
        self._down_since: float | None = None
        self._gave_up = False
        self._lock = threading.Lock()

    @property
    def down_s(self) -> float:
        """Seconds since the store stopped answering (0 while it answers)."""
        since = self._down_since
        return 0.0 if since is None else time.monotonic() - since

    @property
    def expired(self) -> bool:
        """Whether the store has not answered for longer than ``max_outage_s`` (or this process gave up)."""
        return self._gave_up or (self._down_since is not None and self.down_s > self.max_outage_s)

    def answered(self) -> None:
        """The store answered: the outage, if any, is over."""
        with self._lock:
            if self._down_since is not None:
                log.warning("%s answers again after %.0f s; writing what was held back", self.what, self.down_s)
            self._down_since, self._gave_up = None, False

    def failed(self) -> None:
        """The store did not answer: start counting, if not yet."""
        with self._lock:
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("%s does not answer; the sweep waits up to %g s (mlflow.max_outage_s) for it",
                            self.what, self.max_outage_s)

    def reset(self) -> None:
        """Start afresh (a new sweep in this process)."""
        self._down_since, self._gave_up = None, False

    def give_up(self) -> None:
        """Stop waiting: further calls try once and raise :class:`TrackingOutage` when the store does not answer."""
        self._gave_up = True

    def error(self) -> TrackingOutage:
        """The one-line error of an outage that lasted too long."""
        return TrackingOutage(
            f"{self.what} did not answer for more than {self.max_outage_s:g} s (mlflow.max_outage_s), so the sweep "
            "stopped; start the server again (the parent run is marked FAILED when it answers), then resume with "
            "resume=true, or raise mlflow.max_outage_s"
        )

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, tried again while the store does not answer, until it does or the outage expired.

        Raises:
            TrackingOutage: The store has not answered for longer than ``max_outage_s``.
            Exception: Whatever else ``fn`` raised (a 4xx answer, a bug), at once.
        """
        delay = RETRY_S[0]
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as error:
                if not self.enabled or not unreachable(error):
                    raise
                self.failed()
                if self.expired:
                    self.give_up()
                    raise self.error() from None
                time.sleep(min(delay, max(self.max_outage_s - self.down_s, 0.0) + 0.05))
                delay = min(delay * 2, RETRY_S[1])
                continue
            if self.enabled:
                self.answered()
            return result


class Patient:
    """An ``MlflowClient`` whose every method goes through :meth:`Outage.call` (see :func:`patient`)."""

    def __init__(self, client, outage: Outage):
        self._client = client
        self.outage = outage

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute
        return lambda *args, **kwargs: self.outage.call(attribute, *args, **kwargs)


def patient(client, outage: Outage | None):
    """``client`` with its calls retried through ``outage`` (``client`` itself when there is no clock)."""
    if outage is None or not outage.enabled or isinstance(client, Patient):
        return client
    return Patient(client, outage)


def is_server(uri: str | None) -> bool:
    """Whether ``uri`` is a tracking server (HTTP), the kind of store that can go away for a while."""
    return bool(uri) and uri.split(":", 1)[0].lower() in ("http", "https")


#: One clock per store in this process: the driver's callbacks, its probe and its parent run share it.
_CLOCKS: dict[str, Outage] = {}
#: ``mlflow.max_outage_s``'s default, for a clock nobody configured (a callback restored from an older sweep).
DEFAULT_MAX_OUTAGE_S = 300.0


def clock(tracking_uri: str | None, max_outage_s: float | None = None) -> Outage:
    """This process's :class:`Outage` for ``tracking_uri`` (disabled for a store that is a file).

    The sweep's driver sets ``max_outage_s`` (:func:`watch`'s caller); Tune's callbacks, which Tune may have restored
    from a sweep's saved state, take the clock as it is.
    """
    key = str(tracking_uri)
    if key not in _CLOCKS:
        from raysweep.secrets import redact

        _CLOCKS[key] = Outage(DEFAULT_MAX_OUTAGE_S, enabled=is_server(tracking_uri),
                              what=f"MLflow tracking server {redact(tracking_uri)}")
    if max_outage_s is not None:
        _CLOCKS[key].max_outage_s = float(max_outage_s)
    return _CLOCKS[key]


@contextmanager
def driver_http_retries() -> Iterator[None]:
    """While open, MLflow calls in this process give up within seconds (:data:`DRIVER_HTTP_ENV`), unless set."""
    added = {k: v for k, v in DRIVER_HTTP_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextmanager
def watch(outage: Outage, probe: Callable[[], Any], on_expired: Callable[[], Any]) -> Iterator[Outage]:
    """While the trials run: probe the store every :data:`PROBE_S`, and stop the sweep once the outage expired.

    Args:
        outage: The store's clock (:func:`clock`); a disabled one watches nothing.
        probe: A cheap read of the store (its experiment): in worker mode the driver writes little itself.
        on_expired: Called from the probe thread once the outage expired (asks Tune to stop); returns whether it
            could (``False``: asked again at the next probe).

    Raises:
        TrackingOutage: On exit, when the outage expired meanwhile (after ``on_expired`` stopped Tune).
    """
    if not outage.enabled:
        yield outage
        return
    outage.reset()
    done = threading.Event()
    stopped = threading.Event()  # Tune was asked to stop: the sweep ends with the outage, whatever happens next

    def run() -> None:
        while not done.wait(PROBE_S):
            try:
                probe()
                outage.answered()
            except Exception as error:  # noqa: BLE001 - the probe only measures; writes raise their own errors
                if unreachable(error):
                    outage.failed()
            if outage.expired:
                outage.give_up()
                if on_expired() is not False:
                    stopped.set()
                    return

    thread = threading.Thread(target=run, name="raysweep-store-watch", daemon=True)
    with driver_http_retries():
        thread.start()
        try:
            yield outage
        finally:
            done.set()
            thread.join(PROBE_S + 35)
    if stopped.is_set() or outage.expired:
        outage.give_up()
        raise outage.error()


def after_training(outage: Outage, phase: Callable[[], T]) -> T:
    """Run the sweep's phase after the trials (``phase``: idempotent as a whole), again while the store does not answer.

    Each attempt starts over; the clock goes on from any outage the trials ended in, and gives up once the store
    has not answered for ``max_outage_s``.

    Raises:
        TrackingOutage: The store did not answer for longer than ``max_outage_s``: one line saying that the trials
            are done and that ``resume=true`` finishes the sweep without training again.
    """
    try:
        return outage.call(phase)
    except TrackingOutage:
        raise TrackingOutage(
            f"{outage.what} did not answer for more than {outage.max_outage_s:g} s (mlflow.max_outage_s) after the "
            "trials finished, so the sweep stopped before recording its results; start the server again (the parent "
            "run is marked FAILED when it answers), then resume=true finishes it without training again, or raise "
            "mlflow.max_outage_s"
        ) from None


def when_back(end: Callable[[], Any], run_id: str, outage: Outage, grace_s: float | None = None) -> bool:
    """After an outage stopped the sweep: run ``end`` (mark the parent FAILED) as soon as the store answers.

    Waits ``grace_s`` (default ``max_outage_s`` again, within :data:`GRACE_S`); when the store still does not answer, records locally that
    ``run_id`` stopped for an outage, so that the next resume or analyse on this host ends it FAILED. Returns
    whether ``end`` ran. Never raises for the store: the one-line :class:`TrackingOutage` is what the user sees.
    """
    grace = min(max(outage.max_outage_s, GRACE_S[0]), GRACE_S[1]) if grace_s is None else grace_s
    deadline = time.monotonic() + grace
    with driver_http_retries():
        while True:
            try:
                end()
                forget(run_id)
                return True
            except Exception as error:  # noqa: BLE001 - reported as the outage's one line
                if not unreachable(error) or time.monotonic() > deadline:
                    log.warning("the parent run %s is left RUNNING: %s: %s", run_id, type(error).__name__,
                                str(error).splitlines()[0][:200] if str(error) else "")
                    _marker(run_id).parent.mkdir(parents=True, exist_ok=True)
                    _marker(run_id).write_text("tracking outage\n")
                    return False
            time.sleep(RETRY_S[1])


def stopped_by_outage(run_id: str) -> bool:
    """Whether a driver on this host gave up on ``run_id`` for an outage before it could mark it FAILED."""
    return _marker(run_id).exists()


def forget(run_id: str) -> None:
    """Drop the record :func:`when_back` left (the run was ended)."""
    _marker(run_id).unlink(missing_ok=True)


def _marker(run_id: str) -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "raysweep" / "outages" / run_id
