"""The sweep grammar -> ray.tune domain translation, as a table."""

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Uniform

from raysweep.errors import RaySweepError
from raysweep.search_space import (
    Dimension,
    is_sweep_expression,
    parse,
    parse_dimension,
    quote_cli_overrides,
    to_param_space,
)


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("choice(4, 8, 16)", Dimension("choice", (4, 8, 16))),
        ("choice(sqrt, 0.5)", Dimension("choice", ("sqrt", 0.5))),
        ("choice(6, none)", Dimension("choice", (6, None))),
        ("choice(6, None, NONE)", Dimension("choice", (6, None, None))),
        ("choice(true, false)", Dimension("choice", (True, False))),
        # A list is one option, for a hyperparameter that takes a sequence; trials get a tuple.
        ("choice([32], [64, 32])", Dimension("choice", ((32,), (64, 32)))),
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
        # Hydra's cast functions, applied by its parser to the sweep's values.
        ("int(interval(1, 32))", Dimension("randint", (1, 33))),
        ("tag(log, int(interval(1, 32)))", Dimension("lograndint", (1, 33))),
        ("int(tag(log, interval(1, 32)))", Dimension("lograndint", (1, 33))),
        ("float(interval(1, 3))", Dimension("uniform", (1.0, 3.0))),
        ("float(range(1, 4))", Dimension("choice", (1.0, 2.0, 3.0))),
        ("int(choice(1.5, 2.5))", Dimension("choice", (1, 2))),
        ("str(choice(1, 2))", Dimension("choice", ("1", "2"))),
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


# hydra-optuna-sweeper's documented forms (its docs page and its own test table of
# create_optuna_distribution_from_override): expression -> the Tune domain raysweep builds (Tune's Integer upper
# bound is exclusive) -> the Optuna distribution Ray's OptunaSearch makes of that domain, which must be the one the
# plugin makes of the same expression.
_I, _F, _U, _L = Integer, Float, Uniform, LogUniform
OPTUNA_SWEEPER_EXAMPLES = [
    ("choice(1,2)", [1, 2], CategoricalDistribution([1, 2])),
    ("choice(true, false)", [True, False], CategoricalDistribution([True, False])),
    ("choice('hello', 'world')", ["hello", "world"], CategoricalDistribution(["hello", "world"])),
    ("shuffle(range(1,3))", [1, 2], CategoricalDistribution([1, 2])),
    ("choice(-5,0,5)", [-5, 0, 5], CategoricalDistribution([-5, 0, 5])),
    ("choice(-5.0, 0.0, 5.0)", [-5.0, 0.0, 5.0], CategoricalDistribution([-5.0, 0.0, 5.0])),
    ("choice(0, 1, 2, 3, 4, 5)", [0, 1, 2, 3, 4, 5], CategoricalDistribution([0, 1, 2, 3, 4, 5])),
    ("shuffle(range(-5, 5))", list(range(-5, 5)), CategoricalDistribution(list(range(-5, 5)))),
    ("interval(1, 5)", (_F, _U, 1.0, 5.0), FloatDistribution(1, 5)),
    ("interval(-5.0, 5.0)", (_F, _U, -5.0, 5.0), FloatDistribution(-5.0, 5.0)),
    ("interval(0, 10)", (_F, _U, 0.0, 10.0), FloatDistribution(0, 10)),
    ("int(interval(1, 5))", (_I, _U, 1, 6), IntDistribution(1, 5)),
    ("int(interval(-5.0, 5.0))", (_I, _U, -5, 6), IntDistribution(-5, 5)),
    ("int(interval(1, 32))", (_I, _U, 1, 33), IntDistribution(1, 32)),
    ("tag(log, interval(1, 5))", (_F, _L, 1.0, 5.0), FloatDistribution(1, 5, log=True)),
    ("tag(log, interval(1, 10))", (_F, _L, 1.0, 10.0), FloatDistribution(1, 10, log=True)),
    ("tag(log, int(interval(1, 5)))", (_I, _L, 1, 6), IntDistribution(1, 5, log=True)),
    ("tag(log, int(interval(1, 32)))", (_I, _L, 1, 33), IntDistribution(1, 32, log=True)),
]


def _describe(domain):
    if isinstance(domain, Categorical):
        return sorted(domain.categories)  # shuffle() may reorder a range's values
    sampler = LogUniform if isinstance(domain.get_sampler(), LogUniform) else Uniform
    return type(domain), sampler, domain.lower, domain.upper


@pytest.mark.parametrize("expr, tune_domain, plugin_distribution", OPTUNA_SWEEPER_EXAMPLES)
def test_the_optuna_sweepers_forms_search_what_the_plugin_searches(expr, tune_domain, plugin_distribution):
    domain = to_param_space(parse({"x": expr}))["x"]
    assert _describe(domain) == (sorted(tune_domain) if isinstance(tune_domain, list) else tune_domain)
    converted = OptunaSearch.convert_search_space({"x": domain})["x"]
    if isinstance(plugin_distribution, CategoricalDistribution):
        assert sorted(converted.choices) == sorted(plugin_distribution.choices)
    else:
        assert converted == plugin_distribution


