"""Which data trained each model: the sweep's dataset as an MLflow dataset input on the parent and every child.

The MLflow UI then shows, next to each run and the model registered from it, the data's name, source, digest,
schema and size. Runs are written through ``MlflowClient.log_inputs`` (it takes a run id: no active run needed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from raysweep.tracking.tags import TASK_TAG

#: The dataset input's context: what the runs did with it.
CONTEXT = "training"


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset as MLflow records it (plain strings, so it pickles into worker-mode trials)."""

    name: str
    digest: str
    source_type: str  # "local" for a file, "code" for generated data
    source: str  # JSON, as MLflow's dataset sources are
    schema: str  # MLflow schema JSON of the feature columns and the target
    profile: str  # JSON: rows and splits
    task: str

    def to_input(self):
        """The ``mlflow.entities.DatasetInput`` to log: the data, its context and its task."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        dataset = Dataset(self.name, self.digest, self.source_type, self.source, self.schema, self.profile)
        return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, CONTEXT), InputTag(TASK_TAG, self.task)])


def record(dataset: Any) -> DatasetRecord | None:
    """The :class:`DatasetRecord` of a :class:`raysweep.data.Dataset` (``None`` when there is none).

    Args:
        dataset: The loaded dataset, or ``None`` (the trainable loads its own data).
    """
    if dataset is None or getattr(dataset, "info", None) is None:
        return None
    from mlflow.models import infer_signature

    from raysweep.tabular import integer_columns_hint_off

    info = dataset.info
    is_file = "://" in info.source or info.source.startswith("/") or info.source.endswith((".csv", ".parquet", ".pq"))
    with integer_columns_hint_off():  # the schema records the data's own types; integer columns are no mistake
        signature = infer_signature(dataset.X_train.head(20), dataset.y_train[:20])
    splits = {"train": len(dataset.y_train), "validation": len(dataset.y_val),
              "test": len(getattr(dataset, "y_test", ()))}
    return DatasetRecord(
        name=info.name,
        digest=info.digest,
        source_type="local" if is_file else "code",
        source=json.dumps({"uri": info.source} if is_file else {"generator": info.source}),
        schema=json.dumps({"inputs": signature.inputs.to_dict(), "target": signature.outputs.to_dict()}),
        profile=json.dumps({"num_rows": int(info.rows), "splits": splits}),
        task=dataset.task,
    )


def log(client, run_id: str, dataset: DatasetRecord | None) -> None:
    """Record ``dataset`` as an input of the run (nothing when there is no dataset)."""
    if dataset is not None:
        client.log_inputs(run_id, datasets=[dataset.to_input()])
