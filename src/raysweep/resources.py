"""Plan trial and worker-group resources against what the Ray cluster has, before anything starts.

Ray Train V2 starts a trial's worker group outside the trial's own resources. A trial function that holds a
CPU while its workers wait for one deadlocks, and an oversubscribed cluster ends trials after Ray's 60 s
worker-group timeout with no metrics and no error. So: the trial function of a distributed trainer holds no CPU,
its workers get whole or fractional CPUs, and Tune runs no more trials at once than the cluster can feed.

The trial function of a distributed trainer (and with it the Train controller, which Ray starts on its node) runs
on the driver's node. Ray keeps a placement group that an actor created until the job ends, even after that actor
died: a controller lost with its node would leave its workers' CPUs on the other nodes reserved for the rest of
the sweep, and the trials retried after the loss would wait for them forever. The driver's node is the one node
the sweep cannot lose anyway.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from raysweep.errors import RaySweepError

# Ray rejects an empty resource request; a token of memory lets a trial function hold no CPU.
_TRIAL_FUNCTION_MEMORY = 64 * 1024 * 1024
# A node's own resource (``node:<ip>``) is 1.0: a thousandth of it per trial pins up to 1,000 trials there at once.
_HOME_SHARE = 0.001


@dataclass(frozen=True)
class ResourcePlan:
    """Resources of one trial and, for distributed trainers, of each of its workers."""

    trial: dict[str, float]  # for tune.with_resources
    num_workers: int  # 0: the trial trains in its own process
    cpus_per_worker: float
    gpus_per_worker: float
    max_concurrent_trials: int


def plan(
    *,
    cluster: Mapping[str, float],
    cpus_per_trial: float = 1.0,
    num_workers: int = 0,
    cpus_per_worker: float | None = None,
    use_gpu: bool = False,
    max_concurrent_trials: int | None = None,
    home: str | None = None,
) -> ResourcePlan:
    """Fit a sweep's trials into a cluster, or say in one line what to change.

    Args:
        cluster: ``ray.cluster_resources()``: at least ``CPU``, and ``GPU`` where present.
        cpus_per_trial: CPUs of a trial that trains in its own process (``num_workers == 0``).
        num_workers: Ray Train workers per trial; 0 for single-process trainers.
        cpus_per_worker: CPUs per worker; ``None`` gives each worker an equal share of the cluster, at most 1.
        use_gpu: One GPU per worker.
        max_concurrent_trials: The user's cap; the plan never exceeds what fits.
        home: The driver node's resource (``node:<ip>``), where distributed trials run their trial functions.

    Raises:
        RaySweepError: A single trial cannot fit the cluster.
    """
    cpus = float(cluster.get("CPU", 0.0))
    gpus = float(cluster.get("GPU", 0.0))
    if num_workers == 0:
        if cpus_per_trial > cpus:
            raise RaySweepError(
                f"a trial needs {cpus_per_trial:g} CPU but the Ray cluster has {cpus:g}; "
                "lower trainer.cpus_per_trial or give Ray more CPUs (cluster.num_cpus)"
            )
        fits = math.floor(cpus / cpus_per_trial + 1e-9)
        return ResourcePlan({"cpu": cpus_per_trial}, 0, cpus_per_trial, 0.0, _cap(fits, max_concurrent_trials))

    if use_gpu and gpus < num_workers:
        have = "no GPU" if gpus == 0 else f"{gpus:g} GPU"
        raise RaySweepError(
            f"trainer.use_gpu=true needs {num_workers} GPU (one per worker) but the Ray cluster has {have}; "
            "set trainer.use_gpu=false or lower trainer.num_workers"
        )
    per_worker = cpus_per_worker if cpus_per_worker is not None else min(1.0, cpus / num_workers)
    needed = per_worker * num_workers
    if per_worker <= 0 or needed > cpus + 1e-9:
        raise RaySweepError(
            f"trainer.num_workers={num_workers} x {per_worker:g} CPU needs {needed:g} CPUs but the Ray cluster has "
            f"{cpus:g}; lower trainer.num_workers or trainer.cpus_per_worker (null fits the cluster)"
        )
    fits = math.floor(cpus / needed + 1e-9)
    if use_gpu:
        fits = min(fits, math.floor(gpus / num_workers))
    trial = {"cpu": 0, "memory": _TRIAL_FUNCTION_MEMORY}
    if home:
        trial[home] = _HOME_SHARE
    return ResourcePlan(trial, num_workers, per_worker, 1.0 if use_gpu else 0.0, _cap(fits, max_concurrent_trials))


def _cap(fits: int, user_cap: int | None) -> int:
    return max(1, min(fits, user_cap) if user_cap else fits)