# The plugin turns an unshuffled range into Optuna's IntDistribution/FloatDistribution(start, stop, step), whose
# upper end is included; Hydra (and raysweep) read range like Python's: stop is excluded.
@pytest.mark.parametrize(
    "expr, raysweep_values, plugin_distribution",
    [
        ("range(1,3)", (1, 2), IntDistribution(1, 3)),
        ("range(1,4)", (1, 2, 3), IntDistribution(1, 4)),
        ("range(0.5, 5.5, step=1)", (0.5, 1.5, 2.5, 3.5, 4.5), FloatDistribution(0.5, 5.5, step=1)),
        ("range(-5.0, 5.0)", tuple(float(v) for v in range(-5, 5)), FloatDistribution(-5.0, 5.0, step=1)),
        ("range(0, 5, step=0.5)", tuple(v / 2 for v in range(10)), FloatDistribution(0, 5, step=0.5)),
        ("range(-5.5, 5.5, 0.5)", tuple(v / 2 for v in range(-11, 11)), FloatDistribution(-5.5, 5.5, step=0.5)),
    ],
)
def test_range_keeps_hydras_meaning_where_the_plugin_includes_the_stop(expr, raysweep_values, plugin_distribution):
    assert parse_dimension("x", expr) == Dimension("choice", raysweep_values)
    step = plugin_distribution.step
    assert raysweep_values[0] == plugin_distribution.low
    assert raysweep_values[-1] == plugin_distribution.high - step  # the plugin's one extra value


@pytest.mark.parametrize(
    "value, is_sweep",
    [
        ("int(interval(1, 32))", True),
        ("tag(log, int(interval(1, 32)))", True),
        (" float( range(1, 4))", True),
        ("str(choice(1, 2))", True),
        ("int(5)", False),  # a cast of a plain value: not a sweep, passed on as written
        ("interval", False),
        ("sqrt", False),
        (7, False),
    ],
)
def test_casts_around_a_sweep_are_sweep_expressions(value, is_sweep):
    assert is_sweep_expression(value) is is_sweep


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
        ("int(interval(3, 3.5))", "is empty"),  # Hydra's int() cast truncates 3.5 to 3
        ("tag(log, int(interval(0, 32)))", "lo must be > 0"),
        ("str(interval(1, 32))", "cannot parse"),
        ("choice({a: 1}, 2)", "options must be values or lists"),
    ],
)
def test_bad_expressions_name_the_key_and_the_fix(expr, fragment):
    with pytest.raises(RaySweepError) as err:
        parse_dimension("max_depth", expr)
    message = str(err.value)
    assert fragment in message
    assert "search_space.max_depth" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "value, fix",
    [
        ("loguniform(0.01, 0.3)", "write tag(log, interval(lo, hi))"),
        ("tune.uniform(0, 1)", "write interval(lo, hi)"),
        (" randint(1, 8)", "write int(interval(lo, hi - 1))"),
        ("lograndint(1, 64)", "write tag(log, int(interval(lo, hi - 1)))"),
        ("grid_search([1, 2])", "with search_alg=grid"),
        ("quniform(0, 1, 0.1)", "range(lo, hi, step)"),
        ("randn(0, 1)", "choice(a, b, ...)"),
    ],
)
def test_ray_tunes_own_calls_are_refused_with_their_spelling_here(value, fix):
    """A Tune user's habit: as a fixed value, every trial would get the text (and fail in the estimator)."""
    with pytest.raises(RaySweepError) as err:
        parse_dimension("learning_rate", value)
    message = str(err.value)
    assert message.startswith("search_space.learning_rate: ")
    assert "Ray Tune's" in message and fix in message
    assert "\n" not in message


@pytest.mark.parametrize("value", ["uniform", "log_loss", "randint_like", "my.uniform(1)", "sample_from_data"])
def test_words_that_only_contain_a_tune_name_stay_fixed(value):
    assert parse_dimension("x", value) == value


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
        (["search_space.depth=int(interval(1,32))"], ["search_space.depth='int(interval(1,32))'"]),
        (["+search_space.gamma=interval(0,1)"], ["+search_space.gamma='interval(0,1)'"]),
        (["search_space.m=choice('a','b')"], ['search_space.m="choice(\'a\',\'b\')"']),
        (["search_space.max_depth=7"], ["search_space.max_depth=7"]),
        (["search_space.max_depth='choice(4,8)'"], ["search_space.max_depth='choice(4,8)'"]),
        (["+sweep=fraud", "data.n_samples=10"], ["+sweep=fraud", "data.n_samples=10"]),
        (["other.key=choice(1,2)"], ["other.key=choice(1,2)"]),
        # A map given whole: its sweep expressions, which Hydra would read as sweeps, not values.
        (["search_space={n_estimators: choice(10, 20)}"], ["search_space={n_estimators: 'choice(10, 20)'}"]),
        (["search_space={a: int(interval(1, 32)), b: 3, c: choice('x','y')}"],
         ["search_space={a: 'int(interval(1, 32))', b: 3, c: \"choice('x','y')\"}"]),
        (["search_space={a: 'choice(1,2)', b: x}"], ["search_space={a: 'choice(1,2)', b: x}"]),
        (["search_space={a: choice(1,2"], ["search_space={a: choice(1,2"]),  # unbalanced: Hydra says so
        (["other={a: choice(1,2)}"], ["other={a: choice(1,2)}"]),
    ],
)
def test_cli_quoting_only_touches_unquoted_search_space_sweeps(args, expected):
    assert quote_cli_overrides(args) == expected
