"""Tag names raysweep writes on MLflow runs, so analysis can read back what the sweep wrote."""

#: Marks a run's part in a sweep: ``sweep`` on the parent, ``trial`` on children.
ROLE_TAG = "raysweep.role"
PARENT_ROLE = "sweep"
TRIAL_ROLE = "trial"
#: Tune's trial id on each child run (stable across restores).
TRIAL_ID_TAG = "raysweep.trial_id"
#: Where the trial's last Tune checkpoint is: the model that gets registered.
CHECKPOINT_TAG = "raysweep.checkpoint"
#: ``models:/m-...`` of the model logged to a child run (the one registration takes when it is the best).
MODEL_URI_TAG = "raysweep.model_uri"
#: Last line of a failed trial's error.
ERROR_TAG = "raysweep.error"
#: On a child run that ended before its last iteration: what stopped it (scheduler, sweep stop criteria).
STOPPED_EARLY_TAG = "raysweep.stopped_early"
#: On the parent run: the sweep stop criterion that fired (time_budget or metric_threshold).
STOP_REASON_TAG = "raysweep.stop_reason"
#: Why raysweep, not the trial itself, ended a run (parent ended, orphaned driver, superseded trial).
ENDED_BY_TAG = "raysweep.ended_by"
#: On each child run: IP address of the Ray node the trial ran on (its latest start, for a restarted trial).
NODE_TAG = "raysweep.node_ip"
