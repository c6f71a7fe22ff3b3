"""PyTorch trainer: each trial is a distributed Ray Train job (DDP over ``trainer.num_workers`` workers).

Ray 2.60 runs Train V2, where a Train run is not a Tune trainable: the Tune function trial builds a
``TorchTrainer`` with ``TuneReportCallback`` (which forwards rank 0's reports to Tune) and calls ``fit()``.
Every worker trains its shard, evaluates the whole validation set (small; the weights are identical after
DDP), and reports each epoch; rank 0 writes the checkpoint and, in worker mode, the MLflow run. Train's
``CheckpointConfig`` keeps the best epochs by the sweep metric, and the best one is what gets registered.

A :class:`raysweep.trainables.Trainer` with the protocol's defaults: no checkpoint restore, no ``retrain``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from raysweep import ranking
from raysweep.compat import TRAIN_CHECKPOINT_KEY
from raysweep.errors import RaySweepError
from raysweep.metrics import VALIDATION_METRICS
from raysweep.tracking.tags import DEVICE_TAG

#: Metrics every trial reports, once per epoch; the last three split a trial's time for the benchmark.
METRICS = (*VALIDATION_METRICS, "train_loss", "train_time_s", "worker_group_start_s", "log_time_s")
PARAMS = ("hidden_units", "num_layers", "dropout", "lr", "weight_decay", "batch_size", "pos_weight")
FAMILIES = ("mlp",)
MODEL_FILE = "model.pt"
META_FILE = "meta.json"
EXAMPLE_FILE = "input_example.parquet"


def validate(trainer_cfg, search_space: dict[str, Any]) -> None:
    """Check the family and that every hyperparameter is one the MLP takes.

    Raises:
        RaySweepError: Unknown family or parameter.
    """
    if trainer_cfg.family not in FAMILIES:
        raise RaySweepError(f"trainer.family={trainer_cfg.family!r} is not known; use one of {', '.join(FAMILIES)}")
    for name in [*search_space, *trainer_cfg.params]:
        if name not in PARAMS:
            raise RaySweepError(
                f"{name!r} is not a parameter of the torch MLP; use {', '.join(PARAMS)} in search_space/trainer.params"
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

    Args:
        trainer_cfg: The ``trainer`` config node.
        dataset: The :class:`raysweep.data.Dataset`, shipped once through the object store.
        context: The sweep's :class:`raysweep.trainables.TrialContext`.
    """
    from ray import tune

    settings = {
        "epochs": int(trainer_cfg.iterations),
        "seed": int(trainer_cfg.seed),
        "params": dict(trainer_cfg.params),
        "num_workers": context.resources.num_workers,
        "cpus_per_worker": context.resources.cpus_per_worker,
        "use_gpu": context.resources.gpus_per_worker > 0,
        "metric": context.metric,
        "mode": context.mode,
        "storage_path": context.storage_path,
        "logging": context.logging,
    }
    return tune.with_parameters(run_trial, dataset=dataset, settings=settings)


def run_trial(config: dict[str, Any], dataset, settings: dict[str, Any]) -> None:
    """Tune function trainable: one distributed Ray Train run of the MLP with this trial's hyperparameters."""
    from ray import tune
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    context = tune.get_context()
    resources = {"CPU": settings["cpus_per_worker"]}
    if settings["use_gpu"]:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "params": config,
            "dataset": dataset,
            "settings": settings,
            "trial": {"id": context.get_trial_id(), "name": context.get_trial_name()},
            "launched_at": time.time(),
        },
        scaling_config=ScalingConfig(
            num_workers=settings["num_workers"], use_gpu=settings["use_gpu"], resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=context.get_trial_id(),
            storage_path=settings["storage_path"],
            callbacks=[TuneReportCallback()],
            checkpoint_config=CheckpointConfig(
                num_to_keep=2,
                checkpoint_score_attribute=settings["metric"],
                checkpoint_score_order=settings["mode"],
            ),
        ),
    )
    trainer.fit()


