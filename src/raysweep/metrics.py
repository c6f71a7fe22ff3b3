"""Validation metrics every trainer reports, computed the same way for every framework."""

from __future__ import annotations

import numpy as np

#: Result key every trainable reports to Tune (not to MLflow): the fraction of its planned iterations done,
#: so a trial that ended below 1.0 without an error was stopped early (scheduler or sweep stop criteria).
PROGRESS = "progress"

#: Names of :func:`validation_metrics`'s results.
VALIDATION_METRICS = ("val_auc", "val_average_precision", "val_f1", "val_log_loss")


def validation_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """ROC AUC, average precision (the informative one under heavy imbalance), best-threshold F1, log loss.

    Args:
        y_true: 0/1 labels.
        proba: Predicted probability of class 1.
    """
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    proba = np.asarray(proba, dtype="float64")
    return {
        "val_auc": float(roc_auc_score(y_true, proba)),
        "val_average_precision": float(average_precision_score(y_true, proba)),
        "val_f1": best_f1(y_true, proba),
        "val_log_loss": float(log_loss(y_true, np.clip(proba, 1e-7, 1 - 1e-7), labels=[0, 1])),
    }


def best_f1(y_true: np.ndarray, proba: np.ndarray) -> float:
    """F1 at the best threshold on this validation set.

    At 1-2 % fraud a model's probabilities rarely pass 0.5, so F1 at 0.5 is mostly 0; this is the F1 a fraud
    team would get at the threshold it would pick.
    """
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y_true, proba)
    denominator = precision + recall
    f1 = 2 * precision * recall / np.where(denominator == 0, 1.0, denominator)
    return float(f1.max())
