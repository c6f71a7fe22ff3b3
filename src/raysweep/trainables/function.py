"""Your own Ray Tune function as the trainer: ``trainer=function trainer.function=MODULE:FUNC``.

The function is a plain Ray Tune function trainable and runs unchanged::

    def train(config):                       # or train(config, data): raysweep's loaded Dataset
        ...
        ray.tune.report({"val_accuracy": acc}, checkpoint=ray.tune.Checkpoint.from_directory(folder))

raysweep wraps it without touching it. Around each call the wrapper opens the trial's MLflow run in worker mode
(:func:`raysweep.tracking.worker.trial_log`: ``setup_mlflow`` on rank 0), so the function's own ``mlflow.log_*``
calls and autolog land in its child run, and it sees every ``ray.tune.report``: worker mode logs the numbers
reported (driver mode's callback logs them from the results), and a report without ``sweep.metric`` stops the
trial with one line naming what it did report (Ray Tune itself would end the whole sweep with a traceback).

What gets registered is the MLflow model in the best trial's best checkpoint: an ``MLmodel`` file at the
checkpoint's root or in its ``model/`` folder (any flavor, e.g. ``mlflow.sklearn.save_model(model,
f"{folder}/model")``), logged as it is. A checkpoint without one raises :class:`NoModelError`: no version.

A :class:`raysweep.trainables.Trainer` whose metrics only its trials know (``METRICS`` is empty).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from raysweep.errors import NoModelError, RaySweepError
from raysweep.trainables._reports import STEP_FILE, NoReport, Reports, restored_step, stray_run_ended  # noqa: F401

#: Only the trials know what they report: ``sweep.metric`` is checked against each report instead.
METRICS: tuple[str, ...] = ()
#: The function's second parameter, when it has one, receives raysweep's loaded :class:`raysweep.data.Dataset`.
DATA_PARAMETER = "data"
#: The config key naming the function.
KEY = "trainer.function"
#: Where in a checkpoint an MLflow model may be: its root, or this folder.
MODEL_FOLDER = "model"
MLMODEL_FILE = "MLmodel"


def validate(trainer_cfg, search_space: dict[str, Any]) -> None:
    """Check that ``trainer.function`` names an importable function taking ``(config)`` or ``(config, data)``.

    Raises:
        RaySweepError: No function named, one that does not import, or one with another signature.
    """
    takes_data(import_object(trainer_cfg.function, KEY))
    if trainer_cfg.use_gpu:
        raise RaySweepError("trainer.use_gpu=true: trainer=function trials get CPUs only (trainer.cpus_per_trial); "
                            "set trainer.use_gpu=false")


def resource_needs(trainer_cfg) -> dict[str, Any]:
    """Each trial runs the function in its own process on ``trainer.cpus_per_trial`` CPUs."""
    return {"cpus_per_trial": float(trainer_cfg.cpus_per_trial)}


def make_trainable(trainer_cfg, dataset, context):
    """The Tune function trainable that runs the user's function under raysweep's logging.

    Args:
        trainer_cfg: The ``trainer`` config node.
        dataset: The :class:`raysweep.data.Dataset`, or ``None`` for ``data=none``.
        context: The sweep's :class:`raysweep.trainables.TrialContext`.

    Raises:
        RaySweepError: The function takes ``data`` but the sweep loads none.
    """
    from omegaconf import OmegaConf
    from ray import tune

    function = import_object(trainer_cfg.function, KEY)
    wants_data = takes_data(function)
    if wants_data and dataset is None:
        raise RaySweepError(
            f"trainer.function={trainer_cfg.function} takes {DATA_PARAMETER!r} but data=none loads nothing; "
            f"pick a data config (e.g. data=csv data.path=FILE data.target=COLUMN) or drop the {DATA_PARAMETER!r} "
            "parameter and load the data in the function"
        )
    params = trainer_cfg.params
    settings = {
        "function": trainer_cfg.function,
        # The folder the driver imported the function from: a trial on this machine finds it there too when
        # its module is not on the trial's own path (a cluster gets it through the job's working_dir).
        "import_root": import_root(function),
        "params": OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else dict(params),
        "metric": context.metric,
        "logging": context.logging,
    }
    trainable = _named_after(function)
    if wants_data:
        return tune.with_parameters(trainable, settings=settings, dataset=dataset)
    return tune.with_parameters(trainable, settings=settings)


def _named_after(function):
    """:func:`run_function` under the user's function's name: Tune names the trials after the trainable, and the
    trials' MLflow runs after the trials (``train_1a2b3_00000`` for ``def train``, not ``run_function_...``)."""
    name = re.sub(r"\W", "_", getattr(function, "__name__", "")).strip("_") or run_function.__name__

    def trainable(config: dict[str, Any], settings: dict[str, Any], dataset=None) -> None:
        run_function(config, settings, dataset)

    trainable.__name__ = trainable.__qualname__ = name
    return trainable


