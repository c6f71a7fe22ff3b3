"""One registered model name holds the models of one task: a sweep of another task is refused before it creates a
run, and the promotion gate refuses to score a challenger and a champion of different tasks."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag

from raysweep import aliases, promotion, registry, sweep
from raysweep.errors import RaySweepError
from raysweep.tracking.tags import TASK_TAG

NAME = "churn-model"


def _version(client: MlflowClient, task: str | None, *, on_run: bool = False) -> str:
    """A version of NAME whose task is its tag, or (``on_run``) only its run's dataset input's, as versions
    registered before the tag record it; ``None``: no task anywhere (a trainer that loads its own data)."""
    experiment = client.get_experiment_by_name("t") or client.get_experiment(client.create_experiment("t"))
    run = client.create_run(experiment.experiment_id)
    if on_run and task:
        data = Dataset(name="d", digest="0", source_type="local", source="d.csv")
        client.log_inputs(run.info.run_id, datasets=[DatasetInput(data, tags=[InputTag(TASK_TAG, task)])])
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{NAME}'"):
        client.create_registered_model(NAME)
    tags = {TASK_TAG: task} if task and not on_run else {}
    return str(client.create_model_version(NAME, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
                                           tags=tags).version)


@pytest.mark.parametrize(
    "champion, on_run, task, refused",
    [
        ("multiclass", False, "regression", True),
        ("multiclass", True, "regression", True),  # known from its run's data
        ("binary", False, "binary", False),
        (None, False, "regression", False),  # a champion whose task nothing records is not second-guessed
        ("binary", False, None, False),  # nor a sweep that loads its own data
    ],
)
def test_a_sweep_of_another_task_than_the_champions_is_refused(tracking_uri, champion, on_run, task, refused):
    client = MlflowClient()
    aliases.check_task(client, NAME, "binary")  # a name not registered yet takes anything
    version = _version(client, champion, on_run=on_run)
    aliases.check_task(client, NAME, task)  # no champion yet
    client.set_registered_model_alias(NAME, registry.CHAMPION, version)
    if not refused:
        aliases.check_task(client, NAME, task)
        return
    with pytest.raises(RaySweepError) as error:
        aliases.check_task(client, NAME, task)
    assert str(error.value) == (
        f"registered model {NAME!r} holds a {champion} model (@champion v{version}) and this sweep's data is a "
        f"{task} task, whose models cannot be compared with it; set mlflow.registered_model to another name"
    )


def test_the_gate_refuses_a_challenger_of_another_task_and_writes_nothing(tracking_uri):
    client = MlflowClient()
    champion, challenger = _version(client, "multiclass"), _version(client, "regression", on_run=True)
    client.set_registered_model_alias(NAME, registry.CHAMPION, champion)
    client.set_registered_model_alias(NAME, registry.CHALLENGER, challenger)
    with pytest.raises(RaySweepError, match=f"{NAME} v2 \\(@challenger\\) learned a regression task and v1 "
                                            "\\(@champion\\) a multiclass one: one test split cannot score both; "
                                            "register a multiclass model as @challenger"):
        promotion.gate(client, NAME, by="ci")
    assert client.get_registered_model(NAME).aliases == {"champion": 1, "challenger": 2}
    assert not any(client.get_model_version(NAME, v).description for v in (champion, challenger))


def test_a_sweep_into_a_name_holding_another_task_creates_no_run(ray_address, make_cfg, tracking_uri):
    client = MlflowClient()
    client.set_registered_model_alias(NAME, registry.CHAMPION, _version(client, "regression"))
    cfg = make_cfg("+sweep=fraud", "data.n_samples=500", "sweep.num_samples=1", f"mlflow.registered_model={NAME}",
                   "mlflow.experiment_name=fraud-tasks", "cluster.verbose=0")
    with pytest.raises(RaySweepError, match="holds a regression model .* this sweep's data is a binary task"):
        sweep.run(cfg)
    assert client.get_experiment_by_name("fraud-tasks") is None or mlflow.search_runs(
        experiment_names=["fraud-tasks"]).empty
    assert [str(v.version) for v in client.search_model_versions(f"name = '{NAME}'")] == ["1"]
    assert not list(Path(cfg.cluster.storage_path).glob("*")), "the refused sweep left its claimed Tune folder"
