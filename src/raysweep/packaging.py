"""What every model raysweep logs carries besides its weights: exact pins and the project's uv files.

A logged model's ``requirements.txt`` pins the exact versions of the frameworks it needs (not raysweep, Ray or
Hydra), and its model directory holds the project's ``uv.lock``, ``pyproject.toml`` and ``.python-version``,
so ``uv sync --frozen --no-install-project`` in a downloaded copy restores the training environment.

MLflow 3.17 copies these uv files itself only for pyfunc models (``uv_project_path``); the sklearn and pytorch
flavors do not, so :func:`attach_project_files` adds them to the logged model afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

#: The files that describe the project's environment, copied into every logged model's directory.
PROJECT_FILES = ("uv.lock", "pyproject.toml", ".python-version")


def project_root() -> Path:
    """The checkout's root, where ``pyproject.toml``, ``uv.lock`` and ``.python-version`` are."""
    from raysweep.config import CONF_DIR

    return CONF_DIR.parent


def pip_requirements(*packages: str) -> list[str]:
    """Exact ``name==version`` pins of the installed packages, e.g. ``["scikit-learn==1.7.2"]``."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in packages]


def attach_project_files(model_id: str, root: str | Path | None = None) -> list[str]:
    """Upload the project's environment files into a logged model's directory.

    Args:
        model_id: The LoggedModel's id (``ModelInfo.model_id``), in the active tracking store.
        root: Where the files are; default :func:`project_root`.

    Returns:
        The names of the files attached.

    Raises:
        RaySweepError: One of :data:`PROJECT_FILES` is missing (a model without its lockfile cannot be
            rebuilt, so raysweep refuses to pretend).
    """
    from mlflow import MlflowClient

    from raysweep.errors import RaySweepError

    root = Path(root) if root is not None else project_root()
    missing = [name for name in PROJECT_FILES if not (root / name).is_file()]
    if missing:
        raise RaySweepError(f"{', '.join(missing)} not found in {root}; run raysweep from a checkout of the project")
    with tempfile.TemporaryDirectory() as tmp:
        for name in PROJECT_FILES:
            shutil.copy2(root / name, Path(tmp) / name)
        MlflowClient().log_model_artifacts(model_id, tmp)
    return list(PROJECT_FILES)
