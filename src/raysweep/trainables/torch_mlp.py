"""PyTorch trainer: each trial is a distributed Ray Train job (DDP over ``trainer.num_workers`` workers).

Ray 2.60 runs Train V2, where a Train run is not a Tune trainable: the Tune function trial builds a
``TorchTrainer`` with ``TuneReportCallback`` (which forwards rank 0's reports to Tune) and calls ``fit()``.
Every worker trains its shard, evaluates the whole validation set (small; the weights are identical after
DDP), and reports each epoch; rank 0 writes the checkpoint and, in worker mode, the MLflow run. Train's
``CheckpointConfig`` keeps the best epochs by the sweep metric, and the best one is what gets registered.

What trains is configurable (:mod:`raysweep.trainables._torch_loop` runs it):

- the network: the built-in MLP (``trainer.family=mlp``), or ``trainer.model._target_``, a user's ``nn.Module``
  factory (a function or the class) called with ``n_features`` and ``n_outputs`` where its signature takes them,
  the other ``trainer.model`` keys, and the trial's hyperparameters that are not the loop's
  (``lr``, ``weight_decay``, ``batch_size``, ``pos_weight``);
- the loop: the built-in one (binary, multiclass or regression, from the data's task; reports the task's
  validation metrics), or ``trainer.train_loop: MODULE:FUNC``, a user's Ray Train ``train_loop_per_worker``
  taking ``config`` (hyperparameters plus ``config["raysweep"]``, a :class:`~._torch_loop.LoopContext`).

The registered model takes the raw columns: the preprocessing fitted on the training split, then the network as
TorchScript (:func:`raysweep.tabular.log_model`). A user's loop may instead save its own MLflow model in its
checkpoints (as :mod:`raysweep.trainables.function` registers it).

Trials continue from their last checkpoint when they start again - a retry (``sweep.max_failures``), a resumed
sweep, PBT's exploit of a better trial - so ``scheduler=pbt`` works; PBT perturbs only the hyperparameters that
leave the network's shape alone (:func:`structural_params`). No ``retrain``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from raysweep import ranking
from raysweep.compat import TRAIN_CHECKPOINT_KEY
from raysweep.errors import RaySweepError
from raysweep.metrics import VALIDATION_METRICS, metric_names
from raysweep.trainables import _torch_loop

#: What the built-in loop reports on binary data, once per epoch; the last three split a trial's time for the
#: benchmark. Other tasks report their own validation metrics (:func:`metrics`).
METRICS = (*VALIDATION_METRICS, *_torch_loop.LOOP_METRICS)
FAMILIES = ("mlp",)
#: What loading a logged network needs besides the tabular model's own requirements.
REQUIREMENTS = ("torch",)
#: Trials continue from the checkpoint Tune hands back (retries, resumed sweeps, PBT): the built-in loop restores
#: weights, optimiser and epoch; a user's loop gets it as ``config["raysweep"].resume_from``.
RESTORES_CHECKPOINTS = True
#: What :func:`log_model` imports in the driver (the preprocessing is saved with skops, the network loaded with
#: torch): imported while Ray starts (raysweep.sweep).
REGISTRATION_IMPORTS = ("mlflow.sklearn", "skops.io", "torch")


def structural_params(trainer_cfg, names) -> set[str]:
    """Which of ``names`` shape the network, so a trial continuing another's checkpoint (PBT) must keep them.

    The built-in MLP's width and depth; every argument of a user's network factory (the loop's own
    ``lr``, ``weight_decay``, ``batch_size``, ``pos_weight`` excepted); none for a user's loop, which restores
    what it saved itself.
    """
    from raysweep.trainables import _mlp

    if _get(trainer_cfg, "train_loop"):
        return set()
    if _model_cfg(trainer_cfg) is not None:
        return {n for n in names if n not in _mlp.LOOP_PARAMS}
    return {n for n in names if n in _mlp.ARCHITECTURE_PARAMS and n != "dropout"}


def metrics(trainer_cfg, task: str | None) -> tuple[str, ...]:
    """The metrics trials report for ``task``: the task's validation metrics and the loop's own; none known
    before the task is (the check waits for the data), nor for a user's loop (its trials tell)."""
    if _get(trainer_cfg, "train_loop") or task is None:
        return ()
    return (*metric_names(task), *_torch_loop.LOOP_METRICS)


