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


def test_tags(model_uri: str, dataset, metric: str) -> dict[str, str]:
    """The version tags recording a model's score on the test split: :data:`~raysweep.tracking.tags.TEST_METRIC_TAG`
    (the sweep's metric on the test split, e.g. ``test_auc``), :data:`~raysweep.tracking.tags.TEST_VALUE_TAG`,
    and every test metric as ``raysweep.score.NAME``.

    Nothing when there is no data or no test row, or when the model cannot be scored (an answer raysweep does
    not read): the version is registered all the same, with a warning in the log.

    Args:
        model_uri: The model to score.
        dataset: The sweep's :class:`raysweep.data.Dataset`, or ``None``.
        metric: The sweep's metric (``val_auc``).
    """
    if dataset is None or not len(dataset.xy(TEST)[1]):
        return {}
    try:
        scores = evaluate(model_uri, dataset, TEST)
    except Exception as error:  # noqa: BLE001 - any model may fail on the data; its registration must not
        log.warning("%s not scored on the test split, so no test metric is recorded: %s: %s", model_uri,
                    type(error).__name__, error)
        return {}
    tags = {SCORE_TAG_PREFIX + key: repr(value) for key, value in scores.items()}
    name = on_split(metric, TEST)
    if name in scores:
        tags.update({TEST_METRIC_TAG: name, TEST_VALUE_TAG: repr(scores[name])})
    return tags
