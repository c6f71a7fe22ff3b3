"""The one trial-run lifecycle both logging modes use, against a real sqlite store (no Ray)."""

from __future__ import annotations

import pickle

from mlflow import MlflowClient

from raysweep.tracking import queries
from raysweep.tracking.lifecycle import TrialRuns, changed_values, config_metrics
from raysweep.tracking.tags import (
    ENDED_BY_TAG,
    ERROR_TAG,
    PARENT_ROLE,
    PARENT_RUN_ID,
    ROLE_TAG,
    TRIAL_ID_TAG,
    TRIAL_ROLE,
)


def _sweep(uri: str):
    client = MlflowClient(uri)
    experiment_id = queries.experiment_id(client, "lifecycle")
    parent = client.create_run(experiment_id, tags={ROLE_TAG: PARENT_ROLE}).info.run_id
    return client, experiment_id, parent


def _runs(client, experiment_id, parent, **kwargs) -> TrialRuns:
    return TrialRuns(client, experiment_id, parent, metrics=["score", "loss"], **kwargs)


def test_a_trial_gets_one_nested_run_with_params_tags_metrics_and_an_end(tracking_uri):
    client, experiment_id, parent = _sweep(tracking_uri)
    runs = _runs(client, experiment_id, parent, tags={"extra": "x"})
    assert runs.start("t1", "train_t1", {"lr": 0.1, "depth": None}) is True
    for step in (1, 2):
        runs.metrics("t1", {"score": step / 10, "loss": 1 / step}, step)
    runs.end("t1", "FINISHED")
    [child] = queries.children(client, experiment_id, parent)
    assert child.info.status == "FINISHED"
    assert child.data.params == {"lr": "0.1", "depth": "None"}
    assert child.data.tags[PARENT_RUN_ID] == parent and child.data.tags[ROLE_TAG] == TRIAL_ROLE
    assert child.data.tags[TRIAL_ID_TAG] == "t1" and child.data.tags["extra"] == "x"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "score")] == [1, 2]


def test_a_restarted_trial_goes_back_to_its_run_after_its_last_step(tracking_uri):
    client, experiment_id, parent = _sweep(tracking_uri)
    first = _runs(client, experiment_id, parent)
    first.start("t1", "train_t1", {"lr": 0.1})
    first.metrics("t1", {"score": 0.1}, 1)
    first.metrics("t1", {"score": 0.2}, 2)
    first.end("t1", "FAILED", error="ValueError: boom")
    client.set_tag(first.run_id("t1"), ENDED_BY_TAG, "parent run ended")

    # Another process (a new driver, a worker): finds the run by trial id, reopens it, skips replayed steps.
    second = _runs(client, experiment_id, parent)
    assert second.start("t1", "train_t1", {"lr": 0.5}) is False
    assert second.last_step("t1") == 2
    assert second.metrics("t1", {"score": 0.2}, 2) is False
    assert second.metrics("t1", {"score": 0.3}, 3) is True
    reopened = client.get_run(second.run_id("t1"))
    assert reopened.info.status == "RUNNING"
    assert ERROR_TAG not in reopened.data.tags and ENDED_BY_TAG not in reopened.data.tags
    assert reopened.data.tags["config.lr"] == "0.5"
    second.end("t1", "FINISHED")
    assert len(queries.children(client, experiment_id, parent)) == 1
    assert [m.value for m in client.get_metric_history(second.run_id("t1"), "score")] == [0.1, 0.2, 0.3]


def test_a_run_whose_driver_died_before_its_first_write_gets_its_params_when_reopened(tracking_uri):
    client, experiment_id, parent = _sweep(tracking_uri)
    killed = _runs(client, experiment_id, parent)
    killed.start("t1", "train_t1", {"lr": 0.1, "depth": 3})  # params wait for the run's first metrics...
    assert client.get_run(killed.run_id("t1")).data.params == {}  # ...which this driver never wrote

    resumed = _runs(client, experiment_id, parent)
    assert resumed.start("t1", "train_t1", {"lr": 0.1, "depth": 3}) is False
    resumed.metrics("t1", {"score": 0.3}, 1)
    resumed.end("t1", "FINISHED")
    run = client.get_run(resumed.run_id("t1"))
    assert run.data.params == {"lr": "0.1", "depth": "3"}
    assert not any(k.startswith("config.") for k in run.data.tags), "no hyperparameter changed"
    assert run.data.metrics == {"score": 0.3} and run.info.status == "FINISHED"


