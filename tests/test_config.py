"""Every sweep file composes and validates; the schema and validation reject bad input with one line."""

import pytest
from hydra.errors import ConfigCompositionException

from raysweep.config import available_sweeps
from raysweep.errors import RaySweepError
from raysweep.search_space import Dimension
from raysweep.plan import make_plan
from raysweep.remote import absolute_tracking_uri
from raysweep.tracking.metadata import parent_params


@pytest.mark.parametrize("sweep", available_sweeps())
def test_every_sweep_file_composes_and_plans(make_cfg, sweep):
    cfg = make_cfg(f"+sweep={sweep}")
    plan = make_plan(cfg)
    assert plan.num_samples >= 1
    assert plan.experiment_name and cfg.mlflow.registered_model
    assert any(isinstance(v, Dimension) for v in plan.search_space.values()), "nothing to search"
    assert plan.tracking_uri.startswith("sqlite:////")


def test_fraud_sweep_contract(make_cfg):
    cfg = make_cfg("+sweep=fraud")
    assert (cfg.sweep.metric, cfg.sweep.mode.value) == ("val_auc", "max")
    assert cfg.mlflow.experiment_name == "fraud-detection"
    assert cfg.mlflow.registered_model == "fraud-rf"
    assert cfg.mlflow.mode.value == "driver"
    assert cfg.search_alg.name == "random" and cfg.scheduler.name == "fifo" and cfg.cluster.name == "local"


def test_environment_overrides_config_defaults(make_cfg, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:////tmp/registry.db")
    plan = make_plan(make_cfg("+sweep=fraud"))
    assert plan.tracking_uri == "http://mlflow.example:5000"
    assert plan.experiment_name == "from-env"
    assert plan.registry_uri == "sqlite:////tmp/registry.db"
    # An explicit override still wins over the environment.
    assert make_plan(make_cfg("+sweep=fraud", "mlflow.experiment_name=cli")).experiment_name == "cli"


def test_missing_sweep_is_one_clear_line(make_cfg):
    with pytest.raises(RaySweepError, match=r"no sweep selected; run with \+sweep=NAME \(available: .*fraud"):
        make_plan(make_cfg())


@pytest.mark.parametrize(
    "overrides, error",
    [
        (["+sweep=fraud", "trainer.colour=red"], ConfigCompositionException),
        (["+sweep=fraud", "sweep.num_samples=many"], ConfigCompositionException),
        (["+sweep=fraud", "sweep.mode=maximise"], ConfigCompositionException),
        (["+sweep=nope"], Exception),
    ],
)
def test_schema_rejects_unknown_and_ill_typed_keys(make_cfg, overrides, error):
    with pytest.raises(error):
        make_cfg(*overrides)


def test_keys_added_with_plus_are_checked_against_the_schema(make_cfg):
    with pytest.raises(RaySweepError, match=r"config key trainer.colour: Key 'colour' not in 'TrainerConfig'"):
        make_plan(make_cfg("+sweep=fraud", "+trainer.colour=red"))


def test_user_config_folders_join_through_the_search_path(make_cfg, tmp_path):
    user = tmp_path / "user_conf"
    (user / "trainer").mkdir(parents=True)
    (user / "sweep").mkdir()
    (user / "trainer" / "typo.yaml").write_text("name: sklearn\nfamily: random_forest\nitertions: 3\n")
    (user / "sweep" / "mine.yaml").write_text(
        "# @package _global_\nsweep:\n  name: mine\nmlflow:\n  experiment_name: e\n  registered_model: m\n"
        "search_space:\n  n_estimators: choice(10, 20)\n"
    )
    searchpath = f"hydra.searchpath=[file://{user}]"
    assert make_plan(make_cfg(searchpath, "+sweep=mine")).search_space["n_estimators"] == Dimension("choice", (10, 20))
    with pytest.raises(ConfigCompositionException):
        make_cfg(searchpath, "+sweep=mine", "trainer=typo")


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["sweep.metric=accuracy"], "is not reported by trainer"),
        (["search_space.max_depth='choice()'"], "search_space.max_depth: cannot parse"),
        (["+search_space.learning_rate=0.1"], "is not a parameter of RandomForestClassifier"),
        (["~search_space.n_estimators"], "search_space.n_estimators is missing"),
        (["trainer.family=xgboost"], "trainer.family='xgboost' is not known"),
        (["sweep.num_samples=0"], "at least 1"),
        (["data=csv"], "data.path=FILE"),
        (["data.val_fraction=1.5"], "between 0 and 1"),
    ],
)
def test_invalid_values_fail_in_planning(make_cfg, overrides, fragment):
    with pytest.raises(RaySweepError) as err:
        make_plan(make_cfg("+sweep=fraud", *overrides))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_parent_params_carry_config_but_no_connection_strings(make_cfg, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:secret@mlflow.example:5000")
    params = parent_params(make_cfg("+sweep=fraud"))
    assert params["sweep.metric"] == "val_auc"
    assert params["search_space.max_depth"] == "choice(6, 10, 16, none)"
    assert params["mlflow.registered_model"] == "fraud-rf"
    assert not any("secret" in v for v in params.values())


@pytest.mark.parametrize("overrides, logged, left_out", [
    (["+sweep=fraud"], {"data.n_samples", "data.fraud_rate", "data.seed"}, {"data.path", "data.sep"}),
    (["+sweep=fraud", "data=csv", "data.path=t.csv", "data.target=y"], {"data.path", "data.target", "data.sep"},
     {"data.n_samples", "data.fraud_rate", "data.n_noise_features"}),
    (["+sweep=fraud", "data=none", "trainer=function", "+trainer.function=m:f"], {"data.source"},
     {"data.target", "data.n_samples", "data.path", "data.val_fraction"}),
])
def test_parent_params_carry_only_the_data_keys_its_source_reads(make_cfg, overrides, logged, left_out):
    params = parent_params(make_cfg(*overrides))
    assert logged <= set(params) and not left_out & set(params)


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("sqlite:///mlflow.db", "sqlite:////work/dir/mlflow.db"),
        ("sqlite:///sub/x.db", "sqlite:////work/dir/sub/x.db"),
        ("sqlite:////abs/m.db", "sqlite:////abs/m.db"),
        ("http://host:5000", "http://host:5000"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_relative_sqlite_uris_become_absolute(uri, expected):
    assert absolute_tracking_uri(uri, cwd="/work/dir") == expected
