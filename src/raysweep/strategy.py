"""How a sweep searches and stops: config names -> Ray Tune searchers, schedulers and stoppers.

Imported only once a sweep is about to run (it imports Ray). Everything here is Ray's own machinery (``BasicVariantGenerator``, ``OptunaSearch``, ``ConcurrencyLimiter``,
``AsyncHyperBandScheduler``, ``MedianStoppingRule``, ``PopulationBasedTraining``, ``Stopper``); raysweep only
fills in what it knows from the rest of the config - the metric, the trainer's iteration count, the space.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Collection, Mapping
from typing import Any

from ray.tune import Callback
from ray.tune.stopper import CombinedStopper, Stopper

from raysweep import ranking, remote, search_space
from raysweep.errors import RaySweepError

#: scheduler name -> Ray Tune class (import path)
_SCHEDULERS = {
    "fifo": "ray.tune.schedulers.FIFOScheduler",
    "asha": "ray.tune.schedulers.AsyncHyperBandScheduler",
    "median_stopping": "ray.tune.schedulers.MedianStoppingRule",
    "pbt": "ray.tune.schedulers.PopulationBasedTraining",
}
_ITERATION = "training_iteration"


def searcher(search_alg_cfg, parsed: Mapping[str, Any], metric: str, mode: str, max_concurrent: int | None,
             warm=None):
    """Build the Tune search algorithm and the ``param_space`` that goes with it.

    Args:
        search_alg_cfg: The ``search_alg`` config node.
        parsed: The parsed search space (:func:`raysweep.search_space.parse`).
        metric: The sweep metric; with ``search_alg.objectives`` the first of several.
        mode: ``max`` or ``min`` for ``metric``.
        max_concurrent: Cap on trials running at once, or ``None``.
        warm: A :class:`raysweep.warm_start.Seed`: earlier trials Optuna's study starts with (not run again).

    Returns:
        ``(search_alg, param_space)`` for ``tune.TuneConfig`` and ``tune.Tuner``.

    Raises:
        RaySweepError: The searcher cannot be built from the config (bad class or arguments).
    """
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchAlgorithm, Searcher

    name = search_alg_cfg.name
    if warm is not None and name != "optuna":
        raise RaySweepError(f"sweep.warm_start seeds Optuna, not search_alg={name}; add search_alg=optuna")
    if name in ("random", "grid"):
        generator = BasicVariantGenerator(random_state=search_alg_cfg.seed, max_concurrent=max_concurrent or 0)
        return generator, search_space.to_param_space(parsed, grid=name == "grid")
    params = _plain(search_alg_cfg.params)
    if name == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        # Optuna's INFO line at every study created (the plan builds one to check the searcher, Tune another).
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        lists = [n for n, v in parsed.items() if isinstance(v, search_space.Dimension) and v.kind == "choice"
                 and any(isinstance(o, tuple) for o in v.args)]
        if lists and params.get("storage"):
            raise RaySweepError(f"search_space.{lists[0]} has list options, which an Optuna storage cannot keep "
                                "(search_alg.params.storage); remove the storage, or search the list's parts")
        # In memory Optuna takes any choice; it warns at every draw that a stored study could not hold a list.
        warnings.filterwarnings("ignore", message="Choices for a categorical distribution should be a tuple of None")
        objectives = {metric: mode, **{k: _mode(v) for k, v in search_alg_cfg.objectives.items()}}
        # Ray adds the earlier trials to the study as completed ones (Optuna checks each value against the space).
        seeded, seed = {}, search_alg_cfg.seed
        if warm is not None:
            seeded = {"points_to_evaluate": list(warm.points), "evaluated_rewards": list(warm.rewards)}
            # TPE draws at random until the study holds 10 trials, seeded ones included; with the earlier sweep's
            # seed it would redraw that sweep's own first configurations. Shifted by the seeded count, it does not.
            seed = None if seed is None else seed + len(warm.points)
        multi = len(objectives) > 1
        if isinstance(params.get("storage"), str):  # Tune pickles the searcher: the study's URL masked in there
            from raysweep.optuna_storage import storage

            params = {**params, "storage": storage(params["storage"])}
        # The searcher gets its own copy of the space so that it can take a list of metrics; the
        # Tuner then only carries the fixed values.
        built = _build(
            OptunaSearch,
            "search_alg",
            space=OptunaSearch.convert_search_space(search_space.to_param_space(parsed)),
            metric=list(objectives) if multi else metric,
            mode=list(objectives.values()) if multi else mode,
            seed=seed,
            **seeded,
            **_instantiate(params, "search_alg.params"),
        )
        param_space = search_space.fixed_values(parsed)
    else:
        cls = _import(search_alg_cfg._target_, "search_alg._target_")
        # Checked before anything is built: search_alg=custom instantiates only Tune searchers.
        if not (isinstance(cls, type) and issubclass(cls, (Searcher, SearchAlgorithm))):
            raise RaySweepError(f"search_alg._target_={search_alg_cfg._target_!r} is not a Ray Tune searcher (a "
                                "ray.tune.search.Searcher); name one, e.g. ray.tune.search.optuna.OptunaSearch")
        built = _build(cls, "search_alg", **_instantiate(params, "search_alg.params"))
        param_space = search_space.to_param_space(parsed)
    if isinstance(built, Searcher) and max_concurrent:
        built = ConcurrencyLimiter(built, max_concurrent=max_concurrent)
    return built, param_space


def scheduler(scheduler_cfg, parsed: Mapping[str, Any], max_iterations: int, fixed: Collection[str] = ()):
    """Build the Tune trial scheduler; Tune hands it the sweep's metric and mode.

    Args:
        scheduler_cfg: The ``scheduler`` config node.
        parsed: The parsed search space (PBT mutates its dimensions).
        max_iterations: The trainer's iterations per trial (ASHA's last rung).
        fixed: Dimensions PBT must not perturb: they shape the model, and a trial continuing another's checkpoint
            keeps the values it clones (``Trainer.structural_params``).

    Raises:
        RaySweepError: Bad scheduler arguments, or PBT with nothing to mutate.
    """
    params = _plain(scheduler_cfg.params)
    name = scheduler_cfg.name
    if name in ("asha", "median_stopping", "pbt"):
        params.setdefault("time_attr", _ITERATION)
    if name == "asha":
        params.setdefault("max_t", max_iterations)
        if params.get("grace_period", 1) > max_iterations:
            raise RaySweepError(
                f"scheduler.params.grace_period={params['grace_period']} exceeds trainer.iterations={max_iterations}; "
                "lower it or raise trainer.iterations"
            )
    if name == "pbt":
        mutations = pbt_mutations({k: v for k, v in parsed.items() if k not in fixed})
        if not mutations:
            shaping = sorted(set(fixed) & set(pbt_mutations(parsed)))
            note = (f"; {', '.join(shaping)} shape the model, which PBT keeps as cloned: search a training "
                    "hyperparameter too") if shaping else ""
            raise RaySweepError(f"scheduler=pbt needs at least one searched dimension in search_space to perturb{note}")
        params.setdefault("hyperparam_mutations", mutations)
    return _build(_import(_SCHEDULERS[name], "scheduler"), f"scheduler={name}", **params)


def pbt_mutations(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """PBT's ``hyperparam_mutations``: value lists (perturbed by a step along the list) or Tune domains."""
    out = {}
    for name, value in parsed.items():
        if isinstance(value, search_space.Dimension):
            out[name] = list(value.args) if value.kind == "choice" else value.to_tune()
    return out


