"""Hyperparameter values checked against the estimator's own parameter rules, before Ray starts.

A value the class for the data's task cannot take (``criterion: gini`` in a sweep whose target turned out to be a
regression one) otherwise fails every trial, one after the other, minutes later. scikit-learn states each
estimator's rules (``_parameter_constraints``) and checks them in ``fit``; the same check is run here on each
fixed value and each ``choice()`` option. Intervals are left to the trials: their bounds may be open.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raysweep.errors import RaySweepError


def refusal(estimator, params: dict[str, Any]) -> str | None:
    """What ``estimator``'s parameter rules say of ``params`` (``None``: they pass, or it states no rules).

    ``BaseEstimator._validate_params`` is scikit-learn's own check that ``fit`` runs first (scikit-learn >= 1.2),
    against the class's ``_parameter_constraints``; an estimator of another library that states none (XGBoost's
    inherit the method, not the rules) is not checked.
    """
    from sklearn.base import clone

    if not hasattr(estimator, "_validate_params") or not hasattr(estimator, "_parameter_constraints"):
        return None
    try:
        clone(estimator).set_params(**params)._validate_params()
    except (ValueError, TypeError) as error:  # InvalidParameterError is both
        return str(error).strip().splitlines()[0]
    return None


def check_values(estimator, fixed_where: str, search_space: Mapping[str, Any], task: str | None) -> None:
    """Refuse the first fixed argument or searched option ``estimator`` (made with the fixed arguments) rejects.

    Args:
        estimator: The estimator a trial makes, with the sweep's fixed arguments.
        fixed_where: Where those fixed arguments are set (``trainer.params``), for the message.
        search_space: The sweep's ``search_space`` mapping (sweep expressions unparsed).
        task: The data's task, named in the message.

    Raises:
        RaySweepError: One line: the setting, the value, the estimator's rule, and the fix.
    """
    from raysweep.search_space import Dimension, parse

    name = type(estimator).__name__
    for_task = f" (the {task} task's class)" if task else ""
    if problem := refusal(estimator, {}):
        raise RaySweepError(f"{fixed_where} does not suit {name}{for_task}: {problem} Change or remove the value")
    for key, value in parse(search_space).items():
        if isinstance(value, Dimension):
            if value.kind != "choice":
                continue
            options = value.args
        else:
            options = (value,)
        for option in options:
            if problem := refusal(estimator, {key: option}):
                raise RaySweepError(f"search_space.{key}={option!r} does not suit {name}{for_task}: {problem} "
                                    f"Change or remove the value")
