"""trainer=function: a user's plain Ray Tune function, unchanged, in both logging modes, and what gets registered."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from raysweep.errors import NoModelError, RaySweepError
from raysweep.tracking.tags import ERROR_TAG, PARENT_ROLE, ROLE_TAG
from raysweep.trainables import function, load

USER_CODE = Path(__file__).parent / "user_code"
EXPERIMENT = "function-trainer"
#: A user's own sweep, spelled as overrides: their function, its search space, its metric.
IRIS = [
    "+sweep=overhead", "trainer=function", "data=none", "trainer.function=tune_functions:train_iris",
    "~search_space.x", "+search_space.C='choice(0.1, 1.0)'", "+trainer.params.epochs=2",
    "sweep.metric=val_accuracy", "sweep.num_samples=2", "sweep.register=true",
    "mlflow.registered_model=iris-fn", f"mlflow.experiment_name={EXPERIMENT}", "cluster.verbose=0",
]


@pytest.fixture(autouse=True)
def user_code(monkeypatch):
    """The user's modules are importable, as from their working directory."""
    monkeypatch.syspath_prepend(str(USER_CODE))
    yield
    sys.modules.pop("tune_functions", None)


def _runs(client: MlflowClient):
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], max_results=100)
    parent = next(r for r in runs if r.data.tags.get(ROLE_TAG) == PARENT_ROLE)
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


# --- without Ray ------------------------------------------------------------------------------------------------

def test_the_function_trainer_loads_and_takes_its_metrics_from_the_trials():
    trainer = load("raysweep.trainables.function")
    assert trainer.METRICS == () and trainer.MAKES_MODELS and trainer.NEEDS_DATA


@pytest.mark.parametrize("spec, fragment", [
    (None, "MODULE:FUNC"),
    ("tune_functions", "MODULE:FUNC"),
    ("no_such_module_here:train", "no module named 'no_such_module_here'"),
    ("tune_functions:nope", "has no 'nope'"),
    ("tune_functions:train_with_two_arguments", "takes (config, epochs)"),
])
def test_a_function_that_is_not_a_tune_function_is_refused_in_one_line(make_cfg, spec, fragment):
    cfg = make_cfg(*IRIS, f"trainer.function={spec if spec else 'null'}")
    with pytest.raises(RaySweepError, match="trainer.function") as error:
        function.validate(cfg.trainer, {})
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_second_parameter_named_data_receives_the_dataset():
    import tune_functions

    assert function.takes_data(tune_functions.train_with_data)
    assert not function.takes_data(tune_functions.train_iris)
    assert function.import_root(tune_functions.train_iris) == str(USER_CODE.resolve())


def test_reports_are_checked_logged_and_passed_on_then_put_back():
    import ray.tune

    import tune_functions

    class Log:
        def __init__(self):
            self.logged, self.flushed = [], 0

        def metrics(self, values, step):
            self.logged.append((step, values))

        def flush(self):
            self.flushed += 1

    sent, log = [], Log()
    original = ray.tune.report
    reports = function.Reports("val_accuracy", "trainer.function=tune_functions:f", log)
    fake = lambda metrics, **kwargs: sent.append(metrics)  # noqa: E731 - Tune's report, stood in for
    with reports.intercept(tune_functions.train_iris, ray.tune):
        assert ray.tune.report is not original and tune_functions.report is not original
        ray.tune.report({"val_accuracy": 0.5, "note": "x", "flag": True})
        with pytest.raises(RaySweepError, match=r"sweep.metric='val_accuracy' is not among .*\(loss\)"):
            tune_functions.report({"loss": 1.0})
    assert ray.tune.report is original and tune_functions.report is original
    # Through the interceptor, but with Tune's own report replaced by the fake for the check above.
    reports.report(fake, {"val_accuracy": 0.7, "n": 3}, checkpoint="ckpt")
    assert sent == [{"val_accuracy": 0.7, "n": 3}]
    assert log.logged == [(1, {"val_accuracy": 0.5}), (2, {"val_accuracy": 0.7, "n": 3.0})] and log.flushed == 1


