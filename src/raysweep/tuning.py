"""Plan -> a running Ray Tune experiment: the trial context, the logging callback, searcher, scheduler, stopper.

Imported once a sweep is about to run (it imports Ray Tune).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig
from ray import tune

from raysweep import compat, strategy, trainables
from raysweep.config import LoggingMode
from raysweep.errors import RaySweepError
from raysweep.plan import SweepPlan
from raysweep.tracking.tags import WORLD_SIZE_TAG


def trial_context(plan: SweepPlan, cfg: DictConfig, fit, experiment_id: str, parent_id: str, dataset=None):
    """What every trial of the sweep shares besides the data: ranking, worker-mode logging, resources, storage.

    Args:
        plan: The sweep's plan.
        cfg: The composed config.
        fit: The :class:`raysweep.resources.ResourcePlan`.
        experiment_id: The sweep's MLflow experiment.
        parent_id: The sweep's parent run.
        dataset: The :class:`raysweep.tracking.lineage.DatasetRecord` each worker-mode trial run records.

    Returns:
        The :class:`raysweep.trainables.TrialContext`.
    """
    from raysweep.tracking.metadata import user_tags
    from raysweep.tracking.worker import WorkerLogging
    from raysweep.trainables import TrialContext

    child_tags = user_tags(cfg.mlflow.get("tags"))  # the user's mlflow.tags, on every trial's run in both modes
    if fit.num_workers:
        child_tags[WORLD_SIZE_TAG] = str(fit.num_workers)
    logging_spec = None
    if cfg.mlflow.mode == LoggingMode.worker:
        logging_spec = WorkerLogging(
            tracking_uri=plan.tracking_uri,
            registry_uri=plan.registry_uri,
            experiment_id=experiment_id,
            parent_run_id=parent_id,
            autolog=cfg.mlflow.autolog,
            system_metrics=cfg.mlflow.system_metrics,
            tags=child_tags,
            track_config=plan.scheduler == "pbt",
            step_metric=plan.metric,
            log_models=cfg.mlflow.log_models,
            dataset=dataset,
            max_outage_s=float(cfg.mlflow.get("max_outage_s", 300)),
        )
    return TrialContext(
        metric=plan.metric,
        mode=plan.mode,
        logging=logging_spec,
        resources=fit,
        storage_path=str(Path(plan.storage_path) / plan.run_name / "train"),
        child_tags=child_tags,
    )


def fit(plan: SweepPlan, cfg: DictConfig, trainable, resources, metrics, context, experiment_id: str,
        parent_id: str, dataset=None, logs_final_model: bool = False) -> tune.ResultGrid:
    """Run the sweep's trials with Ray Tune (or continue them, for a resumed sweep) and return Tune's results.

    Args:
        plan: The sweep's plan.
        cfg: The composed config.
        trainable: The trainer's Tune function trainable.
        resources: The :class:`raysweep.resources.ResourcePlan`.
        metrics: The metrics the trainer reports (driver mode logs these).
        context: The :func:`trial_context`.
        experiment_id: The sweep's MLflow experiment.
        parent_id: The sweep's parent run.
        dataset: The :class:`raysweep.tracking.lineage.DatasetRecord` each driver-mode trial run records.
        logs_final_model: The trainer's ``LOGS_FINAL_MODEL``.
    """
    trainable = tune.with_resources(trainable, resources.trial)
    compat.allow_frequent_experiment_checkpoints()
    if plan.resume:
        from raysweep import remote

        # Tune restores its searcher, scheduler, stopper and callbacks from the sweep's state; finished and
        # failed trials stay as they were, interrupted ones continue from their last checkpoint. The restored
        # callback and stopper kept only masked store URIs: the full ones are known to this process.
        remote.remember_uri(plan.tracking_uri)
        remote.remember_uri(plan.registry_uri)
        tuner = tune.Tuner.restore(plan.run_dir, trainable=trainable, resume_unfinished=True)
        # The restored run config keeps the first run's verbosity (and terminal progress callback).
        with compat.tune_output(compat.restored_verbosity(tuner)), _tensorboard(cfg.cluster.tensorboard):
            return tuner.fit()
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from raysweep.memory import DriverMemory
    from raysweep.tracking.progress import SweepProgressCallback

    # Both logging modes: trials ended / planned and the best so far on the parent run, as trials end. Tune's
    # result.json (what a resume re-logs) and progress.csv are kept; its TensorBoard logger only on request.
    # The sweep's own stop (sweep.stop.*): the progress callbacks count the trials it ends, which get no hook.
    stop = cfg.sweep.stop
    sweep_stop = strategy.stopper(plan.metric, plan.mode, stop.time_budget_s, stop.metric_threshold,
                                  tracking_uri=plan.tracking_uri, parent_run_id=parent_id)
    # Trials that log their final models (worker mode) rank by their last values, as registration does.
    final_models = bool(logs_final_model and context.logging and context.logging.log_models)
    callbacks = [SweepProgressCallback(tracking_uri=plan.tracking_uri, parent_run_id=parent_id, metric=plan.metric,
                                       mode=plan.mode, planned=plan.num_trials, stop=sweep_stop,
                                       final_models=final_models),
                 JsonLoggerCallback(), CSVLoggerCallback(), DriverMemory()]  # DriverMemory: freed memory back
    if cfg.cluster.verbose == 0:  # raysweep's one line per trial; Tune's own tables at 1 and 2
        from raysweep.progress import TrialProgress

        callbacks.append(TrialProgress.for_plan(plan, stop=sweep_stop, final_models=final_models))
    if context.logging is None:
        from raysweep.tracking.driver import SweepLoggerCallback

        callbacks.append(
            SweepLoggerCallback(
                tracking_uri=plan.tracking_uri,
                registry_uri=plan.registry_uri,
                experiment_id=experiment_id,
                experiment_name=plan.experiment_name,
                parent_run_id=parent_id,
                metrics=[plan.metric, *(m for m in metrics if m != plan.metric)],
                child_tags=context.child_tags,
                system_metrics=cfg.mlflow.system_metrics,
                track_config=plan.scheduler == "pbt",
                dataset=dataset,
                all_metrics=not metrics,  # only the trials know what they report (trainer=function)
                save_artifact=cfg.mlflow.save_artifact,
            )
        )
    elif cfg.mlflow.save_artifact:
        from raysweep.tracking.driver import TrialFolderCallback

        # Worker mode: trials write their own runs, but Tune's driver writes each trial's folder.
        callbacks.append(TrialFolderCallback(tracking_uri=plan.tracking_uri, registry_uri=plan.registry_uri,
                                             experiment_id=experiment_id, parent_run_id=parent_id))
    trainer = trainables.load(cfg.trainer.name)
    if plan.register and trainer.MAKES_MODELS:
        from raysweep.leading import LeadingModel

        # The best finished trial's model is logged while the last trials leave CPUs idle, not after them.
        callbacks.append(LeadingModel(tracking_uri=plan.tracking_uri, experiment_id=experiment_id, parent_id=parent_id,
                                      metric=plan.metric, mode=plan.mode, trainer_name=cfg.trainer.name,
                                      planned=plan.num_trials, capacity=resources.max_concurrent_trials))
    search_alg, param_space = strategy.searcher(
        cfg.search_alg, plan.search_space, plan.metric, plan.mode, resources.max_concurrent_trials,
        warm=plan.warm_start,
    )
    # PBT perturbs only what leaves the model's shape alone: an exploit continues the cloned trial's checkpoint.
    fixed = trainer.fixed_under_pbt(cfg.trainer, plan.search_space)
    user_error, stopper = strategy.with_first_user_error(sweep_stop)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=plan.metric,
            mode=plan.mode,
            # A grid runs each combination once; its size is in plan.num_trials.
            num_samples=1 if plan.search_alg == "grid" else plan.num_samples,
            search_alg=search_alg,
            scheduler=strategy.scheduler(cfg.scheduler, plan.search_space, cfg.trainer.iterations, fixed=fixed),
            # A trial running a Ray Train worker group is blocked in fit() until the group ends: Tune cannot reset
            # its process for another trial or a PBT exploit within TUNE_FUNCTION_THREAD_TIMEOUT_S (2 s) and fails
            # that trial instead. Such trials start in a fresh process, a small cost next to the group's start.
            reuse_actors=cfg.cluster.reuse_actors and not resources.num_workers,
        ),
        run_config=tune.RunConfig(
            name=plan.run_name,
            storage_path=plan.storage_path,
            callbacks=[*callbacks, user_error],
            stop=stopper,
            failure_config=tune.FailureConfig(max_failures=plan.max_failures),
            # Keep each trial's two best checkpoints by the sweep metric, and its latest (Tune never prunes that
            # one: a retry or a resumed sweep continues from it): registration takes the best, which a trial whose
            # validation score peaked before its end would otherwise lose. PBT keeps all: its exploits copy a
            # checkpoint other trials may still point at.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None if plan.scheduler == "pbt" else 2,
                                                    checkpoint_score_attribute=plan.metric,
                                                    checkpoint_score_order=plan.mode),
            verbose=cfg.cluster.verbose,
        ),
    )
    with compat.tune_output(cfg.cluster.verbose), _tensorboard(cfg.cluster.tensorboard), warnings.catch_warnings():
        # Tune advises reuse_actors under PBT; worker-group trials go without it on purpose (see above).
        warnings.filterwarnings("ignore", message="Consider boosting PBT performance")
        results = tuner.fit()
    if user_error.error:
        raise RaySweepError(user_error.error)
    return results


@contextmanager
def _tensorboard(wanted: bool) -> Iterator[None]:
    """Whether Tune adds its TensorBoard logger: it imports tensorboardX and so torch into the driver (~0.5 GB and
    seconds before the first trial), for event files raysweep never reads. Tune's other loggers are passed in."""
    if wanted or "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" in os.environ:
        yield
        return
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    try:
        yield
    finally:
        os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
