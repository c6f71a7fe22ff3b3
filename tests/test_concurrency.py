"""Sweeps and registrations that happen at the same time, and the one number each registered model carries.

Two sweeps started in the same second, several registrations racing on one model (two of them of the same
sweep), and the metric a registered version records: the value of the checkpoint actually registered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag

from conftest import SMOKE
from raysweep import aliases, analysis
from raysweep.metrics import PROGRESS
from raysweep.tracking.reconcile import TrialOutcome, model_value, outcomes
from raysweep.tracking.tags import (
    METRIC_TAG,
    MODE_TAG,
    MODEL_CHECKPOINT_TAG,
    MODEL_URI_TAG,
    MODEL_VALUE_TAG,
    PARENT_ROLE,
    PARENT_RUN_ID,
    PROMOTED_BY_TAG,
    PROMOTION_BASIS_TAG,
    ROLE_TAG,
    VALUE_TAG,
    VERSION_PARENT_TAG,
)


USER_CODE = Path(__file__).parent / "user_code"

# Runs `python -m raysweep` with Hydra's clock stopped at one second, as if both sweeps had started in it.
SAME_SECOND = textwrap.dedent("""
    import datetime, sys
    import hydra.core.utils

    class Stopped(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 12, 1, 9, 0, 0)

    hydra.core.utils.datetime = Stopped
    from raysweep.__main__ import main
    sys.argv = ["raysweep", *sys.argv[1:]]
    main()
""")


@pytest.mark.slow
def test_two_sweeps_started_in_the_same_second_keep_apart(ray_address, tmp_path, cli_env, tracking_uri):
    env = {**cli_env, "RAY_ADDRESS": ray_address}
    storage = tmp_path / "ray"
    args = ["+sweep=fraud", *SMOKE, "sweep.num_samples=2", "sweep.max_concurrent_trials=1",
            f"cluster.storage_path={storage}", "mlflow.experiment_name=same-second"]
    sweeps = [subprocess.Popen([sys.executable, "-c", SAME_SECOND, *args], env=env, cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in sweeps]
    for process, (out, err) in zip(sweeps, outs):
        assert process.returncode == 0, err[-3000:]

    client = MlflowClient()
    experiments = [e for e in client.search_experiments() if e.name == "same-second"]
    assert len(experiments) == 1  # created once, though both sweeps found none
    parents = client.search_runs([experiments[0].experiment_id], f"tags.`{ROLE_TAG}` = '{PARENT_ROLE}'")
    names = {p.info.run_name for p in parents}
    assert len(parents) == 2 and len(names) == 2, names
    assert all(name.startswith("fraud-20261201-090000-") for name in names)
    assert {p.name for p in storage.iterdir()} == names  # one Tune folder each
    for parent in parents:
        assert parent.info.status == "FINISHED"
        children = client.search_runs([experiments[0].experiment_id],
                                      f"tags.`{PARENT_RUN_ID}` = '{parent.info.run_id}'")
        assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    # Both registered: two versions of one model, the better one champion.
    versions = client.search_model_versions("name = 'fraud-rf'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    champion = client.get_model_version_by_alias("fraud-rf", "champion")
    assert float(champion.tags[VALUE_TAG]) == max(float(v.tags[VALUE_TAG]) for v in versions)


def test_an_explicit_run_name_in_use_is_refused_before_ray(tmp_path, make_cfg):
    from raysweep.errors import RaySweepError
    from raysweep.plan import claim_run_dir, make_plan

    plan = make_plan(make_cfg("+sweep=fraud", "sweep.run_name=mine"))
    claim_run_dir(plan)  # the first sweep of that name claims its folder ...
    with pytest.raises(RaySweepError, match="already exists; pick a new sweep.run_name"):
        claim_run_dir(plan)  # ... and any other, even one a moment later in another process, is refused


# --- registrations racing on one model ----------------------------------------------------------------------------

REGISTER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from mlflow import MlflowClient
    from raysweep import analysis, registry

    parent_id, ready, go = sys.argv[1:]
    client = MlflowClient()
    parent = client.get_run(parent_id)
    summary = analysis.summarize(client, parent)
    Path(ready).touch()
    while not os.path.exists(go):
        time.sleep(0.001)
    registration = registry.register_best(client, parent, summary)
    print(json.dumps({"version": registration.version, "created": registration.created}))
""")


