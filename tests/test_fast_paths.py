"""What makes sweeps fast must keep them right: reused actors and batched logging leak nothing between trials."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from conftest import SMOKE
from raysweep import sweep
from raysweep.tracking.buffer import MetricBuffer

#: Fixed-cost trials short enough that actors are reused many times over.
OVERHEAD = ["+sweep=overhead", "sweep.num_samples=12", "trainer.iterations=3",
            "trainer.params.seconds_per_iteration=0.01", "cluster.verbose=0", "cluster.reuse_actors=true"]


def test_metric_buffer_writes_every_value_once_in_few_calls(tracking_uri):
    client = MlflowClient(tracking_uri)
    runs = [client.create_run("0").info.run_id for _ in range(2)]
    buffer = MetricBuffer(client, interval_s=3600)
    for step in range(1, 301):
        for i, run_id in enumerate(runs):
            buffer.add(run_id, {"a": step + i, "b": -step}, step)
    assert len(client.get_metric_history(runs[0], "a")) < 300, "nothing is held back"
    buffer.flush()
    for i, run_id in enumerate(runs):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "a"))
        assert history == [(s, float(s + i)) for s in range(1, 301)]
        assert len(client.get_metric_history(run_id, "b")) == 300
        client.set_terminated(run_id)


@pytest.mark.parametrize(
    ("modules", "kept_out"),
    [
        # The CLI's --help and config errors answer before Ray, MLflow or a framework loads.
        (["raysweep.__main__", "raysweep.config", "raysweep.sweep"], ["ray", "mlflow", "torch", "sklearn", "matplotlib"]),
        # A trial process in driver mode: the driver logs, so its trials never load MLflow (~1 s each).
        (["raysweep.trainables.fixed_cost", "raysweep.trainables.sklearn", "raysweep.trainables.torch_mlp",
          "raysweep.tracking.worker"], ["mlflow", "torch", "sklearn"]),
    ],
)
def test_light_paths_leave_heavy_imports_out(modules, kept_out):
    code = f"import sys; import {', '.join(modules)}; print(' '.join(m for m in {kept_out!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == []


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["driver", "worker"])
def test_reused_actors_keep_each_trials_run_params_and_metrics_its_own(mode, ray_address, make_cfg):
    outcome = sweep.run(make_cfg(*OVERHEAD, f"mlflow={mode}"))
    client = MlflowClient()
    children = client.search_runs(
        [outcome.summary.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{outcome.summary.parent_run_id}'"
    )
    assert len(children) == 12 and {c.info.status for c in children} == {"FINISHED"}
    assert len({c.data.tags["raysweep.trial_id"] for c in children}) == 12
    assert len({c.info.run_name for c in children}) == 12
    for child in children:
        x = float(child.data.params["x"])
        history = sorted((m.step, m.value) for m in client.get_metric_history(child.info.run_id, "score"))
        assert history == [(i, pytest.approx(x * i)) for i in (1, 2, 3)], child.info.run_name
    assert set(client.get_run(outcome.summary.parent_run_id).data.params) >= {"sweep.metric"}


@pytest.mark.slow
def test_reused_actors_do_not_carry_a_model_or_seed_into_the_next_trial(ray_address, make_cfg):
    # The same config three times on reused actors: a leaked forest or consumed seed would change the result.
    overrides = ["+sweep=fraud", *SMOKE, "search_alg=grid", "search_space.n_estimators='choice(20, 20, 20)'",
                 "search_space.max_depth=6", "search_space.min_samples_leaf=2", "search_space.max_features=sqrt",
                 "sweep.register=false", "cluster.reuse_actors=true"]
    outcome = sweep.run(make_cfg(*overrides))
    client = MlflowClient()
    histories = {
        tuple(sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val_auc")))
        for run_id in outcome.summary.trials["run_id"]
    }
    assert len(outcome.summary.trials) == 3 and len(histories) == 1


@pytest.mark.slow
def test_benchmark_smoke_run_prints_every_table(ray_address, repo_root, tmp_path):
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "bench/overhead.py", "--smoke"], cwd=repo_root, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for heading in ("installed packages' bytecode: ", "1. sweep wall time / ideal", "2. metrics logged per second",
                    "2b. what the store holds", "SIGKILL mid-logging", "3. seconds from launch",
                    "4. analysis of a sweep with 20 children"):
        assert heading in out.stdout, out.stdout


def test_busy_fixed_cost_trials_spend_cpu_time_and_refuse_a_non_boolean():
    # bench/overhead.py's CPU-bound trials: their seconds are CPU time of the trial's thread, not sleep.
    from omegaconf import OmegaConf

    from raysweep.errors import RaySweepError
    from raysweep.trainables import fixed_cost

    started = time.thread_time()
    fixed_cost.burn(0.05)
    assert time.thread_time() - started >= 0.05
    fixed_cost.validate(OmegaConf.create({"params": {"seconds_per_iteration": 0.1, "busy": True}}), {"x": 1})
    with pytest.raises(RaySweepError, match="busy"):
        fixed_cost.validate(OmegaConf.create({"params": {"busy": "yes"}}), {"x": 1})
