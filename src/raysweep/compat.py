"""Every place raysweep leans on Ray or MLflow beyond their documented APIs, in one module.

Each function here relies on a private name, an undocumented environment variable or a behaviour that a minor
release may change. ``tests/test_compat.py`` checks each assumption against the installed versions and fails
with a message naming what changed, so an upgrade of Ray or MLflow points here instead of at a hang or a
silently wrong sweep. Module-level imports stay in the standard library: the CLI and trial processes import
this without loading Ray or MLflow.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

# --- Ray -------------------------------------------------------------------------------------------------

#: Ray's switch for its ``uv run`` runtime-env hook (read once, when Ray is imported).
UV_RUN_HOOK_ENV = "RAY_ENABLE_UV_RUN_RUNTIME_ENV"
#: Where Ray tells a job's driver its job config (``runtime_env`` included); private, as its name says.
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
#: Train V2's placement-group cleaner logger: warns every few seconds without Ray's dashboard.
TRAIN_PG_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
#: Tune's graceful stop: ``tune.run`` stops trials and saves its experiment state on SIGUSR1.
TUNE_STOP_SIGNAL = signal.SIGUSR1
#: Tune installs its own SIGINT handler unless this is ``1``.
TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"
#: Tune warns when saving experiment state takes longer than this many seconds (default 5).
TUNE_CHECKPOINT_SYNC_WARN_ENV = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"
#: Where Tune records a trial's original working directory before it moves the trial into its own folder.
TUNE_ORIG_WORKING_DIR_ENV = "TUNE_ORIG_WORKING_DIR"
#: The file in each trial folder to which Tune's driver appends every result (one JSON object per line).
TUNE_RESULT_FILE = "result.json"
#: The key under which Ray Train's ``TuneReportCallback`` reports a Train checkpoint's path to Tune.
TRAIN_CHECKPOINT_KEY = "checkpoint_path"
#: Ray's logger that announces, at every local ``ray.init``, that token authentication is on by default.
TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
#: Loggers that say "Checkpoint successfully created at: ..." (INFO) in a trial's process at every checkpoint:
#: Tune's function trainables and Train V1 (the first), Train V2's workers (the second).
CHECKPOINT_LOGGERS = ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage")
#: Train V2's worker context logs "Reporting training result N: ..." (INFO) at every report of every worker, on a
#: logger named after its file path (``logging.getLogger(__file__)``), out of reach of Train's ``LoggingConfig``.
TRAIN_REPORT_MODULE = "ray.train.v2._internal.execution.context"
#: ``0`` selects Tune's legacy output engine, which at ``verbose=0`` prints nothing; the default engine prints
#: its configuration box, the results folder and a TensorBoard hint at any verbosity.
TUNE_NEW_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"
#: ERROR lines raysweep's line for a failed trial replaces, {logger: message start}: Tune's traceback of the trial,
#: the driver's of one failing as the sweep stops (a wrong metric fails all), and "Trials did not complete".
TRIAL_FAILED_LINES = {"ray.tune.execution.tune_controller": "Trial task failed for trial",
                      "ray._private.worker": "Unhandled error (suppress with",
                      "ray.tune.tune": ("Trials did not complete", "Experiment has been interrupted")}
#: ``0``: the driver prints workers' lines without the colour codes around their ``(train pid=...)`` prefix.
RAY_COLOR_PREFIX_ENV = "RAY_COLOR_PREFIX"
#: ``0``: no log de-duplication, whose "[repeated Nx across cluster]" marker is always coloured (read at import).
RAY_DEDUP_LOGS_ENV = "RAY_DEDUP_LOGS"
#: ``ray.init(_system_config=...)`` for a local Ray: start no idle worker per CPU when the driver connects. Ray
#: gives those workers only to work without a runtime env, and a sweep has none: its job carries the setup hook,
#: and Tune gives every trial actor a runtime env of its own (``ray.tune.execution.class_cache``). Starting them
#: only takes CPU from the first trials (~0.6 s on 2 cores).
NO_WORKERS_AHEAD = {"prestart_worker_first_driver": False}
#: ``0``: Ray Train starts no preemption watcher (an actor, a process of its own) for each trial's worker group.
#: Tune hands the driver's value to every trial (``ray.train.v2._internal.constants.ENV_VARS_TO_PROPAGATE``).
TRAIN_PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def keep_ray_off_uv_run(environ=os.environ) -> None:
    """Stop Ray from packaging the working directory (``.venv`` included) for every worker under ``uv run``.

    Must run before Ray is imported; raysweep's package ``__init__`` calls it.
    """
    environ.setdefault(UV_RUN_HOOK_ENV, "0")


def job_config_json(environ: Mapping[str, str]) -> str | None:
    """The JSON job config Ray hands a job's driver, ``None`` outside a Ray job."""
    return environ.get(JOB_CONFIG_ENV)


