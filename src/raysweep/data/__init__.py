"""Training data: generated card-transaction fraud data, or a user's CSV/Parquet file, split three ways.

:func:`load` turns the ``data`` config into a :class:`Dataset` once, on the driver, before Ray starts; Ray's
object store ships it to every trial. Feature columns stay raw (numbers, strings, categoricals, gaps):
:mod:`raysweep.preprocess` encodes them inside each model, fitted on the training split only.

**Task** (``data.task``): ``binary``, ``multiclass``, ``regression``, or ``auto``, decided from the target:

- a non-numeric (strings, categories) or boolean target is classification: binary with 2 distinct values,
  multiclass with more;
- a numeric target with 2 distinct values is binary;
- an integer-valued numeric target with 3 to 20 distinct values, and no more distinct values than 5 % of the
  rows (at least 3 are always allowed), is multiclass;
- every other numeric target is regression.

Classification labels are kept as the user wrote them (:attr:`Dataset.classes`, sorted; a binary task's
positive class is the larger one: 1, True, "Yes"); models train on their codes ``0..k-1``.

**Splits** (``data.split``): ``random`` (stratified by class for classification), ``group`` (every value of
``data.group_column`` on one side only) or ``time`` (ordered by ``data.time_column``: earliest rows train, then
validation, the latest test). The test split (``data.test_fraction``) is seen by no trial: the registry and
the promotion gate score on it.

What cannot be learned is refused with one :class:`RaySweepError` line (see :func:`check_config` and
:func:`from_frame`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raysweep.data.features import check_features
from raysweep.data.fraud import generate_fraud
from raysweep.data.splits import check_class_sizes, group_split, random_split, time_split
from raysweep.data.table import (
    check_columns,
    encode_target,
    existing_file,
    infer_task,
    normalise,
    read_columns,
    read_table,
    words_read_as_gaps,
)
from raysweep.errors import RaySweepError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Dataset", "DatasetInfo", "check_config", "existing_file", "from_frame", "generate_fraud", "infer_task",
           "load", "read_table", "split"]

log = logging.getLogger(__name__)

#: A validation split of fewer rows ranks trials by noise: the sweep says so (under ~38 rows, default fractions).
SMALL_VALIDATION = 10

#: Split names :meth:`Dataset.xy` takes.
SPLITS = ("train", "val", "test")

#: What a data config leaves out is taken from here (the schema's defaults; a sweep recorded before a key
#: existed still loads).
_DEFAULTS: dict[str, Any] = {
    "source": "synthetic", "n_samples": 20_000, "fraud_rate": 0.015, "n_noise_features": 4, "path": None,
    "target": "is_fraud", "task": "auto", "drop": [], "val_fraction": 0.25, "test_fraction": 0.2,
    "split": "random", "group_column": None, "time_column": None, "seed": 0, "sep": ",", "decimal": ".",
    "encoding": "utf-8",
}


@dataclass(frozen=True)
class DatasetInfo:
    """What MLflow records about the data (its lineage)."""

    name: str  # "fraud" for generated data, else the file's stem
    source: str  # the file's absolute path, or the generator call, e.g. "raysweep.data.generate_fraud(...)"
    digest: str  # a short hash of the table's content
    rows: int  # rows in the table, over all splits
    features: int  # feature columns models see


@dataclass(frozen=True)
class Dataset:
    """Raw feature columns and an encoded target, split into train, validation and test.

    ``X_*`` hold the raw feature columns (``data.drop``, the target, group and time columns removed);
    ``y_*`` are int codes ``0..k-1`` indexing :attr:`classes` (classification) or float64 values (regression).
    """

    X_train: pd.DataFrame
    y_train: np.ndarray
    X_val: pd.DataFrame
    y_val: np.ndarray
    X_test: pd.DataFrame | None = None  # None -> no rows (datasets built before the test split existed)
    y_test: np.ndarray | None = None
    task: str = "binary"  # binary | multiclass | regression
    classes: tuple[Any, ...] | None = None  # the user's labels in code order; () for regression; None -> 0..k-1
    info: DatasetInfo | None = None

    def __post_init__(self) -> None:
        if self.X_test is None:
            object.__setattr__(self, "X_test", self.X_train.iloc[:0])
            object.__setattr__(self, "y_test", np.asarray(self.y_train)[:0])
        if self.classes is None:
            k = 0 if self.task == "regression" else max(2, int(np.max(self.y_train, initial=0)) + 1)
            object.__setattr__(self, "classes", tuple(range(k)))

    @property
    def feature_names(self) -> list[str]:
        """The feature columns, in the order models see them."""
        return list(self.X_train.columns)

    @property
    def fraud_rate(self) -> float:
        """Share of rows of class code 1 over all splits (binary data)."""
        ys = (self.y_train, self.y_val, self.y_test)
        return float(sum(np.sum(y == 1) for y in ys) / sum(len(y) for y in ys))

    def xy(self, split: str) -> tuple[pd.DataFrame, np.ndarray]:
        """``(X, y)`` of a split: ``train``, ``val`` (or ``validation``) or ``test``."""
        key = {"validation": "val"}.get(split, split)
        if key not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return getattr(self, f"X_{key}"), getattr(self, f"y_{key}")

    def labels(self, codes) -> np.ndarray:
        """The user's labels of class codes (regression: the values unchanged)."""
        if self.task == "regression":
            return np.asarray(codes)
        uniform = len({type(c) for c in self.classes}) == 1
        table = np.array(self.classes) if uniform else np.array(self.classes, dtype=object)
        return table[np.asarray(codes, dtype="int64")]


