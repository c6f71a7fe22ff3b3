"""Every tag name raysweep writes in MLflow - on runs and on model versions - so readers find what writers wrote.

Plain strings, no imports: trial processes, the CLI and the notebooks read these without loading MLflow.
"""

# --- MLflow's own tag names (mlflow.utils.mlflow_tags), spelled here so light modules need not import MLflow.
#: Nests a child run under its parent in the MLflow UI and in ``search_runs`` filters.
PARENT_RUN_ID = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
NOTE = "mlflow.note.content"
GIT_COMMIT = "mlflow.source.git.commit"

# --- On every run of a sweep.
#: Marks a run's part in a sweep: ``sweep`` on the parent, ``trial`` on children, ``ensemble`` on an ensemble's run.
ROLE_TAG = "raysweep.role"
PARENT_ROLE = "sweep"
TRIAL_ROLE = "trial"
ENSEMBLE_ROLE = "ensemble"
#: Why raysweep, not the trial itself, ended a run (parent ended, orphaned driver, superseded trial).
ENDED_BY_TAG = "raysweep.ended_by"

# --- On the parent run.
#: The sweep's name (``sweep.name``): sweeps of one name are runs of the same search, resumed or repeated.
SWEEP_TAG = "raysweep.sweep"
#: The command-line overrides, credentials masked.
OVERRIDES_TAG = "raysweep.overrides"
#: Where the driver runs: a later command tells a live sweep from an orphaned one by these.
DRIVER_HOST_TAG = "raysweep.driver.host"
DRIVER_PID_TAG = "raysweep.driver.pid"
#: The driver that holds the sweep (``HOST:PID:CREATED_MS``, empty once released) and when it last said so (epoch
#: ms): a second driver (``resume=true``) refuses while the lease is held; it expires when the holder dies.
LEASE_HOLDER_TAG = "raysweep.lease.holder"
LEASE_HEARTBEAT_TAG = "raysweep.lease.heartbeat"
#: How many times the sweep was resumed.
RESUMED_TAG = "raysweep.resumed"
#: The sweep stop criterion that fired (time_budget or metric_threshold).
STOP_REASON_TAG = "raysweep.stop_reason"
#: The Ray job whose driver runs the sweep (its submission id), on a sweep submitted as a job.
JOB_ID_TAG = "raysweep.job_id"
#: ``raysweep stop JOB_ID`` asks that job's driver to stop by setting this to the job id; the driver watches it.
STOP_REQUESTED_TAG = "raysweep.stop_requested"
#: The best child, written after the sweep.
BEST_RUN_TAG = "raysweep.best_run_id"
BEST_RUN_NAME_TAG = "raysweep.best_run_name"
#: Run ids of the trials on the Pareto front (multi-objective sweeps).
PARETO_TAG = "raysweep.pareto_front"
#: Live progress, updated as trials end: trials ended of those planned (``5/16``), and the planned number.
PROGRESS_TAG = "raysweep.progress"
TRIALS_PLANNED_TAG = "raysweep.trials_planned"
#: Prefix of the installed versions of the packages a sweep ran with (``raysweep.version.ray``).
VERSION_TAG_PREFIX = "raysweep.version."