#: The key under which Ray's job supervisor puts the job's submission id into the metadata of the job config it
#: hands the driver (``ray.dashboard.modules.job.common.JOB_ID_METADATA_KEY``).
JOB_ID_METADATA_KEY = "job_submission_id"


def job_submission_id(environ: Mapping[str, str]) -> str | None:
    """The submission id (what ``ray job stop`` takes) of the Ray job this process is the driver of, else ``None``."""
    import json

    raw = job_config_json(environ)
    try:
        metadata = json.loads(raw).get("metadata") or {} if raw else {}
    except (ValueError, AttributeError):
        return None
    return metadata.get(JOB_ID_METADATA_KEY) or None


def quiet_train_placement_group_cleaner() -> None:
    """Silence Train V2's "cannot reach the State API" warning, which floods the log when the dashboard is off."""
    logging.getLogger(TRAIN_PG_CLEANER_LOGGER).setLevel(logging.ERROR)


def request_tune_stop() -> bool:
    """Ask the running ``Tuner.fit`` in this process to stop gracefully (trials stop, state is saved).

    Returns False, asking nothing, while no handler of Tune's is installed (default or ignored: ``fit`` has not
    reached its loop yet), where the signal would kill the process or be lost.
    """
    if signal.getsignal(TUNE_STOP_SIGNAL) in (signal.SIG_DFL, signal.SIG_IGN, None):
        return False
    os.kill(os.getpid(), TUNE_STOP_SIGNAL)
    return True


@contextmanager
def _environ(name: str, value: str | None) -> Iterator[None]:
    """``os.environ[name] = value`` (``None``: as it is) while this is open, then exactly as before."""
    previous = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextmanager
def tune_without_sigint_handler() -> Iterator[None]:
    """While this is open, ``Tuner.fit`` leaves SIGINT to the caller (it keeps its SIGUSR1 stop)."""
    with _environ(TUNE_SIGINT_ENV, "1"):
        yield


def allow_frequent_experiment_checkpoints() -> None:
    """Checkpointing every iteration forces a Tune state snapshot when old checkpoints are dropped; that is the
    intent (no dangling checkpoint references, and a resumable state), not a problem to warn about."""
    os.environ.setdefault(TUNE_CHECKPOINT_SYNC_WARN_ENV, "0")


def compact_ended_trial(trial) -> None:
    """Shrink what Tune keeps of a trial that will report no more: for the running ``last-5-avg``/``last-10-avg``
    of each numeric result key Tune holds two ``deque``s per key and trial (``trial.run_metadata.metric_n_steps``,
    private; 528 bytes or more each) while the driver runs, pickled into every experiment-state snapshot. Only
    ``update_metric`` reads them, to take in a new result; lists serve it as well and go into the state as JSON."""
    metadata = trial.run_metadata
    metadata.metric_n_steps = {key: {n: list(values) for n, values in windows.items()}
                               for key, windows in metadata.metric_n_steps.items()}


def trial_result(trial):
    """A finished trial as ``ray.tune.Result``, built from Tune's own ``Trial`` the way its ``ResultGrid`` builds
    one (checkpoints from the trial's private checkpoint manager), less the history ``metrics_dataframe``, which
    Tune reads back from the trial's files only when ``fit`` returns (``None`` here)."""
    from ray.tune import Result

    manager = trial.run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result
    return Result(
        metrics=dict(trial.last_result or {}),
        checkpoint=latest.checkpoint if latest else None,
        error=None,
        path=trial.path,
        best_checkpoints=[(r.checkpoint, r.metrics) for r in manager.best_checkpoint_results],
    )


