"""A user's table: read it, check what cannot be learned, decide the task and encode the target.

Every refusal is one :class:`RaySweepError` line naming the problem and the fix, raised while the sweep is
still on the driver, before Ray starts.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raysweep.data.features import holds_dates, text_matches
from raysweep.errors import RaySweepError

if TYPE_CHECKING:
    import pandas as pd

#: An integer target with at most this many distinct values may be multiclass (see :func:`infer_task`).
MAX_AUTO_CLASSES = 20
#: ... and only if it has no more distinct values than this share of the rows (but at least 3 are allowed).
AUTO_CLASS_SHARE = 0.05

_CSV_SUFFIXES = (".csv", ".txt", ".csv.gz", ".tsv", ".tsv.gz")
_TSV_SUFFIXES = (".tsv", ".tsv.gz")  # read with tabs where data.sep is left at its default
_PARQUET_SUFFIXES = (".parquet", ".pq")


def existing_file(path: str | Path) -> Path:
    """The path of a data file that exists, or of a folder of Parquet files (as Spark and Dask write a table).

    Raises:
        RaySweepError: The file does not exist, or the folder holds no Parquet file, or another file too.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        if not any(p.rglob("*.parquet")):
            raise RaySweepError(f"data.path {str(p)!r} is a folder without Parquet files; point it at a CSV or "
                                "Parquet file, or a folder of Parquet parts")
        # pyarrow reads every file of the folder but those it takes for metadata (a name, or a folder's, starting
        # with "." or "_": Spark's _SUCCESS, .crc files); any other file would end in its traceback.
        other = next((f for f in sorted(p.rglob("*")) if f.is_file() and not f.name.lower().endswith(_PARQUET_SUFFIXES)
                      and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts)), None)
        if other is not None:
            raise RaySweepError(f"data.path {str(p)!r} is a folder of Parquet parts that also holds "
                                f"{str(other.relative_to(p))!r}, which is not Parquet; move it out of the folder")
        return p
    if not p.is_file():
        raise RaySweepError(f"data file {str(p)!r} not found; set data.path to an existing CSV or Parquet file")
    return p


def _kind(p: Path) -> str:
    name = p.name.lower()
    if p.is_dir() or name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    raise RaySweepError(f"data file {str(p)!r} is neither .csv (.tsv, .txt) nor .parquet; convert it or rename it")


def _separator(p: Path, sep: str) -> str:
    return "\t" if sep == "," and p.name.lower().endswith(_TSV_SUFFIXES) else sep


def read_columns(path: str | Path, sep: str = ",", encoding: str = "utf-8") -> list[str]:
    """The column names of a CSV or Parquet file, read from its header only.

    Raises:
        RaySweepError: The file does not exist, is empty, has an extension raysweep does not read, its header
            reads as one column holding another separator, or is not text in ``encoding``.
    """
    import pandas as pd

    p = existing_file(path)
    if _kind(p) == "parquet":
        import pyarrow.parquet as pq

        return list((pq.ParquetDataset(p).schema if p.is_dir() else pq.read_schema(p)).names)
    sep = _separator(p, sep)
    try:
        columns = [str(c) for c in pd.read_csv(p, nrows=0, sep=sep, encoding=encoding).columns]
    except pd.errors.EmptyDataError:
        raise _empty(p) from None
    except UnicodeDecodeError:
        raise _not_encoded(p, encoding) from None
    if len(columns) == 1 and (other := _other_separator(columns[0], sep)):
        raise RaySweepError(
            f"data file {str(p)!r} reads as one column {columns[0]!r}: its fields look separated by {other!r}, "
            f"not {sep!r}; add {_sep_override(other)}"
        )
    return columns


#: Field separators a CSV export uses besides the comma (spreadsheets set to a language with a decimal comma
#: write ";").
_SEPARATORS = (",", ";", "\t", "|")


def _other_separator(header: str, sep: str) -> str | None:
    counts = {candidate: header.count(candidate) for candidate in _SEPARATORS if candidate != sep}
    best = max(counts, key=counts.get)
    return best if counts[best] else None


def _sep_override(sep: str) -> str:
    # Quoted for a shell: Hydra's parser refuses a bare ';', and a tab is typed as \t.
    return "\"data.sep='\\t'\"" if sep == "\t" else f"\"data.sep='{sep}'\""


