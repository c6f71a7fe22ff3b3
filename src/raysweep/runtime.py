"""Ray's lifetime in a raysweep process: start or join it, stop what was started, turn signals into a clean stop.

The one place that starts Ray: the sweep, the test suite's session fixture and the benchmarks all call
:func:`start`, so they run the same worker set-up hook and keep off Ray's default ports.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from raysweep import compat
from raysweep.errors import RaySweepError, SweepInterrupted

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_dashboard_port(port: int) -> None:
    """Refuse, before Ray starts, a dashboard port that is out of range or that something already listens on.

    Raises:
        RaySweepError: The port cannot be the dashboard's.
    """
    import socket

    if not 0 < port < 65536:
        raise RaySweepError(f"cluster.dashboard_port={port} is not a TCP port; pick one in 1-65535, or null for none")
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise RaySweepError(
                f"cluster.dashboard_port={port} is in use; pick a free port, or null for no dashboard"
            ) from None


def start(address: str | None = None, num_cpus: int | None = None, *, logging_level: int = logging.WARNING,
          forward_mlflow_env: bool = True, dashboard_port: int | None = None) -> None:
    """Start a local Ray (``num_cpus``; all when ``None``) or connect to the cluster at ``address``.

    Trials import the user's modules (``trainer.function=train:train``) from the working directory: Ray puts
    the driver's working directory at ``ray.init`` on the path of every worker it starts for this driver (Tune's
    trial processes, Ray Train's workers), unless the job has a runtime_env working_dir, which Ray makes the
    workers' directory and path instead (``raysweep submit``). ``tests/test_library.py`` checks the rule.

    Args:
        address: A Ray cluster to join (``auto``, ``HOST:PORT``, ``ray://...``); ``None`` starts a local one.
        num_cpus: CPUs of a local Ray.
        logging_level: Ray's own log level in this process.
        forward_mlflow_env: Hand MLflow's variables to every worker (workers on other nodes see none of this
            process's environment). A long-lived Ray shared by commands with different stores (the test
            suite) must not pin them.
        dashboard_port: Start a local Ray's dashboard on this loopback port and print its address; ``None``
            starts none (and Ray's dashboard port is then a free one, away from Ray's default).

    Raises:
        RaySweepError: A dashboard port with ``address`` (a cluster has its own dashboard), or one in use.
    """
    compat.quiet_ray_start()
    # ray.init replaces this process's SIGTERM handler with sys.exit and leaves it so: the sweep's StopSignals,
    # in place from before Ray starts, would lose SIGTERM (exit 15, runs RUNNING). The caller's is put back.
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    try:
        _init(address, num_cpus, logging_level, forward_mlflow_env, dashboard_port)
    finally:
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)


def _init(address, num_cpus, logging_level, forward_mlflow_env, dashboard_port) -> None:
    import ray

    from raysweep import remote
    from raysweep._workers import SETUP_HOOK

    runtime_env: dict[str, Any] = {"worker_process_setup_hook": SETUP_HOOK}
    if forward_mlflow_env:
        runtime_env.update(remote.ray_runtime_env(connecting=bool(address)))
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging_level, "runtime_env": runtime_env}
    if address:
        if dashboard_port is not None:
            raise RaySweepError(
                f"cluster.dashboard_port starts the dashboard of a local Ray, but this sweep joins {address}; "
                "open that cluster's own dashboard and leave cluster.dashboard_port null"
            )
        ray.init(address=address, **kwargs)
        return
    # Nothing preempts a local Ray's node: Ray Train's watcher would be one more process per torch trial.
    os.environ.setdefault(compat.TRAIN_PREEMPTION_WATCHER_ENV, "0")
    kwargs.update(num_cpus=num_cpus, _system_config=compat.NO_WORKERS_AHEAD)
    if dashboard_port is not None:
        check_dashboard_port(dashboard_port)
        kwargs["include_dashboard"] = True
        context = ray.init(dashboard_host="127.0.0.1", dashboard_port=dashboard_port, **kwargs)
        print(f"raysweep: Ray dashboard at http://{context.dashboard_url or f'127.0.0.1:{dashboard_port}'}", flush=True)
    else:
        # Away from Ray's default port, where another Ray on this machine may already be.
        ray.init(dashboard_port=free_port(), **kwargs)


def cluster_address(cluster_cfg) -> str | None:
    """The Ray cluster a sweep joins (``cluster.address``, else ``RAY_ADDRESS``), checked; ``None``: a local Ray.

    Checked before ``ray.init`` (the sweep calls this before it creates anything): Ray's ``auto`` would join
    any Ray on this machine, and Ray waits long at an address where nothing answers. ``cluster=remote`` names a
    cluster to join, never "start one here". A process that runs Ray already keeps it (``None``).

    Raises:
        RaySweepError: ``auto``, ``cluster=remote`` without an address, an address nothing answers at.
    """
    from raysweep import checks

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return None
    return checks.ray_address(cluster_cfg.address, required=cluster_cfg.get("name") == "remote")


@contextmanager
def session(cluster_cfg) -> Iterator[Callable[[], None]]:
    """Use the Ray instance already running in this process, or start/connect one and stop it after.

    Args:
        cluster_cfg: The ``cluster`` config node (``address``, ``num_cpus``, ``dashboard_port``); ``RAY_ADDRESS``
            names a cluster too.

    Yields:
        ``release()``: nothing needs Ray any more (Tune is done), so a Ray this session started stops now, in the
        background (a second or two), while the caller goes on; the session's end waits for that stop. A Ray that
        was running before the session keeps running.

    Raises:
        RaySweepError: Before Ray starts: see :func:`cluster_address`.
    """
    import ray

    dashboard_port = cluster_cfg.get("dashboard_port")
    if ray.is_initialized():
        if dashboard_port is not None:
            logging.getLogger(__name__).warning(
                "cluster.dashboard_port=%s not used: this process already runs Ray (started without it)", dashboard_port
            )
        yield lambda: None
        return
    start(cluster_address(cluster_cfg), cluster_cfg.num_cpus, dashboard_port=dashboard_port)
    stopping: list[Background] = []

    # Before Ray stops, in this thread: Ray's handles in garbage cycles (a resumed Tune leaves some) are freed while
    # Ray runs. A collection after it stopped would end the process (exit 1, "core worker has already been shutdown").
    def release() -> None:
        if not stopping:
            gc.collect()
            stopping.append(Background(ray.shutdown, name="raysweep-ray-shutdown"))

    try:
        yield release
    finally:
        if stopping:
            stopping[0].result()
        else:
            gc.collect()
            ray.shutdown()


class Background:
    """A function running in a daemon thread; :meth:`result` waits for it and returns what it returned or raises
    what it raised.

    A sweep overlaps its slow start-up work (readying the tracking store, importing what Tune's set-up and the
    registration need) with ``ray.init``, which mostly waits on the processes it launches and stays in the main
    thread: there it installs its SIGTERM handler, which :func:`start` puts back. Daemon: an interrupted sweep does
    not wait at exit for an import to end. Signals reach only the main thread, so this one needs no handler.
    """

    def __init__(self, fn, *args, name: str = "raysweep-background"):
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, *args), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn, *args) -> None:
        try:
            self._value = fn(*args)
        except BaseException as error:  # noqa: BLE001 - handed to the caller by result()
            self._error = error

    def result(self) -> Any:
        """Wait for the function (a signal still interrupts the wait) and return its value, or raise its error."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def import_modules(modules: Sequence[str]) -> None:
    """Import ``modules``, skipping those that fail: only a head start, the code that needs one imports it again."""
    import importlib

    for module in modules:
        try:
            with compat.skops_without_torch():  # skops.io's import would bring torch, which logging a model never uses
                importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - reported where it matters, by the import that needs it
            logging.getLogger(__name__).debug("head-start import of %s failed: %s", module, error)


