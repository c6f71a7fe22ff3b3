"""The sweep's parent run: open for the whole sweep, always ended with an explicit status."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.entities import Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from raysweep.tracking.tags import PARENT_ROLE, ROLE_TAG


_MAX_PARAM_LENGTH = 6000


@contextmanager
def parent_run(
    client: MlflowClient,
    experiment_id: str,
    run_name: str,
    *,
    tags: Mapping[str, str],
    params: Mapping[str, object],
    config_yaml: str,
) -> Iterator[str]:
    """Create the sweep's parent run and end it FINISHED, FAILED or KILLED.

    Any child run still RUNNING when the parent ends is ended too (KILLED), so no run is left RUNNING.

    Args:
        client: Client bound to the sweep's tracking store.
        experiment_id: Experiment to create the run in.
        run_name: The parent run's name (the sweep run's name).
        tags: Tags for the parent run.
        params: Key config values, logged as params.
        config_yaml: The resolved config, stored as the ``config.yaml`` artifact.

    Yields:
        The parent run id.
    """
    run = client.create_run(experiment_id, run_name=run_name, tags={ROLE_TAG: PARENT_ROLE, **tags})
    run_id = run.info.run_id
    status = "FAILED"
    try:
        client.log_batch(run_id, params=[Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in params.items()])
        client.log_text(run_id, config_yaml, "config.yaml")
        yield run_id
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        end_open_children(client, experiment_id, run_id)
        client.set_terminated(run_id, status)


def end_open_children(client: MlflowClient, experiment_id: str, parent_run_id: str, status: str = "KILLED") -> int:
    """End every RUNNING child of ``parent_run_id`` with ``status``; returns how many were ended."""
    open_runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent_run_id}' and attributes.status = 'RUNNING'",
        max_results=1000,
    )
    for run in open_runs:
        client.log_batch(run.info.run_id, tags=[RunTag("raysweep.ended_by", "parent run ended")])
        client.set_terminated(run.info.run_id, status, end_time=int(time.time() * 1000))
    return len(open_runs)