def validate(trainer_cfg, search_space: dict[str, Any]) -> None:
    """Check the model, the loop, and that every hyperparameter is one they take.

    Raises:
        RaySweepError: Unknown family, a model or loop that does not import, or an unknown parameter.
    """
    from raysweep.trainables import _mlp
    from raysweep.trainables.function import import_object

    names = [*search_space, *trainer_cfg.params]
    accepted: set[str] | None = {*_mlp.ARCHITECTURE_PARAMS, *_mlp.LOOP_PARAMS}
    model = _model_cfg(trainer_cfg)
    if model is not None:
        if not model.get("_target_"):
            raise RaySweepError("trainer.model needs _target_: the nn.Module factory, e.g. "
                                "trainer.model._target_=my_project.nets.Net")
        taken = _torch_loop.factory_arguments(import_object(model["_target_"], "trainer.model._target_"))
        accepted = None if taken is None else {*(taken - set(_torch_loop.SHAPE_ARGUMENTS)), *_mlp.LOOP_PARAMS}
    elif trainer_cfg.family not in FAMILIES:
        raise RaySweepError(f"trainer.family={trainer_cfg.family!r} is not known; use one of {', '.join(FAMILIES)}, "
                            "or your own network with trainer.model._target_=MODULE.FACTORY")
    if _get(trainer_cfg, "train_loop"):
        loop = import_object(trainer_cfg.train_loop, "trainer.train_loop")
        _check_loop_signature(trainer_cfg.train_loop, loop)
        return  # the user's loop takes whatever hyperparameters it reads
    what = f"your model {model['_target_']}" if model is not None else "the torch MLP"
    for name in names:
        if accepted is not None and name not in accepted:
            raise RaySweepError(
                f"{name!r} is not a parameter of {what}; use {', '.join(sorted(accepted))} in "
                "search_space/trainer.params"
            )


def check_task(trainer_cfg, search_space, task: str | None) -> None:
    """Refuse ``pos_weight`` where the built-in loop has no positive class to weight (multiclass, regression).

    Searched, it would spend trials on a value the loss never reads. A user's loop reads what it likes.

    Raises:
        RaySweepError: Naming where ``pos_weight`` is set and how to remove it.
    """
    if task in (None, "binary") or _get(trainer_cfg, "train_loop"):
        return
    for where, values in (("search_space", search_space), ("trainer.params", trainer_cfg.params)):
        if "pos_weight" in values:
            raise RaySweepError(
                f"{where}.pos_weight weights the positive class of a binary target, but the data's task is {task}, "
                f"whose loss has none; remove it (~{where}.pos_weight)"
            )


def resource_needs(trainer_cfg) -> dict[str, Any]:
    """A worker group of ``trainer.num_workers``; the Tune trial function itself holds no CPU."""
    return {
        "num_workers": int(trainer_cfg.num_workers),
        "cpus_per_worker": trainer_cfg.cpus_per_worker,
        "use_gpu": bool(trainer_cfg.use_gpu),
    }


def make_trainable(trainer_cfg, dataset, context):
    """Build the Tune function trainable that runs one ``TorchTrainer`` per trial.

    The preprocessing is fitted here, once, on the training split; the preprocessed splits are shipped once
    through the object store.

    Args:
        trainer_cfg: The ``trainer`` config node.
        dataset: The :class:`raysweep.data.Dataset` (``None`` with ``data=none``: only a user's loop can do without).
        context: The sweep's :class:`raysweep.trainables.TrialContext`.

    Raises:
        RaySweepError: The built-in loop with ``data=none``.
    """
    from omegaconf import OmegaConf
    from ray import tune

    from raysweep.trainables.function import import_object, import_root

    loop = _get(trainer_cfg, "train_loop")
    if dataset is None and not loop:
        raise RaySweepError("the torch trainer's built-in loop trains on raysweep's data, and data=none loads none; "
                            "pick a data config, or bring your own loop with trainer.train_loop=MODULE:FUNC")
    model = _model_cfg(trainer_cfg)
    spec = _torch_loop.ModelSpec()
    if model is not None:
        target = model["_target_"]
        spec = _torch_loop.ModelSpec(target, {k: v for k, v in model.items() if k != "_target_"},
                                     import_root(import_object(target, "trainer.model._target_")))
    params = trainer_cfg.params
    settings = {
        "epochs": int(trainer_cfg.iterations),
        "seed": int(trainer_cfg.seed),
        "params": OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else dict(params),
        "model": spec,
        "train_loop": loop,
        "loop_root": import_root(import_object(loop, "trainer.train_loop")) if loop else None,
        "num_workers": context.resources.num_workers,
        "cpus_per_worker": context.resources.cpus_per_worker,
        "use_gpu": context.resources.gpus_per_worker > 0,
        "metric": context.metric,
        "mode": context.mode,
        "storage_path": context.storage_path,
        "logging": context.logging,
    }
    data = _torch_loop.prepare(dataset) if dataset is not None else None
    return tune.with_parameters(run_trial, data=data, settings=settings)


