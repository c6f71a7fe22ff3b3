"""A tabular model as an MLflow model from code: this file is stored in every model raysweep trains and runs
when the model loads.

It takes the raw feature columns (strings, categories, gaps), preprocesses them with the transformer fitted on
the training split, predicts, and answers :mod:`raysweep.predictions`' table: one probability column per class
named by the user's labels and ``label``, or ``prediction``. Two kinds of model sit behind it:

- ``sklearn``: a fitted scikit-learn ``Pipeline`` (preprocessing, then any estimator with the scikit-learn API:
  scikit-learn's own, XGBoost's, LightGBM's), artifact :data:`PIPELINE`.
- ``torch``: the fitted preprocessing (artifact :data:`PREPROCESS`) and a TorchScript network (artifact
  :data:`NETWORK`) that maps the preprocessed float32 matrix to logits: one column (binary: the second class)
  or one per class (softmax), or the regression values.

It needs MLflow, scikit-learn, numpy and pandas (and torch or the estimator's own package where used), never
raysweep: the table is built by the copy of ``predictions.py`` the model carries (artifact :data:`PREDICTIONS`).
:mod:`raysweep.tabular` builds and logs it.
"""

from __future__ import annotations

import json
import runpy
import warnings

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

#: Artifact keys.
PIPELINE = "pipeline"  # sklearn kind: the fitted Pipeline, saved with mlflow.sklearn
PREPROCESS = "preprocess"  # torch kind: the fitted preprocessing, saved with mlflow.sklearn
NETWORK = "network"  # torch kind: the TorchScript file
PREDICTIONS = "predictions"  # a copy of raysweep/predictions.py: the answer's shape
CONFIG = "config"  # JSON: task, classes, columns
#: Inference parameter of binary models: label the second class at or above this probability.
THRESHOLD = "threshold"


class TabularModel(PythonModel):
    """Raw columns in, :mod:`raysweep.predictions`' table out.

    The artifact :data:`CONFIG` holds ``task``, ``classes`` (the user's labels in class-code order) and ``columns``
    (the training columns, in order); a JSON file rather than MLflow's ``model_config``, which MLflow would also
    log as the run's params. Input columns are matched by name: any order, and a
    missing column counts as all gaps, which the preprocessing imputes.
    """

    def load_context(self, context):
        import mlflow.sklearn

        network = None
        if NETWORK in context.artifacts:
            import torch

            with warnings.catch_warnings():  # torch deprecates TorchScript at every load; the network is one
                warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=FutureWarning)
                network = torch.jit.load(context.artifacts[NETWORK], map_location="cpu").eval()
            fitted = mlflow.sklearn.load_model(context.artifacts[PREPROCESS])
        else:
            fitted = mlflow.sklearn.load_model(context.artifacts[PIPELINE])
        to_frame = runpy.run_path(context.artifacts[PREDICTIONS])["to_frame"]
        with open(context.artifacts[CONFIG]) as file:
            config = json.load(file)
        self.setup(config, fitted, to_frame, network)

    def setup(self, config, fitted, to_frame, network=None) -> TabularModel:
        """Set the model up from its parts (``load_context`` does; raysweep does too, before logging it).

        Args:
            config: ``{"task": ..., "classes": [...], "columns": [...]}``.
            fitted: The fitted ``Pipeline`` (sklearn kind) or the fitted preprocessing (torch kind).
            to_frame: :func:`raysweep.predictions.to_frame`.
            network: The TorchScript module (torch kind), else ``None``.
        """
        self.task = config["task"]
        self.classes = tuple(config["classes"])
        self.columns = list(config["columns"])
        self.fitted, self.to_frame, self.network = fitted, to_frame, network
        return self

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        # The pd.DataFrame hint tells MLflow to check inputs against the signature only (no hint-based schema).
        threshold = (params or {}).get(THRESHOLD)
        return self.to_frame(self.task, self.classes, self.scores(model_input), threshold)

    def scores(self, model_input) -> np.ndarray:
        """The prediction matrix: ``(n, k)`` class probabilities, or ``(n,)`` regression values."""
        X = self.as_trained(pd.DataFrame(model_input).reindex(columns=self.columns))
        if not len(X):  # no rows, no answers (scikit-learn's imputer refuses an empty table)
            return np.zeros((0,) if self.task == "regression" else (0, len(self.classes)))
        if self.network is not None:
            return self._network_scores(self.fitted.transform(X))
        if self.task == "regression":
            return np.asarray(self.fitted.predict(X), dtype="float64").reshape(-1)
        proba = np.asarray(self.fitted.predict_proba(X), dtype="float64")
        # The estimator knows only the class codes it saw in training (a split may lack a rare one): put each of
        # its columns under its code, and 0 under the codes it never saw.
        seen = np.asarray(self.fitted[-1].classes_).astype(int)
        full = np.zeros((len(X), len(self.classes)))
        full[:, seen] = proba
        return full

    def as_trained(self, X: pd.DataFrame) -> pd.DataFrame:
        """The served columns as the preprocessing saw them in training: numbers as float64 (whatever integer,
        float, boolean or nullable type they arrive in), everything else as plain objects (a category column too);
        any gap (``None``, ``pd.NA``, ``NaN``) as ``NaN``.

        The signature takes any type per column (:func:`raysweep.tabular.signature`), so this is where a served
        value meets the training column's kind; a value that is no number in a numeric column is refused here.
        """
        preprocess = self.fitted[0] if hasattr(self.fitted, "steps") else self.fitted
        numeric = {column for name, _, columns in getattr(preprocess, "transformers_", ()) if name == "numeric"
                   for column in columns}
        X = X.copy()
        for column in X.columns:
            is_numeric, dtype = column in numeric, X[column].dtype
            if is_numeric and dtype == np.float64:
                continue  # as in training
            # Training saw gaps as NaN only (raysweep.data.table.normalise): scikit-learn's imputers cannot test
            # pd.NA ("boolean value of NA is ambiguous"), and take None for a category.
            values = X[column].astype(object)
            values = values.where(values.notna(), np.nan)
            if is_numeric:
                # A true/false column trained as numbers (read from a CSV as booleans) served as its file's text.
                values = values.map(lambda v: _TRUTH.get(v.strip().lower(), v) if isinstance(v, str) else v)
                try:
                    values = pd.to_numeric(values, errors="raise").astype("float64")
                except (TypeError, ValueError):
                    bad = next((v for v in values if not _is_number(v)), values.tolist())
                    raise ValueError(f"column {column!r} holds numbers in training, but a served row has {bad!r}; "
                                     "send a number or leave the value out (a gap is imputed)") from None
            X[column] = values
        return X

    def _network_scores(self, features) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.network(torch.as_tensor(np.asarray(features), dtype=torch.float32)).double()
        if self.task == "regression":
            return out.reshape(len(features)).numpy()
        if out.ndim == 1 or out.shape[1] == 1:
            return torch.sigmoid(out.reshape(-1)).numpy()
        return torch.softmax(out, dim=1).numpy()


#: Text a boolean column's values arrive as (a CSV's True/False), as the numbers training saw.
_TRUTH = {"true": 1.0, "false": 0.0}


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


mlflow.models.set_model(TabularModel())
