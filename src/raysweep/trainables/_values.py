"""Arguments and hyperparameter values checked against the estimator's own rules, before Ray starts.

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


def check_arguments(target: str, names, where: str, fixed: dict[str, Any] | None = None) -> None:
    """Raise one line for the first of ``names`` that ``target``'s constructor does not take, or for a
    classifier that cannot give probabilities with the ``fixed`` arguments."""
    from sklearn.base import is_classifier

    from raysweep.trainables._estimators import bare, make

    known = set(bare(target, fixed or {}).get_params())
    for name in names:
        if name not in known:
            raise RaySweepError(f"{name!r} is not a parameter of {target.rsplit('.', 1)[-1]}; remove it from {where} "
                                "or pick another estimator")
    estimator = make(target, fixed or {})
    if is_classifier(estimator) and not hasattr(estimator, "predict_proba"):
        raise RaySweepError(f"{target} gives no class probabilities (predict_proba) with these arguments; "
                            + _probability_fix(target, fixed or {}, known))


#: Arguments that turn class probabilities on where a class has them (SVC's, SGDClassifier's losses).
_PROBABILITY_SWITCHES = (("probability", True), ("loss", "log_loss"), ("loss", "modified_huber"))


def _probability_fix(target: str, fixed: dict[str, Any], known: set[str]) -> str:
    from raysweep.trainables._estimators import make

    for name, value in _PROBABILITY_SWITCHES:
        if name in known and hasattr(make(target, {**fixed, name: value}), "predict_proba"):
            shown = str(value).lower() if isinstance(value, bool) else value
            return f"set trainer.params.{name}={shown} (and leave {name} out of search_space)"
    return "pick a classifier that gives them (LogisticRegression, a forest, or your class in " \
           "sklearn.calibration.CalibratedClassifierCV)"
