"""Validation predictions of a growing estimator, each iteration's costing only what the iteration added.

A forest grown over ``trainer.iterations`` reports would otherwise be asked for the whole forest's prediction at
every report: 1 + 2 + ... + k slices of trees, three times the trees of the final forest at five reports, and on
deep forests the larger part of a trial's time besides fitting. :class:`Validation` keeps the sum of the trees
seen so far and adds the new ones only, summing in the forest's own order and dividing as the forest does, so
the numbers are the forest's own ``predict_proba`` / ``predict``.

Module-level imports stay light (no scikit-learn): driver-mode trial processes import this.
"""

from __future__ import annotations

from typing import Any

#: scikit-learn's forests: their prediction is the mean of their trees' (``sklearn.ensemble._forest``).
_FORESTS = ("RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor")


def scores(estimator, X, task: str, n_classes: int):
    """The prediction :func:`raysweep.metrics.score` takes: ``(n, k)`` probabilities, or regression values."""
    import numpy as np

    if task == "regression":
        return np.asarray(estimator.predict(X), dtype="float64").reshape(-1)
    return _full_columns(np.asarray(estimator.predict_proba(X), dtype="float64"), estimator.classes_, n_classes)


class Validation:
    """Predictions on one validation split for an estimator that grows between calls (:meth:`scores`)."""

    def __init__(self, X, task: str, n_classes: int):
        self.X, self.task, self.n_classes = X, task, n_classes
        self._trees: list[Any] = []  # the forest's trees summed so far, in its order
        self._sum = None
        self._X32 = None

    def scores(self, estimator):
        """:func:`scores` of ``estimator`` now; a forest's trees already summed are not asked again."""
        if self._X32 is None and _is_forest(estimator):
            from sklearn.utils.validation import check_array

            # What the forest's predict does to X before asking its trees (their float32 input, CSR when sparse);
            # gaps (which preprocessing fills) or infinities leave the prediction to the forest itself.
            try:
                self._X32 = check_array(self.X, dtype="float32", accept_sparse="csr")
            except ValueError:
                self._X32 = False
        if self._X32 is None or self._X32 is False or not _is_forest(estimator):
            return scores(estimator, self.X, self.task, self.n_classes)
        trees = estimator.estimators_
        if len(trees) < len(self._trees) or any(a is not b for a, b in zip(trees, self._trees)):
            self._trees, self._sum = [], None  # refitted, not grown: start over
        for tree in trees[len(self._trees):]:
            part = (tree.predict(self._X32, check_input=False) if self.task == "regression"
                    else tree.predict_proba(self._X32, check_input=False))
            self._sum = part.astype("float64") if self._sum is None else self._sum + part
            self._trees.append(tree)
        mean = self._sum / len(trees)
        if self.task == "regression":
            return mean.reshape(-1)
        return _full_columns(mean, estimator.classes_, self.n_classes)


def _is_forest(estimator) -> bool:
    # One output (the trials' y) and scikit-learn's own forest classes or the user's subclasses of them.
    names = {cls.__name__ for cls in type(estimator).__mro__ if cls.__module__.startswith("sklearn.ensemble")}
    return bool(names & set(_FORESTS)) and getattr(estimator, "n_outputs_", None) == 1 and \
        bool(getattr(estimator, "estimators_", None))


def _full_columns(proba, classes, n_classes: int):
    import numpy as np

    # A training split may lack a rare class: its column is 0, so codes and columns still line up.
    full = np.zeros((len(proba), n_classes))
    full[:, np.asarray(classes).astype(int)] = proba
    return full
