"""Sweeps with known outcomes, each on its own store: alias moves, the second trainer family, failing trials."""

import pytest
from mlflow import MlflowClient

from conftest import SMOKE, STRONG, WEAK
from raysweep import registry, sweep
from raysweep.analysis import SweepSummary
from raysweep.errors import RaySweepError
from raysweep.tracking.tags import ERROR_TAG, PARENT_ROLE, ROLE_TAG

EXPERIMENT = "fraud-detection"
MODEL = "fraud-rf"


def _summary(metric="val_auc", mode="max", value=0.9):
    return SweepSummary("0", "p", "s", metric, mode, "r", "t", value, {}, trials=None)


@pytest.mark.parametrize(
    "summary, champion_tags, expected",
    [
        (_summary(value=0.91), {"raysweep.metric": "val_auc", "raysweep.mode": "max", "raysweep.metric_value": "0.9"}, True),
        (_summary(value=0.90), {"raysweep.metric": "val_auc", "raysweep.mode": "max", "raysweep.metric_value": "0.9"}, False),
        (_summary(value=0.89), {"raysweep.metric": "val_auc", "raysweep.mode": "max", "raysweep.metric_value": "0.9"}, False),
        (_summary("val_log_loss", "min", 0.05), {"raysweep.metric": "val_log_loss", "raysweep.mode": "min", "raysweep.metric_value": "0.06"}, True),
        (_summary("val_log_loss", "min", 0.07), {"raysweep.metric": "val_log_loss", "raysweep.mode": "min", "raysweep.metric_value": "0.06"}, False),
        (_summary(value=0.99), {"raysweep.metric": "val_average_precision", "raysweep.mode": "max", "raysweep.metric_value": "0.1"}, False),
        (_summary(value=0.99), {}, False),
        (_summary(value=0.99), {"raysweep.metric": "val_auc", "raysweep.mode": "max", "raysweep.metric_value": "n/a"}, False),
    ],
)
def test_beats_compares_only_like_with_like(summary, champion_tags, expected):
    assert registry.beats(summary, champion_tags) is expected


@pytest.mark.slow
def test_better_sweep_moves_champion_and_worse_moves_only_challenger(ray_address, make_cfg):
    client = MlflowClient()
    outcomes = {}
    for name, overrides in (("weak", WEAK), ("strong", STRONG), ("weak_again", WEAK)):
        outcomes[name] = sweep.run(make_cfg("+sweep=fraud", *SMOKE, *overrides))
    assert outcomes["strong"].summary.best_value > outcomes["weak"].summary.best_value

    def alias(name):
        return str(client.get_model_version_by_alias(MODEL, name).version)

    assert [outcomes[k].registration.version for k in ("weak", "strong", "weak_again")] == ["1", "2", "3"]
    assert alias("champion") == "2"
    assert alias("challenger") == "3"
    assert "champion" not in outcomes["weak_again"].registration.aliases
    experiment = client.get_experiment_by_name("fraud-detection")
    assert {r.info.status for r in client.search_runs([experiment.experiment_id])} == {"FINISHED"}


@pytest.mark.slow
def test_hist_gradient_boosting_sweep_reports_every_iteration(ray_address, make_cfg, tracking_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    overrides = ["+sweep=fraud_hgb", "data.n_samples=3000", "sweep.num_samples=2", "trainer.iterations=3",
                 "search_space.max_iter=30", "sweep.register=false", "cluster.verbose=0"]
    outcome = sweep.run(make_cfg(*overrides))
    client = MlflowClient(tracking_uri)
    assert outcome.registration is None and not client.search_registered_models()
    history = client.get_metric_history(outcome.summary.best_run_id, "val_average_precision")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert set(outcome.summary.best_params) >= {"learning_rate", "max_leaf_nodes", "max_iter"}


@pytest.mark.slow
def test_a_sweep_whose_trials_all_fail_ends_failed_and_registers_nothing(ray_address, make_cfg, tracking_uri,
                                                                        monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    # sklearn rejects every value of this interval inside the trials, after the sweep has started (a fixed value
    # or choice it rejects is refused before Ray starts; an interval's bounds are left to the trials).
    overrides = ["+sweep=fraud", *SMOKE, "sweep.num_samples=2", "search_space.max_features='interval(1.5,2.5)'"]
    with pytest.raises(RaySweepError, match="no finished trial reporting 'val_auc'"):
        sweep.run(make_cfg(*overrides))
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    parent = [r for r in runs if r.data.tags.get(ROLE_TAG) == PARENT_ROLE]
    children = [r for r in runs if r not in parent]
    assert [p.info.status for p in parent] == ["FAILED"]
    assert len(children) == 2 and {c.info.status for c in children} == {"FAILED"}
    assert all("max_features" in c.data.tags[ERROR_TAG] for c in children)
    assert not client.search_registered_models()
