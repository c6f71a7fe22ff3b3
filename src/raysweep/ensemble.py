"""Build, log and register the fraud ensemble: preprocessing plus registered sklearn models, averaged.

The model itself (:class:`raysweep.ensemble_model.FraudEnsemble`) is logged from code, with its members'
model directories and a fitted preprocessing step as artifacts, a signature that includes the ``threshold``
inference parameter, exact pip requirements and the project's uv files::

    raysweep ensemble fraud-ensemble                      # @champion of fraud-rf and of fraud-hgb
    raysweep ensemble fraud-ensemble --member random_forest=models:/fraud-rf/3 --member boosting=models:/fraud-hgb@champion
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow import MlflowClient

from raysweep import registry
from raysweep.errors import RaySweepError

#: Members of ``raysweep ensemble`` when none are named: the champions of the two fraud sweeps.
DEFAULT_MEMBERS = {"random_forest": "models:/fraud-rf@champion", "gradient_boosting": "models:/fraud-hgb@champion"}
#: What loading the ensemble needs, pinned to the versions it was built with.
REQUIREMENTS = ("mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas")
MEMBERS_TAG = "raysweep.members"


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


def build(client: MlflowClient, name: str, members: dict[str, str] | None = None, *, dataset=None,
          by: str = "raysweep") -> registry.Registration:
    """Log an ensemble of registered sklearn models to a new run and register it as a version of ``name``.

    The new version gets ``@challenger`` (and ``@champion`` when ``name`` has none); ``raysweep promote NAME``
    then decides whether it replaces the champion. Its tags record the members' pinned URIs and its
    validation metric, so the gate can compare it.

    Args:
        client: Client bound to the tracking store and registry.
        name: Registered model to add the ensemble to.
        members: Member name -> ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` of an sklearn model that
            predicts class probabilities (default :data:`DEFAULT_MEMBERS`).
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

    members = dict(members or DEFAULT_MEMBERS)
    if PREPROCESS in members or not members:
        raise RaySweepError(f"name the ensemble's members (not {PREPROCESS!r}) as NAME=models:/MODEL@ALIAS")
    versions = {key: registry.resolve(client, uri) for key, uri in members.items()}
    pinned = {key: f"models:/{mv.name}/{mv.version}" for key, mv in versions.items()}
    first = next(iter(versions.values()))
    if dataset is None:
        dataset = held_out_data(client, first)
    metric, mode = first.tags.get(registry.METRIC_TAG, "val_auc"), first.tags.get(registry.MODE_TAG, "max")

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
                              tags={"raysweep.role": "ensemble"}) as run:
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
        registry.METRIC_TAG: metric,
        registry.MODE_TAG: mode,
        registry.VALUE_TAG: repr(scores[metric]) if metric in scores else "",
    }
    if first.tags.get(registry.PARENT_TAG):
        # The sweep whose data the ensemble was fitted and scored on: the gate rebuilds it from there.
        tags[registry.PARENT_TAG] = first.tags[registry.PARENT_TAG]
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
