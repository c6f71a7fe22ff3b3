"""One test per assumption raysweep.compat makes about Ray's and MLflow's internals.

Each fails with a message naming what an upgrade changed, and where raysweep relies on it.
"""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys
import time

import mlflow
import pytest
from mlflow import MlflowClient

from raysweep import compat


def _says(what: str) -> str:
    return f"Ray/MLflow changed: {what}; update raysweep/compat.py (and what uses it)"


def test_ray_reads_the_uv_run_switch_that_raysweep_turns_off():
    from ray._private import ray_constants

    assert hasattr(ray_constants, compat.UV_RUN_HOOK_ENV), _says(f"ray_constants has no {compat.UV_RUN_HOOK_ENV}")
    # raysweep is imported before Ray here (conftest), as in every raysweep process.
    assert getattr(ray_constants, compat.UV_RUN_HOOK_ENV) is False, _says(
        f"setting {compat.UV_RUN_HOOK_ENV}=0 before importing Ray no longer turns the uv run hook off")


def test_the_job_config_variable_is_the_one_ray_hands_a_job_driver():
    from ray._private.runtime_env import constants

    assert getattr(constants, "RAY_JOB_CONFIG_JSON_ENV_VAR", None) == compat.JOB_CONFIG_ENV, _says(
        "a job's driver no longer finds its job config in RAY_JOB_CONFIG_JSON_ENV_VAR (remote.job_env_vars)")
    assert compat.job_config_json({compat.JOB_CONFIG_ENV: "{}"}) == "{}"
    assert compat.job_config_json({}) is None


def test_tune_gives_every_trial_actor_a_runtime_env_of_its_own():
    """Why a local Ray starts no idle workers ahead (compat.NO_WORKERS_AHEAD): Ray gives them only to tasks and
    actors without a runtime env."""
    from ray.tune.execution.class_cache import _ActorClassCache

    class Trainable:
        pass

    assert _ActorClassCache().get(Trainable)._default_options.get("runtime_env"), _says(
        "Tune's trial actors have no runtime env of their own: workers started ahead would take them "
        "(compat.NO_WORKERS_AHEAD)")


def test_ray_train_takes_its_preemption_watcher_switch_from_the_sweeps_driver():
    from ray.train.v2._internal import constants

    assert constants.ENABLE_PREEMPTION_WATCHER_ENV_VAR == compat.TRAIN_PREEMPTION_WATCHER_ENV, _says(
        "Ray Train's preemption watcher has another switch (runtime.start of a local Ray)")
    assert compat.TRAIN_PREEMPTION_WATCHER_ENV in constants.ENV_VARS_TO_PROPAGATE, _says(
        "Tune no longer hands the driver's preemption-watcher switch to its trials (runtime.start)")


def test_train_placement_group_cleaner_logs_under_the_name_raysweep_quiets():
    import importlib

    module = importlib.import_module(compat.TRAIN_PG_CLEANER_LOGGER)
    assert module.logger.name == compat.TRAIN_PG_CLEANER_LOGGER, _says("Train V2's placement-group cleaner logger moved")
    compat.quiet_train_placement_group_cleaner()
    assert logging.getLogger(compat.TRAIN_PG_CLEANER_LOGGER).level == logging.ERROR


def test_tune_stops_gracefully_on_sigusr1_and_leaves_sigint_when_told():
    from ray.tune import tune as tune_module

    source = inspect.getsource(tune_module)  # its signal set-up, called by run()
    assert compat.TUNE_SIGINT_ENV in source, _says(f"Tune no longer reads {compat.TUNE_SIGINT_ENV}")
    assert "SIGUSR1" in source, _says("Tune no longer stops gracefully on SIGUSR1 (runtime.StopSignals)")
    assert compat.TUNE_STOP_SIGNAL.name == "SIGUSR1"


