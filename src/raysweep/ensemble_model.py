"""An ensemble as an MLflow model from code: this file is stored in the model and run when it loads.

It needs MLflow, numpy and pandas (and what its members need), never raysweep itself, so a served ensemble runs
wherever its pinned requirements are installed. :mod:`raysweep.ensemble` builds and logs it.
"""

from __future__ import annotations

import json
import runpy

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

#: Artifact keys of the copy of raysweep/predictions.py (the answer's shape) and of the JSON config (task,
#: classes); every other artifact is a member.
PREDICTIONS, CONFIG = "predictions", "config"
#: Inference parameter of a binary ensemble: label the second class at or above this probability.
THRESHOLD = "threshold"


class Ensemble(PythonModel):
    """Average the members' answers: their class probabilities (classification) or values (regression).

    Every member is an MLflow model that takes the raw columns and answers :mod:`raysweep.predictions`' table
    (a model raysweep logged), so the ensemble answers it too: one probability column per class, named by the
    user's labels, and ``label`` (binary: the second class where its mean probability is >= the ``threshold``
    parameter, default 0.5; it moves labels, never probabilities), or ``prediction``. The artifact :data:`CONFIG`
    holds ``task`` and ``classes``.
    """

    def load_context(self, context):
        members = {key: mlflow.pyfunc.load_model(path)
                   for key, path in sorted(context.artifacts.items()) if key not in (PREDICTIONS, CONFIG)}
        shape = runpy.run_path(context.artifacts[PREDICTIONS])
        with open(context.artifacts[CONFIG]) as file:
            config = json.load(file)
        self.setup(config, members, shape["to_frame"], shape["from_frame"])

    def setup(self, config, members, to_frame, from_frame) -> Ensemble:
        """Set the ensemble up from its parts (``load_context`` does; raysweep does too, before logging it).

        Args:
            config: ``{"task": ..., "classes": [...]}``.
            members: Member name -> loaded pyfunc model.
            to_frame: :func:`raysweep.predictions.to_frame`.
            from_frame: :func:`raysweep.predictions.from_frame`.
        """
        self.task, self.classes = config["task"], tuple(config["classes"])
        self.members = dict(sorted(members.items()))
        self.to_frame, self.from_frame = to_frame, from_frame
        return self

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        # The pd.DataFrame hint tells MLflow to check inputs against the signature only (no hint-based schema).
        threshold = (params or {}).get(THRESHOLD)
        return self.to_frame(self.task, self.classes, self.mean(model_input), threshold)

    def mean(self, model_input) -> np.ndarray:
        """The members' mean prediction matrix: ``(n, k)`` class probabilities, or ``(n,)`` values."""
        answers = [self.from_frame(self.task, self.classes, member.predict(model_input))
                   for member in self.members.values()]
        return np.mean(answers, axis=0)


mlflow.models.set_model(Ensemble())
