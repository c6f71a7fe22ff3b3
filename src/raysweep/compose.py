"""How the CLI and the Python API find and compose configs: the user's folders first, raysweep's own last.

Hydra 1.3 searches its primary config folder first and ``--config-dir`` only after it, so a user's file could
never replace a built-in one of the same name. raysweep orders the folders itself
(:func:`raysweep.config.search_path`: ``./conf``, then ``--config-dir``, then the built-ins) and hands Hydra the
first as its primary config folder and the rest, in order, as a ``hydra.searchpath`` override, ahead of any
folder the user names there. A config is read from the first folder that has it; a group's options are the
union of all folders (``--help`` lists them).

Hydra reads the primary config before it adds ``hydra.searchpath`` folders (and caches what it found), so the
primary config is :data:`PRIMARY` in Hydra's ConfigStore, always there: raysweep's own ``config.yaml`` as read
from :data:`raysweep.config.CONF_DIR`. Its defaults list is then looked up through the whole search path, the
user's folders first. A ``conf/config.yaml`` in the user's folder is not read: many projects keep another Hydra
app's primary config there.

Hydra's composition errors become one line with the fix here (:func:`hydra_error_line`: real choices of a
group, did-you-mean for keys, ``+sweep=NAME``, why there is no ``--multirun``), and overrides are split from
Hydra's flags (:func:`split_flags`). The ``--help`` page and shell completion live in :mod:`raysweep.usage`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from raysweep.config import CONF_DIR, config_keys, register_schema, search_path
from raysweep.keys import did_you_mean, dotted_keys
from raysweep.errors import RaySweepError
from raysweep.search_space import quote_cli_overrides

#: Hydra's key for extra config folders (searched after its primary folder, in order).
SEARCHPATH_KEY = "hydra.searchpath"
#: The primary config's name in Hydra's ConfigStore: raysweep's ``config.yaml``.
PRIMARY = "raysweep_main"


def register() -> None:
    """Register the typed schema and :data:`PRIMARY` in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    register_schema()
    builtin = CONF_DIR / "config.yaml"
    # Without the built-ins (a Ray job that shipped only raysweep's code) the job's ./conf has config.yaml.
    node = OmegaConf.load(builtin) if builtin.is_file() else {"defaults": ["config", "_self_"]}
    ConfigStore.instance().store(name=PRIMARY, node=node)


def hydra_overrides(folders: Sequence[Path], overrides: Sequence[str]) -> list[str]:
    """The overrides to give Hydra for ``folders`` (the first is Hydra's primary config folder).

    Search-space expressions are quoted (:func:`raysweep.search_space.quote_cli_overrides`) and the other
    folders become one ``hydra.searchpath`` override, followed by any folders the user gave that key.
    """
    args, extra = [], []
    for arg in quote_cli_overrides(list(overrides)):
        if arg.partition("=")[0].lstrip("+") == SEARCHPATH_KEY:
            extra.extend(_parse_list(arg))
        else:
            args.append(arg)
    paths = [_quote(f"file://{folder}") for folder in folders[1:]] + [_quote(p) for p in extra]
    # First: Hydra's argument parser takes overrides only before its own flags (--cfg job, --help).
    return [f"{SEARCHPATH_KEY}=[{','.join(paths)}]", *args] if paths else args


def config_groups(folders: Sequence[Path]) -> dict[str, list[str]]:
    """Group -> its options across ``folders`` (``sweep`` -> ``["fraud", ...]``), Hydra's own groups left out."""
    groups: dict[str, set[str]] = {}
    for folder in folders:
        for path in folder.rglob("*.yaml"):
            group = path.parent.relative_to(folder).as_posix()
            if group != "." and group.split("/")[0] != "hydra":
                groups.setdefault(group, set()).add(path.stem)
    return {group: sorted(options) for group, options in sorted(groups.items())}