def stopper(
    metric: str,
    mode: str,
    time_budget_s: float | None,
    metric_threshold: float | None,
    *,
    tracking_uri: str,
    parent_run_id: str,
):
    """The sweep-wide stop criteria as one Tune ``Stopper`` (``None`` when there are none).

    When a criterion fires, the stopper tags the parent run with it (``raysweep.stop_reason``).
    """
    if time_budget_s is None and metric_threshold is None:
        return None
    return SweepStopper(metric, mode, time_budget_s, metric_threshold, tracking_uri, parent_run_id)


def with_first_user_error(stop: Stopper | None) -> tuple[FirstUserError, Stopper]:
    """A :class:`FirstUserError` and the sweep's stopper combined with it (Tune takes one stopper)."""
    watch = FirstUserError()
    return watch, watch if stop is None else CombinedStopper(stop, watch)


class SweepStopper(Stopper):
    """Stops every trial once the time budget is spent or any trial reaches the metric threshold."""

    def __init__(self, metric, mode, time_budget_s, metric_threshold, tracking_uri, parent_run_id):
        self.metric, self.mode = metric, mode
        self.time_budget_s, self.metric_threshold = time_budget_s, metric_threshold
        # Pickled into the sweep's Tune state: the masked URI only (remote.remember_uri).
        self.tracking_uri, self.parent_run_id = remote.remember_uri(tracking_uri), parent_run_id
        self.reason: str | None = None
        self._deadline: float | None = None

    def __call__(self, trial_id: str, result: dict) -> bool:
        value = result.get(self.metric)
        if self.metric_threshold is not None and isinstance(value, (int, float)) and self.reason is None:
            if ranking.reaches(float(value), float(self.metric_threshold), self.mode):
                self._fire("metric_threshold")
        return self.stop_all()

    def stop_all(self) -> bool:
        if self.time_budget_s is not None and self.reason is None:
            # The budget counts from Tune's first check, i.e. from when trials start (again, after a resume).
            self._deadline = self._deadline or time.monotonic() + self.time_budget_s
            if time.monotonic() >= self._deadline:
                self._fire("time_budget")
        return self.reason is not None

    def _fire(self, reason: str) -> None:
        from mlflow import MlflowClient

        from raysweep.tracking.tags import STOP_REASON_TAG

        self.reason = reason
        MlflowClient(remote.full_uri(self.tracking_uri)).set_tag(self.parent_run_id, STOP_REASON_TAG, reason)

    def __getstate__(self):
        # A resumed sweep gets a fresh budget: a pickled deadline belongs to the old driver's clock.
        return {**self.__dict__, "_deadline": None, "reason": None}


