"""Training frameworks raysweep can sweep, behind one interface: :class:`Trainer`, looked up by ``trainer.name``.

``trainer.name`` is a built-in trainer (:data:`BUILT_INS`) or any importable trainer of the user's:
``package.module`` (a module that provides the members) or ``package.module:attribute`` (an object that does;
a class is instantiated without arguments). :func:`load` imports it, checks it against :class:`Trainer` and
returns a :class:`LoadedTrainer` whose optional members are filled in, so callers never probe for them.

Every result a trainable reports carries :data:`PROGRESS`.

Module-level imports stay light, here and in every trainer module: heavy frameworks load inside the functions
that train, so the CLI answers and driver-mode trial processes start without them.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from raysweep.errors import RaySweepError
from raysweep.metrics import PROGRESS  # noqa: F401 - every trainable reports it; re-exported for trainers

#: ``trainer.name`` of each built-in trainer -> the module that implements it.
BUILT_INS = {
    "sklearn": "raysweep.trainables.sklearn",
    "estimator": "raysweep.trainables.estimator",
    "torch": "raysweep.trainables.torch_mlp",
    "fixed_cost": "raysweep.trainables.fixed_cost",
    "function": "raysweep.trainables.function",
}


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares besides the data: ranking, logging, resources, storage."""

    metric: str
    mode: str
    logging: object | None  # raysweep.tracking.worker.WorkerLogging in worker mode, else None
    resources: object  # raysweep.resources.ResourcePlan
    storage_path: str  # where Ray Train runs of distributed trials keep their checkpoints
    child_tags: dict[str, str] = field(default_factory=dict)


class Trainer(Protocol):
    """What a trainer provides: a module (like :mod:`raysweep.trainables.sklearn`) or an object.

    Members declared with a value here are optional: a trainer that leaves one out gets that value (a class
    that subclasses ``Trainer`` inherits them). Every other member is required, and :func:`load` names the
    missing ones.
    """

    #: The metric names its trials report; ``sweep.metric`` and ``search_alg.objectives`` must be among them.
    #: Empty when only the trials know (a user's Tune function): the first finished trial is checked instead.
    METRICS: tuple[str, ...]

    #: ``metrics(trainer_cfg, task) -> tuple[str, ...]``: the metrics its trials report for a task (``binary``,
    #: ``multiclass``, ``regression``; ``None`` while the data's task is not known yet); ``None`` when they do
    #: not depend on the task (then :attr:`METRICS`).
    metrics: Callable[[Any, str | None], tuple[str, ...]] | None = None

    #: ``False`` when there is no model to register (the sweep then needs ``sweep.register=false``).
    MAKES_MODELS: bool = True

    #: ``False`` when it trains on no data: the sweep skips loading it and ``make_trainable`` gets ``None``.
    NEEDS_DATA: bool = True

    #: ``True`` when its trials continue from ``ray.tune.get_checkpoint()`` (retries, resumed sweeps, PBT), so
    #: ``scheduler=pbt`` may be used.
    RESTORES_CHECKPOINTS: bool = False

    #: ``True`` when, with ``mlflow=worker`` and ``mlflow.log_models``, its trials log their final model to their
    #: runs (``TrialLog.model``): registration takes that model, so the live progress ranks such a trial by its
    #: last report, as the summary does; otherwise by its best kept checkpoint.
    LOGS_FINAL_MODEL: bool = False

    #: ``structural_params(trainer_cfg, names) -> set[str]``: which of the hyperparameter ``names`` shape the
    #: model, so a trial that continues another trial's checkpoint (PBT's exploit) keeps the values it copied and
    #: PBT perturbs only the others; ``None`` when any may change.
    structural_params: Callable[[Any, Any], set[str]] | None = None

    #: ``retrain(trainer_cfg, dataset, config, until=None) -> list[dict[str, float]]``: train one trial again
    #: outside Ray Tune and return each iteration's metrics, first iteration first (``raysweep reproduce``);
    #: ``None`` when it cannot.
    retrain: Callable[..., list[dict[str, float]]] | None = None

    #: Modules logging its model imports (``("mlflow.sklearn",)``): the sweep imports them in the background
    #: while it waits on Ray, not after the last trial.
    REGISTRATION_IMPORTS: tuple[str, ...] = ()

    #: ``check_task(trainer_cfg, search_space, task)``: once the data's task is known, before Ray starts, raise
    #: a ``RaySweepError`` for a hyperparameter value the model for that task cannot take (``criterion: gini``
    #: for a regressor); ``None`` when nothing depends on the task.
    check_task: Callable[[Any, Any, str | None], None] | None = None

    def validate(self, trainer_cfg: Any, search_space: dict[str, Any]) -> None:
        """Check the hyperparameters (search space and ``trainer.params``) before anything starts.

        Raises:
            RaySweepError: One line naming a hyperparameter or setting it cannot take, and the fix.
        """
        ...

    def resource_needs(self, trainer_cfg: Any) -> dict[str, Any]:
        """Keyword arguments for :func:`raysweep.resources.plan`: what one trial holds (CPUs, workers, GPUs)."""
        ...

    def make_trainable(self, trainer_cfg: Any, dataset: Any, context: TrialContext) -> Any:
        """The Tune function trainable (for ``tune.with_resources``); heavy imports belong inside it.

        Args:
            trainer_cfg: The ``trainer`` config node.
            dataset: The :class:`raysweep.data.Dataset`, or ``None`` when ``NEEDS_DATA`` is false.
            context: What every trial of the sweep shares besides the data.
        """
        ...

    def best_checkpoint(self, result: Any, metric: str, mode: str) -> str | None:
        """Where a finished trial's best model is (a ``ray.tune.Result``), or ``None`` when it kept none."""
        ...

    def log_model(self, checkpoint_dir: str) -> Any:
        """Log the model in a local copy of a checkpoint to the active MLflow run; returns its ``ModelInfo``."""
        ...