def _finished_sweep(client: MlflowClient, experiment_id: str, value: float) -> str:
    """A sweep as the store holds it after Tune: a parent and one finished trial whose model is logged."""
    parent = client.create_run(experiment_id, run_name=f"sweep-{value}", tags={ROLE_TAG: PARENT_ROLE})
    for key, val in {"sweep.metric": "val_auc", "sweep.mode": "max", "mlflow.registered_model": "race"}.items():
        client.log_param(parent.info.run_id, key, val)
    child = client.create_run(experiment_id, run_name=f"trial-{value}", tags={PARENT_RUN_ID: parent.info.run_id})
    model = client.create_logged_model(experiment_id, name="model", source_run_id=child.info.run_id)
    client.log_batch(child.info.run_id, metrics=[Metric("val_auc", value, 0, 1)],
                     tags=[RunTag(MODEL_URI_TAG, f"models:/{model.model_id}")])
    client.set_terminated(child.info.run_id, "FINISHED")
    return parent.info.run_id


def test_registrations_racing_on_one_model_converge(tmp_path, tracking_uri):
    client = MlflowClient()
    experiment_id = client.create_experiment("race")
    values = [0.70, 0.90, 0.80, 0.85]
    sweeps = [_finished_sweep(client, experiment_id, v) for v in values]
    # The best sweep is registered twice at once too (the driver and `raysweep analyse`).
    jobs = [*sweeps, sweeps[1]]
    go = tmp_path / "go"
    processes = []
    for i, parent_id in enumerate(jobs):
        processes.append(subprocess.Popen(
            [sys.executable, "-c", REGISTER, parent_id, str(tmp_path / f"ready{i}"), str(go)],
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(len(jobs))):
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes), \
            [p.communicate()[1][-2000:] for p in processes if p.poll() is not None]
        time.sleep(0.05)
    go.touch()  # all read their sweep; now all register and move the aliases at once
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))

    versions = {str(v.version): v for v in client.search_model_versions("name = 'race'")}
    by_sweep = {v.tags[VERSION_PARENT_TAG]: number for number, v in versions.items()}
    assert len(versions) == 4 and set(by_sweep) == set(sweeps)  # one version per sweep
    assert results[1]["version"] == results[4]["version"] == by_sweep[sweeps[1]]
    assert [r["created"] for r in (results[1], results[4])].count(True) == 1
    held = client.get_registered_model("race").aliases
    assert str(held["champion"]) == by_sweep[sweeps[1]]  # the 0.90 sweep's, whoever wrote last
    assert str(held["challenger"]) == max(versions, key=int)


def _version(number: int, value: float | None = None, **tags: str) -> ModelVersion:
    recorded = {VERSION_PARENT_TAG: f"sweep{number}"}
    if value is not None:
        recorded.update({METRIC_TAG: "val_auc", MODE_TAG: "max", VALUE_TAG: repr(value)})
    return ModelVersion("m", str(number), creation_timestamp=number * 1000,
                        tags=[ModelVersionTag(k, v) for k, v in {**recorded, **tags}.items()])


