"""Metrics written in batches: one ``log_batch`` per run at most every second, not one call per value.

A per-metric ``log_metric`` loop costs a round trip per value (~280 values/s on sqlite, fewer over HTTP);
``log_batch`` takes up to 1,000 metrics in one call. Trials report a handful of metrics per iteration, so
raysweep gathers them and writes each run's pending values when a second has passed, when 1,000 are
waiting, and always when a trial ends.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping

from mlflow import MlflowClient
from mlflow.entities import Metric

#: MLflow's limit of metrics per log_batch call.
_MAX_BATCH = 1000


class MetricBuffer:
    """Pending metrics of one or more runs, written with ``log_batch``."""

    def __init__(self, client: MlflowClient, interval_s: float = 1.0):
        self._client = client
        self._interval_s = interval_s
        self._pending: dict[str, list[Metric]] = defaultdict(list)
        self._count = 0
        self._flushed_at = time.monotonic()

    def add(self, run_id: str, values: Mapping[str, float], step: int) -> None:
        """Queue ``values`` at ``step`` for ``run_id``; writes everything pending once it is due."""
        now = int(time.time() * 1000)
        self._pending[run_id].extend(Metric(k, float(v), now, step) for k, v in values.items())
        self._count += len(values)
        if self._count >= _MAX_BATCH or time.monotonic() - self._flushed_at >= self._interval_s:
            self.flush()

    def flush(self, run_id: str | None = None) -> None:
        """Write the pending metrics of ``run_id`` (of every run when ``None``)."""
        run_ids = [run_id] if run_id is not None else list(self._pending)
        for rid in run_ids:
            metrics = self._pending.pop(rid, [])
            self._count -= len(metrics)
            for start in range(0, len(metrics), _MAX_BATCH):
                self._client.log_batch(rid, metrics=metrics[start:start + _MAX_BATCH])
        if run_id is None:
            self._flushed_at = time.monotonic()
