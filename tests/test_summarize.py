"""The post-sweep analysis on a store written by hand (no Ray): which trial is best, in what order trials come."""

from __future__ import annotations

import uuid

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from conftest import use_store
from raysweep.analysis import record_best, summarize
from raysweep.errors import RaySweepError
from raysweep.tracking.tags import BEST_RUN_NAME_TAG, MODEL_VALUE_TAG, PARENT_RUN_ID, RUN_NAME, STOP_REASON_TAG

NAN = float("nan")


@pytest.fixture
def tracking_uri(module_store, monkeypatch):
    """One store for the module (a new sqlite store takes seconds to migrate); an experiment per test."""
    yield from use_store(module_store, monkeypatch)


def _sweep(client: MlflowClient, mode: str, children: list[tuple[str, float | None, str, str | None]]):
    """A parent run and, started one second apart in list order, its children: (name, last metric value or None
    for none reported, status, model value tag or None)."""
    experiment = client.create_experiment(f"summarize-{uuid.uuid4().hex[:8]}")
    parent = client.create_run(experiment, start_time=1_000, run_name="sweep")
    client.log_batch(parent.info.run_id, params=[Param("sweep.metric", "score"), Param("sweep.mode", mode)])
    for i, (name, value, status, model_value) in enumerate(children):
        tags = {PARENT_RUN_ID: parent.info.run_id}
        if model_value is not None:
            tags[MODEL_VALUE_TAG] = model_value
        run = client.create_run(experiment, start_time=2_000 + 1_000 * i, run_name=name, tags=tags)
        metrics = [] if value is None else [Metric("score", value, 2_000 + 1_000 * i, 1)]
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param("lr", str(i))])
        client.set_terminated(run.info.run_id, status)
    return client.get_run(parent.info.run_id)


@pytest.mark.parametrize(
    "mode, children, best, order",
    [
        # Ties: the earliest trial first, and best. A trial without the metric goes last.
        ("max", [("a", 0.5, "FINISHED", None), ("b", 0.9, "FINISHED", None), ("c", None, "FINISHED", None),
                 ("d", 0.9, "FINISHED", None)], "b", ["b", "d", "a", "c"]),
        ("min", [("a", 0.3, "FINISHED", None), ("b", 0.1, "FINISHED", None), ("c", 0.2, "FINISHED", None)],
         "b", ["b", "c", "a"]),
        # A failed trial keeps its place in the table but is never the best.
        ("max", [("a", 0.99, "FAILED", None), ("b", 0.5, "FINISHED", None)], "b", ["a", "b"]),
        # The model's value (the checkpoint registration takes) counts, not the metric's last value.
        ("max", [("a", 0.9, "FINISHED", "0.2"), ("b", 0.5, "FINISHED", None)], "b", ["b", "a"]),
        # A NaN metric is no number: it sorts last and is never the best.
        ("max", [("a", NAN, "FINISHED", None), ("b", 0.1, "FINISHED", None)], "b", ["b", "a"]),
    ],
)
def test_summarize_picks_the_best_finished_trial_and_orders_the_table(tracking_uri, mode, children, best, order):
    client = MlflowClient(tracking_uri)
    summary = summarize(client, _sweep(client, mode, children))
    assert summary.best_run_name == best
    assert list(summary.trials[f"tags.{RUN_NAME}"]) == order
    assert summary.n_trials == len(children) and summary.best_params == {"lr": str(
        [name for name, *_ in children].index(best))}


def test_best_params_are_the_sweeps_hyperparameters_not_what_a_trial_logged_beside_them(tracking_uri):
    # Worker mode: the trial's own code (or mlflow.autolog) logs params of its own on its run.
    client = MlflowClient(tracking_uri)
    parent = _sweep(client, "max", [("a", 0.9, "FINISHED", None)])
    client.log_batch(parent.info.run_id, params=[Param("search_space.lr", "interval(0, 1)")])
    (child,) = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_RUN_ID}` = '{parent.info.run_id}'")
    client.log_batch(child.info.run_id, params=[Param("train_rows", "124"), Param("n_estimators", "10")])
    assert summarize(client, client.get_run(parent.info.run_id)).best_params == {"lr": "0"}


@pytest.mark.parametrize("configs, final", [
    ([{"lr": 0.1}, {"lr": 0.2}], "0.2"),  # PBT changed lr at the restart: the summary names the value it ran with
    ([{"lr": 0.1}, {"lr": 0.2}, {"lr": 0.1}], "0.1"),  # and changed it back
    ([{"lr": 0.1}, {"lr": 0.1}], "0.1"),  # a plain retry changes nothing
])
def test_best_params_are_the_values_a_pbt_trial_ended_with(tracking_uri, configs, final):
    from raysweep.tracking.lifecycle import TrialRuns

    client = MlflowClient(tracking_uri)
    parent = _sweep(client, "max", [])
    runs = TrialRuns(client, parent.info.experiment_id, parent.info.run_id, metrics=["score"], track_config=True)
    for step, config in enumerate(configs, start=1):  # each start after the first is PBT restarting the trial
        runs.start("t1", "train_t1", config)
        runs.metrics("t1", {"score": step / 10}, step)
        runs.end("t1", "FINISHED")
    summary = summarize(client, client.get_run(parent.info.run_id))
    assert summary.best_params == {"lr": final}
    assert client.get_run(summary.best_run_id).data.params["lr"] == "0.1"  # MLflow keeps the first value


def test_summarize_without_a_finished_trial_reporting_the_metric_names_the_fix(tracking_uri):
    client = MlflowClient(tracking_uri)
    parent = _sweep(client, "max", [("a", 0.9, "FAILED", None), ("b", None, "FINISHED", None)])
    with pytest.raises(RaySweepError, match=r"no finished trial reporting 'score' \(2 trial runs, 1 failed\); see the "
                                            r"failed child runs' raysweep.error tag$"):
        summarize(client, parent)
    # None failed: every finished trial reported NaN (or nothing), and no run has an error to see.
    parent = _sweep(client, "max", [("a", NAN, "FINISHED", None), ("b", None, "FINISHED", None)])
    with pytest.raises(RaySweepError, match=r"\(2 trial runs, 0 failed\); the finished trials reported no number for "
                                            r"it \(NaN or none\): check what the trials report as 'score'$"):
        summarize(client, parent)
    # The time budget ran out before any trial's first report: the budget, not the metric, is to change.
    parent = _sweep(client, "max", [("a", None, "FINISHED", None), ("b", None, "FINISHED", None)])
    client.set_tag(parent.info.run_id, STOP_REASON_TAG, "time_budget")
    with pytest.raises(RaySweepError, match=r"\(2 trial runs, 0 failed\); sweep.stop.time_budget_s ran out before any "
                                            r"trial reported it; raise sweep.stop.time_budget_s$"):
        summarize(client, client.get_run(parent.info.run_id))


def test_record_best_writes_the_best_trial_onto_the_parent_once_however_often_it_runs(tracking_uri):
    client = MlflowClient(tracking_uri)
    parent = _sweep(client, "max", [("a", 0.5, "FINISHED", None), ("b", 0.9, "FINISHED", None)])
    summary = summarize(client, parent)
    for _ in range(3):  # a retried after-training phase, then `raysweep analyse` twice
        record_best(client, summary)
    run = client.get_run(parent.info.run_id)
    assert run.data.params["best.lr"] == "1" and run.data.tags[BEST_RUN_NAME_TAG] == "b"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "best_score")] == [0.9]