def run_trial(config: dict[str, Any], data, settings: dict[str, Any]) -> None:
    """Tune function trainable: one distributed Ray Train run with this trial's hyperparameters.

    It continues from the checkpoint Tune hands back when the trial starts again, and reports every epoch's
    checkpoint to Tune (:mod:`raysweep.trainables._torch_relay`).
    """
    from ray import tune
    from ray.train import CheckpointConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raysweep.trainables import _torch_relay

    context = tune.get_context()
    box = _torch_relay.mailbox()
    resources = {"CPU": settings["cpus_per_worker"]}
    if settings["use_gpu"]:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        _torch_loop.user_loop if settings["train_loop"] else _torch_loop.train_loop,
        train_loop_config={
            "params": config,
            "data": data,
            "settings": settings,
            "trial": {"id": context.get_trial_id(), "name": context.get_trial_name()},
            "launched_at": time.time(),
            "resume_from": tune.get_checkpoint(),
        },
        scaling_config=ScalingConfig(
            num_workers=settings["num_workers"], use_gpu=settings["use_gpu"], resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=context.get_trial_id(),
            storage_path=settings["storage_path"],
            callbacks=[_torch_relay.ReportToTune(box)],
            checkpoint_config=CheckpointConfig(
                num_to_keep=2,
                checkpoint_score_attribute=settings["metric"],
                checkpoint_score_order=settings["mode"],
            ),
            # Train's own INFO lines (resources, worker group, every checkpoint and report) stay in its log files.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    _torch_relay.fit_reporting_to_tune(trainer, box)


def best_checkpoint(result, metric: str, mode: str) -> str | None:
    """Path of the trial's best-scoring Ray Train checkpoint (Train keeps the best epochs)."""
    frame = result.metrics_dataframe
    # TuneReportCallback reports the Train checkpoint's path under its own key, only on epochs that saved one.
    if frame is None or TRAIN_CHECKPOINT_KEY not in frame or metric not in frame:
        return None
    frame = frame.dropna(subset=[TRAIN_CHECKPOINT_KEY])
    best = ranking.best_index(frame[metric], mode)
    return None if best is None else str(frame[TRAIN_CHECKPOINT_KEY].iloc[best])


def log_model(checkpoint_dir: str | Path):
    """Log the checkpointed network to the active MLflow run as a tabular model that takes the raw columns.

    The network is TorchScript, so loading it needs torch but neither raysweep nor the user's model code; the
    pyfunc answers :mod:`raysweep.predictions`' table for the task. A checkpoint a user's loop wrote without
    raysweep's files is registered from its own MLflow model, if it holds one.

    Raises:
        raysweep.errors.NoModelError: Neither raysweep's files nor an MLflow model in the checkpoint.
    """
    import joblib
    import pandas as pd

    from raysweep import tabular
    from raysweep.trainables import function

    folder = Path(checkpoint_dir)
    if not (folder / _torch_loop.NETWORK_FILE).is_file():
        return function.log_model(folder)
    meta = json.loads((folder / _torch_loop.META_FILE).read_text())
    return tabular.log_model(
        task=meta["task"],
        classes=meta["classes"],
        example=pd.read_pickle(folder / _torch_loop.EXAMPLE_FILE),
        preprocess=joblib.load(folder / _torch_loop.PREPROCESS_FILE),
        network=str(folder / _torch_loop.NETWORK_FILE),
        requirements=REQUIREMENTS,
    )


def _save(model, params: dict[str, Any], dataset, folder: Path) -> None:
    """Checkpoint ``model`` trained on ``dataset``'s preprocessed features, as rank 0 of the built-in loop does."""
    _torch_loop.save(model, _torch_loop.prepare(dataset), Path(folder))


def _model_cfg(trainer_cfg) -> dict[str, Any] | None:
    from omegaconf import OmegaConf

    model = _get(trainer_cfg, "model")
    if not model:  # null or {}: the built-in MLP
        return None
    return OmegaConf.to_container(model, resolve=True) if OmegaConf.is_config(model) else dict(model)


def _check_loop_signature(spec: str, loop) -> None:
    import inspect

    required = [p for p in inspect.signature(loop).parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(required) != 1:
        raise RaySweepError(f"trainer.train_loop={spec} takes ({', '.join(p.name for p in required)}); a Ray Train "
                            "train_loop_per_worker takes (config)")


def _get(cfg, key: str):
    return cfg.get(key) if hasattr(cfg, "get") else getattr(cfg, key, None)
