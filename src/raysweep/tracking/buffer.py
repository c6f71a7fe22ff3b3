"""Metrics written in batches: one ``log_batch`` per run at most every second, not one call per value.

A per-metric ``log_metric`` loop costs a round trip per value (~280 values/s on sqlite, fewer over HTTP);
``log_batch`` takes up to 1,000 metrics in one call. Trials report a handful of metrics per iteration, so
raysweep gathers them and writes each run's pending values when a second has passed, when 1,000 are
waiting, and always when a trial ends. Params and tags nobody waits for (a new run's hyperparameters, the node a
trial runs on) ride along in the same call instead of one of their own. Values leave the buffer only once
written: a write that fails (a tracking server that stopped answering, see :mod:`raysweep.tracking.outage`)
keeps them for the next one.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from functools import partial

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from raysweep.tracking.outage import Outage, unreachable

#: MLflow's limit of metrics, params and tags together per log_batch call.
_MAX_BATCH = 1000
#: MLflow's limit of params, and of tags, per log_batch call.
_MAX_PARAMS_OR_TAGS = 100


class MetricBuffer:
    """Pending metrics (and params and tags) of one or more runs, written with ``log_batch``.

    Args:
        client: Client bound to the tracking store.
        interval_s: Seconds between two writes of what is pending.
        outage: The store's clock (:mod:`raysweep.tracking.outage`). While the server does not answer, the writes
            that fall due leave the values pending and return, so the trial goes on training; :meth:`flush` (a
            trial's end) waits for the server, up to ``mlflow.max_outage_s``.
    """

    def __init__(self, client: MlflowClient, interval_s: float = 1.0, outage: Outage | None = None):
        self._client = client
        self._interval_s = interval_s
        self._outage = outage if outage is not None and outage.enabled else None
        self._pending: dict[str, list[Metric]] = defaultdict(list)
        self._params: dict[str, dict[str, str]] = {}
        self._tags: dict[str, dict[str, str]] = {}
        self._count = 0
        self._flushed_at = time.monotonic()

    def add(self, run_id: str, values: Mapping[str, float], step: int) -> None:
        """Queue ``values`` at ``step`` for ``run_id``; writes everything pending once it is due."""
        now = int(time.time() * 1000)
        self._pending[run_id].extend(Metric(k, float(v), now, step) for k, v in values.items())
        self._count += len(values)
        self.write_due()

    def params(self, run_id: str, values: Mapping[str, str]) -> None:
        """Queue params for ``run_id``, written with its next metrics (at the latest when the next write is due)."""
        self._params.setdefault(run_id, {}).update(values)

    def tag(self, run_id: str, values: Mapping[str, str]) -> None:
        """Queue tags for ``run_id``, written with its next metrics (at the latest when the next write is due)."""
        self._tags.setdefault(run_id, {}).update(values)

    def write_due(self) -> None:
        """Write everything pending when a second has passed since the last write or 1,000 metrics wait.

        While the server does not answer the values stay pending; past ``mlflow.max_outage_s`` it raises
        :class:`raysweep.errors.TrackingOutage`.
        """
        if self._count < _MAX_BATCH and time.monotonic() - self._flushed_at < self._interval_s:
            return
        if not (self._pending or self._params or self._tags):
            self._flushed_at = time.monotonic()
            return
        try:
            self._write(None, wait=False)
        except Exception as error:
            if self._outage is None or not unreachable(error):
                raise
            self._outage.failed()  # kept for the next write; a trial's end waits for the server
            self._flushed_at = time.monotonic()
            if self._outage.expired:
                self._outage.give_up()
                raise self._outage.error() from None

    def flush(self, run_id: str | None = None) -> None:
        """Write the pending values of ``run_id`` (of every run when ``None``), waiting out an outage."""
        self._write(run_id, wait=True)

    def _write(self, run_id: str | None, wait: bool) -> None:
        log_batch = self._client.log_batch
        if wait and self._outage is not None:
            log_batch = partial(self._outage.call, self._client.log_batch)
        wrote = False
        runs = [run_id] if run_id is not None else list(dict.fromkeys([*self._pending, *self._params, *self._tags]))
        for rid in runs:
            metrics = self._pending.get(rid, [])
            params, tags = self._params.get(rid, {}), self._tags.get(rid, {})
            while metrics or params or tags:
                # MLflow's limits: 100 params and 100 tags a call, 1,000 entities in all.
                some_params = [Param(k, v) for k, v in list(params.items())[:_MAX_PARAMS_OR_TAGS]]
                some_tags = [RunTag(k, v) for k, v in list(tags.items())[:_MAX_PARAMS_OR_TAGS]]
                batch = metrics[:_MAX_BATCH - len(some_params) - len(some_tags)]
                log_batch(rid, metrics=batch, params=some_params, tags=some_tags)
                wrote = True
                # Only what was written leaves the buffer (a failed call raises before this).
                del metrics[:len(batch)]
                self._count -= len(batch)
                for written, pending in ((some_params, params), (some_tags, tags)):
                    for entity in written:
                        del pending[entity.key]
            for pending in (self._pending, self._params, self._tags):
                pending.pop(rid, None)
        if wrote and self._outage is not None:
            self._outage.answered()
        if run_id is None:
            self._flushed_at = time.monotonic()
