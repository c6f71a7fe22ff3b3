"""After a sweep registered its best model: remove the other trials' Tune checkpoints, so storage stops growing.

Every trial of a sweep leaves its checkpoints (a model each) under the sweep's Tune folder
(``cluster.storage_path``/``sweep.run_name``, a local folder or a URI such as ``s3://...``); Ray Train runs of
distributed trials keep theirs under its ``train/<trial id>`` folder. Once the best trial's model is a registered
model version, only that trial's checkpoints matter; the sweep removes the rest unless
``cluster.keep_checkpoints=true``. Nothing is removed earlier: an interrupted sweep, or one that registered
nothing, keeps everything a resume needs. Each trial's results (``result.json``, ``progress.csv``) stay.

:func:`plan_removal` and :func:`summary_line` are pure; :func:`apply` lists and removes through the storage's
filesystem (pyarrow's, as Ray's own storage uses).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Tune and Ray Train name every checkpoint folder so.
CHECKPOINT_PREFIX = "checkpoint_"
#: Sub-folder of the sweep's Tune folder where Ray Train runs of distributed trials keep their checkpoints
#: (see ``raysweep.tuning.trial_context``).
TRAIN_FOLDER = "train"


@dataclass(frozen=True)
class TrialCheckpoints:
    """One trial's checkpoint folders (paths in the storage's filesystem) and their total size in bytes."""

    trial_id: str
    folders: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class Retention:
    """What the sweep kept and removed."""

    kept: tuple[TrialCheckpoints, ...]
    removed: tuple[TrialCheckpoints, ...]
    keep_all: bool

    def line(self) -> str:
        """The summary line (see :func:`summary_line`)."""
        return summary_line(self.kept, self.removed, self.keep_all)


def plan_removal(trials: Sequence[TrialCheckpoints], keep_trial_id: str | None, keep_all: bool,
                 protected: Iterable[str] = ()) -> tuple[list[TrialCheckpoints], list[TrialCheckpoints]]:
    """Split trials into those whose checkpoints stay and those whose checkpoints go.

    Args:
        trials: Every trial's checkpoints; trials without any are left out of both lists.
        keep_trial_id: The registered trial.
        keep_all: ``cluster.keep_checkpoints``.
        protected: Paths that must survive whatever the trial ids say (the registered checkpoint): a trial with
            a folder that holds one of them, or lies inside one, stays.

    Returns:
        ``(kept, removed)``.
    """
    protected = [p.rstrip("/") for p in protected if p]
    kept, removed = [], []
    for trial in trials:
        if not trial.folders:
            continue
        guarded = any(_inside(p, f) or _inside(f, p) for p in protected for f in trial.folders)
        (kept if keep_all or trial.trial_id == keep_trial_id or guarded else removed).append(trial)
    return kept, removed


def _inside(path: str, folder: str) -> bool:
    folder = folder.rstrip("/")
    return path == folder or path.startswith(folder + "/")


def summary_line(kept: Sequence[TrialCheckpoints], removed: Sequence[TrialCheckpoints], keep_all: bool) -> str:
    """``kept 1 trial (2.1 MB), removed 15 (31.4 MB); cluster.keep_checkpoints=true keeps all`` (trials' checkpoints)."""
    kept_part = f"kept {_trials(len(kept))} ({format_size(sum(t.size for t in kept))})"
    if keep_all:
        return f"{kept_part}: all of them (cluster.keep_checkpoints=true)"
    removed_part = f"removed {len(removed)} ({format_size(sum(t.size for t in removed))})"
    return f"{kept_part}, {removed_part}; cluster.keep_checkpoints=true keeps all"


def _trials(n: int) -> str:
    return f"{n} trial" + ("" if n == 1 else "s")


def format_size(size: int) -> str:
    """Bytes for people: ``0 B``, ``512 B``, ``2.1 kB``, ``31.4 MB``, ``1.2 GB`` (powers of 1000)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def after_registration(client, summary, trials, run_dir: str, keep_all: bool) -> Retention | None:
    """Keep the registered trial's checkpoints and remove the others' (all stay with ``keep_all``).

    Call only once the sweep ended and its best model is registered. A storage problem is reported as a warning
    and leaves the rest in place: the sweep trained and registered, and must not fail here.

    Args:
        client: Client bound to the sweep's tracking store.
        summary: The sweep's :class:`raysweep.analysis.SweepSummary` (its best run is the registered trial).
        trials: Each trial's :class:`raysweep.tracking.reconcile.TrialOutcome` (its id and folder).
        run_dir: The sweep's Tune folder.
        keep_all: ``cluster.keep_checkpoints``.

    Returns:
        What was kept and removed, or ``None`` when the storage could not be read or cleaned.
    """
    from raysweep.tracking.tags import CHECKPOINT_TAG, TRIAL_ID_TAG

    try:
        tags = client.get_run(summary.best_run_id).data.tags
        return apply(trials, run_dir, tags.get(TRIAL_ID_TAG), keep_all, [tags.get(CHECKPOINT_TAG, "")])
    except Exception as error:  # noqa: BLE001 - leftover checkpoints cost space, not correctness
        log.warning("checkpoints of the other trials not removed from %s: %s: %s", run_dir, type(error).__name__, error)
        return None


def apply(trials, run_dir: str, keep_trial_id: str | None, keep_all: bool,
          protected: Iterable[str] = ()) -> Retention:
    """List every trial's checkpoints under the sweep's Tune folder and remove those of all but the kept trial.

    Args:
        trials: The sweep's trials, each with ``trial_id`` (``None`` for one that never reported) and ``path`` (its
            folder): :class:`raysweep.tracking.reconcile.TrialOutcome`.
        run_dir: The sweep's Tune folder (:attr:`raysweep.plan.SweepPlan.run_dir`): a path or a URI.
        keep_trial_id: Tune's id of the registered trial.
        keep_all: ``cluster.keep_checkpoints``: remove nothing, only measure.
        protected: Paths never removed (the registered checkpoint).
    """
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(run_dir)
    root = root.rstrip("/")
    folders: dict[str, list[str]] = {}
    for trial in trials:
        trial_id = trial.trial_id or _folder_name(trial.path)
        folders.setdefault(trial_id, []).extend(_checkpoints(fs, _fs_path(trial.path)))
    # Ray Train runs of distributed trials: one folder per trial, named by its trial id.
    for info in _listing(fs, f"{root}/{TRAIN_FOLDER}", recursive=False):
        if info.type == pyarrow.fs.FileType.Directory:
            folders.setdefault(info.base_name, []).extend(_checkpoints(fs, info.path))
    trials = [TrialCheckpoints(t, tuple(f), sum(_size(fs, p) for p in f)) for t, f in folders.items()]
    kept, removed = plan_removal(trials, keep_trial_id, keep_all, [_fs_path(p) for p in protected])
    for trial in removed:
        for folder in trial.folders:
            fs.delete_dir(folder)
    return Retention(tuple(kept), tuple(removed), keep_all)


def _fs_path(path: str) -> str:
    """A path in the storage's filesystem: a URI loses its scheme (``s3://b/x`` -> ``b/x``), a path stays."""
    if "://" in path:
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(path)[1]
    return path.rstrip("/")


def _folder_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _listing(fs, folder: str, recursive: bool):
    import pyarrow.fs

    return fs.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True, recursive=recursive))


def _checkpoints(fs, folder: str) -> list[str]:
    import pyarrow.fs

    return sorted(info.path for info in _listing(fs, folder, recursive=False)
                  if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith(CHECKPOINT_PREFIX))


def _size(fs, folder: str) -> int:
    import pyarrow.fs

    return sum(info.size or 0 for info in _listing(fs, folder, recursive=True) if info.type == pyarrow.fs.FileType.File)