def _settings(data_cfg: Any) -> dict[str, Any]:
    """The data config as a plain dict with every key (DictConfig, mapping, dataclass or namespace)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(data_cfg, DictConfig):
        raw = OmegaConf.to_container(data_cfg, resolve=True, enum_to_str=True)
    elif isinstance(data_cfg, Mapping):
        raw = dict(data_cfg)
    elif dataclasses.is_dataclass(data_cfg):
        raw = dataclasses.asdict(data_cfg)
    else:
        raw = dict(vars(data_cfg))
    merged = {**_DEFAULTS, **{k: v.value if isinstance(v, Enum) else v for k, v in raw.items()}}
    merged["drop"] = [str(c) for c in (merged["drop"] or [])]
    for key in ("sep", "decimal"):  # a tab typed at a shell (data.sep='\t') arrives as backslash and t
        merged[key] = "\t" if merged[key] == "\\t" else str(merged[key])
    return merged


def check_config(data_cfg: Any) -> None:
    """Check a ``data`` config before anything loads: the checks the schema cannot express.

    For a file it reads the header only, to check the columns the config names.

    Args:
        data_cfg: The ``data`` config node.

    Raises:
        RaySweepError: One line naming the problem and the fix.
    """
    cfg = _settings(data_cfg)
    source = cfg["source"]
    if source == "none":
        return  # the trainable loads its own data
    if source == "synthetic":
        if cfg["n_samples"] <= 0:
            raise RaySweepError(f"data.n_samples={cfg['n_samples']}; it must be at least 1")
        if not 0.0 < cfg["fraud_rate"] < 0.5:
            raise RaySweepError(f"data.fraud_rate={cfg['fraud_rate']}; it must be between 0 and 0.5")
        if cfg["path"]:
            raise RaySweepError(f"data.path={cfg['path']!r} is set but data.source=synthetic generates its data; "
                                "use data=csv data.path=FILE data.target=COLUMN to read the file, or remove data.path")
    else:
        if not cfg["path"]:
            raise RaySweepError("data=csv needs a file; add data.path=FILE data.target=COLUMN")
        if cfg["target"] in (None, "", "???"):
            raise RaySweepError("data=csv needs the label column; add data.target=COLUMN")
    _check_fractions(cfg)
    _check_split_keys(cfg)
    if source == "file":
        _check_csv_marks(cfg["sep"], cfg["decimal"])
        _check_encoding(cfg["encoding"])
        columns = read_columns(cfg["path"], cfg["sep"], cfg["encoding"])
        # data=csv says target: ???, which merging onto the schema leaves at the generated data's label: a file
        # without that column means data.target was not given.
        if cfg["target"] == _DEFAULTS["target"] and cfg["target"] not in columns:
            raise RaySweepError(f"data=csv needs the label column (the file has no {cfg['target']!r}); "
                                "add data.target=COLUMN")
        check_columns(columns, cfg["target"], cfg["drop"], cfg["group_column"], cfg["time_column"])


def _check_fractions(cfg: dict[str, Any]) -> None:
    for key in ("val_fraction", "test_fraction"):
        if not 0.0 < cfg[key] < 1.0:
            raise RaySweepError(f"data.{key}={cfg[key]}; it must be between 0 and 1")
    if cfg["val_fraction"] + cfg["test_fraction"] >= 1.0:
        raise RaySweepError(f"data.val_fraction={cfg['val_fraction']} and data.test_fraction={cfg['test_fraction']} "
                            "leave no rows for training; lower them so their sum is below 1")


def _check_csv_marks(sep: str, decimal: str) -> None:
    for key, mark in (("sep", sep), ("decimal", decimal)):
        if len(mark) != 1:
            raise RaySweepError(f"data.{key}={mark!r}; it must be one character (e.g. \"data.{key}=';'\")")
    if sep == decimal:
        raise RaySweepError(f"data.sep and data.decimal are both {sep!r}; a file with decimal commas separates its "
                            "fields with another mark: set \"data.sep=';'\" (or what the file uses)")


def _check_encoding(encoding: str) -> None:
    import codecs

    try:
        codecs.lookup(encoding)
    except LookupError:
        raise RaySweepError(f"data.encoding={encoding!r} is no text encoding Python knows; use the file's, such as "
                            "utf-8, cp1252 or latin-1") from None


def _check_split_keys(cfg: dict[str, Any]) -> None:
    target, drop = cfg["target"], cfg["drop"]
    if target in drop:
        raise RaySweepError(f"data.drop names the target {target!r}; remove it from data.drop")
    for kind, key in (("group", "group_column"), ("time", "time_column")):
        column = cfg[key]
        if cfg["split"] == kind and not column:
            what = "whose rows belong together (a customer id)" if kind == "group" else "to order rows by (a date)"
            raise RaySweepError(f"data.split={kind} needs the column {what}; add data.{key}=COLUMN")
        if column and cfg["split"] != kind:
            raise RaySweepError(f"data.{key}={column!r} is only used by data.split={kind}; add data.split={kind} "
                                f"or remove data.{key}")
        if column and column == target:
            raise RaySweepError(f"data.{key} is the target {target!r}; name another column")


def load(data_cfg: Any) -> Dataset | None:
    """Build the dataset a sweep trains on from its ``data`` config.

    Args:
        data_cfg: The ``data`` config node: ``source`` is ``synthetic`` (the fraud generator), ``file``
            (``data.path``, CSV or Parquet by extension) or ``none`` (the trainable loads its own data).

    Returns:
        The :class:`Dataset`, or ``None`` for ``data.source=none``.

    Raises:
        RaySweepError: One line naming what cannot be learned and the fix (see :func:`check_config`,
            :func:`from_frame`).
    """
    cfg = _settings(data_cfg)
    check_config(cfg)
    if cfg["source"] == "none":
        return None
    if cfg["source"] == "synthetic":
        generator = ("n_samples", "fraud_rate", "n_noise_features", "seed")
        frame = generate_fraud(*(cfg[k] for k in generator))
        name = "fraud"
        source = f"raysweep.data.generate_fraud({', '.join(f'{k}={cfg[k]!r}' for k in generator)})"
    else:
        path = existing_file(cfg["path"]).resolve()
        frame = read_table(path, cfg["sep"], cfg["decimal"], cfg["encoding"])
        name, source = path.name.split(".")[0] or path.name, str(path)
        if cfg["target"] in frame and frame[cfg["target"]].isna().any():
            _name_words_read_as_gaps(path, cfg, frame[cfg["target"]].isna().to_numpy())
    # data.drop may name the file's row index, which reading it set aside.
    cfg["drop"] = [c for c in cfg["drop"] if frame.index.name is None or str(c) != frame.index.name]
    options = {k: cfg[k] for k in ("task", "drop", "val_fraction", "test_fraction", "split", "group_column",
                                   "time_column", "seed")}
    return from_frame(frame, cfg["target"], name=name, source=source, **options)


def from_frame(frame: pd.DataFrame, target: str, *, task: str = "auto", drop=(), val_fraction: float = 0.25,
               test_fraction: float = 0.2, split: str = "random", group_column: str | None = None,
               time_column: str | None = None, seed: int = 0, name: str = "data",
               source: str = "pandas.DataFrame") -> Dataset:
    """Check a table, decide its task, encode its target and split it into train, validation and test.

    Args:
        frame: Feature columns plus the target column (and any group/time/dropped columns).
        target: The label column.
        task: ``auto`` (see the module docstring), ``binary``, ``multiclass`` or ``regression``.
        drop: Columns to ignore (IDs).
        val_fraction: Share of all rows for validation.
        test_fraction: Share of all rows for the test split no trial sees.
        split: ``random`` (stratified for classification), ``group`` or ``time``.
        group_column: For ``split=group``: rows sharing a value stay on one side.
        time_column: For ``split=time``: rows are ordered by it, latest last.
        seed: Seed of the random and group splits.
        name: The data's name for lineage.
        source: Where it came from, for lineage.

    Raises:
        RaySweepError: A missing column; a target without values; one class only; a binary class of one row
            (random split); an all-unique string column; a date column; too few rows; a group or time split
            that leaves a class out of training.
    """
    settings = {"source": "file", "path": "-", "target": target, "drop": list(drop), "val_fraction": val_fraction,
                "test_fraction": test_fraction, "split": split, "group_column": group_column,
                "time_column": time_column}
    _check_fractions({**_DEFAULTS, **settings})
    _check_split_keys({**_DEFAULTS, **settings})
    if frame.empty:
        raise RaySweepError(f"the data from {source} has no rows; use a table with data rows")
    check_columns(frame.columns, target, drop, group_column, time_column)
    frame = _labelled(frame, target)
    removed = {target, *drop, *(c for c in (group_column, time_column) if c)}
    X = frame.drop(columns=[c for c in frame.columns if str(c) in removed])
    X.columns = [str(c) for c in X.columns]
    y, classes = encode_target(frame[target], task, target)
    task = "regression" if not classes else "binary" if len(classes) == 2 and task != "multiclass" else "multiclass"
    check_features(X)
    if split == "random":
        if classes:
            check_class_sizes(y, classes, target)
        parts = random_split(len(frame), val_fraction, test_fraction, seed, strata=y if classes else None)
    elif split == "group":
        parts = group_split(frame[group_column].reset_index(drop=True), val_fraction, test_fraction, seed, group_column)
    elif split == "time":
        parts = time_split(frame[time_column].reset_index(drop=True), val_fraction, test_fraction, time_column)
    else:
        raise RaySweepError(f"data.split={split!r} is not known; use data.split=random|group|time")
    if classes:
        _check_training_classes(y[parts[0]], classes, split)
    if len(parts[1]) < SMALL_VALIDATION:
        log.warning("raysweep: the validation split holds %d of the data's %d rows, too few for its metric to tell "
                    "trials apart (or the test split to judge the model); add rows, or raise data.val_fraction",
                    len(parts[1]), len(frame))
    X = normalise(X).reset_index(drop=True)
    Xs = [X.iloc[rows].reset_index(drop=True) for rows in parts]
    ys = [y[rows] for rows in parts]
    info = DatasetInfo(name=name, source=source, digest=digest(frame), rows=len(frame), features=X.shape[1])
    return Dataset(Xs[0], ys[0], Xs[1], ys[1], Xs[2], ys[2], task=task, classes=classes, info=info)


def _name_words_read_as_gaps(path: Path, cfg: Mapping[str, Any], gaps: np.ndarray) -> None:
    """Say which texts of the target pandas read as gaps (``None``, ``NA``): their rows are left out as unlabelled,
    which is right for R's ``NA`` and wrong for a class of that name."""
    words = words_read_as_gaps(path, cfg["target"], gaps, cfg["sep"], cfg["encoding"])
    if words:
        shown = ", ".join(f"{word!r} ({count} row{'s' * (count != 1)})" for word, count in list(words.items())[:3])
        log.warning("raysweep: target column %r holds %s, which pandas reads as missing; if that is a class, rename "
                    "it in the file", cfg["target"], shown)


