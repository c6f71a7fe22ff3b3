"""``python -m raysweep +sweep=NAME [overrides]``: the Hydra entry point; wiring only.

``python -m raysweep submit|analyse|promote|rollback|copy|ensemble|reproduce ...`` go to their modules before Hydra
(:data:`SUBCOMMANDS`).
"""

from __future__ import annotations

import os
import signal
import sys

import hydra
from omegaconf import DictConfig

from raysweep.config import CONF_DIR, register_schema
from raysweep.errors import RaySweepError, SweepInterrupted

register_schema()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _app(cfg: DictConfig) -> None:
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
    from raysweep.search_space import quote_cli_overrides

    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        _run_subcommand(sys.argv[1], sys.argv[2:])
    sys.argv = [sys.argv[0], *quote_cli_overrides(sys.argv[1:])]
    # Let Hydra's own errors reach us instead of its multi-line report, so they print as one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _app()
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


def _run_subcommand(name: str, argv: list[str]) -> None:
    import importlib

    module, _, function = SUBCOMMANDS[name].partition(":")
    try:
        status = getattr(importlib.import_module(module), function)(argv)
    except RaySweepError as e:
        _fail(str(e), 2)
    sys.exit(status)


def hydra_error_line(error: BaseException) -> str:
    """Condense a Hydra/OmegaConf composition error into one line with a hint at the fix."""
    from hydra.errors import MissingConfigException

    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0] if lines else type(error).__name__
    if isinstance(error, MissingConfigException):
        options = [line.strip() for line in str(error).splitlines() if line.startswith("\t")]
        group = (error.missing_cfg_file or "").split("/")[0]
        hint = f"; available: {', '.join(options)}" if options else ""
        return f"{message.removeprefix('In ')}{hint} (pick one with {group or 'GROUP'}=NAME)"
    cause = error.__cause__
    if cause is not None:
        cause_lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        if cause_lines:
            message = f"{message}: {cause_lines[0]}"
            full_key = next((line for line in cause_lines if line.startswith("full_key:")), None)
            if full_key and full_key not in message:
                message += f" ({full_key})"
    return f"{message} (see the config groups with --help)"


def _fail(message: str, status: int) -> None:
    print(f"raysweep: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
