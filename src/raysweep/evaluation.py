"""Score registered or logged models on a split of a sweep's data, with the metrics of the data's task.

The registry records a new version's test metric with it, the promotion gate compares ``@challenger`` and
``@champion`` with it on the test split (rows no trial saw), the ensemble scores itself with it, and the
notebooks compare versions with it. Metric names carry the split (``test_auc``, ``val_rmse``): :func:`on_split`
turns a sweep's metric into its name on another split.
"""

from __future__ import annotations

import logging
from typing import Any

from raysweep.tracking.tags import SCORE_TAG_PREFIX, TEST_METRIC_TAG, TEST_VALUE_TAG

log = logging.getLogger(__name__)

#: The split a gate and a registration score on: no trial saw it, nothing was ranked on it.
TEST = "test"
#: The split the best trial's classifier plots show: the one trials were ranked on.
VALIDATION = "val"
#: Artifact folder of the best trial's run holding its classifier plots.
PLOTS_DIR = "validation"
#: The classifier plots, by artifact file name.
CONFUSION_MATRIX, ROC_CURVE, PR_CURVE = "confusion_matrix.png", "roc_curve.png", "precision_recall_curve.png"


def prefix(split: str) -> str:
    """The metric-name prefix of a split: ``val_`` for ``val``/``validation``, else ``SPLIT_``."""
    return "val_" if split in ("val", "validation") else f"{split}_"


def on_split(metric: str, split: str) -> str | None:
    """A validation metric's name on another split (``val_auc`` -> ``test_auc``); ``None`` for a metric that is
    not a validation metric (a user's own ``accuracy``), which raysweep cannot recompute."""
    return prefix(split) + metric.removeprefix("val_") if metric.startswith("val_") else None


def score(model, dataset, split: str = TEST) -> dict[str, float]:
    """Score a loaded model (anything with ``predict(frame)``) on one split of ``dataset``.

    Args:
        model: A pyfunc model, or a model object raysweep is about to log.
        dataset: The :class:`raysweep.data.Dataset`; its ``task`` and ``classes`` say how to read the answer.
        split: ``test``, ``val`` or ``train``.

    Returns:
        ``{name: value}`` of the task's metrics, named for the split (``test_auc``, ...).

    Raises:
        RaySweepError: The model's answer does not fit the task (e.g. a regressor scored on classes).
    """
    from raysweep import metrics, predictions
    from raysweep.errors import RaySweepError
    from raysweep.tabular import servable

    X, y = dataset.xy(split)
    answer = model.predict(servable(X))
    try:
        prediction = predictions.from_frame(dataset.task, dataset.classes, answer)
    except ValueError as error:
        raise RaySweepError(f"the model's answer does not fit the data's {dataset.task} task ({error}); score it on "
                            "data of the task it was trained for") from None
    return metrics.score(dataset.task, y, prediction, prefix=prefix(split))


def evaluate(model_uri: str, dataset, split: str = TEST) -> dict[str, float]:
    """Load a model through pyfunc and :func:`score` it on one split of ``dataset``.

    Args:
        model_uri: Any model URI MLflow loads (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``models:/m-...``).
        dataset: The :class:`raysweep.data.Dataset`.
        split: ``test`` (default), ``val`` or ``train``.
    """
    import mlflow.pyfunc

    return score(mlflow.pyfunc.load_model(model_uri), dataset, split)


def loaded(model_uri: str):
    """The pyfunc model at ``model_uri``, loaded once for :func:`test_tags` and :func:`log_classifier_plots` (a
    load reads and checks the whole model: a second of a large forest); the URI itself where it does not load, so
    that each of them says why in its own warning."""
    import mlflow.pyfunc

    try:
        return mlflow.pyfunc.load_model(model_uri)
    except Exception:  # noqa: BLE001 - told by the callers, which load it again
        return model_uri


def _pyfunc(model):
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(model) if isinstance(model, str) else model


def compare(client, name: str, dataset, aliases=("champion", "challenger"), split: str = TEST) -> Any:
    """A table of the task's metrics of the versions behind ``aliases``, all scored on the same split.

    Args:
        client: Client bound to the registry.
        name: Registered model name.
        dataset: The :class:`raysweep.data.Dataset` to score on.
        aliases: The aliases to compare.
        split: ``test`` (default), ``val`` or ``train``.

    Returns:
        A ``pandas.DataFrame`` indexed by alias, with the version and one column per metric.
    """
    import pandas as pd

    rows = []
    for alias in aliases:
        version = client.get_model_version_by_alias(name, alias)
        rows.append({"alias": alias, "version": int(version.version),
                     **evaluate(f"models:/{name}@{alias}", dataset, split)})
    return pd.DataFrame(rows).set_index("alias")