# --- On each child (trial) run.
#: Tune's trial id (stable across restores).
TRIAL_ID_TAG = "raysweep.trial_id"
#: Tune's trial name (also the run name).
TRIAL_NAME_TAG = "trial_name"
#: Where the trial's best Tune checkpoint is: the model that gets registered.
CHECKPOINT_TAG = "raysweep.checkpoint"
#: The sweep metric's value of the model the trial would register (its best checkpoint's, or its final model's
#: when it logged one): the trial's one number, which ranks it and which its registered version records; the
#: metric's last logged value may differ.
MODEL_VALUE_TAG = "raysweep.model_value"
#: ``models:/m-...`` of the model logged to a child run (the one registration takes when it is the best).
MODEL_URI_TAG = "raysweep.model_uri"
#: Set before raysweep logs a trial's model from its checkpoint (registration, or ahead of it): the logged models
#: the run had before ("-": none), and that checkpoint; a retry after an outage finds what it logged by them.
MODELS_BEFORE_TAG = "raysweep.registration_models_before"
MODEL_CHECKPOINT_TAG = "raysweep.registration_checkpoint"
#: Last line of a failed trial's error.
ERROR_TAG = "raysweep.error"
#: On a child run that ended before its last iteration: what stopped it (scheduler, sweep stop criteria).
STOPPED_EARLY_TAG = "raysweep.stopped_early"
#: IP address of the Ray node the trial ran on (its latest start, for a restarted trial).
NODE_TAG = "raysweep.node_ip"
#: Ray Train world size of a distributed trial.
WORLD_SIZE_TAG = "raysweep.world_size"
#: The torch device a distributed trial trained on.
DEVICE_TAG = "raysweep.device"
#: On a dataset input (lineage): the task the data was trained for (binary, multiclass, regression).
TASK_TAG = "raysweep.task"
#: Prefix of hyperparameters whose value changed during a trial (PBT): metrics for numbers, tags otherwise.
CONFIG_PREFIX = "config."

# --- On model versions.
#: The sweep (parent run id) and trial a version was registered from.
VERSION_PARENT_TAG = "raysweep.parent_run_id"
VERSION_SWEEP_TAG = "raysweep.sweep"
VERSION_TRIAL_TAG = "raysweep.trial"
#: The metric, its value and its direction: what automatic promotion and the gate compare.
METRIC_TAG = "raysweep.metric"
VALUE_TAG = "raysweep.metric_value"
MODE_TAG = "raysweep.mode"
#: The sweep's metric on the test split (``test_auc``) and the registered model's value of it, recorded at
#: registration: rows no trial saw and nothing was ranked on.
TEST_METRIC_TAG = "raysweep.test_metric"
TEST_VALUE_TAG = "raysweep.test_metric_value"
#: Prefix of every metric a version was scored on at registration, by its name (``raysweep.score.test_rmse``).
SCORE_TAG_PREFIX = "raysweep.score."
#: Who moved ``@champion`` to this version, why, when, and which version it replaced (for rollback).
PROMOTED_BY_TAG = "raysweep.promoted_by"
PROMOTION_REASON_TAG = "raysweep.promotion_reason"
PROMOTED_AT_TAG = "raysweep.promoted_at"
PREVIOUS_CHAMPION_TAG = "raysweep.previous_champion"
#: The newest version number when ``@champion`` was moved: versions registered later compete with a decision a
#: person made; versions up to it do not (automatic promotion never undoes a promote or rollback).
PROMOTION_BASIS_TAG = "raysweep.promotion_basis"
#: An ensemble's members, ``KEY=models:/NAME/VERSION`` comma-separated.
MEMBERS_TAG = "raysweep.members"
#: A copied version's source (and, across registries, the source registry without credentials).
COPIED_FROM_TAG = "raysweep.copied_from"
COPIED_FROM_REGISTRY_TAG = "raysweep.copied_from_registry"
SOURCE_RUN_TAG = "raysweep.source_run_id"
#: On a parent run: the parent run id of the sweep this one was warm-started from (``sweep.warm_start``).
WARM_START_TAG = "raysweep.warm_start"
#: On a parent run: how many of that sweep's trials seeded the search.
WARM_START_POINTS_TAG = "raysweep.warm_start.points"
#: Gate decision tags on a challenger (``validation_status`` = passed | failed | forced, and the values compared).
VALIDATION_PREFIX = "validation_"
VALIDATION_STATUS_TAG = "validation_status"
#: Tags that describe a version's place in its own model's history; a copy elsewhere does not inherit them.
HISTORY_TAG_PREFIXES = (VALIDATION_PREFIX, "raysweep.promot", PREVIOUS_CHAMPION_TAG, "raysweep.copied_")
