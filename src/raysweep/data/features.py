"""What a feature column may hold: refusals for columns a model cannot learn from, warnings for doubtful ones.

Every refusal is one :class:`RaySweepError` line naming the column and the fix; the fix is written as it is typed
at a shell (:func:`override`).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from raysweep.errors import RaySweepError

if TYPE_CHECKING:
    import pandas as pd

#: A string column is refused as an ID when every value differs, from this many rows up (a tiny table's
#: names are legitimately unique).
ID_MIN_ROWS = 20


#: A value Hydra's override parser and a shell both take bare, as the same string (``01``, ``null`` or ``true``
#: would come back as a number, None or a boolean).
_BARE = re.compile(r"(?!(?i:null|true|false|inf|nan)$)[A-Za-z_][\w.\-]*", re.ASCII)


def override(key: str, value: Any, *, listed: bool = False) -> str:
    """``key=value`` (``key=[value]`` if ``listed``) as typed at a shell: quoted for Hydra and for the shell where
    ``value`` holds a space, a colon, a quote or another character either reads (``'data.drop=["Unnamed: 0"]'``)."""
    import shlex

    text = str(value)
    shown = text if _BARE.fullmatch(text) else '"' + text.replace('"', '\\"') + '"'  # Hydra escapes only quotes
    typed = f"{key}=[{shown}]" if listed else f"{key}={shown}"
    return typed if shown == text else shlex.quote(typed)


def check_features(X: pd.DataFrame) -> None:
    """Refuse feature columns a model cannot use as they are; name (a warning) a column of row numbers.

    Raises:
        RaySweepError: No feature columns, a string column with a different value in every row (an ID), a column
            of dates (or their text), or of numbers with a few placeholders."""
    import pandas as pd

    if X.shape[1] == 0:
        raise RaySweepError("the data has no feature columns besides the target (and data.drop); add feature columns")
    for column in X.columns:
        values = X[column]
        if holds_dates(values):
            raise RaySweepError(
                f"column {column!r} holds dates or times, which models do not read; add it to data.drop, derive "
                f"numeric columns from it, or split on it with data.split=time {override('data.time_column', column)}"
            )
        if (span := _row_numbers(values)) is not None:  # may be a feature yet: named, not refused
            logging.getLogger(__name__).warning(
                "raysweep: column %r numbers the rows (%d to %d, each once), from which a model learns only the order "
                "they came in; add it to data.drop (%s) unless it means more", column, *span,
                override("data.drop", column, listed=True))
        is_text = pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype)
        if not is_text or isinstance(values.dtype, pd.CategoricalDtype):
            continue
        if len(values) >= ID_MIN_ROWS and values.notna().all() and values.nunique() == len(values):
            raise RaySweepError(
                f"column {column!r} has a different value in every row (an ID?), so nothing can be learned from it; "
                f"add it to data.drop ({override('data.drop', column, listed=True)})"
            )
        if placeholders := _placeholders(values):
            raise RaySweepError(
                f"column {column!r} holds numbers but also {', '.join(map(repr, placeholders))}, so it would be read "
                "as categories (every number its own); clear those fields in the file (an empty field is a gap, "
                f"which models impute) or add it to data.drop ({override('data.drop', column, listed=True)})"
            )


def _row_numbers(values: pd.Series) -> tuple[int, int] | None:
    """``(first, last)`` of a whole-number column holding each number of a run once (a row number, an id)."""
    import pandas as pd

    if len(values) < ID_MIN_ROWS or not pd.api.types.is_integer_dtype(values.dtype) or values.isna().any():
        return None
    lo, hi = int(values.min()), int(values.max())
    return (lo, hi) if hi - lo + 1 == len(values) and values.is_unique else None


#: A date, or a date and time, as CSV exports and ``str(timestamp)`` write them (2024-03-01, 2024-03-01T12:30:00Z).
_ISO_DATE = r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?"


def holds_dates(values: pd.Series) -> bool:
    """Whether a column holds dates or times: as such, or as text (read from a CSV they are strings, which would be
    one-hot encoded, every later date a category training never saw)."""
    import pandas as pd

    return (pd.api.types.is_datetime64_any_dtype(values.dtype) or pd.api.types.is_timedelta64_dtype(values.dtype)
            or text_matches(values, _ISO_DATE))


#: A text column whose values are numbers but for at most this share (and at least this many numbers) is a column
#: of numbers with placeholders ("?", "unknown", "-") for its gaps.
PLACEHOLDER_SHARE, PLACEHOLDER_MIN_NUMBERS = 0.02, 10


def _placeholders(values: pd.Series, shown: int = 3) -> list[Any]:
    """The few values of a text column of numbers that are no number (the first ``shown``), or ``[]``."""
    import pandas as pd

    present = values.dropna()
    numbers = pd.to_numeric(present.astype(str).str.strip(), errors="coerce").notna()
    bad = present[~numbers]
    if len(bad) == 0 or numbers.sum() < PLACEHOLDER_MIN_NUMBERS or len(bad) > PLACEHOLDER_SHARE * len(present):
        return []
    return list(dict.fromkeys(bad.tolist()))[:shown]



def text_matches(values: pd.Series, pattern: str, sample: int = 1000) -> bool:
    """Whether ``values`` is a text column whose first ``sample`` present values all match ``pattern``."""
    import pandas as pd

    if not pd.api.types.is_string_dtype(values.dtype) or isinstance(values.dtype, pd.CategoricalDtype):
        return False
    present = values.dropna().head(sample).astype(str).str.strip()
    return bool(len(present)) and bool(present.str.fullmatch(pattern).all())