def test_tags(model, dataset, metric: str) -> dict[str, str]:
    """The version tags recording a model's score on the test split: :data:`~raysweep.tracking.tags.TEST_METRIC_TAG`
    (the sweep's metric on the test split, e.g. ``test_auc``), :data:`~raysweep.tracking.tags.TEST_VALUE_TAG`,
    and every test metric as ``raysweep.score.NAME``.

    Nothing when there is no data or no test row, or when the model cannot be scored (an answer raysweep does
    not read): the version is registered all the same, with a warning in the log.

    Args:
        model: The model to score: a URI, or the model :func:`loaded` from one.
        dataset: The sweep's :class:`raysweep.data.Dataset`, or ``None``.
        metric: The sweep's metric (``val_auc``).
    """
    if dataset is None or not len(dataset.xy(TEST)[1]):
        return {}
    try:
        scores = score(_pyfunc(model), dataset, TEST)
    except Exception as error:  # noqa: BLE001 - any model may fail on the data; its registration must not
        log.warning("%s not scored on the test split, so no test metric is recorded: %s: %s", _where(model),
                    type(error).__name__, error)
        return {}
    tags = {SCORE_TAG_PREFIX + key: repr(value) for key, value in scores.items()}
    name = on_split(metric, TEST)
    if name in scores:
        tags.update({TEST_METRIC_TAG: name, TEST_VALUE_TAG: repr(scores[name])})
    return tags


def _where(model) -> str:
    return model if isinstance(model, str) else f"model {getattr(model.metadata, 'model_id', None) or ''}".strip()


def classifier_figures(classes, y_true, proba, split: str = "validation") -> dict:
    """A classifier's confusion matrix, ROC curve and precision-recall curve on one split.

    Binary: the curves of the second (positive) class, labels at 0.5. Multiclass: one one-vs-rest curve per class
    that the split holds, labels the most probable class.

    Args:
        classes: The user's labels in class-code order (:attr:`raysweep.data.Dataset.classes`).
        y_true: Class codes ``0..k-1``.
        proba: ``(n, k)`` class probabilities.
        split: The split's name, for the titles.

    Returns:
        ``{file name: matplotlib Figure}`` (:data:`CONFUSION_MATRIX`, :data:`ROC_CURVE`, :data:`PR_CURVE`).
    """
    import numpy as np
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    from raysweep.predictions import DEFAULT_THRESHOLD

    y_true, proba = np.asarray(y_true, dtype="int64"), np.asarray(proba, dtype="float64")
    names = [str(c) for c in classes]
    binary = len(names) == 2
    picked = (proba[:, 1] >= DEFAULT_THRESHOLD).astype("int64") if binary else proba.argmax(axis=1)
    figures = {name: Figure(figsize=(6, 5), layout="constrained") for name in (CONFUSION_MATRIX, ROC_CURVE, PR_CURVE)}
    ConfusionMatrixDisplay.from_predictions(y_true, picked, labels=list(range(len(names))), display_labels=names,
                                            ax=figures[CONFUSION_MATRIX].subplots(), colorbar=False)
    # Binary: the positive class only; multiclass: each class against the rest, where the split has it.
    curves = [1] if binary else [k for k in range(len(names)) if np.any(y_true == k)]
    for name, display, axes in ((ROC_CURVE, RocCurveDisplay, ("False positive rate", "True positive rate")),
                                (PR_CURVE, PrecisionRecallDisplay, ("Recall", "Precision"))):
        ax = figures[name].subplots()
        for k in curves:
            display.from_predictions((y_true == k).astype("int64"), proba[:, k], pos_label=1, name=names[k], ax=ax)
        ax.set(xlabel=axes[0], ylabel=axes[1])  # not sklearn's "(Positive label: 1)": the legend names the class
    rest = "" if binary else " (one vs rest)"
    titles = {CONFUSION_MATRIX: "confusion matrix", ROC_CURVE: f"ROC curve{rest}", PR_CURVE: f"precision-recall{rest}"}
    for name, title in titles.items():
        figures[name].axes[0].set_title(f"{title}, {split} split")
    return figures


def log_classifier_plots(client, run_id: str, model, dataset, split: str = VALIDATION) -> list[str]:
    """Draw a classifier's :func:`classifier_figures` on one split of its data onto a run, under :data:`PLOTS_DIR`.

    Nothing for regression, without data, or on an empty split. Drawing must never fail what called it (a
    registration): a failure is logged as a warning and nothing is stored.

    Args:
        client: Client bound to the run's tracking store.
        run_id: The run to store the figures on (the best trial's).
        model: The model to predict with: any URI pyfunc loads, or the model :func:`loaded` from one.
        dataset: The :class:`raysweep.data.Dataset`, or ``None``.
        split: ``val`` (default), ``test`` or ``train``.

    Returns:
        The stored artifact paths.
    """
    from raysweep import predictions

    if dataset is None or dataset.task not in predictions.CLASSIFICATION or not len(dataset.xy(split)[1]):
        return []
    try:
        from raysweep.tabular import servable

        X, y = dataset.xy(split)
        answer = _pyfunc(model).predict(servable(X))
        proba = predictions.from_frame(dataset.task, dataset.classes, answer)
        stored = []
        for name, figure in classifier_figures(dataset.classes, y, proba, split).items():
            client.log_figure(run_id, figure, f"{PLOTS_DIR}/{name}")
            stored.append(f"{PLOTS_DIR}/{name}")
        return stored
    except Exception as error:  # noqa: BLE001 - plots are a convenience; the model is registered all the same
        log.warning("no classifier plots stored on run %s: %s: %s", run_id, type(error).__name__, error)
        return []