def _labelled(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """The rows with a target value: a row without one can neither be learned from nor scored on (a table often
    holds rows not labelled yet)."""
    unlabelled = frame[target].isna()
    if unlabelled.all():
        raise RaySweepError(f"target column {target!r} has no values (all {len(frame)} rows are empty); "
                            "check data.target")
    if unlabelled.any():
        log.warning("raysweep: %d of %d rows have no %r (the target) and are left out", int(unlabelled.sum()),
                    len(frame), target)
        frame = frame[~unlabelled.to_numpy()].reset_index(drop=True)
    return frame


def _check_training_classes(y_train: np.ndarray, classes: tuple[Any, ...], split: str) -> None:
    absent = [classes[c] for c in range(len(classes)) if not np.any(y_train == c)]
    if absent:
        raise RaySweepError(f"data.split={split} left class(es) {', '.join(map(repr, absent[:5]))} out of the "
                            "training rows; use data.split=random, or add rows of them early / in more groups")


def split(frame: pd.DataFrame, target: str, val_fraction: float, seed: int, **options: Any) -> Dataset:
    """:func:`from_frame` with the arguments of the older two-way ``split`` (kept for existing callers)."""
    return from_frame(frame, target, val_fraction=val_fraction, seed=seed, **options)


def digest(frame: pd.DataFrame) -> str:
    """A short hash of a table's column names and values: equal tables, equal digests."""
    import pandas as pd

    try:
        values = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    except TypeError:  # unhashable cells (lists from Parquet): hash their text
        values = pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy()
    h = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    h.update(values.tobytes())
    return h.hexdigest()[:16]
