"""raysweep's cache folder: answers that take seconds to find and stay fixed for an installed version.

Kept in ``$XDG_CACHE_HOME/raysweep``, else ``~/.cache/raysweep``. Every entry's name holds the versions its answer
depends on, so an upgrade reads a new entry instead of a stale one. A folder that cannot be written costs only
speed: the answer is found again each time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Where the cache folder lies, when set (else ``~/.cache``).
CACHE_DIR_ENV = "XDG_CACHE_HOME"


def folder() -> Path:
    """raysweep's cache folder (it may not exist yet)."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache") / "raysweep"


def remembered(name: str, find: Callable[[], Any]) -> Any:
    """The JSON answer kept under ``name``, else ``find()``'s, kept for next time.

    Args:
        name: The entry's file name; it must name every version the answer depends on.
        find: Computes the answer (JSON-serializable) when none is kept.
    """
    path = folder() / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # not kept yet, or unreadable: found again
        pass
    answer = find()
    # Written under a scratch name, then renamed: a process reading at the same time sees all of it or nothing.
    scratch = path.with_name(f".{name}.{os.getpid()}.new")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch.write_text(json.dumps(answer))
        os.replace(scratch, path)
    except OSError:
        scratch.unlink(missing_ok=True)
    return answer
