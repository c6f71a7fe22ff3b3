"""Translate Hydra's sweep-override grammar into ``ray.tune`` search domains.

Parsing is pure and Ray-free (:func:`parse_dimension` gives a :class:`Dimension`), so a bad expression is
reported before anything heavy is imported; :meth:`Dimension.to_tune` builds the Tune domain at launch.

The grammar is the one Hydra's Optuna sweeper reads, parsed by Hydra's own override parser:

===================================  ===================================================
``choice(a, b, c)``                  ``tune.choice([a, b, c])``
``range(lo, hi[, step])``            ``tune.choice(list(range(lo, hi, step)))`` (hi excluded, like Python)
``interval(lo, hi)``                 ``tune.uniform(lo, hi)``
``tag(log, interval(lo, hi))``       ``tune.loguniform(lo, hi)``
``int(interval(lo, hi))``            ``tune.randint(lo, hi + 1)`` (hi included, like Optuna's IntDistribution)
``tag(int, interval(lo, hi))``       the same
``tag(log, int(interval(lo, hi)))``  ``tune.lograndint(lo, hi + 1)``
``tag(log, int, interval(..))``      the same
anything else                        a fixed value, passed to every trial unchanged
===================================  ===================================================

Ray Tune's own sampling calls written as a value (``loguniform(1e-3, 1)``, ``tune.randint(1, 8)``) are refused
before anything starts, naming their spelling in this grammar: as fixed values, every trial would get the text.

``int(...)``, ``float(...)``, ``str(...)`` and ``bool(...)`` are Hydra's cast functions: its parser applies them
to the sweep (``int(interval(1, 32))`` is an interval with int bounds, which is what makes it an integer one;
``float(range(1, 4))`` a range of floats). The one place hydra-optuna-sweeper reads a form differently is
``range``: it turns ``range(1, 4)`` into Optuna's ``IntDistribution(1, 4)``, which includes 4; raysweep keeps
Hydra's meaning (Python's ``range``: 1, 2, 3).

An option of ``choice`` may be a list, one value for a hyperparameter that takes a sequence
(``hidden_layer_sizes: choice([32], [64, 32])``); trials get it as a tuple.

Hydra rejects ``null`` inside ``choice(...)``, so the bare word ``none`` (any case) stands for Python's
``None``, both inside ``choice``/``range`` and as a fixed value: ``max_depth: choice(8, 16, none)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from raysweep.errors import RaySweepError

_SWEEP_FUNCTIONS = ("choice", "range", "interval", "tag", "shuffle", "sort", "glob")
#: Hydra's cast functions; wrapped around a sweep they cast its values (``int(interval(1, 32))``).
_CAST_FUNCTIONS = ("int", "float", "str", "bool")
_LOOKS_LIKE_SWEEP = re.compile(
    r"^\s*(?:(?:%s)\s*\(\s*)*(?:%s)\s*\(" % ("|".join(_CAST_FUNCTIONS), "|".join(_SWEEP_FUNCTIONS))
)
#: Ray Tune's sampling functions written as a config string (``loguniform(1e-3, 1)``): a user of Tune writes them by
#: habit, and as a fixed value every trial would get the text. Each maps to its spelling here, or to ``None``.
_TUNE_SPELLINGS = {
    "uniform": "interval(lo, hi)",
    "loguniform": "tag(log, interval(lo, hi))",
    "randint": "int(interval(lo, hi - 1)) (Tune's randint leaves hi out, interval keeps it)",
    "lograndint": "tag(log, int(interval(lo, hi - 1))) (Tune's lograndint leaves hi out, interval keeps it)",
    "grid_search": "choice(a, b, ...) with search_alg=grid",
    **dict.fromkeys(("quniform", "qloguniform", "qrandint", "qlograndint", "randn", "qrandn", "sample_from")),
}
_TUNE_CALL = re.compile(r"^\s*(?:tune\.)?(%s)\s*\(" % "|".join(_TUNE_SPELLINGS))
_KNOWN_TAGS = {"log", "int"}
_NONE_WORD = "none"


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: the name of a ``ray.tune`` sampling function and its arguments."""

    kind: str  # choice | uniform | loguniform | randint | lograndint
    args: tuple

    def to_tune(self):
        """The ``ray.tune`` domain, e.g. ``tune.loguniform(0.001, 1.0)``."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.args))
        return getattr(tune, self.kind)(*self.args)


def is_sweep_expression(value: Any) -> bool:
    """True when ``value`` is a string written in the sweep grammar (``choice(...)``, ``range(...)``...)."""
    return isinstance(value, str) and bool(_LOOKS_LIKE_SWEEP.match(value))


def _none_word(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() == _NONE_WORD:
        return None
    return value


def parse_dimension(name: str, value: Any) -> Any:
    """Parse one search-space entry into a :class:`Dimension`, or return it as a fixed value.

    Args:
        name: The hyperparameter's name, used in error messages.
        value: A sweep expression such as ``"tag(log, interval(1e-3, 1))"``, or a fixed value.

    Returns:
        A :class:`Dimension` for sweep expressions; the value itself otherwise (with the word ``none``
        turned into ``None``).

    Raises:
        RaySweepError: The expression is malformed, empty, or uses a form raysweep cannot search.
    """
    if not is_sweep_expression(value):
        refuse_tune_call(name, value)
        return _none_word(value)

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException

    try:
        override = OverridesParser.create().parse_override(f"{name}={value}")
    except HydraException as e:
        reason = str(e).splitlines()[0].strip()
        raise RaySweepError(
            f"search_space.{name}: cannot parse {value!r} ({reason}); "
            "write choice(a,b), range(lo,hi[,step]), interval(lo,hi), int(interval(lo,hi)) or tag(log, interval(lo,hi))"
        ) from None

    sweep = override.value()
    tags = set(getattr(sweep, "tags", set()) or ())
    unknown = tags - _KNOWN_TAGS
    if unknown:
        raise RaySweepError(
            f"search_space.{name}: unknown tag(s) {sorted(unknown)} in {value!r}; use tag(log, ...) or tag(int, ...)"
        )

    if isinstance(sweep, ChoiceSweep):
        options = [_none_word(v) for v in sweep.list]
        if any(isinstance(v, dict) for v in options):
            raise RaySweepError(
                f"search_space.{name}: choice(...) options must be values or lists, got {value!r}; search each "
                "key of a mapping as a hyperparameter of its own"
            )
        # A list is one option (scikit-learn's hidden_layer_sizes: choice([32], [64, 32])), as in
        # tune.choice([[32], [64, 32]]); kept as a tuple, which trials, params and Optuna's choices can hold.
        return Dimension("choice", tuple(tuple(v) if isinstance(v, list) else v for v in options))

    if isinstance(sweep, RangeSweep):
        values = _range_values(sweep.start, sweep.stop, sweep.step)
        if not values:
            raise RaySweepError(
                f"search_space.{name}: {value!r} is empty; range(lo, hi, step) needs lo < hi for a positive step"
            )
        return Dimension("choice", tuple(values))

    if isinstance(sweep, IntervalSweep):
        lo, hi = sweep.start, sweep.end
        if not lo < hi:
            raise RaySweepError(f"search_space.{name}: {value!r} is empty; interval(lo, hi) needs lo < hi")
        if "log" in tags and lo <= 0:
            raise RaySweepError(f"search_space.{name}: {value!r} is log-scaled, so lo must be > 0")
        # Hydra's plain interval always has float bounds; int bounds come from the int(...) cast (the Optuna
        # sweeper's spelling), tag(int, ...) is raysweep's own.
        if "int" in tags or _is_int(lo) and _is_int(hi):
            lo_i, hi_i = int(lo), int(hi)
            if lo_i != lo or hi_i != hi:
                raise RaySweepError(f"search_space.{name}: tag(int, ...) needs whole-number bounds, got {value!r}")
            return Dimension("lograndint" if "log" in tags else "randint", (lo_i, hi_i + 1))
        return Dimension("loguniform" if "log" in tags else "uniform", (float(lo), float(hi)))

    raise RaySweepError(
        f"search_space.{name}: {value!r} is not a searchable dimension; "
        "use choice(...), range(...) or interval(...)"
    )


def refuse_tune_call(name: str, value: Any) -> None:
    """Refuse a Ray Tune sampling call written as a value (``tune.loguniform(1e-3, 1)``), naming its spelling here."""
    call = _TUNE_CALL.match(value) if isinstance(value, str) else None
    if call is None:
        return
    spelling = _TUNE_SPELLINGS[call[1]]
    fix = f"write {spelling}" if spelling else "write choice(a, b, ...) or range(lo, hi, step) instead"
    raise RaySweepError(
        f"search_space.{name}: {value!r} is Ray Tune's {call[1]}(), which a config does not call (every trial would "
        f"get the text); {fix} (docs/search-spaces.md)"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _range_values(start, stop, step) -> list:
    if all(isinstance(v, int) for v in (start, stop, step)):
        return list(range(start, stop, step))
    # Float ranges accumulate error (0.1 + 0.1 + 0.1 = 0.30000000000000004): count the steps, then round.
    count = max(0, math.ceil((stop - start) / step - 1e-9))
    return [round(start + i * step, 12) for i in range(count)]


def parse(search_space: Mapping[str, Any]) -> dict[str, Any]:
    """Parse a whole ``search_space`` mapping: sweep expressions become :class:`Dimension` objects.

    Raises:
        RaySweepError: For the first malformed or empty expression.
    """
    return {name: parse_dimension(name, value) for name, value in search_space.items()}


def grid_size(parsed: Mapping[str, Any]) -> int:
    """Number of combinations a grid search runs: the product of the ``choice``/``range`` sizes.

    Raises:
        RaySweepError: A dimension is sampled from an interval, which has no finite list of values.
    """
    size = 1
    for name, value in parsed.items():
        if not isinstance(value, Dimension):
            continue
        if value.kind != "choice":
            raise RaySweepError(
                f"search_alg=grid cannot enumerate search_space.{name} (an interval); "
                f"list its values with choice(...) or range(...), or use search_alg=random|optuna"
            )
        size *= len(value.args)
    return size


def to_param_space(parsed: Mapping[str, Any], grid: bool = False) -> dict[str, Any]:
    """Turn a parsed search space into a Tune ``param_space`` (dimensions -> ``ray.tune`` domains).

    Args:
        parsed: The output of :func:`parse`.
        grid: Enumerate every ``choice`` with ``tune.grid_search`` instead of sampling it.
    """
    from ray import tune

    def domain(value):
        if not isinstance(value, Dimension):
            return value
        return tune.grid_search(list(value.args)) if grid else value.to_tune()

    return {name: domain(v) for name, v in parsed.items()}


def fixed_values(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """The entries that are not searched (for searchers that receive their own copy of the space)."""
    return {name: v for name, v in parsed.items() if not isinstance(v, Dimension)}


def quote_cli_overrides(args: list[str], prefix: str = "search_space.") -> list[str]:
    """Quote unquoted sweep expressions for search-space keys so Hydra reads them as strings.

    Hydra stops on ``search_space.max_depth=choice(4,8)`` ("requires --multirun"); the quoted form
    ``search_space.max_depth='choice(4,8)'`` reaches the app as a string, which raysweep translates.
    Only keys under ``prefix`` are touched; everything else goes to Hydra unchanged.

    Args:
        args: Command-line arguments as given (``sys.argv[1:]``).
        prefix: Config path whose values are search expressions.

    Returns:
        The arguments with search-space sweep expressions wrapped in quotes.
    """
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        bare_key = key.lstrip("+~")
        if sep and bare_key.startswith(prefix) and is_sweep_expression(value):
            arg = f"{key}={_quoted(value)}"
        elif sep and bare_key == prefix.rstrip(".") and value.lstrip().startswith("{"):
            # search_space={n: choice(1, 2)}: inside a map Hydra reads the expression as a sweep object, which
            # no config value can hold.
            arg = f"{key}={_quote_map_values(value)}"
        out.append(arg)
    return out


def _quoted(expression: str) -> str:
    quote = '"' if "'" in expression else "'"
    return f"{quote}{expression}{quote}"


def _quote_map_values(text: str) -> str:
    """``{a: choice(1,2), b: 3}`` -> ``{a: 'choice(1,2)', b: 3}``: quote the sweep expressions a map's keys take."""
    out, done = [], 0
    for i, char in _outside_quotes(text):
        if char != ":" or i < done:
            continue
        start = i + 1 + len(text[i + 1:]) - len(text[i + 1:].lstrip())
        end = _closing_paren(text, start) if is_sweep_expression(text[start:]) else None
        if end is not None:
            out.append(text[done:start] + _quoted(text[start:end + 1]))
            done = end + 1
    return "".join(out) + text[done:]


def _closing_paren(text: str, start: int) -> int | None:
    """Index of the ``)`` that closes the first ``(`` at or after ``start``, or ``None``."""
    depth = 0
    for i, char in _outside_quotes(text, start):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i
    return None


def _outside_quotes(text: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """``(index, character)`` of ``text`` from ``start``, leaving out quoted text and its quotes."""
    quote = None
    for i in range(start, len(text)):
        char = text[i]
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        else:
            yield i, char