def test_failure_is_tagged_and_samplers_stop(tracking_uri):
    client, experiment_id, parent = _sweep(tracking_uri)
    runs = _runs(client, experiment_id, parent, system_metrics=True, tracking_uri=tracking_uri)
    runs.start("t1", "train_t1", {})
    runs.end("t1", "FAILED", error="RuntimeError: " + "x" * 900)
    run = client.get_run(runs.run_id("t1"))
    assert run.info.status == "FAILED"
    assert run.data.tags[ERROR_TAG].startswith("RuntimeError") and len(run.data.tags[ERROR_TAG]) == 500
    assert runs._monitors == {}


def test_a_trial_shorter_than_one_sampling_interval_still_gets_system_metrics(tracking_uri):
    client, experiment_id, parent = _sweep(tracking_uri)
    runs = _runs(client, experiment_id, parent, system_metrics=True, tracking_uri=tracking_uri)
    runs.start("t1", "train_t1", {})
    runs.end("t1", "FINISHED")  # well within the sampler's first second
    metrics = client.get_run(runs.run_id("t1")).data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in metrics), sorted(metrics)


def test_adapters_choose_how_runs_are_created_and_ended(tracking_uri):
    client, experiment_id, parent = _sweep(tracking_uri)
    calls = []

    def create(name, tags, params):
        calls.append(("create", name, params))
        return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id

    runs = _runs(client, experiment_id, parent, create=create,
                 terminate=lambda run_id, status: calls.append(("end", status)) or client.set_terminated(run_id, status))
    runs.start("t1", "train_t1", {"a": 1})
    runs.end("t1", "KILLED")
    assert calls == [("create", "train_t1", {"a": 1}), ("end", "KILLED")]
    assert client.get_run(runs.run_id("t1")).info.status == "KILLED"


def test_config_values_as_metrics_and_changes_as_tags():
    assert config_metrics({"lr": 0.1, "n": 3, "flag": True, "kind": "gini"}) == {"config.lr": 0.1, "config.n": 3.0}
    assert changed_values({"lr": "0.1", "n": "3"}, {"lr": "0.2", "n": "3"}) == {"config.lr": "0.2"}


def test_driver_callback_pickles_no_credential_and_connects_with_the_full_uri(tmp_path):
    from raysweep.tracking.driver import SweepLoggerCallback

    secret_uri = "http://alice:s3cret-pw@127.0.0.1:1/?token=t0ken"
    callback = SweepLoggerCallback(
        tracking_uri=secret_uri, registry_uri=secret_uri, experiment_id="1", experiment_name="e",
        parent_run_id="p", metrics=["score"],
    )
    state = pickle.dumps(callback)
    assert b"s3cret-pw" not in state and b"t0ken" not in state
    restored = pickle.loads(state)
    restored.setup()
    try:
        assert restored._runs.client.tracking_uri == secret_uri
    finally:
        restored._writer.close()


def test_sweep_stopper_pickles_no_credential_and_finds_the_full_uri():
    from raysweep import remote
    from raysweep.strategy import SweepStopper

    secret_uri = "postgresql://bob:pa55word@db.internal:5432/mlflow"
    stopper = SweepStopper("score", "max", None, 0.5, secret_uri, "parent")
    state = pickle.dumps(stopper)
    assert b"pa55word" not in state
    assert remote.full_uri(pickle.loads(state).tracking_uri) == secret_uri


def test_a_trial_that_never_started_has_nothing_to_log_or_end(tracking_uri):
    client, experiment_id, parent = _sweep(tracking_uri)
    runs = _runs(client, experiment_id, parent)
    assert runs.metrics("never", {"score": 1.0}, 1) is False
    runs.tags("never", {"a": "b"})
    runs.flush("never")
    runs.end("never", "FAILED", error="could not start")
    assert queries.children(client, experiment_id, parent) == []
