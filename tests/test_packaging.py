"""The promotion path's pure rules as tables, and the registry subcommands' dispatch and errors (no Ray)."""

from __future__ import annotations

import importlib
import math
import sys

import pytest
import yaml
from mlflow import MlflowClient

from raysweep import ensemble, promotion, ranking, registry
from raysweep.__main__ import SUBCOMMANDS, main
from raysweep.errors import RaySweepError
from raysweep.reproduce import parse_param, registered_step


@pytest.mark.parametrize(
    "challenger, champion, mode, margin, better",
    [
        (0.91, 0.90, "max", 0.0, True),
        (0.90, 0.90, "max", 0.0, False),  # equal is not better
        (0.89, 0.90, "max", 0.0, False),
        (0.9375, 0.9, "max", 0.03125, True),  # gain 0.0375 > margin
        (0.96875, 0.9375, "max", 0.03125, False),  # gain == margin: not better by the margin
        (0.95, 0.90, "max", 0.1, False),
        (0.20, 0.25, "min", 0.0, True),
        (0.25, 0.25, "min", 0.0, False),
        (0.30, 0.25, "min", 0.0, False),
        (0.20, 0.25, "min", 0.1, False),
        (math.nan, 0.5, "max", 0.0, False),
        (0.5, math.nan, "min", 0.0, False),
    ],
)
def test_is_better(challenger, champion, mode, margin, better):
    assert ranking.is_better(challenger, champion, mode, margin) is better


@pytest.mark.parametrize("mode, margin", [("max", -0.1), ("maximise", 0.0)])
def test_is_better_rejects_bad_rules(mode, margin):
    with pytest.raises(ValueError):
        ranking.is_better(0.9, 0.8, mode, margin)


@pytest.mark.parametrize("trial_id, order", [
    ("34f55_00002", 2), ("34f55_00010", 10), ("abc_def_00001", 1), ("custom", sys.maxsize), ("x_", sys.maxsize),
])
def test_trial_order_is_tunes_counter_and_ids_without_one_go_last(trial_id, order):
    assert ranking.trial_order(trial_id) == order


@pytest.mark.parametrize(
    "better, force, status",
    [(True, False, "passed"), (True, True, "passed"), (False, True, "forced"), (False, False, "failed")],
)
def test_gate_status(better, force, status):
    assert promotion.status(better, force) == status


@pytest.mark.parametrize("history, value, step", [
    ({1: 0.80, 2: 0.82, 3: 0.81}, "0.82", 2),  # the best kept checkpoint, before a worse last iteration
    ({1: 0.80, 2: 0.82, 3: 0.81}, "0.81", 3),  # a model that was the last one
    ({1: 0.82, 2: 0.80, 3: 0.82}, "0.82", 3),  # equal values: the later one
    ({1: 0.80, 2: 0.82}, None, 2),  # a version recorded without its value: the last iteration
    ({1: 0.80, 2: 0.82}, "0.5", 2),  # a value no iteration reported: the last iteration
    ({}, "0.5", 0),
])
def test_reproduce_retrains_to_the_iteration_whose_model_was_registered(history, value, step):
    assert registered_step(history, value) == step


@pytest.mark.parametrize(
    "text, value",
    [("7", 7), ("0.5", 0.5), ("1e-05", 1e-05), ("0.1234567890123", 0.1234567890123), ("None", None),
     ("True", True), ("False", False), ("sqrt", "sqrt"), ("gini", "gini"), ("-3", -3), ("(64, 32)", (64, 32)),
     ("(32,)", (32,)), ("[8, 8]", (8, 8)), ("(unbalanced", "(unbalanced")],
)
def test_parse_param_gives_back_the_trial_value(text, value):
    parsed = parse_param(text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    "uri, parsed",
    [("models:/fraud-rf@champion", ("fraud-rf", "champion", None)),
     ("models:/fraud-rf/3", ("fraud-rf", None, "3")),
     ("models:/fraud-rf-staging@candidate", ("fraud-rf-staging", "candidate", None))],
)
def test_parse_model_uri(uri, parsed):
    assert registry.parse_model_uri(uri) == parsed


@pytest.mark.parametrize("uri", ["runs:/abc/model", "models:/m-123", "models:/fraud-rf/x", "models:/@champion",
                                 "fraud-rf@champion"])
