"""What every model raysweep logs carries besides its weights: exact pins and the project's uv files.

A logged model's ``requirements.txt`` pins the exact versions of the frameworks it needs (not raysweep, Ray or
Hydra), and its model directory holds the project's ``uv.lock``, ``pyproject.toml`` and ``.python-version``,
so ``uv sync --frozen --no-install-project`` in a downloaded copy restores the training environment.

MLflow 3.17 copies these uv files itself only for pyfunc models (``uv_project_path``); the sklearn and pytorch
flavors do not, so :func:`attach_project_files` adds them to the logged model afterwards.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

#: The files that describe the project's environment, copied into every logged model's directory.
PROJECT_FILES = ("uv.lock", "pyproject.toml", ".python-version")


def project_root(cwd: str | Path | None = None) -> Path | None:
    """The uv project whose environment trains the models: ``pyproject.toml`` and ``uv.lock`` together.

    The nearest such folder from the working directory up (your project, raysweep installed into it), else the
    raysweep checkout this code runs from, else ``None`` (raysweep installed without a uv project around it).
    """
    from raysweep.config import CONF_DIR

    here = Path(cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents, CONF_DIR.parent):
        if (folder / "pyproject.toml").is_file() and (folder / "uv.lock").is_file():
            return folder
    return None


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
        RaySweepError: ``root`` lacks ``uv.lock`` or ``pyproject.toml`` (a model without its lockfile cannot be
            rebuilt, so raysweep refuses to pretend). Outside any uv project nothing is attached (a warning).
    """
    from mlflow import MlflowClient

    from raysweep.errors import RaySweepError

    root = Path(root) if root is not None else project_root()
    if root is None:
        # An installed raysweep used outside any uv project: requirements.txt's exact pins are all there is.
        log.warning("no uv project (pyproject.toml + uv.lock) in or above %s: the model carries requirements.txt "
                    "only", Path.cwd())
        return []
    missing = [name for name in PROJECT_FILES[:2] if not (root / name).is_file()]
    if missing:
        raise RaySweepError(f"{', '.join(missing)} not found in {root}; run raysweep from a checkout of the project")
    # .python-version is optional in a uv project (requires-python then decides).
    present = [name for name in PROJECT_FILES if (root / name).is_file()]
    with tempfile.TemporaryDirectory() as tmp:
        for name in present:
            shutil.copy2(root / name, Path(tmp) / name)
        MlflowClient().log_model_artifacts(model_id, tmp)
    return present