def test_tune_without_sigint_handler_sets_and_restores_the_switch(monkeypatch):
    monkeypatch.setenv(compat.TUNE_SIGINT_ENV, "0")
    with compat.tune_without_sigint_handler():
        assert os.environ[compat.TUNE_SIGINT_ENV] == "1"
    assert os.environ[compat.TUNE_SIGINT_ENV] == "0"
    monkeypatch.delenv(compat.TUNE_SIGINT_ENV)
    with compat.tune_without_sigint_handler():
        pass
    assert compat.TUNE_SIGINT_ENV not in os.environ


def test_tune_environment_variables_raysweep_sets_are_still_read():
    from ray.tune.constants import TUNE_ENV_VARS

    for name in (compat.TUNE_SIGINT_ENV, compat.TUNE_CHECKPOINT_SYNC_WARN_ENV):
        assert name in TUNE_ENV_VARS, _says(f"Ray Tune no longer reads {name}")


def test_tune_records_a_trials_original_working_directory():
    from ray.tune.trainable import trainable

    assert compat.TUNE_ORIG_WORKING_DIR_ENV in inspect.getsource(trainable), _says(
        f"Tune no longer sets {compat.TUNE_ORIG_WORKING_DIR_ENV} (config.CONF_DIR in a submitted job's trials)")
    assert compat.trial_original_cwd({compat.TUNE_ORIG_WORKING_DIR_ENV: "/job"}) == "/job"


def test_tune_result_file_and_train_checkpoint_key_are_what_raysweep_reads():
    from ray.air.constants import EXPR_RESULT_FILE
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

    assert EXPR_RESULT_FILE == compat.TUNE_RESULT_FILE, _says("Tune's per-trial result file was renamed (resume backfill)")
    assert CHECKPOINT_PATH_KEY == compat.TRAIN_CHECKPOINT_KEY, _says(
        "TuneReportCallback reports Train checkpoints under another key (torch best_checkpoint)")


def test_mlflow_logger_callback_takes_what_the_driver_adapter_passes():
    from ray.air.integrations.mlflow import MLflowLoggerCallback, setup_mlflow

    init = inspect.signature(MLflowLoggerCallback.__init__).parameters
    for name in ("tracking_uri", "registry_uri", "experiment_name", "tags"):
        assert name in init, _says(f"MLflowLoggerCallback.__init__ lost {name!r} (tracking/driver.py)")
    for hook in ("setup", "log_trial_start", "log_trial_result", "log_trial_end", "on_experiment_end"):
        assert callable(getattr(MLflowLoggerCallback, hook, None)), _says(f"Tune's logger hook {hook} is gone")
    params = inspect.signature(setup_mlflow).parameters
    for name in ("tracking_uri", "registry_uri", "experiment_id", "run_name", "tags", "rank_zero_only"):
        assert name in params, _says(f"setup_mlflow lost {name!r} (tracking/worker.py)")


def test_system_metrics_monitor_samples_into_a_run(tracking_uri):
    client = MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("sysmetrics")).info.run_id
    monitor = compat.system_metrics_monitor(run_id, tracking_uri, interval_s=0.2)
    time.sleep(1.5)
    monitor.finish()
    client.set_terminated(run_id)
    logged = client.get_run(run_id).data.metrics
    assert any(key.startswith("system/") for key in logged), _says(
        f"SystemMetricsMonitor logged no system/* metric ({sorted(logged)[:5]})")


def test_mlflow_store_restores_uris_and_environment_exactly(tmp_path, monkeypatch):
    before = f"sqlite:///{tmp_path / 'before.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", before)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mlflow.set_tracking_uri(before)
    sweep_store, registry = f"sqlite:///{tmp_path / 'sweep.db'}", f"sqlite:///{tmp_path / 'registry.db'}"
    with compat.mlflow_store(sweep_store, registry):
        assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (sweep_store, registry)
    assert mlflow.get_tracking_uri() == before
    assert "MLFLOW_REGISTRY_URI" not in os.environ, _says("set_registry_uri's environment variable outlived the sweep")
    # "No registry set" came back: the registry follows the tracking URI again.
    later = f"sqlite:///{tmp_path / 'later.db'}"
    mlflow.set_tracking_uri(later)
    assert mlflow.get_registry_uri() == later, _says("the registry URI stays pinned after mlflow_store")


