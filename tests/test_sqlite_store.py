"""A new sqlite store starts as a copy of MLflow's empty store (no migrations run), and opens as a new one would."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient

from raysweep.tracking.sqlite_store import empty_store, ready_store, sqlite_file

MIGRATING = "Creating initial MLflow database tables"


@pytest.fixture
def migrations():
    """The messages MLflow logs when it makes a store's tables (it runs its migrations)."""
    said: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: said.append(record.getMessage())
    logger = logging.getLogger("mlflow.store.db.utils")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield said
    logger.removeHandler(handler)
    logger.setLevel(level)


def _schema(path: Path) -> dict[str, set[str]]:
    """Each table's and index's definition, line by line (MLflow's migrations list constraints in any order)."""
    with sqlite3.connect(path) as db:
        rows = db.execute("select name, sql from sqlite_master where sql is not null").fetchall()
    return {name: {line.strip().rstrip(",") for line in sql.splitlines()} for name, sql in rows}


def test_a_new_store_is_mlflows_empty_store_copied_and_opens_like_one_mlflow_made(tmp_path, monkeypatch,
                                                                                 migrations):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    ready_store(f"sqlite:///{tmp_path / 'first.db'}")  # makes the empty store once, for this MLflow schema revision
    template = empty_store()
    assert template is not None and template.parent == tmp_path / "cache" / "raysweep"
    with sqlite3.connect(template) as db:  # no default experiment: its artifact location is the opener's
        assert db.execute("select count(*) from experiments").fetchone() == (0,)

    migrations.clear()
    seeded, made = tmp_path / "seeded.db", tmp_path / "made.db"
    ready_store(f"sqlite:///{seeded}")
    assert not any(MIGRATING in m for m in migrations), migrations
    MlflowClient(f"sqlite:///{made}").search_experiments()  # MLflow's own way: every migration
    assert any(MIGRATING in m for m in migrations)

    assert _schema(seeded) == _schema(made)
    stores = {path: MlflowClient(f"sqlite:///{path}") for path in (seeded, made)}
    opened = {path: [(e.experiment_id, e.name, e.artifact_location) for e in client.search_experiments()]
              for path, client in stores.items()}
    assert opened[seeded] == opened[made] == [("0", "Default", str(tmp_path / "mlruns" / "0"))]
    ids = {path: [client.create_experiment(name) for name in ("a", "b")] for path, client in stores.items()}
    assert ids[seeded] == ids[made]
    client = stores[seeded]
    run = client.create_run(ids[seeded][0])
    client.log_metric(run.info.run_id, "auc", 0.9, step=1)
    client.create_registered_model("m")
    ready_store(f"sqlite:///{seeded}")  # an existing store is only opened
    assert client.get_metric_history(run.info.run_id, "auc")[0].value == 0.9
    assert client.get_registered_model("m").name == "m"


def test_a_store_made_meanwhile_outside_raysweep_is_kept_not_replaced(tmp_path, monkeypatch):
    from raysweep.tracking import sqlite_store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    template = empty_store()
    clients = []

    def template_after_another_process_made_the_store():
        # A notebook's client opens the same new store between raysweep's look and its copy, and logs to it.
        client = MlflowClient(uri)
        clients.append((client, client.create_run(client.create_experiment("notebook")).info.run_id))
        return template

    monkeypatch.setattr(sqlite_store, "empty_store", template_after_another_process_made_the_store)
    ready_store(uri)
    client, run_id = clients[0]
    client.log_metric(run_id, "auc", 0.9)  # its open connection still writes to the store's file
    assert MlflowClient(uri).get_metric_history(run_id, "auc")[0].value == 0.9
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".mlflow.db")] == []  # no scratch copy left


def test_without_a_cache_folder_mlflow_makes_the_tables(tmp_path, monkeypatch, migrations):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    assert empty_store() is None
    ready_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert any(MIGRATING in m for m in migrations)
    assert [e.name for e in MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()] == ["Default"]


def test_other_stores_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ready_store("http://127.0.0.1:9")  # nothing listens there: any request would fail
    ready_store(f"file://{tmp_path / 'mlruns'}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("uri, file", [
    ("sqlite:///mlflow.db", Path("mlflow.db")),
    ("sqlite:////srv/stores/mlflow.db", Path("/srv/stores/mlflow.db")),
    ("sqlite:///runs/mlflow.db?timeout=30", Path("runs/mlflow.db")),
    ("sqlite:///:memory:", None),
    ("sqlite://", None),
])
def test_the_file_of_a_sqlite_uri(uri, file):
    assert sqlite_file(uri) == file
