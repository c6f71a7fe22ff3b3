"""Set-up run in every Ray worker process of a sweep (Ray's ``worker_process_setup_hook``)."""

from __future__ import annotations

#: Passed as ``runtime_env={"worker_process_setup_hook": SETUP_HOOK}`` to ``ray.init``.
SETUP_HOOK = "raysweep._workers.setup"


def setup() -> None:
    """Quiet what Ray and MLflow log in a trial's process that says nothing a user acts on.

    Workers' output reaches the driver's terminal (a user's own prints must), so the noise is silenced where it
    is logged:

    - Train V2's placement-group cleaner asks the State API, which lives in the dashboard raysweep does not
      start, whether the Train controller is alive every few seconds and warns each time it cannot; it only
      matters when a controller dies without cleaning up.
    - Tune and Train log "Checkpoint successfully created at: ..." at every checkpoint (every iteration here),
      and Train V2's workers "Reporting training result ..." at every report.
    - MLflow, in worker-mode trials, logs INFO lines, artifact progress bars and a pip-version notice at every
      model logged.
    """
    from raysweep import compat

    compat.quiet_train_placement_group_cleaner()
    compat.quiet_checkpoint_lines()
    compat.quiet_train_reports()
    compat.quiet_mlflow()