def trial_original_cwd(environ: Mapping[str, str] = os.environ) -> str:
    """The directory a trial process started in (the job's working_dir), before Tune moved it."""
    return environ.get(TUNE_ORIG_WORKING_DIR_ENV, os.getcwd())


def plain_worker_logs(environ=os.environ, terminal: bool | None = None) -> None:
    """Unless both stdout and stderr are terminals, make Ray print workers' lines without colour codes.

    Must run before Ray is imported (Ray reads the de-duplication switch then); raysweep's package ``__init__``
    calls it. A variable the user set wins.
    """
    import sys

    if terminal is None:
        terminal = all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr))
    if not terminal:
        environ.setdefault(RAY_COLOR_PREFIX_ENV, "0")
        environ.setdefault(RAY_DEDUP_LOGS_ENV, "0")


def quiet_ray_start() -> None:
    """Silence Ray's "token authentication is enabled" notice at a local ``ray.init`` (real errors still show)."""
    logging.getLogger(TOKEN_AUTH_LOGGER).setLevel(logging.ERROR)


def quiet_checkpoint_lines() -> None:
    """Silence the "Checkpoint successfully created" line a trial's process logs at every checkpoint."""
    for name in CHECKPOINT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def quiet_train_reports() -> None:
    """Silence the "Reporting training result" line every Train V2 worker logs at every report."""
    import importlib.util

    spec = importlib.util.find_spec(TRAIN_REPORT_MODULE)  # its file path names the logger; no need to import it
    if spec is not None and spec.origin:
        logging.getLogger(spec.origin).setLevel(logging.WARNING)


def restored_verbosity(tuner) -> int | None:
    """The ``verbose`` a restored ``Tuner`` runs with: its first run's, from the sweep's saved run config."""
    local = getattr(tuner, "_local_tuner", None)  # None under Ray Client, which raysweep does not use
    return None if local is None else local.get_run_config().verbose


class _DropLine(logging.Filter):
    def __init__(self, start: str | tuple[str, ...]):  # the log records whose message starts so are dropped
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


@contextmanager
def tune_output(verbose: int | None) -> Iterator[None]:
    """While this is open, ``Tuner.fit`` prints nothing of its own at ``verbose=0`` (the legacy engine, which
    Ray keeps behind ``RAY_AIR_NEW_OUTPUT=0``); at 1 and 2 Tune's default engine prints its tables.

    At ``verbose=0`` Ray also keeps a failed trial's tracebacks to itself (:data:`TRIAL_FAILED_LINES`): raysweep's
    line for the trial names the error and its ``error.txt``, which holds the traceback (Tune's, some 40 lines a
    trial, comes with colour codes whatever the output is).
    """
    quiet = [(logging.getLogger(name), _DropLine(start)) for name, start in TRIAL_FAILED_LINES.items()]
    for logger, drop in quiet if verbose == 0 else ():
        logger.addFilter(drop)
    try:
        with _environ(TUNE_NEW_OUTPUT_ENV, "0" if verbose == 0 else None):
            yield
    finally:
        for logger, drop in quiet:
            logger.removeFilter(drop)


# --- MLflow ----------------------------------------------------------------------------------------------

#: MLflow's level for its own loggers, read when ``mlflow`` is imported (its INFO: "Creating initial MLflow
#: database tables", "Validating input example", "View run ... at: ..." for every run of a server store).
MLFLOW_LOG_LEVEL_ENV = "MLFLOW_LOGGING_LEVEL"
#: ``false``: no tqdm bar on every artifact download and upload (a model logged is several).
MLFLOW_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
#: The logger and message with which MLflow notes, at every model logged, that pip is not installed (uv's
#: environments have none): the model's conda.yaml then names pip without a version, which nothing here uses.
PIP_VERSION_LOGGER = "mlflow.utils.environment"
PIP_VERSION_MESSAGE = "Failed to resolve installed pip version"


