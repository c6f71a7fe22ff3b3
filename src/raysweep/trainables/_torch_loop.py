"""Inside a torch trial's Ray Train workers: the data they train on, the built-in loop, and a user's own loop.

The preprocessing (:func:`raysweep.preprocess.build`) is fitted once on the driver, on the training split
(:func:`prepare`); workers get float32 matrices. Rank 0 writes each checkpoint (:func:`save`): the network as
TorchScript (answering logits by task, or regression values in the target's units), the fitted preprocessing
and a few raw rows, which :func:`raysweep.tabular.log_model` turns into a model that takes the raw columns, and
the training state (weights, optimiser, epoch) the built-in loop continues from when Tune hands the checkpoint
back: a retried trial, a resumed sweep, PBT's exploit (``loop_config["resume_from"]``).

A user's loop (``trainer.train_loop``) gets ``config["raysweep"]``, a :class:`LoopContext`: the data, the model
(``trainer.model`` or the built-in MLP) and a ``checkpoint(model)`` that registration understands.

Module-level imports stay light: torch and Ray load inside the functions that train.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NETWORK_FILE = "network.pt"
PREPROCESS_FILE = "preprocess.joblib"
META_FILE = "meta.json"
EXAMPLE_FILE = "input_example.pkl"
#: The built-in loop's training state: ``{"model", "optimizer", "epoch", "train_seconds"}`` (``torch.save``).
STATE_FILE = "train_state.pt"
#: Parameters a user's model factory gets from raysweep when its signature takes them.
SHAPE_ARGUMENTS = ("n_features", "n_outputs")
#: What each epoch of the built-in loop reports besides the task's validation metrics.
LOOP_METRICS = ("train_loss", "train_time_s", "worker_group_start_s", "log_time_s")


@dataclass(frozen=True)
class TorchData:
    """The splits as a network sees them: preprocessed float32 features, labels by task, and what serving needs.

    ``y_*`` are class codes (classification) or the target's values (regression); ``preprocess`` is the fitted
    transformer from raw columns to the features; ``example`` holds a few raw validation rows.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    task: str
    classes: tuple[Any, ...]
    preprocess: Any
    example: Any

    @property
    def n_features(self) -> int:
        """Columns of the preprocessed matrix."""
        return int(self.X_train.shape[1])

    @property
    def n_outputs(self) -> int:
        """Outputs the network needs: one logit per class (multiclass), else one."""
        return len(self.classes) if self.task == "multiclass" else 1


def prepare(dataset) -> TorchData:
    """Fit the preprocessing on the training split and turn both splits into float32 matrices (on the driver)."""
    from raysweep import preprocess

    fitted = preprocess.build(dataset.X_train).fit(dataset.X_train)
    return TorchData(
        X_train=np.asarray(fitted.transform(dataset.X_train), dtype="float32"),
        y_train=np.asarray(dataset.y_train),
        X_val=np.asarray(fitted.transform(dataset.X_val), dtype="float32"),
        y_val=np.asarray(dataset.y_val),
        task=dataset.task,
        classes=tuple(dataset.classes),
        preprocess=fitted,
        example=dataset.X_val.head(5),
    )


@dataclass(frozen=True)
class ModelSpec:
    """Which network a trial builds: the built-in MLP, or the user's ``nn.Module`` factory (``trainer.model``).

    ``kwargs`` are the factory's fixed arguments (``trainer.model`` besides ``_target_``); ``import_root`` is
    where the driver imported it from.
    """

    target: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    import_root: str | None = None

    def build(self, data: TorchData, params: dict[str, Any]):
        """The network for ``data`` with this trial's hyperparameters (those the factory takes, but the loop's)."""
        from raysweep.trainables import _mlp

        if self.target is None:
            return _mlp.build(data.n_features, params, data.X_train.mean(axis=0), data.X_train.std(axis=0),
                              n_outputs=data.n_outputs)
        from hydra.utils import instantiate

        from raysweep.trainables.function import import_object

        factory = import_object(self.target, "trainer.model._target_", self.import_root)
        shape = {"n_features": data.n_features, "n_outputs": data.n_outputs}
        accepted = factory_arguments(factory)
        # The hyperparameters it takes (all but the built-in loop's, when it takes **kwargs): a user's loop may
        # read more (epochs, its own schedule) than its network does.
        arguments = {**{k: v for k, v in shape.items() if accepted is None or k in accepted},
                     **{k: v for k, v in params.items()
                        if k not in _mlp.LOOP_PARAMS and (accepted is None or k in accepted)}}
        # instantiate builds nested {_target_: ...} arguments (an activation, a block) the user configured; the
        # factory itself is the one imported above (from the driver's folder when the trial's path lacks it).
        return instantiate({"_target_": factory, **self.kwargs}, **arguments, _convert_="all")


