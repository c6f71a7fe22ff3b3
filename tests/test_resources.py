"""Resource planning as a table: what fits a cluster, and the one line when nothing does."""

import pytest

from raysweep.errors import RaySweepError
from raysweep.resources import plan

TWO_CPUS = {"CPU": 2.0, "memory": 8e9}


@pytest.mark.parametrize(
    "kwargs, cluster, trial, workers, cpus_per_worker, concurrent",
    [
        ({}, TWO_CPUS, {"cpu": 1.0}, 0, 1.0, 2),
        ({"cpus_per_trial": 2}, TWO_CPUS, {"cpu": 2}, 0, 2, 1),
        ({"cpus_per_trial": 0.5, "max_concurrent_trials": 3}, TWO_CPUS, {"cpu": 0.5}, 0, 0.5, 3),
        ({"num_workers": 2}, TWO_CPUS, {"cpu": 0, "memory": 64 * 2**20}, 2, 1.0, 1),
        ({"num_workers": 1}, TWO_CPUS, {"cpu": 0, "memory": 64 * 2**20}, 1, 1.0, 2),
        ({"num_workers": 8}, TWO_CPUS, {"cpu": 0, "memory": 64 * 2**20}, 8, 0.25, 1),
        ({"num_workers": 2, "cpus_per_worker": 0.5}, TWO_CPUS, {"cpu": 0, "memory": 64 * 2**20}, 2, 0.5, 2),
        ({"num_workers": 2, "max_concurrent_trials": 5}, {"CPU": 16.0}, {"cpu": 0, "memory": 64 * 2**20}, 2, 1.0, 5),
        ({"num_workers": 2, "use_gpu": True}, {"CPU": 16.0, "GPU": 2.0}, {"cpu": 0, "memory": 64 * 2**20}, 2, 1.0, 1),
        # A distributed trial's function stays on the driver's node; a trial that trains in its own process goes
        # wherever a CPU is free.
        ({"num_workers": 1, "home": "node:10.0.0.1"}, TWO_CPUS,
         {"cpu": 0, "memory": 64 * 2**20, "node:10.0.0.1": 0.001}, 1, 1.0, 2),
        ({"home": "node:10.0.0.1"}, TWO_CPUS, {"cpu": 1.0}, 0, 1.0, 2),
    ],
)
def test_plans_that_fit(kwargs, cluster, trial, workers, cpus_per_worker, concurrent):
    p = plan(cluster=cluster, **kwargs)
    assert (p.trial, p.num_workers, p.cpus_per_worker, p.max_concurrent_trials) == (
        trial, workers, cpus_per_worker, concurrent)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"cpus_per_trial": 4}, "a trial needs 4 CPU but the Ray cluster has 2; lower trainer.cpus_per_trial"),
        ({"num_workers": 8, "cpus_per_worker": 1}, "trainer.num_workers=8 x 1 CPU needs 8 CPUs but the Ray cluster has 2"),
        ({"num_workers": 2, "use_gpu": True}, "trainer.use_gpu=true needs 2 GPU (one per worker) but the Ray cluster has no GPU"),
    ],
)
def test_plans_that_cannot_fit_say_what_to_change(kwargs, fragment):
    with pytest.raises(RaySweepError) as err:
        plan(cluster=TWO_CPUS, **kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)