def compose(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> DictConfig:
    """Compose the config ``python -m raysweep [--config-dir DIR] OVERRIDES`` would run, from Python.

    Uses the same folders as the CLI (``./conf``, ``config_dir``, the built-ins) and leaves any Hydra app or
    ``initialize`` of the caller's as it was.

    Raises:
        RaySweepError: A missing folder, config or key, or a malformed override, as the CLI's one line.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register()
    folders = search_path(config_dir)
    try:
        return _compose(folders, overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise RaySweepError(hydra_error_line(error, overrides, folders)) from None
    except AssertionError as error:  # OmegaConf asserts on a key set under a null node
        raise RaySweepError(null_parent_line(overrides, folders) or str(error)) from None


def null_parent_line(overrides: Sequence[str], folders: Sequence[Path]) -> str | None:
    """The line for ``trainer.estimator._target_=X`` where this config leaves ``trainer.estimator`` null (the
    default trainer is no ``trainer=estimator``), which OmegaConf meets with a bare assertion; ``None`` if none is."""
    from omegaconf import OmegaConf

    for given in overrides:
        key = given.lstrip("+~").partition("=")[0]
        parent, _, leaf = key.rpartition(".")
        if "." not in parent:
            continue
        try:
            cfg = _compose(folders, [o for o in overrides if o != given])
        except Exception:  # noqa: BLE001 - another override's fault: not this one's line
            continue
        head, _, name = parent.rpartition(".")
        if name in (OmegaConf.select(cfg, head) or {}) and OmegaConf.select(cfg, parent) is None:
            group = f"; {head}={name} sets it" if f"{name}.yaml" in {p.name for f in folders
                                                                        for p in (f / head).glob("*.yaml")} else ""
            return f"{given}: {parent} is null in this config, so it has no {leaf!r} to set{group}"
    return None


def _compose(folders: Sequence[Path], overrides: Sequence[str]) -> DictConfig:
    # Hydra's errors pass through; the caller's GlobalHydra (a running app, an initialize) is put back after.
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(folders[0]), version_base="1.3"):
            return hydra_compose(config_name=PRIMARY, overrides=hydra_overrides(folders, overrides))
    finally:
        restore_gh_from_backup(backup)


#: Why raysweep refuses Hydra's multirun, for the one-line messages.
MULTIRUN_WHY = ("raysweep runs the whole sweep as one Ray Tune experiment; put the choices in the search space "
                "instead (search_space.KEY='choice(a,b)'), or run raysweep once per option")


def hydra_error_line(error: BaseException, overrides: Sequence[str] = (), folders: Sequence[Path] | None = None) -> str:
    """Condense a Hydra/OmegaConf composition error into one line with a hint at the fix.

    Args:
        error: What Hydra or OmegaConf raised.
        overrides: The overrides given, to echo the one at fault.
        folders: The search path; with it, a misspelled key's did-you-mean also sees the composed config's keys
            (one more composition, without the bad override).
    """
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0] if lines else type(error).__name__
    if isinstance(error, MissingConfigException):
        return _missing_option_line(error, message, overrides)
    if match := re.match(r"Could not override '([^']+)'\. No match in the defaults list", message):
        return _not_in_defaults_line(match.group(1), overrides)
    if tune_call := _tune_call_line(overrides):  # unquoted at a shell: Hydra's grammar has no such function
        return tune_call
    if message.startswith(("LexerNoViableAltException: ", "NoViableAltException: ")):
        return _unreadable_line(message.partition(": ")[2])
    if match := re.match(r"(?:Ambiguous value for argument|Sweep parameters) '(.+)'", message):
        return f"{match.group(1)} is a sweep over several values (Hydra's --multirun): {MULTIRUN_WHY}"
    cause = error.__cause__
    if (match := re.match(r"Could not override '([^']+)'", message)) and isinstance(cause, (ConfigKeyError,
                                                                                          ConfigAttributeError)):
        full_key = getattr(cause, "full_key", None) or match.group(1)
        # A map's keys are free ("is not in struct": + adds one there); a typed node's are fixed.
        given = next((o for o in overrides if o.partition("=")[0] == match.group(1)), None)
        if given and full_key.startswith(f"{match.group(1)}.") and "not in struct" in str(cause):
            return _new_key_in_map_line(given, match.group(1), full_key)
        addable = f" (+{given} adds it)" if given and "not in struct" in str(cause) else ""
        return _unknown_key_line(match.group(1), full_key, overrides, folders) + addable
    if cause is not None:
        cause_lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        if cause_lines:
            message = f"{message}: {cause_lines[0]}"
            full_key = next((line for line in cause_lines if line.startswith("full_key:")), None)
            if full_key and full_key not in message:
                message += f" ({full_key})"
    return f"{message} (see raysweep --help)"


def _new_key_in_map_line(given: str, key: str, full_key: str) -> str:
    """``search_space={mode: 1}``: a map given whole, with a key the config's map has not; + adds it on its own."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    leaf = full_key[len(key) + 1:]
    try:
        value = OverridesParser.create().parse_override(given).value()
        add = f"+{full_key}={value[leaf]}" if isinstance(value, dict) and leaf in value else f"+{full_key}=VALUE"
    except Exception:  # noqa: BLE001 - Hydra's own parse errors: the generic form
        add = f"+{full_key}=VALUE"
    return f"{given}: {key} has no key {leaf!r} to set; add it on its own with {add}"


def _unreadable_line(given: str) -> str:
    """The line for an override Hydra's grammar cannot read bare (a space, ``~``, a letter beyond ASCII)."""
    from raysweep.data.features import override

    key, sep, value = given.partition("=")
    if not sep:
        return f"{given}: Hydra cannot read this override; write it as KEY=VALUE (see raysweep --help)"
    return (f"{given}: Hydra cannot read this value bare (a space, ~, or a letter beyond ASCII); quote it: "
            f"{override(key, value)}")


def _tune_call_line(overrides: Sequence[str]) -> str | None:
    """The line for a search-space override that calls Ray Tune (``lograndint(1, 32)``), or ``None``."""
    from raysweep.search_space import refuse_tune_call

    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key.startswith("search_space."):
            try:
                refuse_tune_call(key.removeprefix("search_space."), value.strip("'\""))
            except RaySweepError as error:
                return str(error)
    return None


def _missing_option_line(error, message: str, overrides: Sequence[str]) -> str:
    # "Could not find 'trainer/foo'" plus Hydra's search path: only the group's real options matter.
    options = ", ".join(error.options or []) or "(none)"
    group, _, name = (error.missing_cfg_file or "").rpartition("/")
    if not group:  # not a group option (a primary config); Hydra's first line says it
        return f"{re.sub(r'^In .[^:]*: ', '', message)} (see raysweep --help)"
    given = next((o for o in overrides if o.lstrip("+~").partition("=")[::2] == (group, name)), None)
    plus = "+" if group == "sweep" else ""
    # Not given on the command line: a config's defaults list asks for it (a sweep file's `override /trainer: X`).
    origin = "" if given else " (named in a config's defaults list, e.g. a sweep file's)"
    return f"Could not find '{group}/{name}'{origin}; available: {options} (pick one with {plus}{group}=NAME)"


def _not_in_defaults_line(group: str, overrides: Sequence[str]) -> str:
    # `sweep=fraud`: the primary config has no sweep default to override; + appends one.
    given = next((o for o in overrides if o.partition("=")[0] == group), f"{group}=NAME")
    if group == "sweep":
        return f"{given}: use +{given} (raysweep's config has no default sweep, so + adds one)"
    if group == "ensemble":
        return f"{given}: ensemble configs are no part of a sweep; they are read by raysweep ensemble NAME"
    return f"{given}: {group} is not in the config's defaults list; add it with +{given}"


def _unknown_key_line(key: str, full_key: str, overrides: Sequence[str], folders: Sequence[Path] | None) -> str:
    # `sweep.num_sample=4`: name the closest real keys; a key in a free-form map can still be added with +.
    keys = config_keys()
    if folders is not None:
        keys += _composed_keys(folders, [o for o in overrides if o.lstrip("+~").partition("=")[0] != key])
    matches = did_you_mean(full_key, list(dict.fromkeys(keys)))
    tail = key[len(full_key):] if key.startswith(full_key) else ""
    hint = f"did you mean {' or '.join(m + tail for m in matches)}?" if matches else \
        "see the keys with raysweep --help, their values with +sweep=NAME --cfg job"
    return f"Could not override '{key}': no such key; {hint}"


def _composed_keys(folders: Sequence[Path], overrides: Sequence[str]) -> list[str]:
    # Every dotted key of the config these overrides compose (none when they do not compose either).
    from omegaconf import OmegaConf

    try:
        cfg = _compose(folders, overrides)
    except Exception:  # noqa: BLE001 - only a better hint is lost
        return []
    tree = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    return [k for k in dotted_keys(tree) if k.split(".")[0] != "hydra"]


#: Hydra 1.3's own flags (``hydra._internal.utils.get_args_parser``) -> how many values each takes ("?": optional).
HYDRA_FLAGS: dict[str, int | str] = {
    "--help": 0, "-h": 0, "--hydra-help": 0, "--version": 0, "--cfg": 1, "-c": 1, "--resolve": 0,
    "--package": 1, "-p": 1, "--run": 0, "-r": 0, "--multirun": 0, "-m": 0, "--shell-completion": 0, "-sc": 0,
    "--config-path": 1, "-cp": 1, "--config-name": 1, "-cn": 1, "--config-dir": 1, "-cd": 1,
    "--experimental-rerun": 1, "--info": "?", "-i": "?",
}
_INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
#: Flags raysweep refuses, and why.
_REFUSED = {
    "--multirun": f"--multirun/-m is not supported: {MULTIRUN_WHY}",
    "--config-path": "--config-path/--config-name: raysweep composes its own primary config; put your configs in "
                     "./conf/GROUP/NAME.yaml or --config-dir DIR",
    "--experimental-rerun": "--experimental-rerun: raysweep keeps no Hydra job pickle to rerun; run the same "
                            "overrides again, or raysweep reproduce models:/NAME@ALIAS",
}
_REFUSED |= {"-m": _REFUSED["--multirun"], "-cp": _REFUSED["--config-path"], "--config-name": _REFUSED["--config-path"],
             "-cn": _REFUSED["--config-path"]}


def split_flags(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split the main command's arguments into (overrides, Hydra flags with their values), flags spelled out.

    Hydra's argument parser takes the overrides only before its flags; raysweep lets them come in any order.

    Raises:
        RaySweepError: An unknown or refused flag (``--multirun``: one sweep is one Ray Tune experiment), a
            flag without its value, or ``hydra.mode=MULTIRUN``.
    """
    overrides: list[str] = []
    flags: list[str] = []
    longs = [f for f in HYDRA_FLAGS if f.startswith("--")]
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-"):
            if arg.lstrip("+").partition("=")[::2] == ("hydra.mode", "MULTIRUN"):
                raise RaySweepError(_REFUSED["--multirun"])
            overrides.append(arg)
            continue
        name, eq, value = arg.partition("=")
        if name not in HYDRA_FLAGS and name.startswith("--"):
            # argparse's abbreviations (--vers), which Hydra's parser accepts too
            candidates = [f for f in longs if f.startswith(name)]
            name = candidates[0] if len(candidates) == 1 else name
        if name not in HYDRA_FLAGS:
            raise RaySweepError(f"unknown option {arg}; see raysweep --help")
        if name in _REFUSED:
            raise RaySweepError(_REFUSED[name])
        takes = HYDRA_FLAGS[name]
        if takes == 0:
            if eq:
                raise RaySweepError(f"{name} takes no value; see raysweep --help")
            flags.append(name)
        elif eq:
            _check_value(name, value)
            flags.append(f"{name}={value}")
        elif takes == "?":
            flags.append(name)
            if i < len(args) and args[i] in _INFO_CHOICES:
                flags.append(args[i])
                i += 1
        elif i < len(args):
            _check_value(name, args[i])
            flags += [name, args[i]]
            i += 1
        else:
            raise RaySweepError(f"{name} needs a value; see raysweep --help")
    return overrides, flags


def _check_value(flag: str, value: str) -> None:
    # What Hydra's argument parser would refuse with its usage text: one line instead.
    if flag in ("--cfg", "-c") and value not in ("job", "hydra", "all"):
        raise RaySweepError(f"{flag} {value}: use {flag} job (your config), hydra or all")
    if flag in ("--info", "-i") and value not in _INFO_CHOICES:
        raise RaySweepError(f"{flag} {value}: use {flag} with one of {', '.join(_INFO_CHOICES)}")


def _parse_list(override: str) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = OverridesParser.create().parse_override(override).value()
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _quote(text: str) -> str:
    # Hydra's override grammar: a quoted string keeps spaces, commas and brackets in a folder's name.
    return "'" + text.replace("'", "\\'") + "'"