@pytest.mark.parametrize(
    ("versions", "champion", "expected"),
    [
        ([_version(1, 0.8), _version(2, 0.9), _version(3, 0.7)], None, "2"),  # nobody chose: the best
        ([_version(1, 0.8), _version(2, 0.9), _version(3, 0.7)], "3", "2"),  # a worse one wrote last
        ([_version(1, 0.8), _version(2, 0.9)], "1", "2"),
        ([_version(1, 0.9), _version(2, 0.9)], "1", "1"),  # equal is never better
        # A person rolled back from v2 to v1 (v1 records what it saw): v2 stays out, v3 competes with v1.
        ([_version(1, 0.8, **{PROMOTED_BY_TAG: "alice", PROMOTION_BASIS_TAG: "2"}), _version(2, 0.9),
          _version(3, 0.85)], "1", "3"),
        ([_version(1, 0.8, **{PROMOTED_BY_TAG: "alice", PROMOTION_BASIS_TAG: "2"}), _version(2, 0.9),
          _version(3, 0.7)], "1", "1"),
        # A champion recorded by hand, with no comparable metric, is never replaced automatically.
        ([_version(1), _version(2, 0.9)], "1", "1"),
    ],
)
def test_the_champion_is_computed_from_the_versions_alone(versions, champion, expected):
    challenger, best = aliases.wanted(versions, champion, "val_auc", "max")
    assert best == expected and challenger == str(len(versions))


# --- one number per model -----------------------------------------------------------------------------------------

# A trial whose last report is worse than an earlier one: the metric's last value is not the registered model's.
VALUES = (0.5, 0.9, 0.6)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["driver", "worker"])
def test_the_registered_version_records_the_value_of_its_own_checkpoint(mode, ray_address, make_cfg, tracking_uri,
                                                                         monkeypatch):
    from raysweep import sweep

    monkeypatch.syspath_prepend(str(USER_CODE))
    outcome = sweep.run(make_cfg(
        "+sweep=overhead", "trainer=function", "data=none", "trainer.function=drop_functions:peak_then_drop",
        "search_space.x='choice(1, 2)'", "sweep.metric=val_score", "sweep.num_samples=1", "sweep.register=true",
        f"mlflow={mode}", "mlflow.registered_model=peak", "mlflow.experiment_name=peak", "cluster.verbose=0",
    ))
    client = MlflowClient()
    child = client.get_run(outcome.summary.best_run_id)
    assert child.data.metrics["val_score"] == VALUES[-1]  # the last report ...
    version = client.get_model_version("peak", outcome.registration.version)
    registered = mlflow.models.get_model_info(f"models:/peak/{version.version}").metadata
    assert registered["epoch"] == 2  # ... but the better of the two kept checkpoints is what was registered
    assert float(version.tags[VALUE_TAG]) == VALUES[1] == float(child.data.tags[MODEL_VALUE_TAG])
    parent = client.get_run(outcome.summary.parent_run_id)
    assert parent.data.metrics["best_val_score"] == VALUES[1] == outcome.summary.best_value


def test_a_torch_trials_number_is_its_checkpoints_row(tmp_path):
    import pandas as pd
    from ray.tune import Result

    from raysweep.trainables import torch_mlp

    key = torch_mlp.TRAIN_CHECKPOINT_KEY
    frame = pd.DataFrame({"val_auc": [0.7, 0.9, 0.8], key: ["/c/1", "/c/2", None]})
    result = Result(metrics={"val_auc": 0.8}, checkpoint=None, error=None, path=str(tmp_path), metrics_dataframe=frame)
    checkpoint = torch_mlp.best_checkpoint(result, "val_auc", "max")
    assert checkpoint == "/c/2"
    assert model_value(result, checkpoint, "val_auc", logged_model=False) == 0.9
    # A trial that logged its final model itself (worker mode, mlflow.log_models): its last report.
    assert model_value(result, checkpoint, "val_auc", logged_model=True) == 0.8