def _members(protocol: type) -> tuple[tuple[str, ...], dict[str, Any]]:
    """``(required names, optional name -> default)`` of a protocol, in the order it declares them."""
    body = vars(protocol)
    # Attributes (annotated) first, then methods: the order error messages name them in.
    names = [*protocol.__annotations__, *(n for n, v in body.items() if inspect.isfunction(v) and n[0] != "_")]
    required = tuple(n for n in names if n not in body or inspect.isfunction(body[n]))
    return required, {n: body[n] for n in names if n not in required}


#: Members every trainer provides, and those it may leave out with the value used then; read from
#: :class:`Trainer`, so the protocol stays the one place that says what a trainer is.
REQUIRED_MEMBERS, OPTIONAL_MEMBERS = _members(Trainer)
# The optional True/False switches and lists of module names; every other member but METRICS is a function.
_FLAGS = tuple(n for n, default in OPTIONAL_MEMBERS.items() if isinstance(default, bool))
_MODULE_LISTS = tuple(n for n, default in OPTIONAL_MEMBERS.items() if isinstance(default, tuple))
_CALLABLES = tuple(n for n in (*REQUIRED_MEMBERS, *OPTIONAL_MEMBERS) if n != "METRICS" and n not in _FLAGS
                   and n not in _MODULE_LISTS)