def test_a_restarted_trials_reports_go_on_from_the_step_of_its_checkpoint(tmp_path):
    from ray import tune

    class Log:
        def __init__(self):
            self.steps = []

        def metrics(self, values, step):
            self.steps.append(step)

        def flush(self):
            pass

    sent = []
    first, folder = Log(), tmp_path / "ckpt"
    folder.mkdir()
    reports = function.Reports("acc", "m:f", first)
    for epoch in (1, 2):
        reports.report(lambda metrics, **kw: sent.append(kw["checkpoint"]), {"acc": 0.1 * epoch},
                       checkpoint=tune.Checkpoint.from_directory(folder))
    assert function.restored_step(sent[-1]) == 2 and function.restored_step(None) == 0
    # Tune runs the function anew from that checkpoint: its next report is step 3, not a replay of step 1.
    again = Log()
    restarted = function.Reports("acc", "m:f", again, start=function.restored_step(sent[-1]))
    restarted.report(lambda metrics, **kw: None, {"acc": 0.3})
    restarted.finish()  # nothing more to report after a restart is no error: it reported before
    assert first.steps == [1, 2] and again.steps == [3]
    (folder / function.STEP_FILE).write_text("not a number")
    assert function.restored_step(tune.Checkpoint.from_directory(folder)) == 0


def test_an_interceptor_a_stopped_trial_left_behind_is_replaced_not_stacked():
    import ray.tune

    import tune_functions

    original = ray.tune.report
    left = function.Reports("val_accuracy", "x", None).intercept(tune_functions.train_iris, ray.tune)
    left.__enter__()  # never left: Tune stopped that trial in the middle of its function
    try:
        with function.Reports("val_accuracy", "x", None).intercept(tune_functions.train_iris, ray.tune):
            assert getattr(ray.tune.report, "__raysweep_report_of__") is original
            assert getattr(tune_functions.report, "__raysweep_report_of__") is original
        assert ray.tune.report is original and tune_functions.report is original
    finally:
        ray.tune.report = tune_functions.report = original


def test_a_function_that_never_reports_fails_its_trial_alone():
    # Not a RaySweepError, which stops the whole sweep: a function may return early on a config it skips.
    with pytest.raises(function.NoReport, match="returned without reporting") as error:
        function.Reports("val_accuracy", "m:f", None).finish()
    assert not isinstance(error.value, RaySweepError)


@pytest.mark.parametrize("fails", [False, True])
def test_a_run_a_driver_mode_function_opened_itself_ends_with_its_trial_and_is_named(fails, tracking_uri, caplog):
    from raysweep.trainables import _reports

    _reports._warned.clear()
    with caplog.at_level("WARNING", logger="raysweep.trainables._reports"), \
            pytest.raises(ValueError) if fails else contextlib.nullcontext():
        with function.stray_run_ended("trainer.function=m:f"):
            mlflow.log_param("own", 1)  # opens a run: the function's, not the sweep's
            if fails:
                raise ValueError("boom")
    assert mlflow.active_run() is None
    (run,) = MlflowClient().search_runs(["0"])
    assert run.info.status == ("FAILED" if fails else "FINISHED")
    assert [r.getMessage() for r in caplog.records] == [
        f"raysweep: trainer.function=m:f logged to MLflow run {run.info.run_id} (experiment 0), outside the sweep: "
        "with mlflow=driver the sweep logs what the function reports; set mlflow=worker to have its own mlflow calls "
        "land in its trial's child run"]
    with function.stray_run_ended("trainer.function=m:f"):  # nothing opened: nothing to end or say
        pass


def _saved_model(folder: Path) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    mlflow.sklearn.save_model(LogisticRegression(max_iter=200).fit(X, y), folder, pip_requirements=["scikit-learn"],
                              input_example=X.head(2))
    return folder


@pytest.mark.parametrize("where", [".", "model"])
def test_a_checkpoints_mlflow_model_is_logged_as_it_is(tmp_path, where):
    import mlflow.sklearn

    _saved_model(tmp_path / "checkpoint" / where)
    (tmp_path / "checkpoint" / "other.txt").write_text("not part of the model")
    with mlflow.start_run() as run:
        info = function.log_model(tmp_path / "checkpoint")
    model = mlflow.pyfunc.load_model(info.model_uri)
    assert model.metadata.run_id == run.info.run_id and "sklearn" in model.metadata.flavors
    assert len(model.predict(model.input_example)) == 2
    assert MlflowClient().get_logged_model(info.model_id).source_run_id == run.info.run_id


