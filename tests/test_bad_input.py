"""Bad input, as a careless colleague types it: one line, exit 2, before Ray starts, nothing written.

Every row runs the real command line (``python -m raysweep ...``) in a subprocess, from an empty folder, against
a copy of a seeded sqlite store (an experiment, a finished run, a registered version with ``@champion``):

- stderr is exactly one line ``raysweep: <problem>; <fix>``, stdout is empty, and the exit status is 2;
- no Ray started: ``RAY_TMPDIR`` points into the test's folder, where a local Ray would leave its session;
- nothing was written: the store's full SQL dump is unchanged, no Tune folder exists, the working folder is empty.

Tracking servers that do not answer are a socket that accepts connections and never replies, with
``RAYSWEEP_SERVER_TIMEOUT_S`` short; the default (10 s) is checked without waiting for it.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from raysweep import checks
from raysweep.errors import RaySweepError
from raysweep.runtime import free_port

#: What the sweep rows add unless the row sets the key itself: a tiny sweep, should a row ever get through.
SMALL = ["data.n_samples=600", "sweep.num_samples=1", "trainer.iterations=1", "cluster.num_cpus=1", "cluster.verbose=0"]
#: Every hyperparameter of +sweep=fraud fixed: nothing left to search.
FIXED = ["search_space.n_estimators=10", "search_space.max_depth=4", "search_space.min_samples_leaf=1",
         "search_space.max_features=sqrt"]
#: How long a server that does not answer is given in these rows.
SHORT_TIMEOUT_S = "1"
FRAUD = ["+sweep=fraud"]
#: Rows whose check comes after the trainer's: the no-data trainer gets there fastest.
OVERHEAD = ["+sweep=overhead"]
CSV = ["+sweep=fraud", "data=csv"]
HANG = "http://127.0.0.1:{hang}"

# (id, arguments, extra environment, fragment of the one line). {names} are filled in per test.
ROWS = [
    ("no-sweep", [], {}, "no sweep selected; run with +sweep=NAME"),
    ("unknown-sweep", ["+sweep=nope"], {}, "Could not find 'sweep/nope'"),
    ("unknown-key", [*FRAUD, "trainer.colour=red"], {}, "Could not override 'trainer.colour'"),
    ("bad-enum", [*FRAUD, "sweep.mode=maximise"], {}, "sweep.mode"),
    ("unparsable-dimension", [*FRAUD, "search_space.max_depth=choice(4,8"], {}, "search_space.max_depth: cannot parse"),
    ("empty-choice", [*FRAUD, "search_space.max_depth=choice()"], {}, "empty choice is not legal"),
    ("empty-range", [*FRAUD, "search_space.n_estimators=range(5,5)"], {}, "'range(5,5)' is empty"),
    ("metric-not-reported", [*FRAUD, "sweep.metric=accuracy"], {}, "is not reported by trainer 'sklearn'"),
    ("metric-against-its-direction", [*FRAUD, "sweep.metric=val_log_loss"], {}, "set sweep.mode=min"),
    ("tune-call-as-a-value", [*FRAUD, "search_space.min_samples_leaf='lograndint(1, 32)'"], {},
     "is Ray Tune's lograndint()"),
    # The same typed at a shell, which takes the quotes away: Hydra's own parse error came first.
    ("tune-call-unquoted", [*FRAUD, "search_space.min_samples_leaf=lograndint(1, 32)"], {}, "is Ray Tune's lograndint()"),
    ("tune-call-with-module", [*FRAUD, "search_space.max_depth=tune.randint(1,32)"], {}, "is Ray Tune's randint()"),
    ("csv-missing-file", [*CSV, "data.path=missing.csv", "data.target=label"], {}, "data file 'missing.csv' not found"),
    ("csv-unknown-target", [*CSV, "data.path={ids}", "data.target=nope"], {}, "target column 'nope' not in the data"),
    ("csv-id-column", [*CSV, "data.path={ids}", "data.target=label"], {}, "'txn_id' has a different value in every row"),
    ("csv-empty-file", [*CSV, "data.path={empty}", "data.target=label"], {}, "has no rows"),
    ("csv-header-only", [*CSV, "data.path={header}", "data.target=label"], {}, "has no rows"),
    ("csv-ragged", [*CSV, "data.path={ragged}", "data.target=label"], {}, "is ragged: line 3 has 4 fields"),
    ("regressor-on-classes", [*CSV, "data.path={classes}", "data.target=label", "trainer=estimator",
                              "trainer.estimator._target_=sklearn.linear_model.Ridge", "~search_space",
                              "+search_space.alpha=interval(0.1, 1)", "sweep.metric=val_log_loss", "sweep.mode=min"],
     {}, "sklearn.linear_model.Ridge is a regressor but the data's task is multiclass; pick a classifier"),
    # The data's own refusal comes first: the metric is no fault of a sweep whose data.task is wrong.
    ("task-before-metric", [*CSV, "data.path={classes}", "data.target=label", "data.task=binary",
                            "sweep.metric=val_f1_macro"], {},
     "data.task=binary but target column 'label' has 3 classes"),
    ("csv-semicolons", [*CSV, "data.path={semicolons}", "data.target=label"], {},
     "reads as one column 'amount;label': its fields look separated by ';', not ','; add \"data.sep=';'\""),
    ("csv-decimal-commas", [*CSV, "data.path={semicolons}", "data.target=label", "data.sep=';'"], {},
     "holds numbers written with a decimal comma ('0,5'), which would be read as categories; add \"data.decimal=','\""),
    # Hydra's grammar reads a space, ~ or a letter beyond ASCII only quoted.
    ("estimator-without-its-trainer", [*FRAUD, "trainer.estimator._target_=sklearn.linear_model.LogisticRegression"],
     {}, "trainer.estimator is null in this config, so it has no '_target_' to set; trainer=estimator sets it"),
    ("new-key-in-a-map", [*FRAUD, "search_space={{mode: 1}}"], {},
     "search_space={mode: 1}: search_space has no key 'mode' to set; add it on its own with +search_space.mode=1"),
    ("unreadable-value", [*CSV, "data.path={good}", "data.target=Churn Flag é"], {},
     "data.target=Churn Flag é: Hydra cannot read this value bare (a space, ~, or a letter beyond ASCII); quote it: "
     "'data.target=\"Churn Flag é\"'"),
    ("csv-not-utf8", [*CSV, "data.path={latin1}", "data.target=label"], {},
     "is not utf-8 text: byte fc on line 3; set data.encoding to the file's encoding (cp1252 or latin-1"),
    ("csv-unknown-encoding", [*CSV, "data.path={latin1}", "data.target=label", "data.encoding=latin-9x"], {},
     "data.encoding='latin-9x' is no text encoding Python knows"),
    # The fraud sweep's fixed criterion=gini on a target that turns out to be a regression one.
    ("value-the-tasks-model-refuses", [*CSV, "data.path={prices}", "data.target=price", "sweep.metric=val_rmse",
                                       "sweep.mode=min"], {},
     "search_space.criterion='gini' does not suit RandomForestRegressor (the regression task's class)"),
    ("n-samples-negative", [*FRAUD, "data.n_samples=-5"], {}, "data.n_samples=-5; it must be at least 1"),
    ("n-samples-zero", [*FRAUD, "data.n_samples=0"], {}, "data.n_samples=0; it must be at least 1"),
    ("path-with-generated-data", [*FRAUD, "data.path={good}"], {}, "data.source=synthetic generates its data"),
    ("csv-without-target", [*CSV, "data.path={good}"], {}, "data=csv needs the label column"),
    ("empty-search-space", [*FRAUD, "~search_space"], {}, "search_space is empty"),
    ("nothing-left-optuna", [*FRAUD, *FIXED, "search_alg=optuna"], {}, "search_alg=optuna has nothing left to search"),
    ("nothing-left-random", [*FRAUD, *FIXED, "sweep.num_samples=3"], {}, "the 3 trials would all be the same"),
    ("tracking-file-uri", FRAUD, {"MLFLOW_TRACKING_URI": "file://{tmp}/mlruns"}, "MLFLOW_TRACKING_URI='file://"),
    ("tracking-plain-folder", FRAUD, {"MLFLOW_TRACKING_URI": "{tmp}/mlruns"}, "a plain folder is no MLflow tracking"),
    ("tracking-unknown-scheme", [*FRAUD, "mlflow.tracking_uri=sqllite:///x.db"], {}, "unknown scheme 'sqllite:'"),
    ("registry-file-uri", FRAUD, {"MLFLOW_REGISTRY_URI": "file://{tmp}/registry"}, "set MLFLOW_REGISTRY_URI to"),
    ("registry-unknown-scheme", [*FRAUD, "mlflow.registry_uri=s4://bucket/x"], {}, "MLFLOW_REGISTRY_URI"),
    ("remote-without-address", [*OVERHEAD, "cluster=remote"], {}, "cluster=remote joins an existing Ray cluster but"),
    ("remote-auto", [*OVERHEAD, "cluster=remote", "cluster.address=auto"], {}, "would join whichever Ray runs"),
    ("ray-address-auto", OVERHEAD, {"RAY_ADDRESS": "auto"}, "RAY_ADDRESS=auto would join whichever Ray runs"),
    ("unreachable-address", [*OVERHEAD, "cluster.address=127.0.0.1:{closed}"], {}, "no Ray cluster answers there"),
    ("max-outage-zero", [*FRAUD, "mlflow.max_outage_s=0"], {}, "mlflow.max_outage_s=0.0; it must be > 0"),
    ("num-cpus-zero", [*FRAUD, "cluster.num_cpus=0"], {}, "cluster.num_cpus=0; a local Ray needs at least 1 CPU"),
    ("run-name-separator", [*FRAUD, "sweep.run_name=team/fraud-1"], {}, "sweep.run_name='team/fraud-1' is not a"),
    ("registered-model-alias", [*FRAUD, "mlflow.registered_model=fraud@rf"], {}, "mlflow.registered_model 'fraud@rf'"),
    ("custom-not-a-searcher", [*OVERHEAD, "search_alg=custom", "search_alg._target_=collections.OrderedDict"], {},
     "is not a Ray Tune searcher"),
    ("gpu-no-gpu-path", [*OVERHEAD, "trainer.use_gpu=true"], {}, "trainer 'fixed_cost' has no GPU path"),
    ("gpu-sklearn", [*FRAUD, "trainer.use_gpu=true"], {}, "trainer.use_gpu=true"),
    ("copy-empty-name", ["copy", "models:/fraud-rf/1", ""], {}, "DEST_NAME '' is empty"),
    ("copy-slash-name", ["copy", "models:/fraud-rf/1", "a/b"], {}, "DEST_NAME 'a/b' contains '/'"),
    ("copy-at-name", ["copy", "models:/fraud-rf@champion", "x@y"], {}, "DEST_NAME 'x@y' contains '@'"),
    ("sweep-server-hangs", OVERHEAD, {"MLFLOW_TRACKING_URI": HANG}, "does not answer"),
    ("promote-server-hangs", ["promote", "fraud-rf"], {"MLFLOW_TRACKING_URI": HANG}, "does not answer"),
    ("copy-server-hangs", ["copy", "models:/fraud-rf/1", "fraud-rf-prod"], {"MLFLOW_TRACKING_URI": HANG},
     "does not answer"),
    ("copy-destination-hangs", ["copy", "models:/fraud-rf/1", "fraud-rf-prod", "--registry-uri", HANG], {},
     "does not answer"),
    ("analyse-server-hangs", ["analyse"], {"MLFLOW_TRACKING_URI": HANG}, "does not answer"),
    ("registry-server-hangs", ["promote", "fraud-rf"], {"MLFLOW_REGISTRY_URI": HANG}, "point MLFLOW_REGISTRY_URI at"),
    ("analyse-missing-sqlite", ["analyse", "--tracking-uri", "sqlite:///{tmp}/missing.db"], {}, "no MLflow store at"),
    ("analyse-file-uri", ["analyse"], {"MLFLOW_TRACKING_URI": "file://{tmp}/mlruns"}, "a plain folder is no MLflow"),
]


@pytest.fixture(scope="module")
def seeded_store(tmp_path_factory) -> Path:
    """A sqlite store holding one of everything a bad command could add to: experiment, run, model, version."""
    path = tmp_path_factory.mktemp("seeded") / "mlflow.db"
    client = MlflowClient(f"sqlite:///{path}")
    experiment = client.create_experiment("fraud-detection")
    run = client.create_run(experiment, run_name="fraud-seeded")
    client.set_terminated(run.info.run_id, "FINISHED")
    client.create_registered_model("fraud-rf")
    version = client.create_model_version("fraud-rf", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("fraud-rf", "champion", version.version)
    return path


@pytest.fixture(scope="module")
def silent_server():
    """A port that accepts TCP connections (the kernel completes them) and never answers: a hung server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def _dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def _tables(tmp_path: Path) -> dict[str, Path]:
    tables = {"empty": "", "header": "amount,label\n", "ragged": "amount,label,x\n1,0,a\n2,1,b,c\n",
              "good": "amount,label\n" + "".join(f"{i * 1.5},{i % 2}\n" for i in range(40)),
              "ids": "amount,txn_id,label\n" + "".join(f"{i * 1.5},T{i:04d},{i % 2}\n" for i in range(20)),
              "classes": "amount,label\n" + "".join(f"{i * 1.5},{i % 3}\n" for i in range(60)),
              "semicolons": "amount;label\n" + "".join(f"{i},5;{i % 2}\n" for i in range(40)),
              "prices": "amount,price\n" + "".join(f"{i * 1.5},{3.7 * i + 0.01 * i * i:.2f}\n" for i in range(40)),
              # As Excel on Windows saves it: Latin-1 / cp1252, not UTF-8.
              "latin1": "amount,city,label\n" + "".join(f"{i * 1.5},{'Zürich' if i == 1 else 'Bern'},{i % 2}\n"
                                                         for i in range(40))}
    paths = {}
    for name, text in tables.items():
        paths[name] = tmp_path / "data" / f"{name}.csv"
        paths[name].parent.mkdir(exist_ok=True)
        paths[name].write_text(text, encoding="latin-1" if name == "latin1" else "utf-8")
    return paths