def read_table(path: str | Path, sep: str = ",", decimal: str = ".", encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV or Parquet file, chosen by its extension.

    Args:
        path: The file.
        sep: A CSV file's field separator.
        decimal: A CSV file's decimal mark.
        encoding: A CSV file's text encoding.

    Raises:
        RaySweepError: The file does not exist, has an extension raysweep does not read, is empty, is
            ragged (a line with more or fewer fields than the header), or holds a column of numbers written with
            a decimal comma while ``decimal`` is ``"."``, or is not text in ``encoding``.
    """
    import pandas as pd

    p = existing_file(path)
    if _kind(p) == "parquet":
        frame = pd.read_parquet(p)
    else:
        sep = _separator(p, sep)
        _check_fields(p, sep, encoding)
        try:
            frame = pd.read_csv(p, sep=sep, decimal=decimal, encoding=encoding)
        except pd.errors.EmptyDataError:
            raise _empty(p) from None
        except pd.errors.ParserError as error:
            raise RaySweepError(f"data file {str(p)!r} cannot be parsed ({str(error).strip().splitlines()[0]}); "
                                "fix the file") from None
        frame = _without_row_index(frame)
    if frame.empty:
        raise _empty(p)
    if decimal == "." and (column := _decimal_comma_column(frame)) is not None:
        example = frame[column].dropna().iloc[0]
        raise RaySweepError(
            f"column {column!r} of data file {str(p)!r} holds numbers written with a decimal comma ({example!r}), "
            "which would be read as categories; add \"data.decimal=','\""
        )
    return frame


def words_read_as_gaps(path: Path, column: str, gaps, sep: str = ",", encoding: str = "utf-8") -> dict[str, int]:
    """The texts of a CSV column that pandas read as missing values, with how many rows hold each.

    pandas reads ``NA``, ``None``, ``null``, ``N/A`` and a few more as gaps (as R writes ``NA``), which is what
    most files mean; a class literally named ``None`` is read as one too. Empty fields are not counted.

    Args:
        path: The CSV file, already read.
        column: The column to look at.
        gaps: Which rows of the table read from ``path`` have a gap in ``column`` (booleans, in file order).
        sep: The file's field separator.
        encoding: The file's text encoding.
    """
    import pandas as pd

    if _kind(path) != "csv":
        return {}
    try:  # the column alone, as text: the table read before tells which rows became gaps
        raw = pd.read_csv(path, sep=_separator(path, sep), encoding=encoding, usecols=[column], dtype=str,
                          keep_default_na=False)[column]
    except (ValueError, pd.errors.ParserError):  # a column pandas cannot select alone: nothing to say
        return {}
    words = raw[np.asarray(gaps, dtype=bool)].str.strip()
    return {str(word): int(count) for word, count in words[words != ""].value_counts().items()}


def _without_row_index(frame: pd.DataFrame) -> pd.DataFrame:
    """A CSV's first column with no name and a different value in every row is the index that pandas' ``to_csv``
    or R's ``write.csv`` writes beside the data (pandas reads the empty name as ``Unnamed: 0``): it becomes the
    frame's index, not a feature a model would learn the rows' order from."""
    first = frame.columns[0]
    if str(first) == "Unnamed: 0" and frame[first].notna().all() and frame[first].is_unique:
        return frame.set_index(first)
    return frame


#: A number written with a decimal comma (12,5 or -0,25).
_DECIMAL_COMMA = r"[+-]?\d+,\d+"


def _decimal_comma_column(frame: pd.DataFrame) -> str | None:
    """The first text column whose values are all numbers with a decimal comma."""
    return next((str(column) for column in frame.columns if text_matches(frame[column], _DECIMAL_COMMA)), None)


def _empty(p: Path) -> RaySweepError:
    return RaySweepError(f"data file {str(p)!r} has no rows; point data.path at a table with a header and data rows")


def _not_encoded(p: Path, encoding: str) -> RaySweepError:
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    with opener(p, "rb") as handle:  # decoded again whole: a text stream fails a chunk ahead of the line it reads
        raw = handle.read()
    try:
        raw.decode(encoding)
        where = ""
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        where = f": byte {raw[error.start:error.start + 1].hex()} on line {line}"
    return RaySweepError(
        f"data file {str(p)!r} is not {encoding} text{where}; set data.encoding to the file's encoding (cp1252 or "
        "latin-1 for a file Excel saved on Windows), or save the file as UTF-8"
    )


def _check_fields(p: Path, sep: str = ",", encoding: str = "utf-8") -> None:
    # pandas fills a short line with gaps without a word, and says little about a long one: a ragged line is a
    # broken file (a stray comma, a cut-off export), so the line is named.
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    with opener(p, "rt", newline="", encoding=encoding) as handle:
        rows = csv.reader(handle, delimiter=sep)
        try:
            header = next(rows, None)
            if not header:
                raise _empty(p)
            for row in rows:
                if row and len(row) != len(header):  # pandas skips blank lines, and so does this
                    raise RaySweepError(
                        f"data file {str(p)!r} is ragged: line {rows.line_num} has {len(row)} fields, the header "
                        f"{len(header)}; fix that line (a stray or missing separator, or quote values holding {sep!r})"
                    )
        except UnicodeDecodeError:
            raise _not_encoded(p, encoding) from None


def check_columns(columns, target: str, drop=(), group_column: str | None = None,
                  time_column: str | None = None) -> None:
    """Check that the columns the data config names are in the table.

    Raises:
        RaySweepError: The target, a ``data.drop`` entry, the group or the time column is missing.
    """
    present = [str(c) for c in columns]
    shown = ", ".join(present[:12]) + (", ..." if len(present) > 12 else "")
    if target not in present:
        raise RaySweepError(f"target column {target!r} not in the data (columns: {shown}); "
                            "set data.target to the label column")
    missing = [str(c) for c in drop if str(c) not in present]
    if missing:
        raise RaySweepError(f"data.drop names column(s) {', '.join(map(repr, missing))} not in the data "
                            f"(columns: {shown}); remove them from data.drop")
    for key, column in (("data.group_column", group_column), ("data.time_column", time_column)):
        if column and column not in present:
            raise RaySweepError(f"{key}={column!r} is not a column of the data (columns: {shown}); fix {key}")


def infer_task(y: pd.Series) -> str:
    """The task ``data.task=auto`` picks for a target column (without gaps).

    The rule: a non-numeric or boolean target is classification (binary with 2 distinct values, else
    multiclass); a numeric target with 2 distinct values is binary; an integer-valued numeric target with 3 to
    :data:`MAX_AUTO_CLASSES` distinct values, and no more distinct values than :data:`AUTO_CLASS_SHARE` of the
    rows (at least 3 allowed), is multiclass; every other numeric target is regression.
    """
    import pandas as pd

    k = y.nunique()
    numeric = pd.api.types.is_numeric_dtype(y.dtype) and not pd.api.types.is_bool_dtype(y.dtype)
    if not numeric or k <= 2:
        return "binary" if k <= 2 else "multiclass"
    if _integer_valued(y) and k <= MAX_AUTO_CLASSES and k <= max(3, AUTO_CLASS_SHARE * len(y)):
        return "multiclass"
    return "regression"


def _integer_valued(y: pd.Series) -> bool:
    values = y.to_numpy(dtype="float64")
    return bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))


def encode_target(y: pd.Series, task: str, target: str) -> tuple[np.ndarray, tuple[Any, ...]]:
    """Turn a target column into what models train on.

    Args:
        y: The target column.
        task: ``auto``, ``binary``, ``multiclass`` or ``regression``; ``auto`` is decided by :func:`infer_task`.
        target: The column's name, for messages.

    Returns:
        ``(y, classes)``: classification: int codes ``0..k-1`` and the user's labels in code order (sorted, so
        a binary task's class 1, its positive class, is the larger label: 1, True, "Yes"); regression: float64
        values and ``()``.

    Raises:
        RaySweepError: Gaps in the target, one value only, or a target the requested task cannot use.
    """
    import pandas as pd

    gaps = int(y.isna().sum())
    if gaps:
        raise RaySweepError(f"target column {target!r} has {gaps} missing value(s); fill them or drop those rows")
    if holds_dates(y):
        raise RaySweepError(f"target column {target!r} holds dates or times, which are neither classes nor numbers "
                            "a model predicts; pick another data.target")
    k = y.nunique()
    if k < 2:
        raise RaySweepError(f"target column {target!r} has one class only ({_label(y.iloc[0])!r}); "
                            "a model needs at least two classes (or values) to learn from")
    chosen = infer_task(y) if task == "auto" else task
    if chosen == "regression":
        if not pd.api.types.is_numeric_dtype(y.dtype):
            raise RaySweepError(f"data.task=regression needs a numeric target, but column {target!r} holds "
                                f"{y.dtype} values; use data.task=auto or a numeric target")
        return y.to_numpy(dtype="float64"), ()
    if chosen == "binary" and k != 2:
        raise RaySweepError(f"data.task=binary but target column {target!r} has {k} classes; "
                            f"use data.task={infer_task(y)} (what auto picks for it)")
    if chosen == "multiclass" and pd.api.types.is_float_dtype(y.dtype) and not _integer_valued(y):
        # 136.59, 91.51, ... as classes: each value its own class, a measurement mistaken for labels.
        raise RaySweepError(f"data.task=multiclass but target column {target!r} holds {k} distinct fractional "
                            f"numbers (e.g. {_label(y.iloc[0])!r}), a measurement rather than classes; "
                            "use data.task=regression (or auto)")
    if pd.api.types.is_numeric_dtype(y.dtype) and not pd.api.types.is_bool_dtype(y.dtype) and _integer_valued(y):
        y = y.astype("int64")  # 0.0/1.0 read from a file are the labels 0 and 1
    classes = _sorted_labels(y.unique())
    _check_class_names(classes, target)
    codes = y.map({label: code for code, label in enumerate(classes)}).to_numpy(dtype="int64")
    return codes, classes


def _check_class_names(classes: tuple[Any, ...], target: str) -> None:
    """Refuse labels that cannot each name a column of the model's answer (one per class, beside ``label``)."""
    from raysweep.predictions import LABEL

    shown: dict[str, Any] = {}
    for label in classes:
        if str(label) == LABEL or str(label) in shown:
            clash = "names the column of each row's predicted class" if str(label) == LABEL else \
                f"prints as {shown[str(label)]!r} does"
            raise RaySweepError(f"class {label!r} of target column {target!r} {clash}, and every class names a "
                                "column of the model's answer; rename that value in the data")
        shown[str(label)] = label


def _label(value: Any) -> Any:
    # numpy scalars -> plain Python values, so labels print, compare and name columns as users wrote them.
    return value.item() if isinstance(value, np.generic) else value


def _sorted_labels(values) -> tuple[Any, ...]:
    labels = [_label(v) for v in values]
    try:
        return tuple(sorted(labels))
    except TypeError:  # labels of mixed types: a stable order all the same
        return tuple(sorted(labels, key=lambda v: (type(v).__name__, str(v))))


def normalise(X: pd.DataFrame) -> pd.DataFrame:
    """Feature columns with one kind of gap, ``NaN``, and plain numpy dtypes where pandas' nullable ones were.

    scikit-learn's imputers cannot test ``pd.NA`` and treat ``None`` as a category, so: nullable numbers become
    float64, nullable booleans and strings become object columns, and ``None`` / ``pd.NA`` become ``NaN``.
    """
    import pandas as pd

    out = {}
    for column in X.columns:
        values = X[column]
        dtype = values.dtype
        if isinstance(dtype, pd.CategoricalDtype) or isinstance(dtype, np.dtype) and dtype.kind in "biuf":
            out[column] = values
        elif pd.api.types.is_bool_dtype(dtype):  # nullable boolean
            out[column] = values.astype("bool") if not values.isna().any() else _objects(values)
        elif pd.api.types.is_numeric_dtype(dtype):  # nullable Int64 / Float64
            out[column] = values.astype("int64") if pd.api.types.is_integer_dtype(dtype) and not values.isna().any() \
                else values.astype("float64")
        elif pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype) and dtype.na_value is pd.NA:
            out[column] = _objects(values)
        else:
            out[column] = values
    return pd.DataFrame(out, index=X.index)


def _objects(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), np.nan)
