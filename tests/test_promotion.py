"""Alias moves across sweeps: a better sweep takes @champion, a worse one only @challenger."""

import pytest
from mlflow import MlflowClient

from conftest import SMOKE
from raysweep import registry, sweep
from raysweep.analysis import SweepSummary

MODEL = "fraud-rf"
# A weak forest and a strong one, as fixed search spaces, to get a known worse and a known better sweep.
WEAK = ["sweep.num_samples=1", "search_space.n_estimators=3", "search_space.max_depth=1",
        "search_space.min_samples_leaf=1", "search_space.max_features=sqrt"]
STRONG = ["sweep.num_samples=1", "search_space.n_estimators=60", "search_space.max_depth=none",
          "search_space.min_samples_leaf=4", "search_space.max_features=sqrt"]


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
