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
from typing import NoReturn

from omegaconf import DictConfig

from raysweep.compose import PRIMARY, hydra_error_line, hydra_overrides, null_parent_line, register, split_flags
from raysweep.usage import completion_line, completion_words, help_page, local_choices, refine_choices, version
from raysweep.config import search_path
from raysweep.errors import RaySweepError, SweepInterrupted

register()

__all__ = ["SUBCOMMANDS", "SUBCOMMAND_HELP", "hydra_error_line", "main"]


def _task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from raysweep import sweep

    # Handled here, inside the task, because Hydra writes an extra "Error executing job" line for
    # exceptions that leave it.
    try:
        outcome = sweep.run(cfg, overrides=HydraConfig.get().overrides.task)
    except RaySweepError as e:
        _fail(str(e), e.exit_code)  # 2 for bad input; 1 for a fault (errors.TrackingOutage)
    except SweepInterrupted as e:
        _fail(str(e), e.exit_code)
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
    "stop": "raysweep.cli:stop",
}


#: One line each for ``--help``.
SUBCOMMAND_HELP = {
    "submit": "run a sweep as a Ray job on a cluster: raysweep submit [--address URL] +sweep=NAME [overrides]",
    "analyse": "read a finished (or crashed) sweep back from MLflow, register its best model, print the summary",
    "promote": "move NAME@champion to NAME@challenger's version when it scores better on held-out data",
    "rollback": "move NAME@champion back to the version it replaced",
    "copy": "copy a registered version to another model name or MLflow registry",
    "ensemble": "register an ensemble of registered models (their mean prediction): raysweep ensemble NAME",
    "reproduce": "retrain the trial behind a registered version and compare its metrics",
    "stop": "stop a submitted sweep, letting its driver end every MLflow run KILLED first: raysweep stop JOB_ID",
}
#: The program name Hydra shows and shell completion is installed for, also under ``python -m raysweep``.
PROGRAM = "raysweep"


def _terminated(signum, frame) -> None:
    raise SweepInterrupted(signum)


def main() -> None:
    """Console entry point: a subcommand, or the Hydra app; known errors become one line and an exit status."""
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        _run_subcommand(sys.argv[1], sys.argv[2:])
    # A sweep: SIGTERM exits 143 with one line from the start, as Ctrl-C exits 130 (sweep.run adds its own).
    signal.signal(signal.SIGTERM, _terminated)
    args, config_dir = take_config_dir(sys.argv[1:])
    try:
        overrides, flags = split_flags(args)
        folders = search_path(config_dir)
    except RaySweepError as e:
        _fail(str(e), 2)
    # Answered here, not by Hydra: its --version names Hydra, and its help page sees only one config folder.
    if "--version" in flags:
        print(f"raysweep {version()}")
        sys.exit(0)
    if "--help" in flags or "-h" in flags:
        print(help_page(folders, SUBCOMMAND_HELP), end="")
        sys.exit(0)
    if "--shell-completion" in flags or "-sc" in flags:
        _complete(overrides, flags, folders)
    # The user's modules (trainer.function=train:train, trainer.name=my_trainer) import from the working
    # directory, also under the `raysweep` console script, whose sys.path starts at its bin/ folder.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    # Hydra's parser takes the overrides only before its flags.
    sys.argv = [PROGRAM, *hydra_overrides(folders, overrides), *flags]
    # Let Hydra's own errors reach us instead of its multi-line report, so they print as one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _app(folders[0])()
        _exit_finished()
    except RaySweepError as e:
        _fail(str(e), 2)
    except KeyboardInterrupt as e:
        _fail(f"interrupted by {signal.Signals(getattr(e, 'signum', signal.SIGINT)).name}", getattr(e, "exit_code", 130))
    except Exception as e:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(e, (HydraException, OmegaConfBaseException)):
            _fail(hydra_error_line(e, overrides, folders), 2)
        if isinstance(e, AssertionError) and (line := null_parent_line(overrides, folders)):
            _fail(line, 2)
        if isinstance(e, ValueError) and _raised_by_hydra(e):  # its checks of the flags: --resolve without --cfg
            _fail(f"{str(e).splitlines()[0]} (see raysweep --help)", 2)
        raise


def _exit_finished() -> NoReturn:
    """Exit 0 the way Python would (threads joined, atexit handlers run, output flushed), without its teardown.

    Tearing down the interpreter over the heap Ray, MLflow, scikit-learn and torch left behind takes 0.3 s to
    several seconds after the sweep's last line, and nothing in it is the sweep's: every run is ended and Ray is
    stopped by now. Only after a finished sweep: errors exit through ``sys.exit``, and ``raysweep.run`` (a library
    caller) lives on.
    """
    import atexit

    from raysweep import compat

    compat.shut_down_threads()  # executors' workers stopped, other threads joined
    atexit._run_exitfuncs()  # logging's flush, Ray's and MLflow's own handlers, temporary folders
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _raised_by_hydra(error: BaseException) -> bool:
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and f"{os.sep}hydra{os.sep}" in frames[-1].filename


def _complete(overrides: list[str], flags: list[str], folders: list[Path]) -> None:
    """``-sc install=bash`` / ``-sc query=bash``: Hydra's shell completion, for the ``raysweep`` command.

    Installs for :data:`PROGRAM` whichever way raysweep was started; a query sees raysweep's search path, offers
    the subcommands for the first word, leaves a subcommand's arguments to the shell, and hides Hydra's groups.
    """
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    sys.argv = [PROGRAM, *overrides, *flags]
    if not any(o.startswith("query=") for o in overrides):
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            _app(folders[0])()
        except ValueError as e:  # no such shell: Hydra names the ones it has
            _fail(" ".join(str(e).split()), 2)
        sys.exit(0)
    program, words, new_word = completion_words(os.environ.get("COMP_LINE", PROGRAM))
    local = local_choices(words, new_word, SUBCOMMANDS)
    if local is not None:
        print(" ".join(local))
        sys.exit(0)
    words, config_dir = take_config_dir(words, complete=True)
    if config_dir is not None:
        try:
            folders = search_path(config_dir)
        except RaySweepError:
            sys.exit(0)
    os.environ["COMP_LINE"] = completion_line(program, words, new_word, folders)
    out = StringIO()
    with redirect_stdout(out), redirect_stderr(StringIO()):
        _run_app(folders)
    print(" ".join(refine_choices(out.getvalue().split(), words, new_word, SUBCOMMANDS)))
    sys.exit(0)


def _run_app(folders: list[Path]) -> None:
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _app(folders[0])()
    except (Exception, SystemExit):  # noqa: BLE001 - a completion that fails offers nothing, not a traceback
        pass


def take_config_dir(args: list[str], complete: bool = False) -> tuple[list[str], str | None]:
    """Split ``--config-dir DIR`` / ``--config-dir=DIR`` / ``-cd DIR`` off the arguments (raysweep places the
    folder itself: before the built-ins, where Hydra would put it after them).

    ``complete``: a shell completion's partial line, where a trailing flag without its folder yet is dropped.
    """
    rest, config_dir, i = [], None, 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config-dir", "-cd"):
            if i + 1 >= len(args):
                if complete:
                    break
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
    from raysweep.secrets import scrub

    # Errors quote what they were given (a URI, MLflow's or Ray's own message): never a password or token.
    print(f"raysweep: {scrub(message)}", file=sys.stderr, flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
