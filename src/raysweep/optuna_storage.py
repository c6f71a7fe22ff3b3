"""An Optuna study storage whose URL keeps its password out of every pickle.

Tune pickles the searcher into the sweep's state (``tuner.pkl``, ``searcher-state-*.pkl``), and Optuna's
``RDBStorage`` pickles its URL, password included. This one pickles the masked URL
(:func:`raysweep.remote.remember_uri`) and finds the full one again in the process that restores it: the sweep's
driver, which knows it from the config it composed (``search_alg.params.storage``).
"""

from __future__ import annotations

from typing import Any

from optuna.storages import RDBStorage

from raysweep import remote


class MaskedRDBStorage(RDBStorage):
    """``optuna.storages.RDBStorage`` that pickles its URL with the credentials masked."""

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state["url"] = remote.remember_uri(state["url"])
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__({**state, "url": remote.full_uri(state["url"])})


def storage(url: str) -> RDBStorage:
    """The study storage for ``search_alg.params.storage=URL``: masked in pickles when the URL has credentials.

    Known to this process from now on: a resumed sweep builds its searcher once from the config (the plan's
    check) before Tune restores the pickled one, which then finds its full URL.
    """
    from raysweep.secrets import redact

    if redact(url) == url:
        return RDBStorage(url)
    remote.remember_uri(url)
    return MaskedRDBStorage(url)
