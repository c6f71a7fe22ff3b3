"""Stored config is data, not code: a recorded ``config.yaml`` names code that runs only when this invocation does.

The trust boundary: what this invocation composes (its command line and the sweep files it reads) is trusted;
what a tracking store holds is data, which anyone with write access to the store could have changed. So a
command that acts on a recorded config (``resume=true``, ``reproduce``) takes the code that config names — every
``_target_`` at any depth, and the ``MODULE:FUNC``-style keys of :data:`CODE_KEYS` — only when it equals what
this invocation composes for that sweep (the sweep file that names the recorded ``sweep.name``, plus its own
overrides); otherwise it refuses in one line naming the key and how to trust it.

Loading the recorded config never resolves interpolations (``${oc.env:...}`` stays text, see :func:`as_data`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from raysweep.errors import RaySweepError

#: Config keys whose value names code raysweep imports: a trainer, a Tune function, a Ray Train loop.
CODE_KEYS = ("trainer.name", "trainer.function", "trainer.train_loop")
#: Hydra's key for "build this object": a class or factory imported and called.
TARGET_KEY = "_target_"


def code_refs(cfg: Mapping | DictConfig) -> dict[str, str]:
    """Every value in ``cfg`` that names code, by dotted key: :data:`CODE_KEYS` and every ``_target_``.

    Args:
        cfg: A config (composed, or recorded on a parent run).

    Returns:
        ``{"trainer.name": "sklearn", "search_alg._target_": "my.Searcher", ...}`` for the keys that are set.
    """
    tree = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    found: dict[str, str] = {}
    for key in CODE_KEYS:
        node: Any = tree
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None:
            found[key] = str(node)
    _targets(tree, "", found)
    return found


def _targets(node: Any, prefix: str, found: dict[str, str]) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = f"{prefix}{key}"
            if key == TARGET_KEY and value is not None:
                found[path] = str(value)
            else:
                _targets(value, f"{path}.", found)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            _targets(value, f"{prefix}{index}.", found)


def untrusted(recorded: Mapping | DictConfig, trusted: Mapping | DictConfig) -> dict[str, tuple[str, str | None]]:
    """The code ``recorded`` names that ``trusted`` does not: ``{key: (recorded value, trusted value or None)}``."""
    mine = code_refs(trusted)
    return {key: (value, mine.get(key)) for key, value in code_refs(recorded).items() if mine.get(key) != value}


def check(recorded: Mapping | DictConfig, trusted: Mapping | DictConfig, *, command: str, where: str) -> None:
    """Refuse, in one line, to use code the recorded config names but this invocation does not.

    Args:
        recorded: The config read from the tracking store.
        trusted: What this invocation composed for the same sweep.
        command: The command, for the message (``resume=true``, ``reproduce``).
        where: Where the recorded config comes from, for the message (``sweep run 'x'``).

    Raises:
        RaySweepError: A ``_target_`` or ``MODULE:FUNC`` key differs; the fix names the override to trust it.
    """
    foreign = untrusted(recorded, trusted)
    if not foreign:
        return
    key, (stored, composed) = sorted(foreign.items())[0]
    more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
    from raysweep.config import CONF_DIR

    trusting = [f"{k}={v}" for k, (v, _) in sorted(foreign.items())]
    trainer = foreign.get("trainer.name", (None,))[0]
    if trainer and (CONF_DIR / "trainer" / f"{trainer}.yaml").is_file():  # a built-in trainer: its group option
        trusting = [f"trainer={trainer}", *(t for t in trusting if not t.startswith("trainer.name="))]
    raise RaySweepError(
        f"{command}: the config stored on {where} names {key}={stored!r}{more}, but this command composes "
        f"{'none' if composed is None else repr(composed)}; a tracking store's config is data, not code: to run "
        f"that code, pass {' '.join(trusting)} on this command line (or put it in the sweep file)"
    )


def as_data(text: str) -> DictConfig:
    """A recorded ``config.yaml`` as a config whose strings stay strings: ``${...}`` is escaped, never resolved.

    raysweep records the resolved config, which has no interpolations; one found there was put in the store by
    someone else, and resolving it (``${oc.env:AWS_SECRET_ACCESS_KEY}``) would read this machine's secrets.
    """
    import yaml
    from omegaconf.errors import OmegaConfBaseException

    def escape(node: Any) -> Any:
        if isinstance(node, str):
            return node.replace("${", "\\${")
        if isinstance(node, dict):
            return {k: escape(v) for k, v in node.items()}
        if isinstance(node, list):
            return [escape(v) for v in node]
        return node

    try:
        # OmegaConf's own YAML loader (a safe loader that reads 1e-3 as a float); nothing is resolved yet.
        loaded = OmegaConf.create(text)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError) as error:
        raise RaySweepError(f"the stored config.yaml is not a YAML mapping ({str(error).splitlines()[0]}); "
                            "the sweep's parent run was changed or damaged") from None
    if not isinstance(loaded, DictConfig):
        raise RaySweepError("the stored config.yaml is not a mapping; the sweep's parent run was changed or damaged")
    return OmegaConf.create(escape(OmegaConf.to_container(loaded, resolve=False)))


def check_recorded(recorded: DictConfig, overrides: Sequence[str] = (), *, command: str, where: str) -> None:
    """:func:`check` a recorded config against what this invocation composes for its sweep.

    That is a sweep file (``./conf`` first, then raysweep's own) whose ``sweep.name`` is the recorded one (the
    file's name may differ: ``fraud_xgb.yaml`` names ``fraud-xgb``), composed with ``overrides``. The recorded
    config only picks which trusted file to compare with; with several such files, one that names the same code
    is enough.

    Raises:
        RaySweepError: No sweep file here names that sweep, or the code differs (see :func:`check`).
    """
    name = str(recorded.get("sweep", {}).get("name") or "")
    first = None
    for composed in _composed_for(name, overrides):
        if not untrusted(recorded, composed):
            return
        first = composed if first is None else first
    if first is None:
        raise RaySweepError(f"{command}: no sweep file here sets sweep.name={name!r} (the sweep of {where}); run "
                            "from the project that ran it, whose conf/sweep/ has its file")
    check(recorded, first, command=command, where=where)


def _composed_for(name: str, overrides: Sequence[str]) -> Iterator[DictConfig]:
    # The likely file first (fraud-xgb -> fraud_xgb.yaml), then every other sweep file.
    from raysweep import compose
    from raysweep.config import available_sweeps

    files = available_sweeps()
    likely = [f for f in dict.fromkeys([name, name.replace("-", "_")]) if f in files]
    for file in [*likely, *(f for f in files if f not in likely)]:
        try:
            composed = compose.compose([f"+sweep={file}", *overrides])
        except RaySweepError:  # an override this sweep file has no key for: not the sweep's file
            continue
        if composed.sweep.get("name") == name:
            yield composed