@pytest.mark.parametrize("args, extra_env, fragment", [pytest.param(*row[1:], id=row[0]) for row in ROWS])
def test_bad_input_is_one_line_exit_2_before_ray_and_writes_nothing(args, extra_env, fragment, tmp_path,
                                                                    seeded_store, silent_server, tracking_uri):
    store = Path(tracking_uri.removeprefix("sqlite:///"))
    shutil.copy(seeded_store, store)
    before = _dump(store)
    work, raytmp, results = tmp_path / "work", tmp_path / "raytmp", tmp_path / "ray_results"
    work.mkdir()
    # A stray local Ray for "auto" to find (Ray reads this file first): a bad row must not go looking for it.
    (raytmp / "ray").mkdir(parents=True)
    (raytmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    names = {"tmp": tmp_path, "hang": silent_server, "closed": free_port(), **_tables(tmp_path)}
    argv = [a.format(**names) for a in args]
    if argv[:1] and argv[0].startswith("+sweep="):
        given = {a.partition("=")[0] for a in argv}
        argv += [o for o in [*SMALL, f"cluster.storage_path={results}"] if o.partition("=")[0] not in given]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_REGISTRY_URI")}
    env.update({"MLFLOW_TRACKING_URI": tracking_uri, "RAY_TMPDIR": str(raytmp), "PYTHONUNBUFFERED": "1",
                checks.SERVER_TIMEOUT_ENV: SHORT_TIMEOUT_S})
    env.update({k: v.format(**names) for k, v in extra_env.items()})

    done = subprocess.run([sys.executable, "-m", "raysweep", *argv], env=env, cwd=work, capture_output=True,
                          text=True, timeout=90)

    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("raysweep: "), done.stderr[-3000:]
    assert fragment in lines[0] and "Traceback" not in lines[0]
    assert done.stdout == ""
    assert sorted(p.name for p in (raytmp / "ray").iterdir()) == ["ray_current_cluster"], "a Ray session started"
    assert _dump(store) == before, "the tracking store changed"
    assert not results.exists(), "a Tune folder was created"
    assert not any(work.iterdir()), f"files left in the working folder: {sorted(p.name for p in work.iterdir())}"
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "missing.db").exists()