def factory_arguments(factory) -> set[str] | None:
    """The keyword arguments a model factory (function or class) takes; ``None`` when it takes any (``**kwargs``)."""
    import inspect

    parameters = inspect.signature(factory).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def save(model, data: TorchData, folder: Path, y_scale: tuple[float, float] | None = None,
         state: dict[str, Any] | None = None) -> None:
    """Write a checkpoint registration can log: TorchScript network, fitted preprocessing, meta, raw example rows.

    Args:
        model: The trained network (unwrapped from DDP).
        data: What it trained on.
        folder: The checkpoint folder.
        y_scale: ``(mean, std)`` of a regression target it was trained on standardised; the saved network
            answers in the target's own units.
        state: What a trial continues from (:data:`STATE_FILE`), besides ``model``'s own weights: the
            optimiser's ``state_dict``, the epoch just ended, the training seconds so far.
    """
    import joblib
    import torch

    from raysweep.tabular import torchscript_deprecation_off
    from raysweep.trainables import _mlp

    # A CPU copy: serving needs no GPU, and tracing feeds it the CPU example rows.
    network = copy.deepcopy(model).to("cpu")
    network = network if y_scale is None else _mlp.Rescaled(network, *y_scale)
    with torchscript_deprecation_off():
        torch.jit.save(_mlp.export(network, data.X_val[:5]), str(folder / NETWORK_FILE))
    joblib.dump(data.preprocess, folder / PREPROCESS_FILE)
    classes = [c.item() if isinstance(c, np.generic) else c for c in data.classes]
    (folder / META_FILE).write_text(json.dumps({"task": data.task, "classes": classes}))
    data.example.to_pickle(folder / EXAMPLE_FILE)
    if state is not None:
        torch.save({"model": getattr(model, "module", model).state_dict(), **state}, folder / STATE_FILE)


def load_state(checkpoint) -> dict[str, Any] | None:
    """The training state in a checkpoint Tune handed back (``None``: none given, or one without raysweep's state)."""
    if checkpoint is None:
        return None
    import torch

    with checkpoint.as_directory() as folder:
        path = Path(folder) / STATE_FILE
        # Loaded onto the CPU: the checkpoint may come from a GPU worker; prepare_model moves the weights after.
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def train_loop(loop_config: dict[str, Any]) -> None:
    """The built-in Ray Train worker loop: DDP training, per-epoch validation, rank-0 checkpoints and logging."""
    import ray.train
    import ray.train.torch
    import torch

    from raysweep.metrics import PROGRESS, score
    from raysweep.tracking.tags import DEVICE_TAG
    from raysweep.tracking.worker import trial_log
    from raysweep.trainables import _mlp

    started = time.time()
    params, data, settings = loop_config["params"], loop_config["data"], loop_config["settings"]
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(settings["seed"])
    device = ray.train.torch.get_device()
    fixed = {**settings["params"], **params}
    network = settings["model"].build(data, fixed)
    # A trial that starts again (retry, resumed sweep, PBT's exploit of another trial) continues after the epoch
    # of the checkpoint Tune handed back, with its weights and optimiser; Tune's iteration count continues too.
    state = load_state(loop_config.get("resume_from"))
    if state is not None:
        network.load_state_dict(state["model"])
    model = ray.train.torch.prepare_model(network)
    y_train, y_scale = data.y_train, None
    if data.task == "regression":
        # Trained on the standardised target (one learning rate fits any scale); the saved network rescales.
        y_scale = (float(np.mean(y_train)), float(np.std(y_train)) or 1.0)
        y_train = (y_train - y_scale[0]) / y_scale[1]
    batch_size = int({**_mlp.DEFAULTS, **fixed}["batch_size"])
    loader = ray.train.torch.prepare_data_loader(torch.utils.data.DataLoader(
        _mlp.tensors(data.X_train, y_train, data.task), batch_size=batch_size, shuffle=True))
    optimiser = _mlp.optimiser(model, fixed)
    loss_fn = _mlp.loss_function(fixed, device, data.task)
    done, train_seconds = 0, 0.0
    if state is not None:
        optimiser.load_state_dict(state["optimizer"])
        _mlp.set_hyperparameters(optimiser, fixed)  # PBT continues another trial's state with its own values
        done, train_seconds = int(state["epoch"]), float(state["train_seconds"])

    trial = loop_config["trial"]
    with trial_log(settings["logging"], params, trial["name"], trial["id"]) as log:
        log.tags({DEVICE_TAG: str(device)})
        for epoch in range(done + 1, settings["epochs"] + 1):
            # Seeded per epoch (shuffling, dropout): an epoch trains alike whether or not the trial restarted.
            torch.manual_seed(settings["seed"] + epoch)
            if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
            start = time.perf_counter()
            train_loss = _mlp.train_epoch(model, loader, optimiser, loss_fn, device)
            train_seconds += time.perf_counter() - start
            prediction = _mlp.predict(model, data.X_val, device, task=data.task)
            if y_scale is not None:
                prediction = prediction * y_scale[1] + y_scale[0]
            metrics = {
                **score(data.task, data.y_val, prediction),
                "train_loss": train_loss,
                "train_time_s": train_seconds,
                "worker_group_start_s": started - loop_config["launched_at"],
            }
            log.metrics(metrics, step=epoch)
            # Every step up to a checkpoint is in MLflow before Tune knows of the checkpoint: a trial that continues
            # from it (after a lost node, say) logs only later steps, so none goes missing.
            log.flush()
            metrics["log_time_s"] = log.seconds
            metrics[PROGRESS] = epoch / settings["epochs"]
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = None
                if rank == 0:
                    save(getattr(model, "module", model), data, Path(tmp), y_scale, state={
                        "optimizer": optimiser.state_dict(), "epoch": epoch, "train_seconds": train_seconds})
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(metrics, checkpoint=checkpoint)