def test_global_tracking_uri_swaps_and_restores(tmp_path):
    previous = mlflow.get_tracking_uri()
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with compat.global_tracking_uri(other):
        assert mlflow.get_tracking_uri() == other
    assert mlflow.get_tracking_uri() == previous


def test_sqlite_registry_still_resolves_logged_models_through_the_global_uri(tmp_path):
    """The reason for global_tracking_uri: if this starts passing without the swap, the swap can go."""
    from mlflow.entities import LoggedModelStatus

    dst_uri = f"sqlite:///{tmp_path / 'dst.db'}"
    dst = MlflowClient(tracking_uri=dst_uri, registry_uri=dst_uri)
    model = dst.create_logged_model(dst.create_experiment("copies"), name="model")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "MLmodel").write_text("flavors: {}\n")
    dst.log_model_artifacts(model.model_id, str(tmp_path / "files"))
    dst.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    dst.create_registered_model("copied")
    with compat.global_tracking_uri(dst_uri):
        version = dst.create_model_version("copied", source=f"models:/{model.model_id}", model_id=model.model_id)
    assert version.version == 1 or version.version == "1"
    with pytest.raises(Exception):  # noqa: B017 - any error: MLflow looks the model up in the wrong store
        dst.create_model_version("copied", source=f"models:/{model.model_id}", model_id=model.model_id)


def test_detached_active_run_sets_the_callers_run_aside_and_back(tracking_uri):
    with mlflow.start_run() as outer:
        with compat.detached_active_run():
            assert mlflow.active_run() is None, _says("MLflow's fluent run stack moved (api.run with an active run)")
            with mlflow.start_run(run_name="inner") as inner:
                pass
        assert mlflow.active_run().info.run_id == outer.info.run_id
    client = mlflow.MlflowClient()
    assert client.get_run(outer.info.run_id).info.status == "FINISHED"
    assert client.get_run(inner.info.run_id).info.status == "FINISHED"


def test_an_ended_trials_running_averages_compact_into_lists_that_tune_still_updates_and_restores():
    from types import SimpleNamespace

    from ray.tune.trainable.metadata import _TrainingRunMetadata

    trial = SimpleNamespace(run_metadata=_TrainingRunMetadata())
    for step in range(1, 13):
        trial.run_metadata.update_metric("score", float(step), step=step)
    analysis = {k: dict(v) for k, v in trial.run_metadata.metric_analysis.items()}
    pickled = len(trial.run_metadata.get_json_state())
    compat.compact_ended_trial(trial)
    state = trial.run_metadata.get_json_state()  # Tune's snapshot of it: the cache was dropped, not kept stale
    assert trial.run_metadata.metric_analysis == analysis
    assert "CLOUDPICKLE" not in state and len(state) < pickled
    restored = _TrainingRunMetadata.from_json_state(state)
    last = [float(step) for step in range(3, 13)]
    assert restored.metric_n_steps == {"score": {"5": last[-5:], "10": last}}
    restored.update_metric("score", 13.0, step=13)  # one result more still updates it (a list appends)
    assert restored.metric_analysis["score"]["last"] == 13.0


