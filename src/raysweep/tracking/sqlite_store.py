"""A new sqlite MLflow store, made once and in milliseconds.

MLflow makes a new sqlite store's tables by running its whole migration history (~1.8 s here, before the store
answers its first call), and without a lock: two sweeps started together on a new ``mlflow.db`` both migrate it,
and one fails. :func:`ready_store` opens a sqlite store once under a file lock, and a new one starts as a copy of
an empty store MLflow made at the same schema revision, kept in raysweep's cache folder (:mod:`raysweep.cache`;
made once per revision and machine). MLflow then adds its default experiment on opening, as it does for any new
store.
"""

from __future__ import annotations

import os
from pathlib import Path


def ready_store(tracking_uri: str) -> None:
    """Open a sqlite store once under a file lock, so that a new one gets its tables exactly once.

    A new store (no file yet) starts as a copy of :func:`empty_store`; where that cannot be made (no writable
    cache folder), MLflow makes its tables as usual. Any other store is left alone.

    Args:
        tracking_uri: The sweep's tracking URI; only ``sqlite:///`` files are touched.
    """
    if not tracking_uri.startswith("sqlite:///") or os.name == "nt":
        return
    import fcntl
    import hashlib
    import tempfile

    from mlflow import MlflowClient

    key = hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"raysweep-store-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        database = sqlite_file(tracking_uri)
        if database is not None and not database.exists() and database.parent.is_dir():
            template = empty_store()
            if template is not None:
                _copy_into_place(template, database)
        MlflowClient(tracking_uri).search_experiments(max_results=1)


def sqlite_file(tracking_uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (relative to the working directory, as sqlite reads it), or ``None``
    for an in-memory database."""
    from sqlalchemy.engine import make_url

    database = make_url(tracking_uri).database
    return Path(database) if database and database != ":memory:" else None


def empty_store() -> Path | None:
    """A sqlite file holding MLflow's tables at the installed MLflow's schema revision, and nothing else.

    Made on first use by MLflow's own schema creation in a scratch file, then renamed into the cache folder (a
    process racing to make it renames its own equal copy). ``None`` when the cache folder cannot be written.
    """
    import tempfile

    from raysweep import cache, compat

    folder = cache.folder()
    path = folder / f"mlflow-schema-{compat.mlflow_schema_revision()}.db"
    if path.is_file():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            made = Path(scratch) / "store.db"
            compat.create_mlflow_tables(str(made))
            os.replace(made, path)
    except OSError:
        return None
    return path


def _copy_into_place(template: Path, database: Path) -> None:
    """Copy ``template`` to ``database`` under a scratch name first, so that no reader sees half a file.

    The copy takes the name only while it is free (a hard link, not a rename): a store that a process outside
    raysweep's lock made meanwhile (a notebook's MLflow client, ``mlflow ui``) is kept, not replaced under its
    open connections, which would then write into a deleted file.
    """
    import shutil

    scratch = database.with_name(f".{database.name}.{os.getpid()}.new")
    try:
        shutil.copyfile(template, scratch)
        os.link(scratch, database)
    except OSError:  # taken meanwhile, or no hard links here: MLflow makes (or has made) the tables instead
        pass
    finally:
        scratch.unlink(missing_ok=True)
