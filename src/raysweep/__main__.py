"""``python -m raysweep +sweep=NAME [overrides]``: the Hydra entry point; wiring only.

``python -m raysweep submit|analyse|promote|rollback|copy|ensemble|reproduce ...`` go to their modules before Hydra
(:data:`SUBCOMMANDS`). Configs come from ``./conf``, then ``--config-dir DIR``, then raysweep's own
(:mod:`raysweep.compose`).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from omegaconf import DictConfig

from raysweep.compose import PRIMARY, help_overrides, hydra_error_line, hydra_overrides, register
from raysweep.config import search_path
from raysweep.errors import RaySweepError, SweepInterrupted

register()

__all__ = ["SUBCOMMANDS", "hydra_error_line", "main"]


def _task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from raysweep import sweep

    # Handled here, inside the task, because Hydra writes an extra "Error executing job" line for
    # exceptions that leave it.
    try:
        outcome = sweep.run(cfg, overrides=HydraConfig.get().overrides.task)
    except RaySweepError as e:
        _fail(str(e), 2)
    except SweepInterrupted as e:
        _fail(f"interrupted by {signal.Signals(e.signum).name}; the sweep's MLflow runs were ended KILLED", e.exit_code)
    print(outcome.report(), flush=True)


def _app(primary: Path):
    """The Hydra app whose primary config folder is ``primary`` (the first folder of the search path)."""
    import hydra

    return hydra.main(version_base="1.3", config_path=str(primary), config_name=PRIMARY)(_task)


#: ``raysweep COMMAND ...``: commands other than running a sweep (no Hydra), as ``module:function(argv) -> exit status``.
SUBCOMMANDS = {
    "submit": "raysweep.submit:main",
    "analyse": "raysweep.cli:analyse",
    "promote": "raysweep.cli:promote",
    "rollback": "raysweep.cli:rollback",
    "copy": "raysweep.cli:copy",
    "ensemble": "raysweep.cli:ensemble",
    "reproduce": "raysweep.cli:reproduce",
}


def main() -> None:
    """Console entry point: a subcommand, or the Hydra app; known errors become one line and an exit status."""
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        _run_subcommand(sys.argv[1], sys.argv[2:])
    args, config_dir = take_config_dir(sys.argv[1:])
    try:
        folders = search_path(config_dir)
    except RaySweepError as e:
        _fail(str(e), 2)
    # The user's modules (trainer.function=train:train, trainer.name=my_trainer) import from the working
    # directory, also under the `raysweep` console script, whose sys.path starts at its bin/ folder.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    extra = help_overrides(folders) if {"--help", "-h"} & set(args) else []
    sys.argv = [sys.argv[0], *hydra_overrides(folders, [*extra, *args])]
    # Let Hydra's own errors reach us instead of its multi-line report, so they print as one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _app(folders[0])()
    except RaySweepError as e:
        _fail(str(e), 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as e:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(e, (HydraException, OmegaConfBaseException)):
            _fail(hydra_error_line(e), 2)
        raise


def take_config_dir(args: list[str]) -> tuple[list[str], str | None]:
    """Split ``--config-dir DIR`` / ``--config-dir=DIR`` / ``-cd DIR`` off the arguments (raysweep places the
    folder itself: before the built-ins, where Hydra would put it after them)."""
    rest, config_dir, i = [], None, 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config-dir", "-cd"):
            if i + 1 >= len(args):
                _fail(f"{arg} needs a folder: {arg} DIR", 2)
            config_dir, i = args[i + 1], i + 2
            continue
        if arg.startswith("--config-dir="):
            config_dir = arg.partition("=")[2]
        else:
            rest.append(arg)
        i += 1
    return rest, config_dir


def _run_subcommand(name: str, argv: list[str]) -> None:
    import importlib

    module, _, function = SUBCOMMANDS[name].partition(":")
    try:
        status = getattr(importlib.import_module(module), function)(argv)
    except RaySweepError as e:
        _fail(str(e), 2)
    sys.exit(status)


def _fail(message: str, status: int) -> None:
    print(f"raysweep: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
