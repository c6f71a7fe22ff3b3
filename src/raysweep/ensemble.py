"""Build, log and register an ensemble: registered models of one task, their answers averaged.

The model itself (:class:`raysweep.ensemble_model.Ensemble`) is logged from code, with its members' model
directories as artifacts (each takes the raw columns: its preprocessing is inside it), a signature of the raw
columns in and :mod:`raysweep.predictions`' table out (with the ``threshold`` inference parameter for binary
data), exact pip requirements (its own and its members') and the project's uv files. Which models an ensemble
averages is configuration, ``conf/ensemble/NAME.yaml`` (:func:`load_spec`), or named on the command line::

    raysweep ensemble fraud                               # conf/ensemble/fraud.yaml
    raysweep ensemble fraud-ensemble --member forest=models:/fraud-rf/3 --member xgboost=models:/fraud-xgb@champion
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from mlflow import MlflowClient

from raysweep import registry
from raysweep.errors import RaySweepError
from raysweep.tracking.tags import (
    ENSEMBLE_ROLE,
    MEMBERS_TAG,
    METRIC_TAG,
    MODE_TAG,
    ROLE_TAG,
    SCORE_TAG_PREFIX,
    TEST_METRIC_TAG,
    TEST_VALUE_TAG,
    VALUE_TAG,
    VERSION_PARENT_TAG,
)

log = logging.getLogger(__name__)

#: What loading the ensemble itself needs, pinned to the versions it was built with; its members add theirs.
REQUIREMENTS = ("mlflow", "numpy", "pandas")
#: Config group folder of ensemble specs, under ``./conf`` and raysweep's own ``conf``.
CONFIG_GROUP = "ensemble"


@dataclass(frozen=True)
class EnsembleSpec:
    """What ``conf/ensemble/NAME.yaml`` describes: the registered model to add to, and its members.

    Attributes:
        registered_model: Registered model the ensemble becomes a new version of.
        members: Member name -> ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``, in order (the first
            member's sweep gives the data the ensemble is fitted and scored on).
    """

    registered_model: str
    members: dict[str, str]


def config_dirs() -> list[Path]:
    """Folders searched for ensemble specs, in order: ``./conf/ensemble``, then raysweep's ``conf/ensemble``."""
    from raysweep.config import CONF_DIR

    folders = [Path.cwd() / "conf" / CONFIG_GROUP, CONF_DIR / CONFIG_GROUP]
    return list(dict.fromkeys(folder.resolve() for folder in folders))


def available_specs() -> list[str]:
    """Names of the ensemble specs in :func:`config_dirs`."""
    return sorted({path.stem for folder in config_dirs() for path in folder.glob("*.yaml")})


def load_spec(name: str) -> EnsembleSpec:
    """Read an ensemble spec: ``NAME.yaml`` from :func:`config_dirs`, a YAML file's path, or the spec whose
    ``registered_model`` is ``name``.

    Args:
        name: A spec name (``fraud``), a path ending in ``.yaml``/``.yml``, or a registered model name.

    Raises:
        RaySweepError: No such spec, or a spec without ``registered_model`` and ``members``.
    """
    if name.endswith((".yaml", ".yml")):
        return _read_spec(Path(name))
    for folder in config_dirs():
        if (folder / f"{name}.yaml").is_file():
            return _read_spec(folder / f"{name}.yaml")
    # `raysweep ensemble MODEL` without members: the spec that builds MODEL.
    for spec_name in available_specs():
        spec = load_spec(spec_name)
        if spec.registered_model == name:
            return spec
    available = ", ".join(available_specs()) or "none"
    raise RaySweepError(f"no ensemble config {name!r} in {' or '.join(map(str, config_dirs()))} (available: "
                        f"{available}); name one, or name the members with --member KEY=models:/MODEL@ALIAS")


def _read_spec(path: Path) -> EnsembleSpec:
    from omegaconf import OmegaConf

    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # noqa: BLE001 - YAML and OmegaConf errors span lines; one is enough here
        raise RaySweepError(f"ensemble config {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, Mapping):
        raise RaySweepError(f"ensemble config {path} must be a mapping with registered_model and members")
    unknown = sorted(set(raw) - {"registered_model", "members"})
    members = raw.get("members")
    if unknown or not isinstance(raw.get("registered_model"), str) or not isinstance(members, Mapping) or not members:
        extra = f" (unknown keys: {', '.join(map(str, unknown))})" if unknown else ""
        raise RaySweepError(f"ensemble config {path} needs registered_model: NAME and members: {{KEY: "
                            f"models:/MODEL@ALIAS, ...}}{extra}; see conf/ensemble/fraud.yaml")
    return EnsembleSpec(raw["registered_model"], {str(k): str(v) for k, v in members.items()})


def build(client: MlflowClient, name: str, members: Mapping[str, str], *, dataset=None,
          by: str = "raysweep") -> registry.Registration:
    """Log an ensemble of registered models to a new run and register it as a version of ``name``.

    The new version gets ``@challenger`` (and ``@champion`` when ``name`` has none); ``raysweep promote NAME``
    then decides whether it replaces the champion. Its tags record the members' pinned URIs, its validation
    metric (what registration compares) and its test metric (:func:`raysweep.evaluation.test_tags`).

    Args:
        client: Client bound to the tracking store and registry.
        name: Registered model to add the ensemble to.
        members: Member name -> ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` of a model that takes the raw
            columns and answers :mod:`raysweep.predictions`' table for the data's task (a model raysweep
            registered; an :class:`EnsembleSpec`'s ``members``).
        dataset: Gives the task, the example rows and the splits the ensemble is scored on; default the data of
            the first member's sweep.
        by: Who builds it (recorded if it becomes the first champion).

    Returns:
        The :class:`raysweep.registry.Registration`.

    Raises:
        RaySweepError: No members, a member that does not resolve, or one whose answer does not fit the task.
    """
    import mlflow

    from raysweep import evaluation, packaging, predictions, tabular
    from raysweep.ensemble_model import CONFIG, PREDICTIONS, THRESHOLD, Ensemble
    from raysweep.promotion import held_out_data

    members = dict(members)
    if PREDICTIONS in members or CONFIG in members or not members:
        raise RaySweepError(f"name the ensemble's members (not {PREDICTIONS!r} or {CONFIG!r}) as "
                            "NAME=models:/MODEL@ALIAS")
    versions = {key: registry.resolve(client, uri) for key, uri in members.items()}
    pinned = {key: f"models:/{mv.name}/{mv.version}" for key, mv in versions.items()}
    first = next(iter(versions.values()))
    if dataset is None:
        dataset = held_out_data(client, first)
        _warn_if_split_apart(client, versions)
    metric, mode = first.tags.get(METRIC_TAG, "val_auc"), first.tags.get(MODE_TAG, "max")
    config = {"task": dataset.task, "classes": tabular.model_config(dataset.task, dataset.classes, ())["classes"]}

    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {PREDICTIONS: predictions.__file__, CONFIG: tabular.write_json(config, Path(tmp) / "config.json")}
        for key, uri in pinned.items():
            artifacts[key] = mlflow.artifacts.download_artifacts(uri, dst_path=str(Path(tmp) / key))
        # The same predict that serves it gives the signature's output example and the scores.
        scorer = Ensemble().setup(config, {key: mlflow.pyfunc.load_model(artifacts[key]) for key in pinned},
                                  predictions.to_frame, predictions.from_frame)
        example = tabular.servable(dataset.X_val.head(5))
        try:  # every member answers the data's classes, by name: averaged by position, one would mislabel
            scorer.mean(example)
        except ValueError as error:
            raise RaySweepError(f"the ensemble's members do not all answer for the data's {dataset.task} task: "
                                f"{error}; ensemble models trained on the same target") from None
        loaded = SimpleNamespace(predict=lambda rows: scorer.predict(None, rows))  # as pyfunc would call it
        scores = {**_score(loaded, dataset, "val"), **_score(loaded, dataset, "test")}
        params = {THRESHOLD: predictions.DEFAULT_THRESHOLD} if dataset.task == "binary" else None
        pins = _requirements(artifacts[key] for key in pinned)
        experiment_id = client.get_run(first.run_id).info.experiment_id if first.run_id else None
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"ensemble-{name}",
                              tags={ROLE_TAG: ENSEMBLE_ROLE}) as run:
            mlflow.log_params({f"member.{key}": uri for key, uri in pinned.items()})
            mlflow.log_metrics({k: v for k, v in scores.items() if v == v})  # nan: a split without rows
            with tabular.integer_columns_hint_off():
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(Path(__file__).with_name("ensemble_model.py")),
                    artifacts=artifacts,
                    signature=tabular.signature(example, scorer.predict(None, example), params),
                    input_example=example,
                    pip_requirements=pins,
                    # MLflow copies uv.lock, pyproject.toml and .python-version from there.
                    uv_project_path=packaging.project_root(),
                )
    on_test = evaluation.on_split(metric, evaluation.TEST)
    tags = {
        MEMBERS_TAG: ",".join(f"{key}={uri}" for key, uri in pinned.items()),
        METRIC_TAG: metric,
        MODE_TAG: mode,
        VALUE_TAG: repr(scores[metric]) if metric in scores else "",
        **({TEST_METRIC_TAG: on_test, TEST_VALUE_TAG: repr(scores[on_test])} if on_test in scores else {}),
        **{SCORE_TAG_PREFIX + key: repr(value) for key, value in scores.items() if key.startswith("test_")},
    }
    if first.tags.get(VERSION_PARENT_TAG):
        # The sweep whose data the ensemble was scored on: the gate rebuilds it from there.
        tags[VERSION_PARENT_TAG] = first.tags[VERSION_PARENT_TAG]
    mv = mlflow.register_model(info.model_uri, name, tags=tags)
    listed = ", ".join(f"{key} {uri}" for key, uri in pinned.items())
    averaged = "mean class probabilities" if dataset.task != "regression" else "mean prediction"
    client.update_model_version(name, mv.version, description=(
        f"Ensemble of {listed} ({averaged}{'; threshold param, default 0.5' if params else ''}). "
        f"{metric}={scores.get(metric, float('nan')):.4f} on the validation split"
        f"{f', {on_test}={scores[on_test]:.4f} on the test split' if on_test in scores else ''}. "
        f"Run {run.info.run_id}."
    ))
    version = str(mv.version)
    client.set_registered_model_alias(name, registry.CHALLENGER, version)
    if registry.champion_version(client, name) is None:
        registry.promote(client, name, version, by=by, reason="first version of the ensemble")
    current = client.get_model_version(name, version)
    return registry.Registration(name, version, tuple(sorted(current.aliases)), True)