@dataclass(frozen=True)
class LoadedTrainer:
    """A trainer checked against :class:`Trainer`, every optional member resolved: itself a ``Trainer``.

    Its fields carry the protocol's member names, so callers read ``trainer.NEEDS_DATA`` or test
    ``trainer.retrain is None`` whichever trainer it is.
    """

    name: str  # trainer.name as given
    source: str  # the module (and attribute) it came from, e.g. "raysweep.trainables.sklearn"
    METRICS: tuple[str, ...]
    validate: Callable[[Any, dict[str, Any]], None]
    resource_needs: Callable[[Any], dict[str, Any]]
    make_trainable: Callable[[Any, Any, TrialContext], Any]
    best_checkpoint: Callable[[Any, str, str], str | None]
    log_model: Callable[[str], Any]
    MAKES_MODELS: bool = True
    NEEDS_DATA: bool = True
    RESTORES_CHECKPOINTS: bool = False
    LOGS_FINAL_MODEL: bool = False
    structural_params: Callable[[Any, Any], set[str]] | None = None
    retrain: Callable[..., list[dict[str, float]]] | None = None
    metrics: Callable[[Any, str | None], tuple[str, ...]] | None = None
    REGISTRATION_IMPORTS: tuple[str, ...] = ()
    check_task: Callable[[Any, Any, str | None], None] | None = None

    def reported_metrics(self, trainer_cfg: Any, task: str | None = None) -> tuple[str, ...]:
        """What its trials report for ``task`` (empty: not known before a trial reports)."""
        return tuple(self.metrics(trainer_cfg, task)) if self.metrics is not None else self.METRICS

    def fixed_under_pbt(self, trainer_cfg: Any, names: Any) -> set[str]:
        """Which of ``names`` PBT must leave as the trial it clones had them (:attr:`structural_params`)."""
        return set(self.structural_params(trainer_cfg, list(names))) if self.structural_params is not None else set()


def check_metrics(trainer: LoadedTrainer, cfg: Any, task: str | None = None, *, data_pending: bool = False) -> None:
    """Check ``sweep.metric`` and ``search_alg.objectives`` against what the trainer's trials report.

    Args:
        trainer: The loaded trainer.
        cfg: The composed config.
        task: The data's task, or ``None`` before the data is loaded (metrics that depend on it wait).
        data_pending: The data is still to be loaded and checked again with its task: a metric of another task
            than the trainer's model learns (or than ``task``) waits for it, so that the cause is named (a regressor
            on a multiclass target is the model's fault, on a regression target the metric's; ``data.task=binary``
            on five classes is the data's).

    Raises:
        RaySweepError: A metric the trainer does not report, naming the ones it does.
    """
    from raysweep.metrics import TASK_METRICS

    reported = trainer.reported_metrics(cfg.trainer, task)
    if not reported:
        return  # known once trials report (checked on the first finished trial)
    objectives = cfg.search_alg.objectives
    for key, metric, mode in ((f"sweep.metric={cfg.sweep.metric!r}", cfg.sweep.metric, cfg.sweep.mode),
                              *((f"search_alg.objectives.{m}", m, objectives[m]) for m in objectives)):
        if data_pending and metric not in reported and any(metric in names for names in TASK_METRICS.values()):
            continue
        if metric not in reported:
            task_note = f" for a {task} task" if task and trainer.metrics is not None else ""
            raise RaySweepError(
                f"{key} is not reported by trainer {cfg.trainer.name!r}{task_note}; "
                f"use one of {', '.join(reported)}"
            )
        _check_direction(key, metric, getattr(mode, "value", mode))


def _check_direction(key: str, metric: str, mode: str) -> None:
    """Refuse a mode against the known direction of one of raysweep's own metrics (val_rmse maximised would rank
    the worst trial best and register it); a metric of the user's own has no known direction."""
    from raysweep.metrics import TASK_METRICS, default_mode

    if any(metric in names for names in TASK_METRICS.values()) and default_mode(metric) != mode:
        better = "lower" if default_mode(metric) == "min" else "higher"
        where = "sweep.mode" if key.startswith("sweep.metric") else key
        raise RaySweepError(f"{key} is better {better}, but {where}={mode} would rank the worst trial best; "
                            f"set {where}={default_mode(metric)}")


def load(name: str) -> LoadedTrainer:
    """Import the trainer ``trainer.name`` names and check it provides what :class:`Trainer` requires.

    Args:
        name: A built-in trainer (:data:`BUILT_INS`), ``package.module`` or ``package.module:attribute``.

    Returns:
        The :class:`LoadedTrainer`.

    Raises:
        RaySweepError: One line: the name is unknown, its module does not import, or it lacks members.
    """
    source = BUILT_INS.get(name, name)
    module_name, _, attribute = source.partition(":")
    obj = _resolve(name, _import(name, module_name), attribute)
    _check(name, obj)
    return LoadedTrainer(
        name=name,
        source=source,
        **{n: getattr(obj, n) for n in REQUIRED_MEMBERS if n != "METRICS"},
        METRICS=tuple(obj.METRICS),
        **{n: getattr(obj, n, default) for n, default in OPTIONAL_MEMBERS.items() if n not in _MODULE_LISTS},
        **{n: tuple(getattr(obj, n, ())) for n in _MODULE_LISTS},
    )