class FirstUserError(Callback, Stopper):
    """Stops the sweep at the first trial that failed on bad input, which every other trial would repeat.

    A trial that raises :class:`raysweep.errors.RaySweepError` (a user's function that does not report
    ``sweep.metric``, say) failed on something only the user can fix. Tune calls this as a callback when a trial
    fails (:meth:`on_trial_error`) and as a stopper (:meth:`stop_all`); after ``fit`` the sweep raises
    :attr:`error`, the one line the trial raised.
    """

    def __init__(self):
        self.error: str | None = None

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if self.error is None and trial.error_file:
            self.error = user_error(trial.error_file)

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.error is not None


def user_error(error_file: str) -> str | None:
    """The message of a :class:`~raysweep.errors.RaySweepError` a trial raised, from its error file, else ``None``."""
    from pathlib import Path

    marker = f"{RaySweepError.__name__}: "
    try:
        lines = Path(error_file).read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if marker in line:
            return line.split(marker, 1)[1].strip() or None
    return None


def _mode(value) -> str:
    return getattr(value, "value", value)


def _plain(node) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})


def _instantiate(params: dict[str, Any], where: str) -> dict[str, Any]:
    """Build nested ``{_target_: ...}`` values (e.g. an Optuna sampler) with Hydra's instantiate."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return {k: instantiate(v) if isinstance(v, dict) and "_target_" in v else v for k, v in params.items()}
    except InstantiationException as e:
        raise RaySweepError(f"{where}: {str(e).splitlines()[0]}; fix the _target_ or its arguments") from None


def _import(path: str, where: str):
    from hydra.utils import get_class

    try:
        return get_class(path)
    except Exception:  # noqa: BLE001 - Hydra wraps import errors in several types
        raise RaySweepError(f"{where}: cannot import {path!r}; give the full module.Class path") from None


def _build(cls, where: str, **kwargs):
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise RaySweepError(f"{where}: {cls.__name__}({', '.join(kwargs)}) failed: {e}; fix {where} params") from None
    except (AssertionError, ImportError) as e:  # Tune's wrappers of optional libraries assert they are installed
        raise RaySweepError(f"{where}: {cls.__name__} cannot be built: {str(e).strip() or type(e).__name__}; install "
                            f"what it needs, or pick another {where}") from None
