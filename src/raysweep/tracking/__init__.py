"""MLflow side of a sweep: the parent run's lifecycle and the per-trial logging modes."""

from raysweep.tracking.parent import end_open_children, parent_run

__all__ = ["end_open_children", "parent_run"]