def test_a_checkpoint_without_an_mlflow_model_has_nothing_to_register(tmp_path):
    (tmp_path / "weights.npy").write_bytes(b"")
    with pytest.raises(NoModelError, match="no MLflow model"):
        function.log_model(tmp_path)


class _Callable:
    def __call__(self, config):
        pass


@pytest.mark.parametrize("function, name", [
    (lambda config: None, "lambda"),
    (_Callable(), "run_function"),  # no __name__: raysweep's own
])
def test_trials_are_named_after_the_users_function(function, name):
    from raysweep.trainables.function import _named_after

    assert _named_after(function).__name__ == name


def test_the_named_trainable_runs_the_users_function_with_its_settings(monkeypatch):
    from raysweep.trainables import function as module

    def train(config):
        pass

    calls = []
    monkeypatch.setattr(module, "run_function", lambda *args: calls.append(args))
    trainable = module._named_after(train)
    trainable({"x": 1}, {"s": 2}, "data")
    assert trainable.__name__ == "train" and calls == [({"x": 1}, {"s": 2}, "data")]


# --- sweeps -----------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("mode", ["worker", "driver"])
def test_a_user_function_sweeps_unchanged_in_both_logging_modes(mode, ray_address, make_cfg, tracking_uri):
    from raysweep import sweep

    outcome = sweep.run(make_cfg(*IRIS, f"mlflow={mode}"))
    client = MlflowClient()
    parent, children = _runs(client)
    assert len(children) == 2 and {r.info.status for r in [parent, *children]} == {"FINISHED"}
    for child in children:
        assert child.info.run_name.startswith("train_iris_")  # named after the user's function, as Tune would
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [1, 2]
        # What the function reported is logged, and nothing of Tune's bookkeeping.
        assert {"val_accuracy", "train_accuracy"} <= set(child.data.metrics)
        assert not {"time_total_s", "pid", "training_iteration", "note"} & set(child.data.metrics)
        assert child.data.params["C"] in ("0.1", "1.0")
        if mode == "worker":  # the function's own mlflow calls landed in its trial's run
            assert child.data.params["own_param"] == "from-the-function"
            assert [m.step for m in client.get_metric_history(child.info.run_id, "own_metric")] == [1, 2]
        else:
            assert "own_metric" not in child.data.metrics
    # The best checkpoint's MLflow model, registered as it was saved.
    assert outcome.registration.version == "1"
    model = mlflow.pyfunc.load_model("models:/iris-fn/1")
    assert "sklearn" in model.metadata.flavors and model.metadata.run_id == outcome.summary.best_run_id


@pytest.mark.slow
def test_a_function_that_does_not_report_the_sweep_metric_stops_with_one_line(ray_address, make_cfg, tracking_uri):
    from raysweep import sweep

    # Three trials one at a time: the first one's failure stops the sweep before the others start.
    cfg = make_cfg(*IRIS, "trainer.function=tune_functions:train_without_the_metric", "sweep.num_samples=3",
                   "sweep.max_concurrent_trials=1")
    with pytest.raises(RaySweepError, match="val_accuracy") as error:
        sweep.run(cfg)
    assert "\n" not in str(error.value)
    assert str(error.value).startswith("sweep.metric='val_accuracy' is not among what")
    parent, children = _runs(MlflowClient())
    assert parent.info.status == "FAILED" and [c.info.status for c in children] == ["FAILED"]
    assert "sweep.metric='val_accuracy' is not among what trainer.function=tune_functions:train_without_the_metric " \
           "reported (loss)" in children[0].data.tags[ERROR_TAG]


@pytest.mark.slow
def test_a_trial_whose_function_returns_without_reporting_fails_alone(ray_address, make_cfg, tracking_uri):
    from raysweep import sweep

    cfg = make_cfg(*IRIS, "trainer.function=tune_functions:train_iris_unless_c_is_small", "search_alg=grid",
                   "sweep.num_samples=1", "sweep.max_failures=0")
    outcome = sweep.run(cfg)
    parent, children = _runs(MlflowClient())
    assert parent.info.status == "FINISHED" and sorted(c.info.status for c in children) == ["FAILED", "FINISHED"]
    failed, finished = sorted(children, key=lambda c: c.info.status)
    assert failed.data.params["C"] == "0.1" and "returned without reporting" in failed.data.tags[ERROR_TAG]
    assert outcome.summary.best_run_id == finished.info.run_id and outcome.registration.version == "1"