def test_trial_outcomes_keep_what_record_outcomes_and_retention_read(tmp_path):
    from ray.tune import Checkpoint, Result

    from raysweep.trainables import function

    def result(trial_id, metrics, checkpoints=(), error=None):
        return Result(metrics={"trial_id": trial_id, **metrics}, checkpoint=None, error=error,
                      path=str(tmp_path / trial_id), best_checkpoints=[(Checkpoint(str(tmp_path / path)), m)
                                                                       for path, m in checkpoints])

    results = [
        # Its better checkpoint is the earlier one: that model's value, beside the last report's.
        result("t1", {"val_auc": 0.8, PROGRESS: 1.0}, [("c1", {"val_auc": 0.9}), ("c2", {"val_auc": 0.8})]),
        result("t2", {"val_auc": 0.7, PROGRESS: 0.4}),  # stopped early, no checkpoint
        result("t3", {}, error=RuntimeError("boom")),  # failed: nothing read of it but where it is
    ]
    found = outcomes(results, lambda r: function.best_checkpoint(r, "val_auc", "max"), "val_auc")
    assert found == [
        TrialOutcome("t1", str(tmp_path / "t1"), False, str(tmp_path / "c1"), 0.9, 0.8, 1.0),
        TrialOutcome("t2", str(tmp_path / "t2"), False, None, None, 0.7, 0.4),
        TrialOutcome("t3", str(tmp_path / "t3"), True, None, None, None, 1.0, "RuntimeError: boom"),
    ]
    # A trial that died before its first report: Tune's account has no metrics, its folder's name has the id.
    folder = tmp_path / "train_ab123_00004_4_x=1.0000_2026-12-05_00-16-48"
    folder.mkdir()
    (folder / "error.txt").write_text("Failure # 1\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
                                      "ray.exceptions.ActorDiedError: The actor died unexpectedly\n")
    died = Result(metrics={}, checkpoint=None, error=RuntimeError("x"), path=str(folder))
    assert outcomes([died], lambda r: None, "val_auc") == [TrialOutcome(
        "ab123_00004", str(folder), True, error="ray.exceptions.ActorDiedError: The actor died unexpectedly")]


def test_a_checkpoint_the_trial_wrote_but_a_sweep_wide_stop_kept_tune_from_recording_is_still_found(tmp_path):
    """sweep.stop.* fired on a trial's first report: Tune dropped the save in flight, so its account of the trial
    has no checkpoint, though the trial wrote it and its result row names it."""
    import pandas as pd
    from ray.tune import Checkpoint, Result

    from raysweep.trainables import function

    trial = tmp_path / "t1"
    for name in ("checkpoint_000000", "checkpoint_000002"):
        (trial / name).mkdir(parents=True)
    (trial / "checkpoint_000003").mkdir()  # reported without the metric: never the best
    frame = pd.DataFrame({"val_auc": [0.9, 0.7, 0.8, None], "trial_id": "t1",
                          "checkpoint_dir_name": ["checkpoint_000000", "checkpoint_000001", "checkpoint_000002",
                                                  "checkpoint_000003"]})
    kept = [(Checkpoint(str(trial / "checkpoint_000002")), {"val_auc": 0.8})]  # 000001: deleted by Tune
    result = Result(metrics={"trial_id": "t1", "val_auc": 0.8}, checkpoint=None, error=None, path=str(trial),
                    metrics_dataframe=frame, best_checkpoints=kept)
    (found,) = outcomes([result], lambda r: function.best_checkpoint(r, "val_auc", "max"), "val_auc")
    assert (found.checkpoint, found.checkpoint_value) == (str(trial / "checkpoint_000000"), 0.9)
    # Without such rows (or with every named checkpoint recorded), Tune's account is taken as it is.
    recorded = Result(metrics={"trial_id": "t1", "val_auc": 0.8}, checkpoint=None, error=None, path=str(trial),
                      metrics_dataframe=frame.iloc[2:3], best_checkpoints=kept)
    (found,) = outcomes([recorded], lambda r: function.best_checkpoint(r, "val_auc", "max"), "val_auc")
    assert (found.checkpoint, found.checkpoint_value) == (str(trial / "checkpoint_000002"), 0.8)
    # None recorded, and the first row named reported no metric: it never wins.
    unrecorded = Result(metrics={"trial_id": "t1", "val_auc": 0.9}, checkpoint=None, error=None, path=str(trial),
                        metrics_dataframe=frame.iloc[[3, 0]], best_checkpoints=[])
    (found,) = outcomes([unrecorded], lambda r: function.best_checkpoint(r, "val_auc", "max"), "val_auc")
    assert (found.checkpoint, found.checkpoint_value) == (str(trial / "checkpoint_000000"), 0.9)


