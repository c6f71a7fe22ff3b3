"""What every model raysweep logs answers: one table shape per task, built and read back here.

A classifier answers one float column of probabilities per class, named by the user's label (``str(label)``, in
:attr:`raysweep.data.Dataset.classes` order), and a ``label`` column with the most probable class as the user's
own label; a regressor answers one ``prediction`` column::

    binary / multiclass            regression
       No     Yes   label          prediction
     0.91    0.09      No              17.25

:func:`to_frame` builds that table from a prediction matrix; :func:`from_frame` reads it back into the matrix
:func:`raysweep.metrics.score` takes. A binary table labels at a ``threshold`` on the second class's
probability (every binary model's ``threshold`` inference parameter, default 0.5); the probabilities never move.

This file imports only numpy and pandas, never raysweep: every logged model carries a copy of it as an artifact
and runs it when it loads (:mod:`raysweep.tabular_model`, :mod:`raysweep.ensemble_model`), so a served model
answers exactly what raysweep reads, without raysweep installed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The column holding each row's predicted class (classification).
LABEL = "label"
#: The column holding each row's predicted value (regression).
PREDICTION = "prediction"
#: Binary labels: the second class when its probability is at least this, unless a ``threshold`` says otherwise.
DEFAULT_THRESHOLD = 0.5
#: The classification tasks.
CLASSIFICATION = ("binary", "multiclass")


def class_columns(classes) -> list[str]:
    """The probability columns of a classifier's table, one per class: ``str(label)`` in class order.

    Raises:
        ValueError: Two labels that print the same, or a label printed ``label`` (the columns would clash).
    """
    columns = [str(label) for label in classes]
    if len(set(columns)) != len(columns) or LABEL in columns:
        raise ValueError(f"class labels {columns} must print distinctly and none may be {LABEL!r}; rename the "
                         "target's values")
    return columns


def to_frame(task: str, classes, prediction, threshold: float | None = None) -> pd.DataFrame:
    """The table a model answers for ``prediction``.

    Args:
        task: ``binary``, ``multiclass`` or ``regression``.
        classes: The user's labels in class-code order (``()`` for regression).
        prediction: Classification: an ``(n, k)`` matrix of class probabilities (binary also takes ``(n,)`` or
            ``(n, 1)``, the probability of the second class); regression: ``(n,)`` or ``(n, 1)`` values.
        threshold: Binary only: label a row with the second class when its probability is at least this
            (default 0.5, the most probable class); multiclass labels with the most probable class.

    Returns:
        One probability column per class plus ``label`` (classification), or ``prediction`` (regression).

    Raises:
        ValueError: An unknown task, or a prediction whose shape does not fit the task and classes.
    """
    prediction = np.asarray(prediction, dtype="float64")
    if task == "regression":
        return pd.DataFrame({PREDICTION: _column(prediction, "a regression prediction")})
    proba = _probabilities(task, classes, prediction)
    labels = np.asarray(list(classes), dtype=object)
    if task == "binary":
        picked = (proba[:, 1] >= (DEFAULT_THRESHOLD if threshold is None else threshold)).astype(int)
    else:
        picked = proba.argmax(axis=1)
    frame = pd.DataFrame(proba, columns=class_columns(classes))
    # Labels keep the user's type: ints stay ints, strings strings (an object column of mixed types otherwise).
    frame[LABEL] = pd.Series(labels[picked], dtype=object).infer_objects()
    return frame


def from_frame(task: str, classes, frame) -> np.ndarray:
    """The prediction matrix in a model's answer: ``(n, k)`` probabilities, or ``(n,)`` regression values.

    Args:
        task: ``binary``, ``multiclass`` or ``regression``.
        classes: The user's labels in class-code order (``()`` for regression).
        frame: The model's answer: :func:`to_frame`'s table, or (a model not logged by raysweep) a probability
            matrix with one column per class, the second class's probability for binary, or regression values.

    Raises:
        ValueError: An answer that is none of these.
    """
    if isinstance(frame, pd.DataFrame):
        if task == "regression" and PREDICTION in frame.columns:
            return frame[PREDICTION].to_numpy(dtype="float64")
        if task in CLASSIFICATION:
            columns = class_columns(classes)
            if all(column in frame.columns for column in columns):
                return frame[columns].to_numpy(dtype="float64")
            if LABEL in frame.columns:  # raysweep's table, of other classes: read by position it would mislabel
                answered = [str(c) for c in frame.columns if c != LABEL]
                raise ValueError(f"a model answers the classes {answered}, not the data's {columns}")
        numeric = frame.drop(columns=[c for c in (LABEL,) if c in frame.columns])
        if not all(pd.api.types.is_numeric_dtype(numeric[c]) for c in numeric.columns):
            raise ValueError(f"a {task} model's answer has columns {list(frame.columns)}; expected "
                             f"{class_columns(classes) + [LABEL] if task in CLASSIFICATION else [PREDICTION]}")
        frame = numeric.to_numpy(dtype="float64")
    prediction = np.asarray(frame, dtype="float64")
    if task == "regression":
        return _column(prediction, "a regression answer")
    return _probabilities(task, classes, prediction)


def _probabilities(task: str, classes, prediction: np.ndarray) -> np.ndarray:
    if task not in CLASSIFICATION:
        raise ValueError(f"unknown task {task!r}; use binary, multiclass or regression")
    k = len(classes)
    if task == "binary" and k == 2 and (prediction.ndim == 1 or prediction.shape[1:] == (1,)):
        positive = prediction.reshape(-1)
        return np.column_stack([1.0 - positive, positive])
    if prediction.ndim != 2 or prediction.shape[1] != k:
        raise ValueError(f"a {task} prediction for {k} classes is an (n, {k}) probability matrix, not shape "
                         f"{prediction.shape}")
    return prediction


def _column(prediction: np.ndarray, what: str) -> np.ndarray:
    if prediction.ndim == 2 and prediction.shape[1] == 1:
        return prediction[:, 0]
    if prediction.ndim != 1:
        raise ValueError(f"{what} is (n,) values, not shape {prediction.shape}")
    return prediction
