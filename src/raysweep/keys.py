"""Config keys, dotted (``sweep.num_samples``), and the real ones closest to a misspelled key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def dotted_keys(tree: Mapping, prefix: str = "") -> list[str]:
    """Every key of a nested mapping, dotted, parents before their children."""
    keys = []
    for key, value in tree.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, Mapping):
            keys += dotted_keys(value, f"{prefix}{key}.")
    return keys


def did_you_mean(key: str, keys: Sequence[str]) -> list[str]:
    """The real keys closest to a misspelled dotted ``key`` (``sweep.num_sample`` -> ``["sweep.num_samples"]``).

    The last part is compared with its real siblings (the keys under the same parent); at most three, closest
    first, and only those about as close as the closest (``keys``: :func:`raysweep.config.config_keys`).
    """
    import difflib

    parent, _, leaf = key.rpartition(".")
    siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent]
    scored = sorted(((difflib.SequenceMatcher(None, leaf, s).ratio(), s) for s in set(siblings)), reverse=True)
    # Only the near-best: search_space for serch_space, not search_alg as well.
    close = [s for ratio, s in scored[:3] if ratio >= 0.7 and ratio >= scored[0][0] - 0.1] if scored else []
    return [f"{parent}.{s}" if parent else s for s in close]
