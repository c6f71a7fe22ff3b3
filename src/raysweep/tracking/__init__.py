"""MLflow side of a sweep: the parent run's lifecycle (``parent``) and the per-trial logging modes
(``driver``, ``worker``).

Nothing is imported here: trial processes import ``raysweep.tracking.worker``, and in driver mode they
must not pay for importing MLflow.
"""