@pytest.mark.slow
def test_a_worker_mode_trial_retried_from_its_checkpoint_logs_every_step_once(ray_address, make_cfg, tracking_uri):
    from raysweep import sweep

    cfg = make_cfg(*IRIS, "mlflow=worker", "trainer.function=tune_functions:train_failing_once",
                   "trainer.iterations=4", "sweep.num_samples=1", "sweep.max_failures=1", "sweep.register=false",
                   "~search_space.C", "+search_space.x=0.5")
    sweep.run(cfg)
    client = MlflowClient()
    _, (child,) = _runs(client)
    history = sorted(client.get_metric_history(child.info.run_id, "val_accuracy"), key=lambda m: m.step)
    # Failed after two reports, restarted from the second one's checkpoint: four steps, each once, in order.
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 1.0), (3, 1.5), (4, 2.0)]
    assert child.info.status == "FINISHED"


@pytest.mark.slow
def test_a_worker_mode_trial_whose_process_dies_ends_failed_with_the_cause(ray_address, make_cfg, tracking_uri):
    from raysweep import sweep

    cfg = make_cfg(*IRIS, "mlflow=worker", "trainer.function=tune_functions:train_dying_unless_c_is_large",
                   "search_alg=grid", "sweep.num_samples=1", "sweep.register=false")
    outcome = sweep.run(cfg)
    parent, children = _runs(MlflowClient())
    # Its process could not end its own run: the driver ends it FAILED, with Ray's word for what happened.
    dead, = [c for c in children if c.data.params["C"] == "0.1"]
    assert dead.info.status == "FAILED" and "died" in dead.data.tags[ERROR_TAG]
    assert parent.info.status == "FINISHED" and dict(outcome.summary.status_counts) == {"FAILED": 1, "FINISHED": 1}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["driver", "worker"])
def test_the_best_checkpoint_is_registered_when_the_trials_score_peaked_before_its_end(mode, ray_address, make_cfg,
                                                                                      tracking_uri):
    from raysweep import sweep

    cfg = make_cfg(*IRIS, "trainer.function=tune_functions:train_peaking", "trainer.iterations=4",
                   "sweep.num_samples=1", "~search_space.C", "+search_space.x=0.5", f"mlflow={mode}")
    outcome = sweep.run(cfg)
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/iris-fn/{outcome.registration.version}"))
    assert (folder / "epoch.txt").read_text() == "2" and outcome.summary.best_value == 2.5
    # The live best on the parent run is that model's value too (a function logs no final model, in either mode).
    parent = MlflowClient().get_run(outcome.summary.parent_run_id)
    assert parent.data.metrics[f"sweep_best_{outcome.summary.metric}"] == 2.5


@pytest.mark.slow
def test_a_driver_mode_functions_own_mlflow_calls_leave_no_run_running(ray_address, make_cfg, tracking_uri):
    from raysweep import sweep

    sweep.run(make_cfg(*IRIS, "trainer.function=tune_functions:train_logging_on_its_own", "sweep.register=false",
                       f"+trainer.params.store='{tracking_uri}'"))
    client = MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]


@pytest.mark.slow
def test_a_function_with_data_and_no_model_in_its_checkpoint_registers_nothing(ray_address, make_cfg, tracking_uri):
    from raysweep import sweep

    cfg = make_cfg(*IRIS, "data=fraud", "data.n_samples=1000", "trainer.function=tune_functions:train_with_data",
                   "~trainer.params.epochs", "sweep.num_samples=1")
    outcome = sweep.run(cfg)
    assert outcome.registration.version is None
    assert not MlflowClient().search_registered_models()
    report = outcome.report()
    lines = [line for line in report.splitlines() if "no MLflow model" in line]
    assert len(lines) == 1, report
    parent, children = _runs(MlflowClient())
    assert children[0].data.metrics["rows"] > 0  # the function trained on raysweep's data