def test_a_trial_as_a_result_is_what_tunes_result_grid_makes_of_it(tmp_path):
    from types import SimpleNamespace

    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint, CheckpointConfig, ResultGrid
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    from raysweep.trainables import function

    metadata = _TrainingRunMetadata()
    metadata.checkpoint_manager = _CheckpointManager(CheckpointConfig(num_to_keep=2))
    for step, score in enumerate((0.5, 0.9, 0.7), start=1):
        (tmp_path / f"c{step}").mkdir()
        metadata.checkpoint_manager.register_checkpoint(
            _TrainingResult(Checkpoint(str(tmp_path / f"c{step}")), {"score": score, "training_iteration": step}))
    trial = SimpleNamespace(run_metadata=metadata, last_result={"score": 0.7, "trial_id": "t1"}, path=str(tmp_path),
                            trial_id="t1")
    mine = compat.trial_result(trial)
    grid = SimpleNamespace(_experiment_analysis=SimpleNamespace(trial_dataframes={}, _fs=None),
                           _populate_exception=lambda trial: None)
    tunes = ResultGrid._trial_to_result(grid, trial)
    assert (mine.metrics, mine.path, mine.checkpoint.path) == (tunes.metrics, tunes.path, tunes.checkpoint.path), \
        _says("ResultGrid builds a trial's Result differently (compat.trial_result)")
    assert [(c.path, m) for c, m in mine.best_checkpoints] == [(c.path, m) for c, m in tunes.best_checkpoints]
    assert function.best_checkpoint(mine, "score", "max") == str(tmp_path / "c2")  # the better of the two kept


# --- output: what raysweep silences at its source (progress.py, _workers.py) ------------------------------


def test_token_auth_notice_logs_under_the_name_raysweep_quiets():
    import importlib

    module = importlib.import_module(compat.TOKEN_AUTH_LOGGER)
    assert module.logger.name == compat.TOKEN_AUTH_LOGGER, _says("Ray's token-auth notice logger moved")
    assert "Token authentication is enabled" in inspect.getsource(module), _says("Ray's token-auth notice changed")
    compat.quiet_ray_start()
    assert not logging.getLogger(compat.TOKEN_AUTH_LOGGER).isEnabledFor(logging.WARNING)
    assert logging.getLogger(compat.TOKEN_AUTH_LOGGER).isEnabledFor(logging.ERROR)


def test_checkpoint_lines_are_logged_at_info_under_the_names_raysweep_quiets():
    import importlib

    for name in compat.CHECKPOINT_LOGGERS:
        module = importlib.import_module(name)
        assert module.logger.name == name, _says(f"the checkpoint logger {name} moved (_workers.setup)")
        assert 'logger.info(f"Checkpoint successfully created' in inspect.getsource(module), _says(
            f"{name} no longer logs its checkpoint line at INFO (_workers.setup)")
    compat.quiet_checkpoint_lines()
    assert not any(logging.getLogger(n).isEnabledFor(logging.INFO) for n in compat.CHECKPOINT_LOGGERS)


def test_train_v2_report_lines_log_under_the_file_named_logger_raysweep_quiets():
    import importlib

    module = importlib.import_module(compat.TRAIN_REPORT_MODULE)
    assert module.logger.name == module.__file__, _says("Train V2's worker context logger is not named by its file")
    assert "Reporting training result" in inspect.getsource(module), _says("Train V2 no longer logs each report")
    compat.quiet_train_reports()
    assert not logging.getLogger(module.__file__).isEnabledFor(logging.INFO)


def test_ray_logs_a_failed_trials_tracebacks_under_the_names_and_messages_raysweep_quiets():
    import importlib

    for name, starts in compat.TRIAL_FAILED_LINES.items():
        module = importlib.import_module(name)
        assert module.logger.name == name, _says(f"the logger of {name} moved")
        starts = (starts,) if isinstance(starts, str) else starts
        for start in starts:
            assert start in inspect.getsource(module), _says(f"{name} no longer logs {start!r}")
        record = logging.LogRecord(name, logging.ERROR, __file__, 1, f"{starts[-1]} train_1", None, None)
        other = logging.LogRecord(name, logging.ERROR, __file__, 1, "something else", None, None)
        logger = logging.getLogger(name)
        with compat.tune_output(0):
            assert not logger.filter(record) and logger.filter(other)
        assert logger.filter(record)  # only while a quiet sweep runs
        with compat.tune_output(1):
            assert logger.filter(record)