def train_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train worker loop: DDP training, per-epoch validation, rank-0 checkpoints and logging."""
    import ray.train
    import ray.train.torch
    import torch

    from raysweep.metrics import validation_metrics
    from raysweep.tracking.worker import trial_log
    from raysweep.trainables import PROGRESS, _mlp

    started = time.time()
    params, dataset, settings = loop_config["params"], loop_config["dataset"], loop_config["settings"]
    context = ray.train.get_context()
    rank = context.get_world_rank()
    torch.manual_seed(settings["seed"])
    device = ray.train.torch.get_device()

    X_train = dataset.X_train.to_numpy(dtype="float32")
    X_val = dataset.X_val.to_numpy(dtype="float32")
    fixed = {**settings["params"], **params}
    model = _mlp.build(X_train.shape[1], fixed, X_train.mean(axis=0), X_train.std(axis=0))
    model = ray.train.torch.prepare_model(model)
    batch_size = int({**_mlp.DEFAULTS, **fixed}["batch_size"])
    loader = ray.train.torch.prepare_data_loader(
        torch.utils.data.DataLoader(_mlp.tensors(X_train, dataset.y_train), batch_size=batch_size, shuffle=True)
    )
    optimiser = _mlp.optimiser(model, fixed)
    loss_fn = _mlp.loss_function(fixed, device)

    trial = loop_config["trial"]
    with trial_log(settings["logging"], params, trial["name"], trial["id"]) as log:
        log.tags({DEVICE_TAG: str(device)})
        train_seconds = 0.0
        for epoch in range(1, settings["epochs"] + 1):
            if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
            start = time.perf_counter()
            train_loss = _mlp.train_epoch(model, loader, optimiser, loss_fn, device)
            train_seconds += time.perf_counter() - start
            metrics = {
                **validation_metrics(dataset.y_val, _mlp.predict(model, X_val, device)),
                "train_loss": train_loss,
                "train_time_s": train_seconds,
                "worker_group_start_s": started - loop_config["launched_at"],
            }
            log.metrics(metrics, step=epoch)
            metrics["log_time_s"] = log.seconds
            metrics[PROGRESS] = epoch / settings["epochs"]
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = None
                if rank == 0:
                    _save(getattr(model, "module", model), fixed, dataset, Path(tmp))
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(metrics, checkpoint=checkpoint)


def _save(model, params: dict[str, Any], dataset, folder: Path) -> None:
    import torch

    from raysweep.trainables import _mlp

    torch.save(model.state_dict(), folder / MODEL_FILE)
    meta = {
        "n_features": int(dataset.X_train.shape[1]),
        "params": {k: v for k, v in params.items() if k in _mlp.ARCHITECTURE_PARAMS},
    }
    (folder / META_FILE).write_text(json.dumps(meta))
    dataset.X_val.head(5).to_parquet(folder / EXAMPLE_FILE)


def best_checkpoint(result, metric: str, mode: str) -> str | None:
    """Path of the trial's best-scoring Ray Train checkpoint (Train keeps the best epochs)."""
    frame = result.metrics_dataframe
    # TuneReportCallback reports the Train checkpoint's path under its own key, only on epochs that saved one.
    if frame is None or TRAIN_CHECKPOINT_KEY not in frame or metric not in frame:
        return None
    frame = frame.dropna(subset=[TRAIN_CHECKPOINT_KEY])
    best = ranking.best_index(frame[metric], mode)
    return None if best is None else str(frame[TRAIN_CHECKPOINT_KEY].iloc[best])


#: What loading a logged MLP needs, pinned to the versions it was trained with.
REQUIREMENTS = ("torch", "numpy", "pandas")


def log_model(checkpoint_dir: str | Path):
    """Log the checkpointed MLP to the active MLflow run with the pytorch flavor.

    The logged model is a TorchScript :class:`raysweep.trainables._mlp.FraudScorer`, so loading it needs
    torch but not raysweep; the pyfunc maps a DataFrame of the named feature columns (checked against the
    signature) to fraud probabilities. (MLflow's newer torch.export format accepts only tensor signatures,
    which would drop the column names.) The model directory also holds the project's uv files
    (:mod:`raysweep.packaging`).
    """
    import warnings

    import mlflow.pytorch
    import pandas as pd
    import torch
    from mlflow.models import infer_signature

    from raysweep import packaging
    from raysweep.trainables import _mlp

    checkpoint_dir = Path(checkpoint_dir)
    meta = json.loads((checkpoint_dir / META_FILE).read_text())
    mlp = _mlp.build(meta["n_features"], meta["params"])
    mlp.load_state_dict(torch.load(checkpoint_dir / MODEL_FILE, map_location="cpu"))
    scorer = _mlp.FraudScorer(mlp).eval()
    example = pd.read_parquet(checkpoint_dir / EXAMPLE_FILE)
    with torch.no_grad():
        output = scorer(torch.from_numpy(example.to_numpy(dtype="float32"))).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still the portable format
        scripted = torch.jit.script(scorer)
    info = mlflow.pytorch.log_model(
        scripted,
        name="model",
        # Columns keep the training table's dtypes; the pyfunc casts them to float32 for the network.
        signature=infer_signature(example, output),
        input_example=example,
        pip_requirements=packaging.pip_requirements(*REQUIREMENTS),
        serialization_format="pickle",
    )
    packaging.attach_project_files(info.model_id)
    return info