def quiet_mlflow(environ=os.environ) -> None:
    """MLflow's warnings and errors only: no INFO lines, no artifact progress bars, no pip-version notice.

    Works before and after ``mlflow`` is imported; variables the user set win (``MLFLOW_LOGGING_LEVEL=INFO``
    brings MLflow's INFO lines back).
    """
    import sys

    environ.setdefault(MLFLOW_LOG_LEVEL_ENV, "WARNING")
    environ.setdefault(MLFLOW_PROGRESS_BAR_ENV, "false")
    if "mlflow" in sys.modules:  # it configured its loggers at import, from the variable as it was then
        logging.getLogger("mlflow").setLevel(environ[MLFLOW_LOG_LEVEL_ENV].upper())
    pip_logger = logging.getLogger(PIP_VERSION_LOGGER)
    if not any(getattr(f, "start", None) == PIP_VERSION_MESSAGE for f in pip_logger.filters):
        pip_logger.addFilter(_DropLine(PIP_VERSION_MESSAGE))


def system_metrics_monitor(run_id: str, tracking_uri: str, interval_s: float = 1.0):
    """A started sampler of this node's CPU, memory (GPU) into ``run_id`` (MLflow's, outside its fluent API)."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, tracking_uri=tracking_uri)
    monitor.start()
    return monitor


@contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI at ``uri`` while this is open.

    MLflow 3.17's sqlite registry looks up the LoggedModel behind a new model version through the global
    tracking URI (a TODO in its ``create_model_version``), not through the client's own store, so creating a
    version in another store needs the global URI to point there meanwhile.
    """
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


@contextmanager
def mlflow_store(tracking_uri: str, registry_uri: str | None = None) -> Iterator[None]:
    """Point MLflow's process-wide tracking (and registry) URI at a store while this is open, then put back
    exactly what was there before.

    ``mlflow.set_tracking_uri``/``set_registry_uri`` also write ``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI``
    into ``os.environ``, and "not set" (the registry follows the tracking URI) can only be restored through
    their private module globals.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_globals = tracking_utils._tracking_uri, registry_utils._registry_uri
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(tracking_uri)
    if registry_uri:
        mlflow.set_registry_uri(registry_uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved_globals
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def detached_active_run() -> Iterator[None]:
    """While this is open, this thread has no active MLflow run; the caller's active run (and its nested runs)
    are active again after, neither ended nor changed.

    ``mlflow.start_run(run_id=...)``, which registration uses, refuses to start while another run is active (a
    notebook's), and MLflow offers no public way to set an active run aside: this swaps the fluent API's
    per-thread run stack (``mlflow.tracking.fluent._active_run_stack``) and its last-active-run id.
    """
    from mlflow.tracking import fluent

    saved_stack, saved_last = list(fluent._active_run_stack.get()), fluent._last_active_run_id.get()
    fluent._active_run_stack.set([])
    try:
        yield
    finally:
        fluent._active_run_stack.set(saved_stack)
        fluent._last_active_run_id.set(saved_last)


def create_mlflow_tables(path: str) -> None:
    """Make MLflow's tables in a new sqlite file at ``path``, as its SQL store does for an empty database.

    This is MLflow's own schema creation and migration (``mlflow.store.db.utils._initialize_tables``), without
    the default experiment a store adds when it opens (its artifact location depends on the opening process).
    """
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def mlflow_schema_revision() -> str:
    """The database schema revision of the installed MLflow (what a SQL store must be at for MLflow to open it)."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


# --- Python and scikit-learn ----------------------------------------------------------------------------

#: sklearn's array-API shim for torch, imported with torch (1.3-2.4 s) by the package walk of skops.io's import.
SKLEARN_TORCH_SHIM = "sklearn.externals.array_api_compat.torch"


@contextmanager
def skops_without_torch() -> Iterator[None]:
    """Imports inside skip :data:`SKLEARN_TORCH_SHIM` (and torch) unless imported already; the walk passes over a
    package that fails to import, and skops' list is the same. Afterwards the shim imports as usual."""
    import sys

    if blocked := SKLEARN_TORCH_SHIM not in sys.modules:
        sys.modules[SKLEARN_TORCH_SHIM] = None  # the import system's "not importable" marker
    try:
        yield
    finally:
        if blocked and sys.modules.get(SKLEARN_TORCH_SHIM, ...) is None:
            del sys.modules[SKLEARN_TORCH_SHIM]


def shut_down_threads() -> None:
    """What Python does with threads at exit, before its atexit handlers: run ``threading``'s exit hooks (where
    ``concurrent.futures`` stops its executors' idle workers, no daemons), then join every non-daemon thread."""
    import threading

    threading._shutdown()
