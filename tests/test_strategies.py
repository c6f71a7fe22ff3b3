"""Searchers, schedulers, stop criteria and failing trials on small real sweeps (one shared Ray)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import SMOKE
from raysweep import sweep
from raysweep.analysis import PARETO_ARTIFACT, pareto_front
from raysweep.errors import RaySweepError
from raysweep.tracking.tags import ERROR_TAG, PROGRESS_TAG, STOP_REASON_TAG, STOPPED_EARLY_TAG

FIXED = ["search_space.min_samples_leaf=2", "search_space.max_features=sqrt"]


def _children(client: MlflowClient, outcome):
    return client.search_runs(
        [outcome.summary.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{outcome.summary.parent_run_id}'"
    )


def _steps(client, run, metric="val_auc"):
    return [m.step for m in sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)]


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["search_alg=grid"], "search_alg=grid cannot enumerate search_space.min_samples_leaf"),
        (["search_alg=custom"], "search_alg=custom needs a searcher class"),
        (["search_alg=custom", "search_alg._target_=ray.tune.search.NoSuchSearch"], "cannot import"),
        (["search_alg=optuna", "+search_alg.params.colour=red"], "OptunaSearch("),
        (["search_alg=random", "search_alg.objectives={train_time_s: min}"], "needs search_alg=optuna"),
        (["search_alg=optuna", "search_alg.objectives={val_auc: max}"], "repeats sweep.metric"),
        (["search_alg=optuna", "search_alg.objectives={speed: max}"], "search_alg.objectives.speed is not reported"),
        # A known metric against its direction would register the worst trial's model.
        (["sweep.metric=val_log_loss"], "sweep.metric='val_log_loss' is better lower, but sweep.mode=max would "
                                        "rank the worst trial best; set sweep.mode=min"),
        (["search_alg=optuna", "search_alg.objectives={val_log_loss: max}"],
         "search_alg.objectives.val_log_loss=max would rank the worst trial best"),
        (["scheduler=asha", "scheduler.params.grace_period=9"], "exceeds trainer.iterations"),
        (["scheduler=pbt", "+sweep=overhead"], "scheduler=pbt moves checkpoints between trials"),
        (["scheduler=median_stopping", "+scheduler.params.colour=red"], "MedianStoppingRule("),
        (["sweep.stop.time_budget_s=0"], "sweep.stop.time_budget_s=0"),
        (["resume=true"], "no sweep 'fraud' in experiment 'fraud-detection' to resume"),
    ],
)
def test_bad_strategy_config_fails_before_anything_runs(extra, fragment, make_cfg, tracking_uri):
    sweep_name = [e for e in extra if e.startswith("+sweep=")] or ["+sweep=fraud"]
    extra = [e for e in extra if not e.startswith("+sweep=")]
    with pytest.raises(RaySweepError) as error:
        sweep.run(make_cfg(*sweep_name, *(SMOKE if sweep_name == ["+sweep=fraud"] else []), *extra))
    assert fragment in str(error.value)
    assert not MlflowClient(tracking_uri).search_runs(["0"]) and not any(
        MlflowClient(tracking_uri).search_runs([e.experiment_id]) for e in MlflowClient(tracking_uri).search_experiments()
    )


def test_a_searcher_whose_library_is_missing_is_refused_in_one_line(make_cfg, tracking_uri, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "user_code"))
    with pytest.raises(RaySweepError) as error:
        sweep.run(make_cfg("+sweep=fraud", *SMOKE, "search_alg=custom",
                           "search_alg._target_=searchers.NeedsItsLibrary"))
    assert str(error.value) == ("search_alg: NeedsItsLibrary cannot be built: NoSuchLib must be installed! Run `pip "
                                "install nosuchlib`.; install what it needs, or pick another search_alg")
    assert not any(MlflowClient(tracking_uri).search_runs([e.experiment_id])
                   for e in MlflowClient(tracking_uri).search_experiments())


@pytest.mark.parametrize(
    "rows, objectives, expected",
    [
        ([(0.9, 5.0), (0.8, 1.0), (0.7, 2.0), (0.9, 6.0)], {"val_auc": "max", "train_time_s": "min"}, [0, 1]),
        ([(0.9, 5.0), (0.9, 5.0)], {"val_auc": "max", "train_time_s": "min"}, [0, 1]),
        ([(0.1, 0.2), (0.2, 0.1)], {"val_auc": "min", "train_time_s": "min"}, [0, 1]),
        ([(0.1, 0.2), (0.2, 0.3)], {"val_auc": "max", "train_time_s": "max"}, [1]),
        ([(0.5, None), (0.4, 1.0)], {"val_auc": "max", "train_time_s": "min"}, [1]),
    ],
)
def test_pareto_front_keeps_the_undominated(rows, objectives, expected):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["metrics.val_auc", "metrics.train_time_s"])
    assert list(pareto_front(frame, objectives).index) == expected


@pytest.mark.slow
def test_grid_runs_every_combination_exactly_once(ray_address, make_cfg):
    overrides = ["+sweep=fraud", *SMOKE, *FIXED, "search_alg=grid", "search_space.n_estimators='choice(10, 20)'",
                 "search_space.max_depth='choice(4, none)'", "sweep.register=false"]
    outcome = sweep.run(make_cfg(*overrides))
    children = _children(MlflowClient(), outcome)
    combos = sorted((r.data.params["n_estimators"], r.data.params["max_depth"]) for r in children)
    assert combos == sorted((str(n), str(d)) for n, d in itertools.product((10, 20), (4, None)))
    assert outcome.plan.num_trials == 4 and {r.info.status for r in children} == {"FINISHED"}


@pytest.mark.slow
def test_optuna_multi_objective_records_the_pareto_front(ray_address, make_cfg):
    import mlflow

    overrides = ["+sweep=fraud", *SMOKE, "search_alg=optuna", "search_alg.objectives={train_time_s: min}",
                 "sweep.max_concurrent_trials=2", "sweep.register=false"]
    outcome = sweep.run(make_cfg(*overrides))
    client = MlflowClient()
    assert len(_children(client, outcome)) == 4
    front = mlflow.artifacts.load_dict(f"runs:/{outcome.summary.parent_run_id}/{PARETO_ARTIFACT}")
    assert front["objectives"] == {"val_auc": "max", "train_time_s": "min"}
    ids = {t["run_id"] for t in front["trials"]}
    assert outcome.summary.best_run_id in ids  # the best val_auc can never be dominated
    expected = pareto_front(outcome.summary.trials, outcome.summary.objectives)
    assert ids == set(expected["run_id"])


@pytest.mark.slow
def test_custom_searcher_from_a_hydra_target(ray_address, make_cfg):
    overrides = ["+sweep=fraud", *SMOKE, "search_alg=custom", "search_alg._target_=ray.tune.search.optuna.OptunaSearch",
                 "search_alg.params={sampler: {_target_: optuna.samplers.RandomSampler, seed: 3}}",
                 "sweep.num_samples=3", "sweep.register=false"]
    outcome = sweep.run(make_cfg(*overrides))
    children = _children(MlflowClient(), outcome)
    assert len(children) == 3 and {r.info.status for r in children} == {"FINISHED"}


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["asha", "median_stopping"])
def test_early_stopping_schedulers_stop_trials_and_say_so(scheduler, ray_address, make_cfg):
    overrides = ["+sweep=fraud", *SMOKE, "trainer.iterations=4", "sweep.num_samples=6", f"scheduler={scheduler}",
                 "search_space.max_depth='choice(1, 2, 8)'", "sweep.register=false"]
    if scheduler == "median_stopping":
        overrides.append("scheduler.params.min_samples_required=2")
    outcome = sweep.run(make_cfg(*overrides))
    client = MlflowClient()
    children = _children(client, outcome)
    assert len(children) == 6 and {r.info.status for r in children} == {"FINISHED"}
    stopped = [r for r in children if r.data.tags.get(STOPPED_EARLY_TAG)]
    assert stopped, "no trial was stopped early"
    assert {r.data.tags[STOPPED_EARLY_TAG] for r in stopped} == {scheduler}
    for run in children:
        steps = _steps(client, run)
        assert steps == list(range(1, len(steps) + 1))
        assert (len(steps) < 4) == (run in stopped)
    assert sum(len(_steps(client, r)) for r in children) < 6 * 4


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["driver", "worker"])
def test_pbt_records_perturbed_hyperparameters_as_metrics(mode, ray_address, make_cfg):
    # All four trials run at once (half a CPU each) and long enough to overlap despite staggered starts, so
    # every perturbation point has a population to compare.
    overrides = ["+sweep=fraud", *SMOKE, "trainer.iterations=6", "trainer.cpus_per_trial=0.5", "scheduler=pbt",
                 "search_space.n_estimators=300", f"mlflow={mode}",
                 "scheduler.params.quantile_fraction=0.5", "scheduler.params.resample_probability=1.0",
                 "search_space.min_samples_leaf='choice(1, 4, 16, 32)'", "sweep.register=false"]
    outcome = sweep.run(make_cfg(*overrides))
    client = MlflowClient()
    children = _children(client, outcome)
    assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
    changed = 0
    for run in children:
        steps = _steps(client, run)
        assert steps == sorted(set(steps)) and steps[0] == 1, steps
        history = client.get_metric_history(run.info.run_id, "config.min_samples_leaf")
        assert history, "the hyperparameter's timeline is missing"
        changed += len({m.value for m in history}) > 1
        assert run.data.params["min_samples_leaf"] in {"1", "4", "16", "32"}
    assert changed, "PBT perturbed nothing"
    # The summary names the values the best trial ended with, not the ones MLflow's params kept from its start.
    final = max(client.get_metric_history(outcome.summary.best_run_id, "config.min_samples_leaf"),
                key=lambda m: (m.step, m.timestamp))
    assert float(outcome.summary.best_params["min_samples_leaf"]) == final.value


@pytest.mark.slow
@pytest.mark.parametrize(
    "stop, reason",
    [("sweep.stop.metric_threshold=0.5", "metric_threshold"), ("sweep.stop.time_budget_s=10", "time_budget")],
)
def test_stop_criteria_end_the_sweep_early(stop, reason, ray_address, make_cfg):
    # Far more trials than 10 s can run: only a stop criterion ends this sweep in time.
    # The threshold is reached at a trial's first report: that report's checkpoint is registered all the same.
    register = "sweep.register=true" if reason == "metric_threshold" else "sweep.register=false"
    overrides = ["+sweep=fraud", *SMOKE, "trainer.iterations=5", "sweep.num_samples=200", stop, register]
    outcome = sweep.run(make_cfg(*overrides))
    client = MlflowClient()
    children = _children(client, outcome)
    parent = client.get_run(outcome.summary.parent_run_id)
    assert parent.data.tags[STOP_REASON_TAG] == reason and parent.info.status == "FINISHED"
    assert 0 < len(children) < 200
    assert {r.info.status for r in children} == {"FINISHED"}
    # Every trial that ran is counted, those the stop ended too, and the summary says what ended the sweep.
    assert parent.data.tags[PROGRESS_TAG] == f"{len(children)}/200"
    assert f"stopped     {'sweep.stop.time_budget_s ran out' if reason == 'time_budget' else 'a trial reached'}" \
        in outcome.report()
    if reason == "metric_threshold":
        version = client.get_model_version(outcome.registration.name, outcome.registration.version)
        assert version.run_id == outcome.summary.best_run_id


@pytest.mark.slow
def test_trials_failing_on_some_configs_are_retried_and_the_best_good_one_registered(ray_address, make_cfg):
    # oob_score=true without bootstrap: each value passes sklearn's rules alone (checked before Ray starts),
    # together they fail in fit.
    overrides = ["+sweep=fraud", *SMOKE, "sweep.num_samples=6", "sweep.max_failures=1", "+trainer.params.bootstrap=false",
                 "+search_space.oob_score='choice(false, true)'"]
    outcome = sweep.run(make_cfg(*overrides))
    client = MlflowClient()
    children = _children(client, outcome)
    assert len(children) == 6, "a retried trial must keep its one run"
    failed = [r for r in children if r.info.status == "FAILED"]
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert failed and finished and len(failed) + len(finished) == 6
    assert all(r.data.params["oob_score"] == "True" and "bootstrap=True" in r.data.tags[ERROR_TAG] for r in failed)
    version = client.get_model_version(outcome.registration.name, outcome.registration.version)
    assert version.run_id == outcome.summary.best_run_id
    assert outcome.summary.best_run_id in {r.info.run_id for r in finished}