@dataclass
class LoopContext:
    """What raysweep hands a user's ``trainer.train_loop`` as ``config["raysweep"]``.

    Attributes:
        data: The :class:`TorchData` (``None`` with ``data=none``: the loop loads its own).
        model: Which network :meth:`build_model` makes.
        params: This trial's hyperparameters, ``trainer.params`` included.
        resume_from: The checkpoint to continue from (a ``ray.tune.Checkpoint`` one of the trial's reports
            carried), or ``None`` on a first start: Tune hands it back to a retried trial, a resumed sweep and a
            trial PBT made continue another's. Continue after the epoch it holds, so Tune's iteration count
            and the run's steps stay in line with the epochs.
    """

    data: TorchData | None
    model: ModelSpec
    params: dict[str, Any]
    resume_from: Any = None
    _folder: str | None = None

    def build_model(self):
        """The network ``trainer.model`` names (else the built-in MLP) for this data and these hyperparameters."""
        if self.data is None:
            raise ValueError("build_model needs raysweep's data; with data=none build the model yourself")
        return self.model.build(self.data, self.params)

    def checkpoint(self, model, state: dict[str, Any] | None = None):
        """A checkpoint of ``model`` that the sweep can register (rank 0; ``None`` on the other ranks).

        Report it: ``ray.train.report(metrics, checkpoint=config["raysweep"].checkpoint(model))``. The network
        must answer by the task: one logit per row (binary), one per class (multiclass), values (regression).
        ``state`` (anything ``torch.save`` takes, e.g. ``{"epoch": 3, "optimizer": opt.state_dict()}``) is kept
        with the network's weights for :meth:`resumed_state`.
        """
        import ray.train

        if ray.train.get_context().get_world_rank() != 0 or self.data is None:
            return None
        if self._folder:  # reported (and copied to storage) by now
            shutil.rmtree(self._folder, ignore_errors=True)
        self._folder = tempfile.mkdtemp(prefix="raysweep-checkpoint-")
        save(getattr(model, "module", model), self.data, Path(self._folder), state=state)
        return ray.train.Checkpoint.from_directory(self._folder)

    def resumed_state(self) -> dict[str, Any] | None:
        """What :meth:`checkpoint` kept in :attr:`resume_from` - ``{"model": state_dict, **state}`` - or ``None``."""
        return load_state(self.resume_from)


def user_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train worker loop running the user's ``trainer.train_loop`` under raysweep's logging (rank 0)."""
    import ray.train
    import ray.train.torch

    from raysweep.tracking.tags import DEVICE_TAG
    from raysweep.tracking.worker import trial_log
    from raysweep.trainables._reports import Reports
    from raysweep.trainables.function import import_object

    params, settings, trial = loop_config["params"], loop_config["settings"], loop_config["trial"]
    loop = import_object(settings["train_loop"], "trainer.train_loop", settings["loop_root"])
    fixed = {**settings["params"], **params}
    context = LoopContext(loop_config["data"], settings["model"], fixed, loop_config.get("resume_from"))
    with trial_log(settings["logging"], params, trial["name"], trial["id"]) as log:
        log.tags({DEVICE_TAG: str(ray.train.torch.get_device())})
        reports = Reports(settings["metric"], f"trainer.train_loop={settings['train_loop']}", log)
        try:
            with reports.intercept(loop, ray.train):
                loop({**fixed, "raysweep": context})
            reports.finish()
        finally:
            if context._folder:
                shutil.rmtree(context._folder, ignore_errors=True)
