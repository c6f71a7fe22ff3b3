"""What the command line shows of the configs: the ``--help`` page, ``--version`` and shell completion.

Pure functions of the config search path (:func:`raysweep.config.search_path`); composing and Hydra's errors
are :mod:`raysweep.compose`'s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from raysweep.compose import _REFUSED, HYDRA_FLAGS, config_groups, hydra_overrides
from raysweep.config import CONF_DIR, available_sweeps, config_keys


#: The main command's flags as ``--help`` shows them (Hydra's, minus those raysweep refuses or hides).
_HELP_FLAGS = [
    ("--help, -h", "this page; COMMAND --help for a command's own"),
    ("--version", "raysweep's version"),
    ("--cfg job [--resolve]", "print the composed config and run nothing (with +sweep=NAME: that sweep's)"),
    ("--info searchpath", "Hydra's view: where configs come from (also defaults, defaults-tree, config)"),
    ("--config-dir DIR, -cd DIR", "more config groups, searched after ./conf and before the built-ins"),
    ("--shell-completion, -sc", 'tab completion of groups, options and keys: eval "$(raysweep -sc install=bash)"'),
    ("--hydra-help", "Hydra's own flags"),
    ("--multirun, -m", "refused: a raysweep sweep is one Ray Tune experiment; search with search_space.KEY=..."),
]
#: Groups that are no part of a sweep's config: Hydra's own, and ensembles (read by ``raysweep ensemble``).
_OTHER_GROUPS = ("hydra", "ensemble")


def help_page(folders: Sequence[Path], commands: Mapping[str, str] | None = None) -> str:
    """``--help``: usage, the sweeps, every config group's options with a line each, the keys, the commands.

    Args:
        folders: The config search path (:func:`raysweep.config.search_path`), the user's folders first.
        commands: Subcommand name -> one-line description.
    """
    builtin = set(available_sweeps([CONF_DIR]))
    groups = config_groups(folders)
    defaults = _default_options()
    lines = [
        f"raysweep {version()}: Ray Tune sweeps configured with Hydra, tracked in MLflow, best model registered.",
        "",
        "Usage:",
        "  raysweep +sweep=NAME [GROUP=OPTION ...] [KEY=VALUE ...]   run a sweep (or: python -m raysweep ...)",
        "  raysweep +sweep=NAME --cfg job                            show its composed config; run nothing",
        "  raysweep COMMAND [ARGS]                                   the commands below (COMMAND --help)",
        "Your configs: ./conf/GROUP/NAME.yaml, or --config-dir DIR; both come before the built-ins.",
        "",
        "== Sweeps (+sweep=NAME) ==",
    ]
    for folder in folders:
        names = available_sweeps([folder])
        if folder == CONF_DIR.resolve():
            lines.append(f"built-in: {', '.join(names) or '(none)'}  ({folder / 'sweep'})")
        else:
            shown = [f"{n} (replaces the built-in)" if n in builtin else n for n in names]
            lines.append(f"yours:    {', '.join(shown) or '(none)'}  ({folder / 'sweep'})")
    lines += _described(folders, "sweep", groups.get("sweep", []), default=None)
    lines += ["", "== Config groups (GROUP=OPTION) ==", f"sweep: {', '.join(groups.get('sweep', []))}"]
    for group, options in groups.items():
        if group != "sweep" and group.split("/")[0] not in _OTHER_GROUPS:
            lines += [f"{group}: {', '.join(options)}", *_described(folders, group, options, defaults.get(group))]
    lines += ["", "== Keys (KEY=VALUE) ==",
              f"Values: raysweep +sweep=NAME --cfg job. What each does: the comments in the YAML files of {CONF_DIR}"]
    lines += _key_lines()
    if commands:
        lines += ["", "== Commands (raysweep COMMAND --help) =="]
        width = max(map(len, commands))
        ensembles = ", ".join(groups.get("ensemble", []))
        for name, text in commands.items():
            # `raysweep ensemble NAME` reads conf/ensemble/NAME.yaml: name them with the command.
            text += f" (NAME: {ensembles})" if name == "ensemble" and ensembles else ""
            lines.append(f"  {name:<{width}}  {text}")
    lines += ["", "== Options =="]
    width = max(len(flag) for flag, _ in _HELP_FLAGS)
    lines += [f"  {flag:<{width}}  {text}" for flag, text in _HELP_FLAGS]
    lines += ["", 'Tab completion in bash: eval "$(raysweep -sc install=bash)" (in ~/.bashrc); in zsh the same,',
              "after autoload -Uz bashcompinit && bashcompinit."]
    return "\n".join(lines) + "\n"


def _described(folders: Sequence[Path], group: str, options: Sequence[str], default: str | None) -> list[str]:
    # One line per option: its name (marked when it is the default) and the first sentence of its file's comment.
    named = [(f"{o} (default)" if o == default else o, describe(_option_file(folders, group, o))) for o in options]
    width = max((len(name) for name, _ in named), default=0)
    return [f"  {name:<{width}}  {text}".rstrip() for name, text in named]


def _option_file(folders: Sequence[Path], group: str, option: str) -> Path | None:
    # The file Hydra reads for group=option: the first folder that has it.
    return next((f / group / f"{option}.yaml" for f in folders if (f / group / f"{option}.yaml").is_file()), None)


def describe(path: Path | None, width: int = 88) -> str:
    """The first sentence of a config file's leading comment (``# @package`` lines skipped), at most ``width`` chars.

    A sentence too long is cut at its first ``"; "`` or ``": "`` when what comes before says enough, else at a word.
    """
    if path is None:
        return ""
    comment = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text.startswith("@package"):
            comment.append(text)
    text = " ".join(t for t in comment if t)
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z(`])", text, maxsplit=1)[0].rstrip(".")
    if len(sentence) <= width:
        return sentence
    for mark in ("; ", ": "):
        head = sentence.split(mark, 1)[0]
        if 16 <= len(head) <= width:
            return head
    return sentence[: width - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."


def _default_options() -> dict[str, str]:
    # group -> its option in the primary config's defaults list (data: fraud, trainer: random_forest, ...).
    from omegaconf import OmegaConf

    path = CONF_DIR / "config.yaml"
    if not path.is_file():
        return {}
    entries = OmegaConf.to_container(OmegaConf.load(path)).get("defaults", [])
    return {k: str(v) for entry in entries if isinstance(entry, dict) for k, v in entry.items() if " " not in k}


def _key_lines(width: int = 110) -> list[str]:
    import textwrap

    keys = config_keys()
    out = []
    for top in (k for k in keys if "." not in k):
        below = [k.removeprefix(f"{top}.") for k in keys if k.startswith(f"{top}.")]
        text = f"{top}.{{{', '.join(below)}}}" if below else top
        out += textwrap.wrap(text, width, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False)
    return out


def version() -> str:
    """raysweep's installed version (``importlib.metadata``), else the source tree's ``raysweep.__version__``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("raysweep")
    except PackageNotFoundError:  # a Ray job that shipped raysweep's source, not an installed wheel
        from raysweep import __version__

        return __version__