def test_a_failed_trials_run_its_dead_process_left_running_ends_failed_with_its_error(tracking_uri):
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from raysweep.tracking.reconcile import record_outcomes
    from raysweep.tracking.tags import ERROR_TAG, TRIAL_ID_TAG

    client = MlflowClient()
    experiment_id = client.create_experiment("dead-workers")
    parent = client.create_run(experiment_id).info.run_id
    runs = {t: client.create_run(experiment_id, tags={MLFLOW_PARENT_RUN_ID: parent, TRIAL_ID_TAG: t}).info.run_id
            for t in ("dead", "ended", "fine")}
    client.set_tag(runs["ended"], ERROR_TAG, "ValueError: its own")  # ended by its trial (or the driver's callback)
    client.set_terminated(runs["ended"], "FAILED")
    trials = [TrialOutcome("dead", "/nowhere/dead", True, error="ActorDiedError: killed"),
              TrialOutcome("ended", "/nowhere/ended", True, error="ValueError: its own"),
              TrialOutcome("fine", "/nowhere/fine", False)]
    record_outcomes(client, experiment_id, parent, trials, scheduler="fifo", resumed=False, interrupted=False)
    ended = {t: client.get_run(run_id) for t, run_id in runs.items()}
    assert {t: r.info.status for t, r in ended.items()} == {"dead": "FAILED", "ended": "FAILED", "fine": "FINISHED"}
    assert ended["dead"].data.tags[ERROR_TAG] == "ActorDiedError: killed"
    assert ended["ended"].data.tags[ERROR_TAG] == "ValueError: its own"


def test_a_model_logged_before_is_taken_again_only_from_the_same_checkpoint(tracking_uri):
    """What an attempt cut short, or the leading trial's model logged ahead (raysweep.leading), left on a run."""
    from mlflow.entities import LoggedModelStatus

    from raysweep.trial_model import _logged_before

    client = MlflowClient()
    experiment_id = client.create_experiment("logged-before")
    run = client.create_run(experiment_id)
    own = client.create_logged_model(experiment_id, name="own", source_run_id=run.info.run_id)  # the trial's
    assert _logged_before(client, client.get_run(run.info.run_id), "/ckpt/2") is None  # first call: records
    ready = client.create_logged_model(experiment_id, name="model", source_run_id=run.info.run_id)
    client.finalize_logged_model(ready.model_id, LoggedModelStatus.READY)
    half = client.create_logged_model(experiment_id, name="model", source_run_id=run.info.run_id)  # cut short

    again = client.get_run(run.info.run_id)
    assert _logged_before(client, again, "/ckpt/2") == f"models:/{ready.model_id}"
    assert {m.model_id for m in client.search_logged_models([experiment_id])} == {own.model_id, ready.model_id}
    # Asked for another checkpoint (the trial's best changed): its model is not that one, and goes.
    assert _logged_before(client, again, "/ckpt/1") is None
    assert {m.model_id for m in client.search_logged_models([experiment_id])} == {own.model_id}
    assert client.get_run(run.info.run_id).data.tags[MODEL_CHECKPOINT_TAG] == "/ckpt/1"
    assert half.model_id not in {m.model_id for m in client.search_logged_models([experiment_id])}


def test_the_best_trial_is_ranked_by_its_models_value(tracking_uri):
    import pandas as pd

    trials = pd.DataFrame({"metrics.val_auc": [0.95, 0.80, 0.70], f"tags.{MODEL_VALUE_TAG}": ["0.85", "0.9", None]})
    assert list(analysis.model_values(trials, "val_auc")) == [0.85, 0.9, 0.70]
