"""The sweep grammar -> ray.tune domain translation, as a table."""

import pytest
from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Uniform

from raysweep.errors import RaySweepError
from raysweep.search_space import Dimension, parse, parse_dimension, quote_cli_overrides, to_param_space


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("choice(4, 8, 16)", Dimension("choice", (4, 8, 16))),
        ("choice(sqrt, 0.5)", Dimension("choice", ("sqrt", 0.5))),
        ("choice(6, none)", Dimension("choice", (6, None))),
        ("choice(6, None, NONE)", Dimension("choice", (6, None, None))),
        ("choice(true, false)", Dimension("choice", (True, False))),
        ("range(50, 201, 50)", Dimension("choice", (50, 100, 150, 200))),
        ("range(1, 4)", Dimension("choice", (1, 2, 3))),
        ("range(10, 1, -4)", Dimension("choice", (10, 6, 2))),
        ("range(0.1, 0.4, 0.1)", Dimension("choice", (0.1, 0.2, 0.3))),
        ("interval(0.1, 1)", Dimension("uniform", (0.1, 1.0))),
        ("interval(1, 10)", Dimension("uniform", (1.0, 10.0))),
        ("tag(log, interval(1e-3, 1))", Dimension("loguniform", (0.001, 1.0))),
        ("tag(int, interval(1, 10))", Dimension("randint", (1, 11))),
        ("tag(log, int, interval(1, 1000))", Dimension("lograndint", (1, 1001))),
        ("tag(int, log, interval(2, 32))", Dimension("lograndint", (2, 33))),
        ("shuffle(choice(1, 2))", Dimension("choice", (1, 2))),
    ],
)
def test_sweep_expression_to_dimension(expr, expected):
    assert parse_dimension("x", expr) == expected


@pytest.mark.parametrize(
    "dimension, domain_type, sampler_type, bounds",
    [
        (Dimension("uniform", (0.1, 1.0)), Float, Uniform, (0.1, 1.0)),
        (Dimension("loguniform", (0.001, 1.0)), Float, LogUniform, (0.001, 1.0)),
        (Dimension("randint", (1, 11)), Integer, Uniform, (1, 11)),
        (Dimension("lograndint", (1, 1001)), Integer, LogUniform, (1, 1001)),
    ],
)
def test_dimensions_become_the_matching_tune_domains(dimension, domain_type, sampler_type, bounds):
    domain = dimension.to_tune()
    assert isinstance(domain, domain_type) and isinstance(domain.get_sampler(), sampler_type)
    assert (domain.lower, domain.upper) == bounds


def test_choice_becomes_a_tune_categorical():
    domain = Dimension("choice", (6, None)).to_tune()
    assert isinstance(domain, Categorical) and domain.categories == [6, None]


@pytest.mark.parametrize(
    "value, expected",
    [(100, 100), (0.5, 0.5), ("sqrt", "sqrt"), ("none", None), (None, None), (True, True), ([64, 32], [64, 32])],
)
def test_fixed_values_stay_fixed(value, expected):
    assert parse_dimension("x", value) == expected


@pytest.mark.parametrize(
    "expr, fragment",
    [
        ("choice()", "cannot parse"),
        ("choice(4, 8", "cannot parse"),
        ("interval(1)", "cannot parse"),
        ("range(5, 5)", "is empty"),
        ("interval(3, 1)", "is empty"),
        ("tag(log, interval(0, 1))", "lo must be > 0"),
        ("tag(int, interval(1.5, 4))", "whole-number bounds"),
        ("tag(fancy, interval(1, 4))", "unknown tag"),
        ("glob(*)", "not a searchable dimension"),
    ],
)
def test_bad_expressions_name_the_key_and_the_fix(expr, fragment):
    with pytest.raises(RaySweepError) as err:
        parse_dimension("max_depth", expr)
    message = str(err.value)
    assert fragment in message
    assert "search_space.max_depth" in message
    assert "\n" not in message


def test_param_space_samples_inside_the_declared_bounds():
    space = to_param_space(parse({"a": "tag(log, int, interval(1, 32))", "b": "interval(0.1, 0.2)", "c": "gini"}))
    assert space["c"] == "gini"
    for _ in range(200):
        assert 1 <= space["a"].sample() <= 32
        assert 0.1 <= space["b"].sample() <= 0.2


@pytest.mark.parametrize(
    "args, expected",
    [
        (["search_space.max_depth=choice(4,8)"], ["search_space.max_depth='choice(4,8)'"]),
        (["+search_space.gamma=interval(0,1)"], ["+search_space.gamma='interval(0,1)'"]),
        (["search_space.m=choice('a','b')"], ['search_space.m="choice(\'a\',\'b\')"']),
        (["search_space.max_depth=7"], ["search_space.max_depth=7"]),
        (["search_space.max_depth='choice(4,8)'"], ["search_space.max_depth='choice(4,8)'"]),
        (["+sweep=fraud", "data.n_samples=10"], ["+sweep=fraud", "data.n_samples=10"]),
        (["other.key=choice(1,2)"], ["other.key=choice(1,2)"]),
    ],
)
def test_cli_quoting_only_touches_unquoted_search_space_sweeps(args, expected):
    assert quote_cli_overrides(args) == expected