#: Data keys that choose columns, not rows: members may differ in them and still share their splits.
_COLUMN_KEYS = ("drop", "task")


def _warn_if_split_apart(client: MlflowClient, versions: Mapping) -> None:
    """Warn when a member was swept on other rows or another split than the first member, whose validation and
    test splits score the ensemble: that member may have trained on rows the scores count as held out."""
    from omegaconf import OmegaConf

    from raysweep.tracking import queries

    def rows(mv):
        parent = mv.tags.get(VERSION_PARENT_TAG)
        spec = OmegaConf.to_container(queries.parent_config(client, parent).get("data") or {}) if parent else None
        return None if spec is None else {k: v for k, v in spec.items() if k not in _COLUMN_KEYS}

    (first_key, first), *others = versions.items()
    expected = rows(first)
    for key, mv in others:
        found = rows(mv)
        if expected is not None and found is not None and found != expected:
            differ = ", ".join(f"data.{k}" for k in sorted(set(expected) | set(found))
                               if expected.get(k) != found.get(k))
            log.warning("raysweep: member %r was swept on other rows or splits than %r (%s), whose validation and "
                        "test splits score the ensemble: its scores may count rows %r trained on; sweep the members "
                        "on the same data and split", key, first_key, differ, key)
            return


def _score(scorer, dataset, split: str) -> dict[str, float]:
    from raysweep import evaluation

    if not len(dataset.xy(split)[1]):
        return {}
    try:
        return evaluation.score(scorer, dataset, split)
    except RaySweepError as error:
        raise RaySweepError(f"the ensemble's members do not all answer for the data's {dataset.task} task: "
                            f"{error}") from None


def _requirements(member_dirs) -> list[str]:
    """The ensemble's own pins, then each member's (``requirements.txt``), one line per package."""
    import re

    from raysweep import packaging

    lines = packaging.pip_requirements(*REQUIREMENTS)
    for folder in member_dirs:
        path = Path(folder) / "requirements.txt"
        if path.is_file():
            lines += [line.strip() for line in path.read_text().splitlines() if line.strip()
                      and not line.startswith(("#", "-"))]
    by_package = {}
    for line in lines:
        by_package.setdefault(re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0].lower(), line)
    return list(by_package.values())
