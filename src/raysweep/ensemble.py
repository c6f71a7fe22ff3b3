"""Build, log and register an ensemble: preprocessing plus registered sklearn models, averaged.

The model itself (:class:`raysweep.ensemble_model.FraudEnsemble`) is logged from code, with its members'
model directories and a fitted preprocessing step as artifacts, a signature that includes the ``threshold``
inference parameter, exact pip requirements and the project's uv files. Which models an ensemble averages is
configuration, ``conf/ensemble/NAME.yaml`` (:func:`load_spec`), or named on the command line::

    raysweep ensemble fraud                               # conf/ensemble/fraud.yaml
    raysweep ensemble fraud-ensemble --member random_forest=models:/fraud-rf/3 --member boosting=models:/fraud-hgb@champion
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient

from raysweep import registry
from raysweep.errors import RaySweepError
from raysweep.tracking.tags import (
    ENSEMBLE_ROLE,
    MEMBERS_TAG,
    METRIC_TAG,
    MODE_TAG,
    ROLE_TAG,
    VALUE_TAG,
    VERSION_PARENT_TAG,
)

#: What loading the ensemble needs, pinned to the versions it was built with.
REQUIREMENTS = ("mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas")
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


def preprocessing(features):
    """The ensemble's preprocessing, fitted on ``features`` (the training split).

    It selects the training columns by name (any order in, training order out) and fills a missing value with
    the column's training median; complete rows pass through unchanged, so members see what they trained on.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer

    step = ColumnTransformer([("impute", SimpleImputer(strategy="median"), list(features.columns))],
                             remainder="drop", verbose_feature_names_out=False)
    return step.set_output(transform="pandas").fit(features)


def build(client: MlflowClient, name: str, members: Mapping[str, str], *, dataset=None,
          by: str = "raysweep") -> registry.Registration:
    """Log an ensemble of registered sklearn models to a new run and register it as a version of ``name``.

    The new version gets ``@challenger`` (and ``@champion`` when ``name`` has none); ``raysweep promote NAME``
    then decides whether it replaces the champion. Its tags record the members' pinned URIs and its
    validation metric, so the gate can compare it.

    Args:
        client: Client bound to the tracking store and registry.
        name: Registered model to add the ensemble to.
        members: Member name -> ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` of an sklearn model that
            predicts class probabilities (an :class:`EnsembleSpec`'s ``members``).
        dataset: Fits the preprocessing (training split) and scores the ensemble (validation split); default
            the data of the first member's sweep.
        by: Who builds it (recorded if it becomes the first champion).

    Returns:
        The :class:`raysweep.registry.Registration`.
    """
    import mlflow
    import mlflow.sklearn

    from raysweep import packaging
    from raysweep.ensemble_model import PREPROCESS, FraudEnsemble
    from raysweep.metrics import validation_metrics
    from raysweep.promotion import held_out_data
    from raysweep.trainables.sklearn import trusted_types

    members = dict(members)
    if PREPROCESS in members or not members:
        raise RaySweepError(f"name the ensemble's members (not {PREPROCESS!r}) as NAME=models:/MODEL@ALIAS")
    versions = {key: registry.resolve(client, uri) for key, uri in members.items()}
    pinned = {key: f"models:/{mv.name}/{mv.version}" for key, mv in versions.items()}
    first = next(iter(versions.values()))
    if dataset is None:
        dataset = held_out_data(client, first)
    metric, mode = first.tags.get(METRIC_TAG, "val_auc"), first.tags.get(MODE_TAG, "max")

    with tempfile.TemporaryDirectory() as tmp:
        step = preprocessing(dataset.X_train)
        artifacts = {PREPROCESS: str(Path(tmp) / PREPROCESS)}
        mlflow.sklearn.save_model(step, artifacts[PREPROCESS], skops_trusted_types=trusted_types(step),
                                  pip_requirements=packaging.pip_requirements(*REQUIREMENTS))
        for key, uri in pinned.items():
            artifacts[key] = mlflow.artifacts.download_artifacts(uri, dst_path=str(Path(tmp) / key))
        # The same predict that serves it gives the signature's output example and the validation score.
        scorer = FraudEnsemble()
        scorer.preprocess = step
        scorer.members = {key: mlflow.sklearn.load_model(artifacts[key]) for key in pinned}
        example = dataset.X_val.head(5)
        scores = validation_metrics(dataset.y_val, scorer.predict(None, dataset.X_val)[registry.FRAUD_PROBABILITY])
        signature = mlflow.models.infer_signature(example, scorer.predict(None, example),
                                                  params={"threshold": 0.5})
        experiment_id = client.get_run(first.run_id).info.experiment_id if first.run_id else None
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"ensemble-{name}",
                              tags={ROLE_TAG: ENSEMBLE_ROLE}) as run:
            mlflow.log_params({f"member.{key}": uri for key, uri in pinned.items()})
            mlflow.log_metrics(scores)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(__file__).with_name("ensemble_model.py")),
                artifacts=artifacts,
                signature=signature,
                input_example=example,
                pip_requirements=packaging.pip_requirements(*REQUIREMENTS),
                uv_project_path=packaging.project_root(),  # MLflow copies uv.lock, pyproject.toml, .python-version
            )
    tags = {
        MEMBERS_TAG: ",".join(f"{key}={uri}" for key, uri in pinned.items()),
        METRIC_TAG: metric,
        MODE_TAG: mode,
        VALUE_TAG: repr(scores[metric]) if metric in scores else "",
    }
    if first.tags.get(VERSION_PARENT_TAG):
        # The sweep whose data the ensemble was fitted and scored on: the gate rebuilds it from there.
        tags[VERSION_PARENT_TAG] = first.tags[VERSION_PARENT_TAG]
    mv = mlflow.register_model(info.model_uri, name, tags=tags)
    listed = ", ".join(f"{key} {uri}" for key, uri in pinned.items())
    client.update_model_version(name, mv.version, description=(
        f"Ensemble of {listed} (preprocessing: median imputation by column; mean fraud probability; "
        f"threshold param, default 0.5). {metric}={scores.get(metric, float('nan')):.4f} on the validation data. "
        f"Run {run.info.run_id}."
    ))
    version = str(mv.version)
    client.set_registered_model_alias(name, registry.CHALLENGER, version)
    if registry.champion_version(client, name) is None:
        registry.promote(client, name, version, by=by, reason="first version of the ensemble")
    current = client.get_model_version(name, version)
    return registry.Registration(name, version, tuple(sorted(current.aliases)), True)