def test_server_timeout_is_10_s_unless_set():
    assert checks.server_timeout({}) == 10.0
    assert checks.server_timeout({checks.SERVER_TIMEOUT_ENV: "2.5"}) == 2.5
    for bad in ("0", "-1", "soon", "inf"):
        with pytest.raises(RaySweepError, match=f"{checks.SERVER_TIMEOUT_ENV}="):
            checks.server_timeout({checks.SERVER_TIMEOUT_ENV: bad})


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "sqlite:////abs/m.db", "postgresql+psycopg://u:p@db/m",
                                 "mysql://db/m", "http://127.0.0.1:5000", "https://mlflow.example", "databricks"])
def test_store_uris_mlflow_serves_pass(uri):
    checks.store_uri(uri)
    checks.store_uri(uri, "MLFLOW_REGISTRY_URI")


@pytest.mark.parametrize("name", ["fraud-rf", "fraud_rf.v2", "Fraud RF"])
def test_registered_model_names_mlflow_takes_pass(name):
    checks.model_name(name, "DEST_NAME")


@pytest.mark.parametrize("address", [None, "127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_a_ray_address_that_answers_or_none_passes(address):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        given = address.format(port=port) if address else None
        assert checks.ray_address(given, {}, timeout=5) == given
        # RAY_ADDRESS (a Ray job's driver has it) names the cluster when the config does not.
        assert checks.ray_address(None, {"RAY_ADDRESS": f"127.0.0.1:{port}"}, required=True) == f"127.0.0.1:{port}"


def test_a_dashboard_url_is_not_taken_for_a_ray_address():
    with pytest.raises(RaySweepError, match="is a dashboard URL, which raysweep submit and ray job take"):
        checks.ray_address(None, {"RAY_ADDRESS": "http://127.0.0.1:8265"})
