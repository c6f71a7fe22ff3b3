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
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from raysweep.config import CONF_DIR, available_sweeps, register_schema, search_path
from raysweep.errors import RaySweepError
from raysweep.search_space import quote_cli_overrides

#: Hydra's key for extra config folders (searched after its primary folder, in order).
SEARCHPATH_KEY = "hydra.searchpath"
#: The primary config's name in Hydra's ConfigStore: raysweep's ``config.yaml``.
PRIMARY = "raysweep_main"
#: The OmegaConf resolver that writes the sweep listing into ``--help``.
_HELP_RESOLVER = "raysweep_help"


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


def help_overrides(folders: Sequence[Path]) -> list[str]:
    """Overrides that make ``--help`` list every config group and sweep across ``folders``.

    Hydra's own listing sees only its primary folder (``hydra.searchpath`` folders join later, while composing),
    so raysweep writes the page: an OmegaConf resolver fills ``hydra.help.template``, and Hydra then substitutes
    ``$CONFIG`` in it as usual.
    """
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver(_HELP_RESOLVER, lambda: help_page(folders), replace=True)
    return [f"hydra.help.template=${{{_HELP_RESOLVER}:}}"]


def help_page(folders: Sequence[Path]) -> str:
    """``--help``: how to run a sweep, the sweeps of each folder (yours and built-in), every group's options."""
    builtin = set(available_sweeps([CONF_DIR]))
    lines = [
        "raysweep: Ray Tune sweeps configured with Hydra, tracked in MLflow, best model registered.",
        "Run a sweep:     python -m raysweep +sweep=NAME [key=value ...]   (--cfg job shows the composed config)",
        "Your configs:    ./conf/GROUP/NAME.yaml, or --config-dir DIR; both come before the built-ins",
        "Other commands:  python -m raysweep submit|analyse|promote|rollback|copy|ensemble|reproduce --help",
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
    lines += ["", "== Configuration groups ==", "Compose your configuration from those groups (group=option)", ""]
    lines += [f"{group}: {', '.join(options)}" for group, options in config_groups(folders).items()]
    lines += ["", "== Config ==", "Override anything in the config (foo.bar=value)", "", "$CONFIG"]
    return "\n".join(lines) + "\n"


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
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf.errors import OmegaConfBaseException

    register()
    folders = search_path(config_dir)
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(folders[0]), version_base="1.3"):
            return hydra_compose(config_name=PRIMARY, overrides=hydra_overrides(folders, overrides))
    except (HydraException, OmegaConfBaseException) as error:
        raise RaySweepError(hydra_error_line(error)) from None
    finally:
        restore_gh_from_backup(backup)


def hydra_error_line(error: BaseException) -> str:
    """Condense a Hydra/OmegaConf composition error into one line with a hint at the fix."""
    from hydra.errors import MissingConfigException

    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0] if lines else type(error).__name__
    if isinstance(error, MissingConfigException):
        options = list(error.options or [])
        group = (error.missing_cfg_file or "").rpartition("/")[0]
        hint = f"; available: {', '.join(options)}" if options else ""
        # "In 'config': Could not find 'sweep/nope'": which file asked for it adds nothing for the user.
        message = re.sub(r"^In '[^']*': ", "", message)
        return f"{message}{hint} (pick one with {group or 'GROUP'}=NAME)"
    cause = error.__cause__
    if cause is not None:
        cause_lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        if cause_lines:
            message = f"{message}: {cause_lines[0]}"
            full_key = next((line for line in cause_lines if line.startswith("full_key:")), None)
            if full_key and full_key not in message:
                message += f" ({full_key})"
    return f"{message} (see the config groups with --help)"


def _parse_list(override: str) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = OverridesParser.create().parse_override(override).value()
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _quote(text: str) -> str:
    # Hydra's override grammar: a quoted string keeps spaces, commas and brackets in a folder's name.
    return "'" + text.replace("'", "\\'") + "'"
