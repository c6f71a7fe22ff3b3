"""Set-up run in every Ray worker process of a sweep (Ray's ``worker_process_setup_hook``)."""

from __future__ import annotations

#: Passed as ``runtime_env={"worker_process_setup_hook": SETUP_HOOK}`` to ``ray.init``.
SETUP_HOOK = "raysweep._workers.setup"


def setup() -> None:
    """Quiet a warning that is expected when Ray runs without its dashboard.

    raysweep starts Ray without the dashboard, which is where the State API lives. Train V2's placement-group
    cleaner asks the State API whether the Train controller is alive every few seconds and warns each time it
    cannot; it only matters when a controller dies without cleaning up, and the warning floods the terminal.
    """
    from raysweep import compat

    compat.quiet_train_placement_group_cleaner()
