"""What makes sweeps fast must keep them right: reused actors and batched logging leak nothing between trials."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from conftest import SMOKE
from raysweep import sweep
from raysweep.leading import cpus_idle
from raysweep.tracking import queries
from raysweep.tracking.buffer import MetricBuffer
from raysweep.tracking.driver import _Writer
from raysweep.tracking.lifecycle import TrialRuns
from raysweep.tracking.tags import ERROR_TAG, NODE_TAG, PARENT_ROLE, ROLE_TAG

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


class _CountingClient(MlflowClient):
    """A real client that records what each of its ``log_batch`` calls carried (and its other writes by name)."""

    calls: list[set[str] | str]

    def log_batch(self, run_id, **entities):
        self.calls.append({kind for kind, values in entities.items() if values})
        return super().log_batch(run_id, **entities)

    def create_run(self, *args, **kwargs):
        self.calls.append("create_run")
        return super().create_run(*args, **kwargs)

    def set_terminated(self, *args, **kwargs):
        self.calls.append("set_terminated")
        return super().set_terminated(*args, **kwargs)


def test_tags_nobody_waits_for_are_written_with_the_runs_metrics_in_one_call(tracking_uri):
    client = MlflowClient(tracking_uri)
    counting = _CountingClient(tracking_uri)
    counting.calls = []
    measured, tagged, full = (client.create_run("0").info.run_id for _ in range(3))
    buffer = MetricBuffer(counting, interval_s=3600)
    buffer.add(measured, {"a": 1.0}, 1)
    buffer.tag(measured, {"node": "10.0.0.1"})
    buffer.tag(tagged, {"node": "10.0.0.2"})  # no metrics yet: written on its own at the flush
    assert counting.calls == [] and "node" not in client.get_run(measured).data.tags
    buffer.flush()
    assert counting.calls == [{"metrics", "tags"}, {"tags"}]
    assert client.get_run(measured).data.tags["node"] == "10.0.0.1" and client.get_run(measured).data.metrics == \
        {"a": 1.0}
    assert client.get_run(tagged).data.tags["node"] == "10.0.0.2"
    # MLflow takes 1,000 entities per call, tags included: a tag and 1,000 metrics are two calls, nothing lost.
    counting.calls.clear()
    buffer.tag(full, {"node": "10.0.0.3"})
    for step in range(1, 1001):
        buffer.add(full, {"a": float(step)}, step)
    buffer.flush()
    assert counting.calls == [{"metrics", "tags"}, {"metrics"}]
    assert [m.step for m in client.get_metric_history(full, "a")] == list(range(1, 1001))
    assert client.get_run(full).data.tags["node"] == "10.0.0.3"
    for run_id in (measured, tagged, full):
        client.set_terminated(run_id)


def _sweep(tracking_uri: str, name: str) -> tuple[MlflowClient, str, str]:
    """A client, an experiment and a parent run in it."""
    client = MlflowClient(tracking_uri)
    experiment_id = queries.experiment_id(client, name)
    return client, experiment_id, client.create_run(experiment_id, tags={ROLE_TAG: PARENT_ROLE}).info.run_id


def _counted_runs(tracking_uri: str) -> tuple[MlflowClient, _CountingClient, TrialRuns]:
    client, experiment_id, parent = _sweep(tracking_uri, "calls")
    counting = _CountingClient(tracking_uri)
    counting.calls = []
    return client, counting, TrialRuns(counting, experiment_id, parent, metrics=["score"])


@pytest.mark.parametrize(
    ("error", "expected_tags"),
    [
        (None, {NODE_TAG}),
        ("ValueError: boom", {NODE_TAG, ERROR_TAG}),
    ],
)
def test_a_short_trials_run_is_three_writes_params_and_error_with_its_metrics(tracking_uri, error, expected_tags):
    client, counting, runs = _counted_runs(tracking_uri)
    runs.start("t1", "train_t1", {"lr": 0.1, "depth": 3})
    runs.metrics("t1", {"score": 0.5}, 1)
    runs.tags("t1", {NODE_TAG: "10.0.0.1"}, with_metrics=True)
    runs.end("t1", "FAILED" if error else "FINISHED", error)
    assert counting.calls == ["create_run", {"params", "metrics", "tags"}, "set_terminated"]
    run = client.get_run(runs.run_id("t1"))
    assert run.data.params == {"lr": "0.1", "depth": "3"} and run.data.metrics == {"score": 0.5}
    assert expected_tags <= set(run.data.tags) and run.info.status == ("FAILED" if error else "FINISHED")


def test_a_worker_mode_trials_run_writes_its_params_in_one_call_and_ends_with_one(tracking_uri, monkeypatch):
    import mlflow
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from raysweep.tracking.worker import WorkerLogging, trial_log

    client, experiment_id, parent = _sweep(tracking_uri, "worker-calls")
    calls = []
    # Counted where every client writes, Ray's setup_mlflow and MLflow's fluent API included.
    for name in ("create_run", "log_param", "log_batch", "set_tag", "update_run_info"):
        def spy(store, *args, _name=name, _write=getattr(SqlAlchemyStore, name), **kwargs):
            calls.append(_name)
            return _write(store, *args, **kwargs)

        monkeypatch.setattr(SqlAlchemyStore, name, spy)
    params = {"n_estimators": 100, "max_depth": 10, "min_samples_leaf": 4, "max_features": "sqrt"}
    with trial_log(WorkerLogging(tracking_uri, None, experiment_id, parent), params, "train_t1", "t1") as log:
        log.metrics({"val_auc": 0.9}, 1)
    # Ray's setup_mlflow alone would write one request per hyperparameter, and mlflow.end_run a second end.
    assert calls == ["create_run", "log_batch", "log_batch", "update_run_info"]
    run = client.get_run(queries.trial_run_id(client, experiment_id, parent, "t1"))
    assert run.data.params == {k: str(v) for k, v in params.items()} and run.data.metrics == {"val_auc": 0.9}
    assert run.info.status == "FINISHED" and mlflow.active_run() is None


def test_a_worker_mode_run_still_ends_when_mlflows_end_run_fails_to_write(tracking_uri, monkeypatch):
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from raysweep.tracking.worker import WorkerLogging, trial_log

    client, experiment_id, parent = _sweep(tracking_uri, "worker-end")
    write, failures = SqlAlchemyStore.update_run_info, []

    def fails_once(store, *args, **kwargs):
        if not failures:  # mlflow.end_run's write: it has dropped the active run already
            failures.append(args)
            raise MlflowException("database is locked")
        return write(store, *args, **kwargs)

    monkeypatch.setattr(SqlAlchemyStore, "update_run_info", fails_once)
    with trial_log(WorkerLogging(tracking_uri, None, experiment_id, parent), {"lr": 0.1}, "train_t1", "t1"):
        pass
    run = client.get_run(queries.trial_run_id(client, experiment_id, parent, "t1"))
    assert failures and run.info.status == "FINISHED" and mlflow.active_run() is None


def test_params_tags_and_metrics_past_mlflows_limits_per_call_are_all_written(tracking_uri):
    client = MlflowClient(tracking_uri)
    counting = _CountingClient(tracking_uri)
    counting.calls = []
    run_id = client.create_run("0").info.run_id
    buffer = MetricBuffer(counting, interval_s=3600)
    buffer.params(run_id, {f"p{i}": str(i) for i in range(150)})
    buffer.tag(run_id, {f"t{i}": str(i) for i in range(150)})
    buffer.add(run_id, {f"m{i}": float(i) for i in range(900)}, 1)
    buffer.flush()
    # 100 params and 100 tags a call, 1,000 entities in all: two calls.
    assert counting.calls == [{"params", "tags", "metrics"}] * 2
    data = client.get_run(run_id).data
    assert len(data.params) == 150 and len({k for k in data.tags if k.startswith("t")}) == 150
    assert len(data.metrics) == 900
    client.set_terminated(run_id)


def test_a_new_runs_params_show_within_seconds_while_no_trial_reports(tracking_uri):
    client, _, runs = _counted_runs(tracking_uri)
    writer = _Writer(idle=runs.write_due)
    writer.submit(runs.start, "t1", "train_t1", {"lr": 0.1})

    def params() -> dict[str, str]:
        try:
            return client.get_run(runs.run_id("t1")).data.params
        except KeyError:  # the writer has not started the run yet
            return {}

    deadline = time.monotonic() + 30  # the writer writes them a second after its last queued write
    while not params() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert params() == {"lr": "0.1"}
    writer.submit(runs.end, "t1", "FINISHED")
    writer.close()


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


#: The checks before Ray of a sweep of a built-in scikit-learn family, then of one with a parameter it lacks.
CHECKS = """
import sys
from raysweep.compose import compose
from raysweep.errors import RaySweepError
from raysweep.plan import make_plan
make_plan(compose(["+sweep=fraud"]))
try:
    make_plan(compose(["+sweep=fraud", "+search_space.leaves=3"]))
