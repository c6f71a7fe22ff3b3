"""The metrics every trainer reports, per task, computed the same way for every framework.

A task (``binary``, ``multiclass``, ``regression``; see :mod:`raysweep.data` for how ``data.task=auto`` picks one)
has a fixed set of metric names, :data:`TASK_METRICS`; :func:`score` computes them from a model's prediction
on one split. The names carry the split as a prefix (``val_`` while a sweep ranks trials, ``test_`` on the split
no trial sees), so :func:`metric_names` and :func:`score` take the prefix.

Metrics a split cannot define (ROC AUC when the split holds one class, R² of a constant target) are ``nan``
rather than an error: a trial on a tiny or unlucky split still reports, and ranking treats ``nan`` as worst.
"""

from __future__ import annotations

import math

import numpy as np

#: Result key every trainable reports to Tune (not to MLflow): the fraction of its planned iterations done,
#: so a trial that ended below 1.0 without an error was stopped early (scheduler or sweep stop criteria).
PROGRESS = "progress"

#: Task -> the metric names (without the split prefix) its trials report, in the order they are listed.
_BASE_NAMES = {
    "binary": ("auc", "average_precision", "f1", "log_loss"),
    "multiclass": ("accuracy", "f1_macro", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}

#: Task -> the validation metric names its trials report.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    task: tuple(f"val_{n}" for n in names) for task, names in _BASE_NAMES.items()
}

#: The binary task's validation metrics (:func:`validation_metrics`'s keys); kept for existing callers.
VALIDATION_METRICS = TASK_METRICS["binary"]

#: Metric name endings where lower is better; every other metric is maximised (see :func:`default_mode`).
_LOWER_IS_BETTER = ("loss", "rmse", "mae", "mse", "error")

# Probabilities are clipped away from 0 and 1 so one confident mistake gives a large, finite log loss.
_EPS = 1e-7


def metric_names(task: str, prefix: str = "val_") -> tuple[str, ...]:
    """The metric names a model of ``task`` is scored on, for one split.

    Args:
        task: ``binary``, ``multiclass`` or ``regression``.
        prefix: The split's prefix: ``val_`` (what trials report), ``test_``, or ``""``.

    Raises:
        ValueError: An unknown task.
    """
    return tuple(f"{prefix}{n}" for n in _base_names(task))


def default_mode(metric: str) -> str:
    """``"min"`` for a metric where lower is better (log loss, RMSE, MAE, any ``*loss``), else ``"max"``."""
    return "min" if metric.lower().endswith(_LOWER_IS_BETTER) else "max"


def score(task: str, y_true, prediction, prefix: str = "val_") -> dict[str, float]:
    """Score a model's prediction on one split.

    Args:
        task: ``binary``, ``multiclass`` or ``regression``.
        y_true: Classification: class codes ``0..k-1`` (:attr:`raysweep.data.Dataset.classes` order);
            regression: the target values.
        prediction: Classification: an ``(n, k)`` matrix of class probabilities (binary also takes ``(n,)``,
            the probability of class 1); regression: ``(n,)`` predicted values.
        prefix: Put before every name (``val_``, ``test_``, ``""``).

    Returns:
        ``{name: value}`` for :func:`metric_names`\\ ``(task, prefix)``, as plain floats (``nan`` where the split
        cannot define a metric).

    Raises:
        ValueError: An unknown task, or a prediction whose shape does not fit it.
    """
    _base_names(task)
    y_true = np.asarray(y_true)
    prediction = np.asarray(prediction, dtype="float64")
    if len(prediction) != len(y_true):
        raise ValueError(f"prediction has {len(prediction)} rows but y_true has {len(y_true)}")
    if not len(y_true):  # an empty split (a dataset without a test split) defines nothing
        return {name: math.nan for name in metric_names(task, prefix)}
    if task == "binary":
        values = _binary(y_true.astype(int), _positive_probability(prediction))
    elif task == "multiclass":
        values = _multiclass(y_true.astype(int), prediction)
    else:
        column = prediction.ndim == 2 and prediction.shape[1] == 1  # an (n, 1) column of values is fine too
        values = _regression(y_true.astype("float64"), prediction[:, 0] if column else prediction)
    return {f"{prefix}{name}": float(value) for name, value in values.items()}


def validation_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """The binary task's validation metrics (:data:`VALIDATION_METRICS`): ``score("binary", y_true, proba)``.

    Args:
        y_true: 0/1 labels.
        proba: Predicted probability of class 1 (or the ``(n, 2)`` probability matrix).
    """
    return score("binary", y_true, proba)


def best_f1(y_true: np.ndarray, proba: np.ndarray) -> float:
    """F1 at the best threshold on this split.

    At 1-2 % fraud a model's probabilities rarely pass 0.5, so F1 at 0.5 is mostly 0; this is the F1 a fraud
    team would get at the threshold it would pick.
    """
    from sklearn.metrics import precision_recall_curve

    if not np.any(np.asarray(y_true) == 1):
        return math.nan
    precision, recall, _ = precision_recall_curve(y_true, proba)
    denominator = precision + recall
    f1 = 2 * precision * recall / np.where(denominator == 0, 1.0, denominator)
    return float(f1.max())


def _base_names(task: str) -> tuple[str, ...]:
    try:
        return _BASE_NAMES[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(_BASE_NAMES)}") from None


def _positive_probability(prediction: np.ndarray) -> np.ndarray:
    if prediction.ndim == 1:
        return prediction
    if prediction.ndim == 2 and prediction.shape[1] in (1, 2):
        return prediction[:, -1]
    raise ValueError(f"a binary prediction is (n,) or (n, 2) probabilities, not shape {prediction.shape}")


def _binary(y: np.ndarray, p1: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    # Both need positives and negatives in the split; a split without them scores nan, not an exception.
    both = len(np.unique(y)) == 2
    return {
        "auc": roc_auc_score(y, p1) if both else math.nan,
        "average_precision": average_precision_score(y, p1) if both else math.nan,
        "f1": best_f1(y, p1),
        "log_loss": _log_loss(y, np.column_stack([1.0 - p1, p1])),
    }


def _multiclass(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import f1_score

    if proba.ndim != 2:
        raise ValueError(f"a multiclass prediction is an (n, k) probability matrix, not shape {proba.shape}")
    predicted = proba.argmax(axis=1)
    k = proba.shape[1]
    return {
        "accuracy": float(np.mean(predicted == y)),
        # Every class counts in the macro average, also one this split happens to lack in y_true or predictions.
        "f1_macro": f1_score(y, predicted, labels=np.arange(k), average="macro", zero_division=0.0),
        "log_loss": _log_loss(y, proba),
    }


def _regression(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    if predicted.ndim != 1:
        raise ValueError(f"a regression prediction is (n,) values, not shape {predicted.shape}")
    error = y - predicted
    total = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": math.sqrt(float(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": 1.0 - float(np.sum(error**2)) / total if total > 0 else math.nan,
    }


def _log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    # Written out rather than sklearn's log_loss, whose checks on rows summing to 1 change between releases.
    if y.max() >= proba.shape[1] or y.min() < 0:
        raise ValueError(f"class codes must be 0..{proba.shape[1] - 1} for {proba.shape[1]} probability columns")
    clipped = np.clip(proba, _EPS, 1.0 - _EPS)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(clipped[np.arange(len(y)), y])))
