"""sweep.warm_start: an earlier sweep's finished trials seed Optuna, only those inside the current search space."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from raysweep import config, warm_start
from raysweep.errors import RaySweepError
from raysweep.plan import make_plan
from raysweep.search_space import parse
from raysweep.tracking.tags import PARENT_ROLE, PARENT_RUN_ID, ROLE_TAG, SWEEP_TAG, TRIAL_ROLE

USER_CODE = Path(__file__).parent / "user_code"
EXPERIMENT = "warm-start"
#: One trial at a time on a 10 x 10 grid whose score peaks at x=7, y=3 (tests/user_code/peak_functions.py).
PEAK = [
    "+sweep=overhead", "sweep.name=peak", "trainer=function", "data=none", "trainer.function=peak_functions:train_peak",
    "trainer.iterations=1", "search_space.x='range(0, 10)'", "+search_space.y='range(0, 10)'",
    "sweep.max_concurrent_trials=1", "search_alg=optuna", "sweep.register=false",
    f"mlflow.experiment_name={EXPERIMENT}", "cluster.verbose=0",
]

# --- points: an earlier trial's MLflow params (strings) -> its values in the current space, or left out -----------

SPACE = parse({
    "max_depth": "choice(8, 16, none)",
    "max_features": "choice(sqrt, 0.5)",
    "bootstrap": "choice(true, false)",
    "n_estimators": "range(50, 201, 50)",
    "lr": "tag(log, interval(1e-5, 1))",
    "subsample": "interval(0.5, 1)",
    "leaves": "tag(log, int(interval(2, 32)))",
    "criterion": "gini",  # fixed
})
GOOD = {"max_depth": "16", "max_features": "sqrt", "bootstrap": "True", "n_estimators": "150", "lr": "1e-05",
        "subsample": "1.0", "leaves": "32", "criterion": "gini"}
GOOD_POINT = {"max_depth": 16, "max_features": "sqrt", "bootstrap": True, "n_estimators": 150, "lr": 1e-05,
              "subsample": 1.0, "leaves": 32}


@pytest.mark.parametrize(
    "changed, expected",
    [
        ({}, {}),
        ({"max_depth": "None"}, {"max_depth": None}),
        ({"max_features": "0.5", "bootstrap": "False"}, {"max_features": 0.5, "bootstrap": False}),
        ({"n_estimators": "50.0", "leaves": "2.0"}, {"n_estimators": 50, "leaves": 2}),  # read as the space's ints
        ({"lr": "0.5", "subsample": "0.5"}, {"lr": 0.5, "subsample": 0.5}),
        ({"criterion": None}, {}),  # a fixed value the earlier trial did not record: no objection
        # outside the current space: left out
        ({"max_depth": "4"}, None),
        ({"max_features": "log2"}, None),
        ({"bootstrap": "1"}, None),  # a bool choice matches only True/False
        ({"n_estimators": "175"}, None),  # between range(...)'s steps
        ({"lr": "2.0"}, None),
        ({"subsample": "0.49"}, None),
        ({"leaves": "33"}, None),
        ({"leaves": "2.5"}, None),
        ({"leaves": "many"}, None),
        ({"criterion": "entropy"}, None),  # run with another fixed value
        ({"max_depth": None}, None),  # a dimension the earlier sweep did not have: Optuna needs every one
    ],
)
def test_earlier_params_are_read_back_as_the_spaces_values_or_left_out(changed, expected):
    params = {**GOOD, **changed}
    runs = pd.DataFrame([{"status": "FINISHED", "metrics.val_auc": 0.9,
                          **{f"params.{k}": v for k, v in params.items() if v is not None}}])
    found, rewards = warm_start.points(runs, SPACE, "val_auc")
    if expected is None:
        assert found == [] and rewards == []
    else:
        assert found == [{**GOOD_POINT, **expected}] and rewards == [0.9]
        assert all(type(found[0][k]) is type(v) for k, v in {**GOOD_POINT, **expected}.items())


def test_only_finished_trials_with_the_metric_seed_the_search():
    rows = [("FINISHED", 0.7), ("FAILED", 0.9), ("KILLED", 0.95), ("FINISHED", math.nan), ("FINISHED", 0.8)]
    runs = pd.DataFrame([{"status": s, "metrics.val_auc": m, **{f"params.{k}": v for k, v in GOOD.items()}}
                         for s, m in rows])
    found, rewards = warm_start.points(runs, SPACE, "val_auc")
    assert rewards == [0.7, 0.8] and found == [GOOD_POINT, GOOD_POINT]
    assert warm_start.points(runs, SPACE, "val_loss") == ([], [])


# --- refusals before Ray starts ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["search_alg=random"], "not search_alg=random"),
        (["search_alg=grid"], "not search_alg=grid"),
        (["search_alg=custom", "search_alg._target_=ray.tune.search.optuna.OptunaSearch"], "not search_alg=custom"),
        (["search_alg=optuna", "+search_alg.objectives.train_time_s=min"], "multi-objective"),
        (["search_alg=optuna", "+search_alg.params.points_to_evaluate=[]"], "both seed the search"),
    ],
)
def test_warm_start_is_refused_in_one_line_where_it_cannot_seed_optuna(make_cfg, overrides, fragment):
    cfg = make_cfg("+sweep=fraud", "sweep.warm_start=latest", *overrides)
    with pytest.raises(RaySweepError, match=fragment) as error:
        config.validate(cfg)
    assert "sweep.warm_start" in str(error.value) and "\n" not in str(error.value)


def _sweep(client, experiment_id, name="peak", metric="score", status="FINISHED", children=()):
    """A sweep as raysweep records it: a parent run and its child runs, each child (params, metrics, status)."""
    parent = client.create_run(experiment_id, tags={ROLE_TAG: PARENT_ROLE, SWEEP_TAG: name})
    client.log_param(parent.info.run_id, "sweep.metric", metric)
    for params, metrics, child_status in children:
        child = client.create_run(experiment_id, tags={ROLE_TAG: TRIAL_ROLE, PARENT_RUN_ID: parent.info.run_id})
        for key, value in params.items():
            client.log_param(child.info.run_id, key, value)
        for key, value in metrics.items():
            client.log_metric(child.info.run_id, key, value)
        client.set_terminated(child.info.run_id, child_status)
    client.set_terminated(parent.info.run_id, status)
    return parent.info.run_id


XY = parse({"x": "range(0, 10)", "y": "range(0, 10)", "z": 1})


def _find(tracking_uri, reference, metric="score", sweep_name="peak"):
    return warm_start.find(reference, tracking_uri=tracking_uri, experiment_name=EXPERIMENT, sweep_name=sweep_name,
                           metric=metric, parsed=XY)


def test_latest_is_the_newest_finished_sweep_of_the_same_name(tracking_uri):
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    trial = ({"x": "7", "y": "3", "z": "1"}, {"score": 0.0}, "FINISHED")
    outside = ({"x": "12", "y": "3", "z": "1"}, {"score": -25.0}, "FINISHED")
    failed = ({"x": "1", "y": "1"}, {}, "FAILED")
    older = _sweep(client, experiment_id, children=[trial])
    near = ({"x": "6", "y": "3", "z": "1"}, {"score": -1.0}, "FINISHED")
    newest_finished = _sweep(client, experiment_id, children=[trial, outside, failed, near])
    _sweep(client, experiment_id, status="FAILED", children=[trial])
    _sweep(client, experiment_id, name="other", children=[trial])
    seed = _find(tracking_uri, "latest")
    assert seed.parent_run_id == newest_finished != older
    assert seed.points == ({"x": 7, "y": 3}, {"x": 6, "y": 3}) and seed.rewards == (0.0, -1.0) and seed.finished == 3
    assert seed.tags() == {"raysweep.warm_start": newest_finished, "raysweep.warm_start.points": "2"}
    assert _find(tracking_uri, older).points == ({"x": 7, "y": 3},)  # a parent run id names any sweep


def test_a_warm_start_that_names_nothing_usable_is_one_line(tracking_uri):
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    trial = ({"x": "7", "y": "3", "z": "1"}, {"score": 0.0}, "FINISHED")
    child_of = _sweep(client, experiment_id, children=[trial])
    a_child = client.search_runs([experiment_id], f"tags.`{PARENT_RUN_ID}` = '{child_of}'")[0].info.run_id
    other_metric = _sweep(client, experiment_id, name="other", metric="loss", children=[trial])
    no_trials = _sweep(client, experiment_id, name="other", children=[({"x": "7", "y": "3"}, {}, "FAILED")])
    outside = _sweep(client, experiment_id, name="other", children=[({"x": "7", "y": "3", "z": "2"}, {"score": 0.0},
                                                                     "FINISHED")])
    cases = [
        ("latest", "unknown-sweep", "has no finished sweep named 'unknown-sweep'"),
        ("0123abc", "peak", "no MLflow run '0123abc'"),
        (a_child, "peak", "is not a raysweep sweep's parent run"),
        (other_metric, "peak", "ranked its trials by loss, this sweep by score"),
        (no_trials, "peak", "has no finished trial with score"),
        (outside, "peak", "none of the 1 finished trials"),
    ]
    for reference, sweep_name, fragment in cases:
        with pytest.raises(RaySweepError) as error:
            _find(tracking_uri, reference, sweep_name=sweep_name)
        message = str(error.value)
        assert fragment in message and message.startswith(f"sweep.warm_start={reference}: ") and "\n" not in message


def test_the_plan_reads_the_warm_start_before_ray_starts_and_a_resume_does_not(make_cfg, user_code):
    with pytest.raises(RaySweepError, match="has no finished sweep named 'peak'"):
        make_plan(make_cfg(*PEAK, "sweep.warm_start=latest"))
    assert make_plan(make_cfg(*PEAK, "sweep.warm_start=latest", "resume=true")).warm_start is None
    assert make_plan(make_cfg(*PEAK)).warm_start is None


def test_a_warm_start_with_the_earlier_seed_does_not_redraw_the_earlier_configurations():
    from omegaconf import OmegaConf

    from raysweep import strategy

    # Fewer than TPE's 10 start-up trials: it still draws at random, and with the earlier sweep's seed it would
    # propose exactly the configurations the earlier sweep already ran.
    space = parse({"x": "range(0, 10)", "y": "range(0, 10)"})
    optuna_cfg = OmegaConf.create({"name": "optuna", "seed": 0, "objectives": {}, "_target_": None, "params": {}})
    earlier, _ = strategy.searcher(optuna_cfg, space, "score", "max", None)
    drawn = [earlier.suggest(f"earlier_{i}") for i in range(4)]
    seed = warm_start.Seed("parent", tuple(drawn), (1.0, 2.0, 3.0, 4.0), finished=4)
    warm, _ = strategy.searcher(optuna_cfg, space, "score", "max", None, warm=seed)
    assert [warm.suggest(f"warm_{i}") for i in range(4)] != drawn


# --- a real sweep -------------------------------------------------------------------------------------------------

@pytest.fixture
def user_code(monkeypatch):
    monkeypatch.syspath_prepend(str(USER_CODE))
    yield
    sys.modules.pop("peak_functions", None)


def _scores_in_start_order(client, experiment_id, parent_run_id) -> list[float]:
    runs = client.search_runs([experiment_id], f"tags.`{PARENT_RUN_ID}` = '{parent_run_id}'", max_results=100)
    runs = sorted(runs, key=lambda r: (r.info.start_time, r.info.run_name))
    return [r.data.metrics["score"] for r in runs]


def _trials_to_reach(scores: list[float], target: float) -> int:
    """1-based trial at which ``scores`` first reach ``target`` (mode max); one past the end if never."""
    return next((i for i, s in enumerate(scores, 1) if s >= target), len(scores) + 1)


@pytest.mark.slow
def test_a_warm_started_optuna_sweep_reaches_the_earlier_best_in_fewer_trials(ray_address, make_cfg, tracking_uri,
                                                                               user_code):
    from raysweep import sweep

    client = MlflowClient(tracking_uri)
    earlier = sweep.run(make_cfg(*PEAK, "sweep.num_samples=10", "search_alg.seed=0")).summary
    best = earlier.best_value
    # The same seed for both: without the earlier trials, the warm sweep would propose what the cold one does.
    again = [*PEAK, "sweep.num_samples=8", "search_alg.seed=1"]
    warm = sweep.run(make_cfg(*again, "sweep.warm_start=latest")).summary
    cold = sweep.run(make_cfg(*again)).summary

    warm_parent = client.get_run(warm.parent_run_id)
    assert warm_parent.data.tags["raysweep.warm_start"] == earlier.parent_run_id
    assert warm_parent.data.tags["raysweep.warm_start.points"] == "10"
    assert "raysweep.warm_start" not in client.get_run(cold.parent_run_id).data.tags
    warm_scores = _scores_in_start_order(client, warm.experiment_id, warm.parent_run_id)
    cold_scores = _scores_in_start_order(client, cold.experiment_id, cold.parent_run_id)
    assert len(warm_scores) == len(cold_scores) == 8  # the earlier trials were told to Optuna, not run again
    warm_reach, cold_reach = _trials_to_reach(warm_scores, best), _trials_to_reach(cold_scores, best)
    assert cold_reach > 1, f"cold sweep reached {best} at once: {cold_scores}; the comparison would say nothing"
    assert warm_reach < cold_reach, f"best earlier {best}; warm {warm_scores}; cold {cold_scores}"