except RaySweepError as error:
    print("refused" if "'leaves' is not a parameter of RandomForestClassifier" in str(error) else error)
print("sklearn" in sys.modules)
"""


def test_a_built_in_familys_parameters_are_checked_without_scikit_learn_once_cached(tmp_path):
    # Importing scikit-learn was ~1 s of the checks that must pass before Ray starts.
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", CHECKS], capture_output=True, text=True, timeout=120, check=True,
                           env=env) for _ in range(2)]
    assert [run.stdout.split() for run in runs] == [["refused", "True"], ["refused", "False"]]
    assert [p.name for p in (tmp_path / "raysweep").iterdir()] == [
        f"params-sklearn.ensemble.RandomForestClassifier-sklearn.ensemble.RandomForestRegressor-scikit-learn-"
        f"{importlib.metadata.version('scikit-learn')}.json"]


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


#: Burns 0.6 s of CPU.
BURN = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.6:\n    pass\n"


@pytest.fixture
def default_sweep_bench(repo_root):
    """bench/default_sweep.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("default_sweep_bench", repo_root / "bench" / "default_sweep.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_default_sweep_bench_counts_the_cpu_of_a_process_and_of_what_it_starts(default_sweep_bench, tmp_path):
    """bench/default_sweep.py's CPU accounting: the root and its descendants, each once, by kind."""
    bench = default_sweep_bench
    worker = tmp_path / "default_worker.py"  # named as Ray's worker script is
    worker.write_text(BURN)
    root_code = f"import subprocess, sys\nchild = subprocess.Popen([sys.executable, sys.argv[1]])\n{BURN}child.wait()\n"
    started = time.time()
    root = subprocess.Popen([sys.executable, "-c", root_code, str(worker)])
    with bench.CpuMeter(root.pid, every=0.05) as meter:
        assert root.wait(timeout=60) == 0
    cpu = meter.seconds(wall=time.time() - started, cpus=2)
    # Each burned 0.6 s (plus its interpreter's start); a process's last ~0.05 s may fall after its last sample
    # (the sampling thread waits its turn on a loaded machine).
    assert 0.5 <= cpu["CPU s: driver"] < 1.2, cpu
    assert 0.5 <= cpu["CPU s: trial processes"] < 1.2, cpu
    assert cpu["CPU s: Ray's own processes"] == cpu["CPU s: other processes"] == 0, cpu
    assert cpu["CPU s: all"] == pytest.approx(cpu["CPU s: driver"] + cpu["CPU s: trial processes"])


def test_default_sweep_bench_reads_a_plain_tune_run_from_the_trials_results(default_sweep_bench, tmp_path):
    """The plain-Tune column's numbers come from each trial's result.json: the last report's fit seconds, the first
    fit's start (first report less its fit seconds) and the last report's time."""
    reports = {  # trial -> (train_time_s, reported_at) of each report
        "trial_a": [(1.0, 110.0), (2.5, 111.5)],
        "trial_b": [(0.5, 104.0), (1.5, 105.0), (3.0, 106.5)],
    }
    for trial, rows in reports.items():
        folder = tmp_path / "plain" / trial
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(
            "".join(json.dumps({"train_time_s": fit, "reported_at": at, "time_total_s": fit + 1}) + "\n"
                    for fit, at in rows))
    numbers = default_sweep_bench._from_tune(tmp_path, launched=100.0, exited=114.0, cpus=2)
    assert numbers["trials"] == 2
    assert numbers["fit seconds (all trials)"] == pytest.approx(5.5)
    assert numbers["limit"] == pytest.approx(2.75)
    assert numbers["ratio"] == pytest.approx(14.0 / 2.75)
    assert numbers["launch -> first fit began"] == pytest.approx(3.5)  # trial_b: 104.0 - 0.5
    assert numbers["last trial ended -> exit"] == pytest.approx(2.5)  # trial_a's last report at 111.5


# A local Ray as a sweep starts it: which of its processes are workers, a few seconds after it started.
WORKERS_AFTER_START = """
import json, time
import psutil, ray
from raysweep import runtime

runtime.start(num_cpus=2)
time.sleep(3)
names = []
for process in psutil.Process().children(recursive=True):
    try:
        names.append(process.cmdline()[0])
    except (psutil.Error, IndexError):
        pass
print(json.dumps(sorted(name for name in names if name.startswith("ray::"))))
ray.shutdown()
"""


def test_a_local_ray_starts_no_idle_workers_that_no_trial_would_take(tmp_path):
    """Ray starts one idle worker per CPU when a driver connects; Tune's trial actors cannot use them (they carry
    a runtime env of their own: test_compat), so they only took CPU from the first trials."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", WORKERS_AFTER_START], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    workers = json.loads(done.stdout.splitlines()[-1])
    assert "ray::IDLE" not in workers, workers


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


@pytest.mark.parametrize(
    ("statuses", "planned", "capacity", "idle"),
    [
        (["TERMINATED", "RUNNING"], 2, 2, True),  # the last trial runs alone: a slot stays empty
        (["TERMINATED", "TERMINATED", "ERROR"], 3, 2, True),  # every trial ended
        (["TERMINATED", "RUNNING", "RUNNING"], 3, 2, False),  # every slot busy
        (["TERMINATED", "RUNNING", "PENDING"], 3, 2, False),  # a trial waits for the empty slot
        (["TERMINATED", "RUNNING"], 3, 2, False),  # the searcher has not made the last trial yet
        (["TERMINATED", "PAUSED", "RUNNING"], 3, 2, False),  # a paused trial (PBT) takes its slot back
        (["TERMINATED", "RUNNING"], 2, 1, False),  # one trial at a time: never a slot to spare
    ],
)
def test_cpus_idle_only_when_no_trial_will_take_the_room(statuses, planned, capacity, idle):
    assert cpus_idle(statuses, planned, capacity) is idle


def test_the_leading_model_is_the_best_finished_trials_once_a_slot_stays_empty(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from ray.tune import Checkpoint, Result

    from raysweep import compat, leading

    values = {"t1": 0.7, "t2": float("nan"), "t3": 0.9, "t4": 0.9, "t5": 0.8}  # t4 ties t3: t3 finished first
    monkeypatch.setattr(compat, "trial_result", lambda trial: Result(
        metrics={"score": values[trial.trial_id]}, checkpoint=None, error=None, path=str(tmp_path),
        best_checkpoints=[(Checkpoint(str(tmp_path / trial.trial_id)), {"score": values[trial.trial_id]})]))
    logged = []
    monkeypatch.setattr(leading.LeadingModel, "_log", lambda self, trial_id, checkpoint: logged.append(trial_id))
    callback = leading.LeadingModel(tracking_uri="unused", experiment_id="0", parent_id="p", metric="score",
                                    mode="max", trainer_name="function", planned=5, capacity=2)
    trials = [SimpleNamespace(trial_id=t, status="RUNNING") for t in values]

    def end(trial_id):
        trial = next(t for t in trials if t.trial_id == trial_id)
        callback.on_trial_complete(0, trials, trial)  # Tune calls it while the trial still reads RUNNING
        trial.status = "TERMINATED"
        if callback._thread is not None:
            callback._thread.join()

    for trial_id in ("t2", "t1", "t3"):  # t4 and t5 still run: no slot to spare
        end(trial_id)
    assert logged == [] and callback._leader[1] == "t3"  # NaN never leads
    end("t4")  # t5 runs alone now: the leader's model is logged, once
    end("t5")
    assert logged == ["t3"] and callback._leader[1] == "t3"


@pytest.mark.slow
def test_the_leading_trials_model_is_logged_ahead_and_the_registered_one_is_the_only_model(ray_address, make_cfg,
                                                                                          caplog):
    caplog.set_level(logging.DEBUG, logger="raysweep.leading")
    outcome = sweep.run(make_cfg("+sweep=fraud", *SMOKE))  # 4 trials, two at a time: the last runs alone
    lines = [r.getMessage() for r in caplog.records if r.name == "raysweep.leading"]
    ahead = [line for line in lines if "logged ahead in" in line]
    assert 1 <= len(ahead) <= 2, lines  # at the last trial's start of running alone, and if it then leads
    client = MlflowClient()
    summary = outcome.summary
    children = client.search_runs([summary.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{summary.parent_run_id}'")
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    models = [m for c in children for m in client.search_logged_models(
        [summary.experiment_id], filter_string=f"source_run_id = '{c.info.run_id}'")]
    # A model logged ahead for a trial that a later one beat is deleted; registration took the leader's.
    (model,) = models
    version = client.get_model_version("fraud-rf", outcome.registration.version)
    assert model.source_run_id == summary.best_run_id and version.source == f"models:/{model.model_id}"
    # What was logged ahead and kept is that model. When the last trial took the lead while the model it beat was
    # still being logged, that one was deleted and registration logged the leader's itself: none is kept.
    assert len(ahead) - len([line for line in lines if "deleted" in line]) in (0, 1)


# What a scikit-learn sweep's driver imports ahead for registration, and a forest's trusted types listed in a
# process that imported nothing ahead: skops comes, torch (installed here) does not.
SKLEARN_REGISTRATION = """
import sys
from raysweep import runtime, tabular
from raysweep.trainables import sklearn as trainer
{}
print("skops.io" in sys.modules, "torch" in sys.modules)
"""


@pytest.mark.parametrize("step", [
    "runtime.import_modules(trainer.REGISTRATION_IMPORTS)",
    "from sklearn.ensemble import RandomForestClassifier\n"
    "assert tabular.trusted_types(RandomForestClassifier(3).fit([[0], [1]], [0, 1]), sample=True) is not None",
])
def test_a_sklearn_models_registration_imports_skops_without_torch(step):
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-c", SKLEARN_REGISTRATION.format(step)], capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.split() == ["True", "False"]
