"""Metrics per task: the names, the direction, and the values on predictions whose scores are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, log_loss, mean_absolute_error, r2_score, roc_auc_score

from raysweep.metrics import (
    TASK_METRICS,
    VALIDATION_METRICS,
    default_mode,
    metric_names,
    score,
    validation_metrics,
)


def test_each_task_has_its_fixed_metric_names():
    assert TASK_METRICS == {
        "binary": ("val_auc", "val_average_precision", "val_f1", "val_log_loss"),
        "multiclass": ("val_accuracy", "val_f1_macro", "val_log_loss"),
        "regression": ("val_rmse", "val_mae", "val_r2"),
    }
    assert VALIDATION_METRICS == TASK_METRICS["binary"]


@pytest.mark.parametrize(
    "task, prefix, names",
    [
        ("binary", "val_", ("val_auc", "val_average_precision", "val_f1", "val_log_loss")),
        ("multiclass", "test_", ("test_accuracy", "test_f1_macro", "test_log_loss")),
        ("regression", "", ("rmse", "mae", "r2")),
    ],
)
def test_metric_names_take_the_split_prefix(task, prefix, names):
    assert metric_names(task, prefix) == names


@pytest.mark.parametrize(
    "metric, mode",
    [("val_auc", "max"), ("val_average_precision", "max"), ("val_f1", "max"), ("val_log_loss", "min"),
     ("val_accuracy", "max"), ("val_f1_macro", "max"), ("test_log_loss", "min"), ("val_rmse", "min"),
     ("val_mae", "min"), ("val_r2", "max"), ("train_loss", "min"), ("score", "max")],
)
def test_default_mode(metric, mode):
    assert default_mode(metric) == mode


_Y2 = np.array([0, 0, 1, 1, 0, 1, 0, 0])
_P2 = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.6, 0.05])
_Y3 = np.array([0, 1, 2, 2, 1, 0])
_P3 = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3], [0.3, 0.5, 0.2], [0.5, 0.25, 0.25]])
_YR = np.array([1.0, 2.0, 3.0, 4.0])
_PR = np.array([1.5, 2.0, 2.0, 5.0])


@pytest.mark.parametrize(
    "task, y, prediction, expected",
    [
        ("binary", _Y2, _P2, {"val_auc": roc_auc_score(_Y2, _P2), "val_log_loss": log_loss(_Y2, _P2)}),
        ("binary", _Y2, np.column_stack([1 - _P2, _P2]), {"val_auc": roc_auc_score(_Y2, _P2)}),
        ("binary", np.array([0, 1, 0, 1]), np.array([0.0, 1.0, 0.0, 1.0]),
         {"val_auc": 1.0, "val_average_precision": 1.0, "val_f1": 1.0}),
        ("multiclass", _Y3, _P3, {"val_accuracy": 5 / 6, "val_log_loss": log_loss(_Y3, _P3),
                                  "val_f1_macro": f1_score(_Y3, _P3.argmax(1), average="macro")}),
        ("regression", _YR, _PR, {"val_rmse": math.sqrt(np.mean((_YR - _PR) ** 2)),
                                  "val_mae": mean_absolute_error(_YR, _PR), "val_r2": r2_score(_YR, _PR)}),
        ("regression", _YR, _PR[:, None], {"val_mae": mean_absolute_error(_YR, _PR)}),
    ],
)
def test_score_matches_the_reference_values(task, y, prediction, expected):
    scores = score(task, y, prediction)
    assert tuple(scores) == metric_names(task)
    assert all(type(v) is float for v in scores.values())
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value, rel=1e-6), name


def test_validation_metrics_is_the_binary_score():
    assert validation_metrics(_Y2, _P2) == score("binary", _Y2, _P2)
    assert tuple(validation_metrics(_Y2, _P2)) == VALIDATION_METRICS


def test_score_prefix_names_the_split():
    assert set(score("regression", _YR, _PR, prefix="test_")) == {"test_rmse", "test_mae", "test_r2"}


@pytest.mark.parametrize(
    "task, y, prediction, undefined",
    [
        ("binary", np.array([0, 0, 0]), np.array([0.1, 0.2, 0.3]), {"val_auc", "val_average_precision", "val_f1"}),
        ("regression", np.array([2.0, 2.0]), np.array([1.0, 3.0]), {"val_r2"}),
        ("multiclass", np.array([], dtype=int), np.zeros((0, 3)), {"val_accuracy", "val_log_loss"}),
    ],
)
def test_a_split_that_cannot_define_a_metric_scores_nan(task, y, prediction, undefined):
    scores = score(task, y, prediction)
    assert {k for k, v in scores.items() if math.isnan(v)} >= undefined
    assert all(math.isfinite(v) for k, v in scores.items() if k not in undefined and len(y))


def test_a_class_the_split_lacks_still_counts_in_macro_f1():
    proba = np.eye(3)[[0, 1, 1]]  # class 2 never appears and is never predicted
    assert score("multiclass", np.array([0, 1, 1]), proba)["val_f1_macro"] == pytest.approx(2 / 3)


def test_confident_mistakes_give_a_large_finite_log_loss():
    value = score("binary", np.array([1, 0]), np.array([0.0, 1.0]))["val_log_loss"]
    assert math.isfinite(value) and value > 10


@pytest.mark.parametrize(
    "task, y, prediction",
    [
        ("binary", _Y2, np.zeros((8, 3))),
        ("multiclass", _Y3, np.zeros(6)),
        ("multiclass", np.array([0, 3]), np.full((2, 3), 1 / 3)),
        ("regression", _YR, np.zeros((4, 2))),
        ("regression", _YR, np.zeros(3)),
        ("ranking", _YR, _PR),
    ],
)
def test_a_prediction_of_the_wrong_shape_or_task_is_a_value_error(task, y, prediction):
    with pytest.raises(ValueError):
        score(task, y, prediction)