def test_tunes_legacy_output_engine_is_still_behind_the_switch(monkeypatch):
    from ray.tune.experimental.output import AirVerbosity, get_air_verbosity

    monkeypatch.delenv(compat.TUNE_NEW_OUTPUT_ENV, raising=False)
    assert get_air_verbosity(0) == AirVerbosity.SILENT
    with compat.tune_output(0):
        assert get_air_verbosity(0) is None, _says(f"{compat.TUNE_NEW_OUTPUT_ENV}=0 no longer selects Tune's legacy "
                                                   "output engine (silent at verbose=0)")
    assert compat.TUNE_NEW_OUTPUT_ENV not in os.environ
    with compat.tune_output(1):
        assert get_air_verbosity(1) == AirVerbosity.DEFAULT  # Tune's status tables
    monkeypatch.setenv(compat.TUNE_NEW_OUTPUT_ENV, "1")
    with compat.tune_output(0):
        assert os.environ[compat.TUNE_NEW_OUTPUT_ENV] == "0"
    assert os.environ[compat.TUNE_NEW_OUTPUT_ENV] == "1"


def test_a_tuner_tells_the_verbosity_it_was_started_with(tmp_path):
    from ray import tune

    def trainable(config):
        tune.report({"x": 1})

    tuner = tune.Tuner(trainable, run_config=tune.RunConfig(name="v", storage_path=str(tmp_path), verbose=0))
    assert compat.restored_verbosity(tuner) == 0, _says("a Tuner's run config moved (tuning.fit on resume)")
    assert compat.restored_verbosity(object()) is None


def test_ray_prints_workers_lines_without_colour_when_told():
    from ray._private import ray_constants, worker
    from ray._private.ray_logging import LogDeduplicator

    assert f'os.getenv("{compat.RAY_COLOR_PREFIX_ENV}") == "0"' in inspect.getsource(worker.print_worker_logs), _says(
        f"Ray's driver no longer reads {compat.RAY_COLOR_PREFIX_ENV}=0 to print workers' lines without colour")
    assert compat.RAY_DEDUP_LOGS_ENV in inspect.getsource(ray_constants), _says(
        f"Ray no longer reads {compat.RAY_DEDUP_LOGS_ENV}")
    assert "RAY_DEDUP_LOGS" in inspect.getsource(LogDeduplicator.deduplicate), _says(
        "Ray's log de-duplication no longer checks RAY_DEDUP_LOGS")
    environ: dict[str, str] = {}
    compat.plain_worker_logs(environ, terminal=True)
    assert environ == {}
    compat.plain_worker_logs(environ, terminal=False)
    assert environ == {compat.RAY_COLOR_PREFIX_ENV: "0", compat.RAY_DEDUP_LOGS_ENV: "0"}
    environ = {compat.RAY_DEDUP_LOGS_ENV: "1"}
    compat.plain_worker_logs(environ, terminal=False)
    assert environ[compat.RAY_DEDUP_LOGS_ENV] == "1"  # the user's choice wins


