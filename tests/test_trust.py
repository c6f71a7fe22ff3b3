"""Stored config is data: code named by a recorded config.yaml runs only when this command names it too."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from conftest import compose_cfg
from raysweep import trust
from raysweep.config import available_sweeps
from raysweep.errors import RaySweepError
from raysweep.tracking import metadata
from raysweep.tracking.queries import CONFIG_ARTIFACT
from raysweep.tracking.tags import PARENT_ROLE, PARENT_RUN_ID, ROLE_TAG, SWEEP_TAG

#: Code an attacker with write access to the tracking store wants run: it leaves a mark when imported.
PLANTED = textwrap.dedent("""
    from pathlib import Path
    Path(__file__).with_name("PWNED").write_text("imported")
    class Searcher: ...
    class Trainer: ...
""")


@pytest.mark.parametrize(
    "recorded, trusted, foreign",
    [
        ({"trainer": {"name": "sklearn"}}, {"trainer": {"name": "sklearn"}}, {}),
        ({"trainer": {"name": "evil:T"}}, {"trainer": {"name": "sklearn"}}, {"trainer.name": ("evil:T", "sklearn")}),
        ({"trainer": {"function": "evil:train"}}, {"trainer": {"function": None}},
         {"trainer.function": ("evil:train", None)}),
        ({"search_alg": {"_target_": "evil.S"}}, {"search_alg": {"_target_": None}},
         {"search_alg._target_": ("evil.S", None)}),
        # Nested builders: an Optuna sampler, a torch model's activation.
        ({"search_alg": {"params": {"sampler": {"_target_": "evil.Sampler"}}}},
         {"search_alg": {"params": {"sampler": {"_target_": "optuna.samplers.TPESampler"}}}},
         {"search_alg.params.sampler._target_": ("evil.Sampler", "optuna.samplers.TPESampler")}),
        ({"trainer": {"model": {"_target_": "my.Net", "act": {"_target_": "evil.Act"}}}},
         {"trainer": {"model": {"_target_": "my.Net", "act": {"_target_": "torch.nn.ReLU"}}}},
         {"trainer.model.act._target_": ("evil.Act", "torch.nn.ReLU")}),
        ({"trainer": {"train_loop": "mine:loop"}}, {"trainer": {"train_loop": "mine:loop"}}, {}),
        # Data differs freely: only code is compared.
        ({"data": {"n_samples": 5}, "search_space": {"x": "choice(1,2)"}}, {"data": {"n_samples": 9}}, {}),
    ],
)
def test_only_code_the_command_composes_is_trusted(recorded, trusted, foreign):
    assert trust.untrusted(OmegaConf.create(recorded), OmegaConf.create(trusted)) == foreign


@pytest.mark.parametrize("sweep", available_sweeps())
def test_every_shipped_sweep_as_recorded_is_trusted_by_its_own_sweep_file(sweep, tmp_path):
    # What a sweep records (secrets masked, interpolations resolved) must not read as foreign code later.
    recorded = trust.as_data(metadata.config_yaml(compose_cfg(tmp_path, f"+sweep={sweep}")))
    trust.check_recorded(recorded, command="reproduce", where="it")  # found by its sweep.name, not the file's


def test_a_stored_interpolation_stays_text():
    loaded = trust.as_data("data:\n  path: ${oc.env:HOME}\n  fraud_rate: 1e-3\n")
    assert loaded.data.path == "${oc.env:HOME}" and loaded.data.fraud_rate == 0.001
    with pytest.raises(RaySweepError, match="not a mapping"):
        trust.as_data("- a list")


def _tampered_store(tracking_uri: str, tmp_path: Path, change: dict) -> tuple[MlflowClient, str]:
    """A killed sweep `tampered` whose stored config.yaml someone edited (``change`` merged in), with Tune state."""
    cfg = compose_cfg(tmp_path / "ray", "+sweep=fraud", "sweep.run_name=tampered")
    stored = OmegaConf.merge(OmegaConf.create(metadata.config_yaml(cfg)), change)
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("fraud-detection")
    parent = client.create_run(experiment_id, run_name="tampered", tags={ROLE_TAG: PARENT_ROLE, SWEEP_TAG: "fraud"})
    client.log_text(parent.info.run_id, OmegaConf.to_yaml(stored), CONFIG_ARTIFACT)
    client.set_terminated(parent.info.run_id, "KILLED")
    (tmp_path / "ray" / "tampered").mkdir(parents=True)
    (tmp_path / "ray" / "tampered" / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
    (tmp_path / "planted.py").write_text(PLANTED)  # importable: the command runs in tmp_path
    return client, parent.info.run_id


def _refused(args: list[str], env: dict, cwd: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "raysweep", *args], env=env, cwd=cwd, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    assert not (cwd / "PWNED").exists(), "the stored config's code was imported"
    [line] = out.stderr.strip().splitlines()
    return line


def test_resume_refuses_a_stored_target_this_command_does_not_compose(tracking_uri, cli_env, tmp_path):
    _tampered_store(tracking_uri, tmp_path, {"search_alg": {"name": "custom", "_target_": "planted.Searcher"}})
    args = ["+sweep=fraud", "resume=true", "sweep.run_name=tampered", f"cluster.storage_path={tmp_path / 'ray'}"]
    line = _refused(args, cli_env, tmp_path)
    assert line.startswith("raysweep: resume=true: the config stored on sweep run 'tampered' names "
                           "search_alg._target_='planted.Searcher', but this command composes none;"), line
    assert "pass search_alg._target_=planted.Searcher on this command line" in line


def test_reproduce_refuses_a_stored_trainer_this_command_does_not_compose(tracking_uri, cli_env, tmp_path):
    client, parent_id = _tampered_store(tracking_uri, tmp_path, {"trainer": {"name": "planted:Trainer"}})
    child = client.create_run(client.get_experiment_by_name("fraud-detection").experiment_id,
                              tags={PARENT_RUN_ID: parent_id})
    client.set_terminated(child.info.run_id)
    client.create_registered_model("fraud-rf")
    client.create_model_version("fraud-rf", f"runs:/{child.info.run_id}/model", run_id=child.info.run_id)
    line = _refused(["reproduce", "models:/fraud-rf/1"], cli_env, tmp_path)
    assert "names trainer.name='planted:Trainer', but this command composes 'sklearn'" in line, line


def test_the_fix_for_a_built_in_trainer_names_its_group_option_first():
    from raysweep.errors import RaySweepError
    from raysweep.trust import check

    recorded = {"trainer": {"name": "estimator", "estimator": {"_target_": "sklearn.linear_model.LogisticRegression"}}}
    with pytest.raises(RaySweepError) as error:
        check(recorded, {"trainer": {"name": "sklearn"}}, command="reproduce", where="version 1")
    # As typed, it composes: trainer=estimator fills trainer.estimator, which the default trainer leaves null.
    assert str(error.value).endswith("pass trainer=estimator trainer.estimator._target_=sklearn.linear_model."
                                     "LogisticRegression on this command line (or put it in the sweep file)")