def _import(name: str, module_name: str):
    unknown = RaySweepError(
        f"trainer.name={name!r} is not known; use one of {', '.join(BUILT_INS)}, or your own trainer as "
        "package.module or package.module:attribute (see raysweep.trainables.Trainer)"
    )
    if not module_name or module_name.startswith("."):  # import_module would want a package to be relative to
        raise unknown
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        # Only a missing trainer module means a wrong name; a module missing inside it is the trainer's problem.
        if error.name is None or not (module_name == error.name or module_name.startswith(f"{error.name}.")):
            raise RaySweepError(f"trainer.name={name!r} cannot be imported: {error}; install what it needs") from None
        if "." not in name and ":" not in name:
            raise unknown from None
        raise RaySweepError(
            f"trainer.name={name!r}: no module named {error.name!r}; check the spelling and that its folder is "
            "on the Python path (PYTHONPATH)"
        ) from None
    except ImportError as error:
        raise RaySweepError(f"trainer.name={name!r} cannot be imported: {error}; fix the module's imports") from None


def _resolve(name: str, module, attribute: str):
    """The trainer object: the module itself, or the attribute it names (a class is instantiated)."""
    obj = module
    try:
        for part in filter(None, attribute.split(".")):
            obj = getattr(obj, part)
    except AttributeError:
        raise RaySweepError(
            f"trainer.name={name!r}: module {module.__name__} has no attribute {attribute!r}; "
            "name an object that provides the Trainer members, or the module itself"
        ) from None
    if not inspect.isclass(obj):
        return obj
    try:
        return obj()
    except TypeError as error:
        raise RaySweepError(
            f"trainer.name={name!r} is a class that cannot be made without arguments ({error}); "
            "name an instance of it instead"
        ) from None


def _provides(obj: Any, member: str) -> bool:
    # A class that subclasses Trainer inherits the protocol's empty stubs: those do not count as provided.
    value = getattr(obj, member, _ABSENT)
    return value is not _ABSENT and getattr(value, "__func__", value) is not vars(Trainer).get(member, _ABSENT)


_ABSENT = object()


def _names(value: Any) -> bool:
    # ("val_auc") is a string, not a tuple: a slip that would match names letter by letter.
    return isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value)


def _check(name: str, obj: Any) -> None:
    """Raise one line naming every member ``obj`` lacks or provides wrongly; nothing when it is a trainer."""
    problems = []
    missing = [n for n in REQUIRED_MEMBERS if not _provides(obj, n)]
    if missing:
        problems.append(f"is missing {', '.join(missing)}")
    not_callable = [n for n in _CALLABLES if getattr(obj, n, None) is not None and not callable(getattr(obj, n))]
    if not_callable:
        problems.append(f"has {', '.join(not_callable)} not callable")
    if not _names(getattr(obj, "METRICS", ())):
        problems.append("has METRICS that is not a tuple of metric names")
    flags = [n for n in _FLAGS if not isinstance(getattr(obj, n, False), bool)]
    if flags:
        problems.append(f"has {', '.join(flags)} not True/False")
    lists = [n for n in _MODULE_LISTS if not _names(getattr(obj, n, ()))]
    if lists:
        problems.append(f"has {', '.join(lists)} not a tuple of module names")
    if problems:
        raise RaySweepError(
            f"trainer.name={name!r} {'; '.join(problems)}; a trainer provides {', '.join(REQUIRED_MEMBERS)} "
            f"and may provide {', '.join(OPTIONAL_MEMBERS)} (see raysweep.trainables.Trainer)"
        )
