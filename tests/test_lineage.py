"""Dataset lineage: the sweep's data recorded as an MLflow dataset input on runs (real sqlite store, no Ray)."""

from __future__ import annotations

import json
import pickle
from types import SimpleNamespace

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from raysweep.tracking import lineage
from raysweep.tracking.tags import TASK_TAG


def _dataset(source: str):
    frame = pd.DataFrame({"amount": [1.0, 2.0, 3.0, 4.0], "city": ["a", "b", None, "a"]})
    info = SimpleNamespace(name="churn", source=source, digest="abc123", rows=6, features=2)
    return SimpleNamespace(X_train=frame, y_train=np.array([0, 1, 0, 1]), X_val=frame.head(1), y_val=np.array([1]),
                           y_test=np.array([0]), task="binary", info=info)


def test_a_file_dataset_is_recorded_with_source_digest_schema_rows_and_task(tracking_uri):
    client = MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("lineage")).info.run_id
    record = lineage.record(_dataset("/data/churn.csv"))
    assert pickle.loads(pickle.dumps(record)) == record  # travels to worker-mode trials
    lineage.log(client, run_id, record)
    client.set_terminated(run_id)
    [logged] = client.get_run(run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest, logged.dataset.source_type) == ("churn", "abc123", "local")
    assert json.loads(logged.dataset.source) == {"uri": "/data/churn.csv"}
    assert json.loads(logged.dataset.profile)["num_rows"] == 6
    assert [c["name"] for c in json.loads(logged.dataset.schema)["inputs"]] == ["amount", "city"]
    assert {t.key: t.value for t in logged.tags} == {"mlflow.data.context": "training", TASK_TAG: "binary"}


def test_generated_data_is_a_code_source_and_no_data_records_nothing(tracking_uri):
    assert lineage.record(_dataset("raysweep.data.generate_fraud(n_samples=10)")).source_type == "code"
    assert lineage.record(None) is None
    client = MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("none")).info.run_id
    lineage.log(client, run_id, None)
    client.set_terminated(run_id)
    assert client.get_run(run_id).inputs.dataset_inputs == []