def completion_words(line: str) -> tuple[str, list[str], bool]:
    """A shell's ``COMP_LINE`` as (program, arguments, whether a new word is being started)."""
    words = line.split()
    return (words[0] if words else "raysweep"), words[1:], not line or line[-1].isspace()


def local_choices(words: Sequence[str], new_word: bool, commands: Iterable[str]) -> list[str] | None:
    """The completions raysweep answers without Hydra, or None to ask Hydra.

    A subcommand's arguments and ``--config-dir``'s folder get none (the shell then completes file names); a
    word starting with ``-`` gets the main command's flags, less those raysweep refuses.
    """
    word = "" if new_word or not words else words[-1]
    before = list(words if new_word else words[:-1])
    if (before and before[0] in commands) or before[-1:] in (["-cd"], ["--config-dir"]):
        return []
    if word.startswith("-"):
        return [flag for flag in HYDRA_FLAGS if flag.startswith(word) and flag not in _REFUSED]
    return None


def refine_choices(offered: Sequence[str], words: Sequence[str], new_word: bool, commands: Iterable[str]) -> list[str]:
    """Hydra's completions as raysweep offers them.

    Groups that are no part of a sweep (``hydra``, ``ensemble``) only when asked for by name, ``+sweep=`` for
    ``sweep=`` (a sweep is added, not overridden), and the subcommands for the first word.
    """
    word = "" if new_word or not words else words[-1]
    asked = word.lstrip("+~").startswith(_OTHER_GROUPS)
    choices = [c for c in offered if asked or not c.lstrip("+~").startswith(_OTHER_GROUPS)]
    if not word:
        choices = ["+sweep=" if c == "sweep=" else c for c in choices]
    if len(words) == (0 if new_word else 1):
        choices = [name for name in commands if name.startswith(word)] + choices
    return choices


def completion_line(program: str, args: Sequence[str], new_word: bool, folders: Sequence[Path]) -> str:
    """The ``COMP_LINE`` to give Hydra's completion: raysweep's search path added, ``--config-dir`` taken off.

    Hydra completes from the line alone (``hydra.searchpath`` included), not from the command's arguments.
    """
    words = [program, *hydra_overrides(folders, []), *args]
    return " ".join(words) + (" " if new_word else "")