def run_function(config: dict[str, Any], settings: dict[str, Any], dataset=None) -> None:
    """Tune function trainable: the user's function with ``trainer.params`` and this trial's config.

    Every ``ray.tune.report`` it makes passes through :class:`Reports` on its way to Tune.
    """
    from ray import tune

    from raysweep.tracking.worker import trial_log

    function = import_object(settings["function"], KEY, settings["import_root"])
    context = tune.get_context()
    arguments = ({**settings["params"], **config},) + ((dataset,) if takes_data(function) else ())
    source = f"{KEY}={settings['function']}"
    with trial_log(settings["logging"], config, context.get_trial_name(), context.get_trial_id()) as log, \
            (nullcontext() if settings["logging"] else stray_run_ended(source)):
        reports = Reports(settings["metric"], source, log, start=restored_step(tune.get_checkpoint()))
        with reports.intercept(function, tune):
            function(*arguments)
        reports.finish()


def takes_data(function: Callable[..., Any]) -> bool:
    """Whether a function trainable takes ``(config, data)`` rather than ``(config)``.

    Raises:
        RaySweepError: Any other signature.
    """
    parameters = [
        p for p in inspect.signature(function).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    name = f"{function.__module__}:{function.__qualname__}"
    if len(parameters) == 1:
        return False
    if len(parameters) == 2 and parameters[1].name == DATA_PARAMETER:
        return True
    shown = ", ".join(p.name for p in parameters)
    raise RaySweepError(
        f"trainer.function={name} takes ({shown}); a Ray Tune function takes (config), or (config, "
        f"{DATA_PARAMETER}) to receive raysweep's loaded data"
    )


def import_object(spec: str | None, key: str, root: str | None = None) -> Callable[..., Any]:
    """The callable ``spec`` names (``MODULE:NAME``, or a dotted ``module.NAME`` as Hydra's ``_target_``).

    The module is imported from the path, else from the working directory, else from ``root`` (the folder the
    driver imported it from: a trial on the same machine finds it there).

    Args:
        spec: What the config says.
        key: The config key, for messages (``trainer.function``).
        root: A last folder to look in.

    Raises:
        RaySweepError: Malformed, not importable, missing, or not callable; one line naming ``key``.
    """
    spec = spec or ""
    module_name, _, attribute = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not module_name or not attribute:
        raise RaySweepError(f"{key}={spec or None!r}: name it as MODULE:FUNC, e.g. {key}=my_project.train:train")
    obj = _import(f"{key}={spec}", module_name, [p for p in (os.getcwd(), root) if p])
    try:
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise RaySweepError(f"{key}={spec}: module {module_name} has no {attribute!r}; check the name after "
                            "the module") from None
    if not callable(obj):
        raise RaySweepError(f"{key}={spec} is not callable; name a function (or class) in {module_name}")
    return obj


def _import(what: str, module_name: str, fallbacks: list[str]):
    # Like `python -m raysweep`, which has the working directory on its path, find the user's module there too
    # (an API caller's or a trial's path may lack it); a trial also tries the folder the driver found it in.
    for attempt in range(len(fallbacks) + 1):
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            missing_self = error.name is not None and (module_name == error.name or
                                                       module_name.startswith(f"{error.name}."))
            if not missing_self:
                raise RaySweepError(f"{what} cannot be imported: {error}; install what it needs") from None
            if attempt == len(fallbacks):
                raise RaySweepError(
                    f"{what}: no module named {error.name!r}; run from the folder that holds it "
                    "or put that folder on PYTHONPATH"
                ) from None
            if fallbacks[attempt] not in sys.path:
                sys.path.append(fallbacks[attempt])
        except ImportError as error:
            raise RaySweepError(f"{what} cannot be imported: {error}; fix the module's imports") from None
    raise AssertionError("unreachable")


def import_root(function: Callable[..., Any]) -> str | None:
    """The folder on the path from which ``function``'s module was imported (``None`` when not from a file)."""
    module = sys.modules.get(function.__module__)
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    depth = function.__module__.count(".") + (1 if path.name == "__init__.py" else 0)
    return str(path.parents[depth])


def best_checkpoint(result, metric: str, mode: str) -> str | None:
    """The trial's best-scoring checkpoint Tune kept (the sweep keeps the two best and the latest), or ``None``."""
    checkpoint = result.get_best_checkpoint(metric, mode) if result.best_checkpoints else None
    return checkpoint.path if checkpoint is not None else None


def model_folder(checkpoint_dir: str | Path) -> Path | None:
    """The MLflow model folder in a checkpoint: its root or ``model/`` when it holds an ``MLmodel`` file."""
    for folder in (Path(checkpoint_dir), Path(checkpoint_dir) / MODEL_FOLDER):
        if (folder / MLMODEL_FILE).is_file():
            return folder
    return None


def log_model(checkpoint_dir: str | Path):
    """Log the MLflow model in a checkpoint to the active run as it is (its flavor, files and signature).

    Args:
        checkpoint_dir: A local copy of the best trial's checkpoint.

    Returns:
        The ``mlflow.models.model.ModelInfo`` of the logged model (``model_uri`` is ``models:/m-<id>``).

    Raises:
        NoModelError: No ``MLmodel`` at the checkpoint's root or in ``model/``.
    """
    from mlflow.models import Model

    source = model_folder(checkpoint_dir)
    if source is None:
        raise NoModelError(
            f"the best checkpoint holds no MLflow model (no {MLMODEL_FILE} at its root or in {MODEL_FOLDER}/); "
            f"save one into the checkpoint folder, e.g. mlflow.sklearn.save_model(model, f'{{folder}}/"
            f"{MODEL_FOLDER}'), to have it registered"
        )
    flavors = list(Model.load(str(source)).flavors)
    # The logged model is named after the model's own flavor, not python_function (every flavor has that).
    flavor_name = next((f for f in flavors if f != "python_function"), flavors[0] if flavors else "python_function")
    return Model.log(artifact_path=None, name="model", flavor=_CopiedModel(source), flavor_name=flavor_name)


class _CopiedModel:
    """A flavor for ``Model.log`` that saves a model by copying a saved MLflow model folder as it is.

    ``Model.log`` creates the LoggedModel and its run link, then asks the flavor to save into a folder it
    uploads; only the MLmodel's identity (run, model id, artifact location) is rewritten to the new model's.
    """

    __name__ = "copied"

    def __init__(self, source: Path):
        self.source = source

    def save_model(self, path: str, mlflow_model, **_: Any) -> None:
        from mlflow.models import Model

        shutil.copytree(self.source, path, ignore=shutil.ignore_patterns(STEP_FILE))  # raysweep's, not the model's
        identity = ("run_id", "artifact_path", "model_uuid", "model_id", "utc_time_created")
        saved = Model.load(str(self.source)).to_dict()
        merged = Model.from_dict({**saved, **{k: getattr(mlflow_model, k) for k in identity}})
        merged.save(str(Path(path) / MLMODEL_FILE))
        vars(mlflow_model).update(vars(merged))  # what Model.log reports back (flavors, signature, example)
