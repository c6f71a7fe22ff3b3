"""The fraud ensemble as an MLflow model from code: this file is stored in the model and run when it loads.

It needs MLflow, scikit-learn, numpy and pandas, never raysweep itself, so a served ensemble runs wherever
its pinned requirements are installed. :mod:`raysweep.ensemble` builds and logs it.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

#: Artifact key of the preprocessing step; every other artifact is a member model.
PREPROCESS = "preprocess"
#: Fraud probability at or above which a row is labelled fraud, unless the ``threshold`` param says otherwise.
DEFAULT_THRESHOLD = 0.5


class FraudEnsemble(PythonModel):
    """Preprocess, then average the members' fraud probabilities; label rows at the ``threshold`` param.

    ``predict`` answers a table with one row per input row: ``fraud_probability`` (the members' mean
    probability of class 1) and ``is_fraud`` (1 when that probability is >= ``threshold``, default 0.5).
    The threshold moves the labels only, never the probabilities.
    """

    def load_context(self, context):
        import mlflow.sklearn

        self.preprocess = mlflow.sklearn.load_model(context.artifacts[PREPROCESS])
        self.members = {
            key: mlflow.sklearn.load_model(path) for key, path in sorted(context.artifacts.items()) if key != PREPROCESS
        }

    def predict(self, context, model_input, params=None):
        threshold = float((params or {}).get("threshold", DEFAULT_THRESHOLD))
        features = self.preprocess.transform(model_input)
        proba = np.mean([member.predict_proba(features)[:, 1] for member in self.members.values()], axis=0)
        return pd.DataFrame({"fraud_probability": proba, "is_fraud": (proba >= threshold).astype("int64")})


mlflow.models.set_model(FraudEnsemble())