def test_parse_model_uri_refuses_what_names_no_version(uri):
    with pytest.raises(RaySweepError, match="models:/NAME@ALIAS"):
        registry.parse_model_uri(uri)


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_resolves_to_a_function(name):
    module, _, function = SUBCOMMANDS[name].partition(":")
    assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["promote", "nope"], "no registered model 'nope'"),
        (["rollback", "nope"], "no registered model 'nope'"),
        (["reproduce", "runs:/abc/model"], "names no registered model version"),
        (["copy", "models:/nope@champion", "prod"], "models:/nope@champion does not exist"),
        (["promote", "nope", "--data", "missing.yaml"], "data file"),
        (["analyse", "--experiment", "nope"], "no MLflow experiment 'nope'"),
        (["analyse"], "the MLflow store holds no sweep"),
        (["analyse", "--parent-run-id", "nope"], "no MLflow run 'nope'"),
        (["ensemble", "nope"], "no ensemble config 'nope'"),
        (["ensemble", "fraud-ensemble", "--member", "rf"], "--member takes KEY=models:/NAME@ALIAS"),
    ],
)
def test_subcommand_errors_are_one_line_exit_2(args, fragment, tracking_uri, capsys, monkeypatch):
    MlflowClient(tracking_uri).search_experiments()  # an existing, empty store
    _one_line_exit_2(args, fragment, capsys, monkeypatch)


def test_ensemble_config_names_the_model_and_its_members():
    spec = ensemble.load_spec("fraud")
    assert spec.registered_model == "fraud-ensemble"
    assert list(spec.members) == ["random_forest", "xgboost"]  # the first member's sweep gives the data
    assert all(registry.parse_model_uri(uri)[1] == "champion" for uri in spec.members.values())
    # `raysweep ensemble fraud-ensemble` (the model a config builds) finds the same config.
    assert ensemble.load_spec("fraud-ensemble") == spec


def test_a_malformed_ensemble_config_is_one_line(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("registered_model: mine\nmembrs:\n  rf: models:/fraud-rf@champion\n")
    with pytest.raises(RaySweepError, match=r"needs registered_model: NAME and members.*unknown keys: membrs"):
        ensemble.load_spec(str(path))


def test_a_missing_store_is_refused_not_created(tmp_path, tracking_uri, capsys, monkeypatch):
    _one_line_exit_2(["promote", "fraud-rf"], "no MLflow store at", capsys, monkeypatch)
    assert not list(tmp_path.glob("*.db"))


def _one_line_exit_2(args, fragment, capsys, monkeypatch):
    # In process, through the real entry point and dispatch table (a subprocess costs seconds of imports).
    monkeypatch.setattr(sys, "argv", ["raysweep", *args])
    capsys.readouterr()  # only what the command writes
    with pytest.raises(SystemExit) as exit_:
        main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("raysweep: ") and fragment in lines[0], lines


@pytest.mark.parametrize("second, warned", [
    ({"drop": ["signup"]}, None),  # other columns, the same rows and splits: its scores are held out
    ({"split": "time", "time_column": "signup"}, "(data.split, data.time_column)"),
    ({"seed": 1}, "(data.seed)"),
])
def test_an_ensemble_of_members_swept_on_other_splits_is_named_in_a_warning(tracking_uri, caplog, second, warned):
    from types import SimpleNamespace

    from raysweep.tracking.tags import VERSION_PARENT_TAG

    client = MlflowClient()
    experiment = client.create_experiment("members")
    data = {"source": "file", "path": "/d/customers.csv", "target": "segment", "drop": [], "split": "random",
            "time_column": None, "seed": 0}
    versions = {}
    for key, changed in (("a", {}), ("b", second)):
        run = client.create_run(experiment).info.run_id
        client.log_text(run, yaml.safe_dump({"data": {**data, **changed}}), "config.yaml")
        versions[key] = SimpleNamespace(tags={VERSION_PARENT_TAG: run})
    with caplog.at_level("WARNING", logger="raysweep.ensemble"):
        ensemble._warn_if_split_apart(client, versions)
    if warned is None:
        assert "was swept on other rows" not in caplog.text
    else:
        assert f"member 'b' was swept on other rows or splits than 'a' {warned}" in caplog.text