def test_mlflow_quiets_through_the_variables_and_logger_raysweep_uses(monkeypatch, request):
    from mlflow import environment_variables
    from mlflow.utils import environment, logging_utils

    for name in (compat.MLFLOW_LOG_LEVEL_ENV, compat.MLFLOW_PROGRESS_BAR_ENV):
        assert hasattr(environment_variables, name), _says(f"MLflow no longer reads {name}")
    assert environment._logger.name == compat.PIP_VERSION_LOGGER, _says("MLflow's pip-version notice logger moved")
    assert compat.PIP_VERSION_MESSAGE in inspect.getsource(environment), _says("MLflow's pip-version notice changed")
    environ = {compat.MLFLOW_LOG_LEVEL_ENV: "INFO"}
    compat.quiet_mlflow(environ)
    assert environ == {compat.MLFLOW_LOG_LEVEL_ENV: "INFO", compat.MLFLOW_PROGRESS_BAR_ENV: "false"}
    monkeypatch.setenv(compat.MLFLOW_LOG_LEVEL_ENV, "WARNING")
    monkeypatch.setenv(compat.MLFLOW_PROGRESS_BAR_ENV, "false")
    assert logging_utils.get_mlflow_log_level() == "WARNING"
    mlflow_logger = logging.getLogger("mlflow")
    request.addfinalizer(lambda level=mlflow_logger.level: mlflow_logger.setLevel(level))  # as other tests had it
    compat.quiet_mlflow()
    compat.quiet_mlflow()  # idempotent: one filter
    pip_logger = logging.getLogger(compat.PIP_VERSION_LOGGER)
    assert len(pip_logger.filters) == len(set(map(type, pip_logger.filters)))
    notice = pip_logger.makeRecord(pip_logger.name, logging.WARNING, "f", 1, compat.PIP_VERSION_MESSAGE + ".", (), None)
    other = pip_logger.makeRecord(pip_logger.name, logging.WARNING, "f", 1, "something else", (), None)
    assert not pip_logger.filter(notice) and pip_logger.filter(other)
    assert not logging.getLogger("mlflow").isEnabledFor(logging.INFO)


def test_a_job_driver_finds_its_submission_id_under_the_key_ray_uses():
    import json

    from ray.dashboard.modules.job import common

    assert common.JOB_ID_METADATA_KEY == compat.JOB_ID_METADATA_KEY, _says(
        "Ray's job supervisor no longer puts the submission id under this metadata key (stopping.job_tags)")
    config = json.dumps({"runtime_env": {}, "metadata": {compat.JOB_ID_METADATA_KEY: "raysweep-1"}})
    assert compat.job_submission_id({compat.JOB_CONFIG_ENV: config}) == "raysweep-1"
    assert compat.job_submission_id({}) is None and compat.job_submission_id({compat.JOB_CONFIG_ENV: "{"}) is None


def test_no_tune_stop_is_requested_before_tune_listens():
    """SIGUSR1's default action kills the process: asked only once Tune's handler is installed."""
    import signal

    previous = signal.signal(compat.TUNE_STOP_SIGNAL, signal.SIG_IGN)
    try:
        assert compat.request_tune_stop() is False
        seen = []
        signal.signal(compat.TUNE_STOP_SIGNAL, lambda signum, frame: seen.append(signum))
        assert compat.request_tune_stop() is True and seen == [compat.TUNE_STOP_SIGNAL]
    finally:
        signal.signal(compat.TUNE_STOP_SIGNAL, previous)


# skops' list of scikit-learn's estimators, and whether torch was imported for it: plain, then with the shim that
# brings torch skipped. The list must not change; only the torch import goes.
SKOPS_TRUSTED_NAMES = """
import sys
from contextlib import nullcontext
from raysweep import compat

with (compat.skops_without_torch() if sys.argv[1] == "skip" else nullcontext()):
    import skops.io._trusted_types as trusted
print(sorted(trusted.SKLEARN_ESTIMATOR_TYPE_NAMES), "torch" in sys.modules)
import sklearn.externals.array_api_compat.torch  # the shim still imports afterwards
"""


def test_skops_lists_the_same_estimators_without_the_sklearn_shim_that_imports_torch():
    pytest.importorskip("torch")
    plain, skipped = (subprocess.run([sys.executable, "-c", SKOPS_TRUSTED_NAMES, how], capture_output=True, text=True,
                                     timeout=300, check=True).stdout for how in ("plain", "skip"))
    assert plain.endswith("True\n"), "skops' import no longer brings torch: compat.skops_without_torch can go"
    assert skipped.endswith("False\n") and skipped.split("] ")[0] == plain.split("] ")[0]