def alive_nodes() -> int:
    """Nodes of the connected Ray cluster that are alive."""
    import ray

    return sum(1 for node in ray.nodes() if node["Alive"])


def driver_node_resource() -> str | None:
    """Ray's resource of the node this driver runs on (``node:<ip>``), or ``None`` where Ray does not say."""
    import ray

    try:
        here = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - a driver outside the cluster (Ray Client) is on no node of it
        return None
    ip = next((node["NodeManagerAddress"] for node in ray.nodes() if node["NodeID"] == here), None)
    return f"node:{ip}" if ip and f"node:{ip}" in ray.cluster_resources() else None


class StopSignals:
    """Turn Ctrl-C and SIGTERM into :class:`SweepInterrupted` without ever leaving an MLflow run RUNNING.

    :func:`raysweep.sweep.run` enters this before anything is created and leaves it after Ray stopped, so every
    moment of a sweep is covered:

    - Outside Tune, a signal raises at once; the parent run's context then ends every open run KILLED.
    - While Tune runs, the first signal asks Tune for its own graceful stop (trials stop, the experiment state is
      saved) and is raised once ``fit`` returns; a second one raises at once.
    - While a run is created or ended (:meth:`guard`), signals are only recorded and raised right after: an
      interrupted ``create_run`` would leave a run nobody ends, an interrupted clean-up leaves runs RUNNING.
    - Once one has been raised, later signals (an impatient second Ctrl-C) are only recorded: the clean-up the
      first started runs to its end.

    The first signal decides the exit status (130 for SIGINT, 143 for SIGTERM). Outside the main thread (a
    notebook's worker thread) Python allows no handler, and none is installed.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._in_tune = False
        self._holding = 0
        self._raised = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self._SIGNALS}
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        # Ray and Tune catch a KeyboardInterrupt in places and raise a plain one: the first signal still decides.
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, SweepInterrupted) and self.received is not None:
            raise SweepInterrupted(self.received) from exc

    @property
    def installed(self) -> bool:
        """Whether the handlers are raysweep's (only in the main thread)."""
        return bool(self._previous)

    def _handle(self, signum, frame) -> None:
        first = self.received is None
        if first:
            self.received = signum
            # os.write: a print here could re-enter a print the main thread was in the middle of.
            os.write(2, f"raysweep: {signal.Signals(signum).name} received; stopping the sweep and ending its open "
                        "MLflow runs KILLED (another Ctrl-C skips Tune's last checkpoint)\n".encode())
        if self._holding or self._raised:
            return
        if self._in_tune and first and compat.request_tune_stop():
            return
        self._raise()

    def _raise(self) -> None:
        self._raised = True
        raise SweepInterrupted(self.received)

    def _raise_pending(self) -> None:
        if self.received is not None and not self._raised:
            self._raise()

    @contextmanager
    def guard(self, context: AbstractContextManager[T]) -> Iterator[T]:
        """Enter and leave ``context`` (the parent run: created, then ended with its open children) with signals
        held back; its body stays interruptible. A signal held back is raised as soon as that is safe.

        Args:
            context: A context manager whose enter and exit must each run to their end.

        Yields:
            What ``context`` yields.
        """
        self._holding += 1
        try:
            value = context.__enter__()
        finally:
            self._holding -= 1
        try:
            self._raise_pending()
            yield value
        except BaseException:
            self._holding += 1
            try:
                if not context.__exit__(*sys.exc_info()):
                    raise
            finally:
                self._holding -= 1
        else:
            self._holding += 1
            try:
                context.__exit__(None, None, None)
            finally:
                self._holding -= 1
        self._raise_pending()

    @contextmanager
    def tune_running(self) -> Iterator[None]:
        """Scope of ``Tuner.fit``: signals stop Tune gracefully, then raise after it returns."""
        main = threading.current_thread() is threading.main_thread()
        # Until Tune installs its stop handler, a stop request would hit the default action (the process dies
        # at once); ignored meanwhile, a signal then raises instead (compat.request_tune_stop says False).
        previous = signal.signal(compat.TUNE_STOP_SIGNAL, signal.SIG_IGN) if main else None
        self._in_tune = True
        try:
            with compat.tune_without_sigint_handler():  # ours decides; Tune keeps its graceful stop
                yield
        finally:
            self._in_tune = False
            if main:  # Tune leaves its handler installed after fit
                signal.signal(compat.TUNE_STOP_SIGNAL, previous)
        self._raise_pending()
