"""Log a trained tabular model so the registered model takes the raw columns and answers the task's table.

Trainers call :func:`log_model` with what they fitted: a scikit-learn ``Pipeline`` whose first step is the
preprocessing from :func:`raysweep.preprocess.build` (:func:`pipeline` makes one around any estimator), or the
fitted preprocessing and a TorchScript network. It is logged as :class:`raysweep.tabular_model.TabularModel`,
an MLflow model from code, with:

- a signature of the raw input columns (every column optional, so a served row may hold gaps: the
  preprocessing imputes them) and of the answer's table (:mod:`raysweep.predictions`),
  plus the ``threshold`` parameter for binary models;
- exact pins of what loading needs (never raysweep, Ray or Hydra) and the project's uv files
  (:mod:`raysweep.packaging`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: What loading any tabular model needs, pinned to the installed versions; a trainer adds its framework.
REQUIREMENTS = ("mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas")
#: The Pipeline step names.
PREPROCESS_STEP, MODEL_STEP = "preprocess", "model"


def pipeline(estimator, X_train, **preprocess_options):
    """An unfitted ``Pipeline``: :func:`raysweep.preprocess.build` for ``X_train``'s columns, then ``estimator``."""
    from sklearn.pipeline import Pipeline

    from raysweep import preprocess

    return Pipeline([(PREPROCESS_STEP, preprocess.build(X_train, **preprocess_options)), (MODEL_STEP, estimator)])


def model_config(task: str, classes: Sequence[Any], columns: Sequence[Any]) -> dict[str, Any]:
    """What :class:`raysweep.tabular_model.TabularModel` reads from its config artifact, as plain JSON values."""
    return {"task": str(task), "classes": [_plain(c) for c in classes], "columns": [str(c) for c in columns]}


def write_json(value, path: Path) -> str:
    """Write ``value`` as JSON to ``path`` (a model's config artifact); returns the path."""
    import json

    path.write_text(json.dumps(value))
    return str(path)


def distributions(obj) -> list[str]:
    """The installed distributions (pip names) that provide ``obj``'s class, e.g. ``["xgboost"]``; none for
    scikit-learn (always required) or for code that is no installed package."""
    from importlib.metadata import packages_distributions

    top = type(obj).__module__.split(".")[0]
    if top == "sklearn":  # the common case, answered without reading every installed distribution (a second)
        return []
    return [d for d in packages_distributions().get(top, []) if d != "scikit-learn"]


def trusted_types(obj, *, sample: bool = False) -> list[str]:
    """The types skops must be told to trust to load ``obj`` (sklearn's tree internals, a booster, ...): the
    model is ours, just fitted, so everything in it is trusted.

    With ``sample``, they are listed from ``obj`` with each ensemble cut to its first member: a forest's trees all
    bring the same types, and serializing two hundred of them only to list those is a second of a registration.
    MLflow loads the saved model back with the list, so one it misses is refused there (:func:`log_model` then
    lists them from the whole model).
    """
    from raysweep import compat

    with compat.skops_without_torch():  # imported here first when nothing warmed it up
        import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(_first_members(obj) if sample else obj))


def local_code(type_names: Sequence[str]) -> list[str]:
    """The user's own code a model's types come from (``mymodels.MyClassifier``): the file of each top-level module,
    or the folder of each top-level package, that is no installed distribution, so the logged model carries it and
    loads where the project's folder is not (MLflow's ``code_paths``)."""
    import importlib.util
    import sysconfig

    installed = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib", "stdlib", "platstdlib")}
    found = []
    for top in dict.fromkeys(name.split(".")[0] for name in type_names):
        spec = importlib.util.find_spec(top) if top not in ("raysweep", "__main__") else None
        origin = Path(spec.origin).resolve() if spec is not None and spec.has_location and spec.origin else None
        if origin is None or {"site-packages", "dist-packages"} & set(origin.parts) \
                or any(folder in origin.parents for folder in installed):  # a user site, conda: installed all the same
            continue
        found.append(str(origin.parent if spec.submodule_search_locations else origin))
    return found


def _first_members(obj):
    """``obj`` (a copy, where it changes) with every fitted ensemble's ``estimators_`` list cut to one member."""
    import copy

    from sklearn.pipeline import Pipeline

    if isinstance(obj, Pipeline):
        sampled = copy.copy(obj)
        sampled.steps = [(name, _first_members(step)) for name, step in obj.steps]
        return sampled
    members = getattr(obj, "estimators_", None)
    if isinstance(members, list) and len(members) > 1:
        sampled = copy.copy(obj)
        sampled.estimators_ = members[:1]
        return sampled
    return obj


def log_model(*, task: str, classes: Sequence[Any], example, pipeline=None, preprocess=None, network=None,
              requirements: Sequence[str] = (), name: str = "model"):
    """Log a tabular model to the active MLflow run.

    Give either ``pipeline`` (sklearn kind) or ``preprocess`` and ``network`` (torch kind).

    Args:
        task: ``binary``, ``multiclass`` or ``regression``.
        classes: The user's labels in class-code order (``()`` for regression).
        example: A few raw rows of the training columns (the signature's and the logged input example).
        pipeline: A fitted ``Pipeline`` with ``predict_proba`` (classifiers) or ``predict`` (regressors).
        preprocess: The fitted preprocessing of the torch kind.
        network: The torch kind's TorchScript module, or the path of its saved file.
        requirements: Distributions loading needs besides :data:`REQUIREMENTS` (``xgboost``, ``torch``).
        name: The logged model's name.

    Returns:
        The ``mlflow.models.model.ModelInfo`` of the logged model.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    from raysweep import packaging, predictions
    from raysweep.tabular_model import CONFIG, NETWORK, PIPELINE, PREDICTIONS, PREPROCESS, THRESHOLD, TabularModel

    if (pipeline is None) == (network is None) or (network is not None and preprocess is None):
        raise ValueError("log_model takes pipeline=..., or preprocess=... and network=...")
    pins = packaging.pip_requirements(*dict.fromkeys([*REQUIREMENTS, *requirements]))
    example = servable(example)
    config = model_config(task, classes, example.columns)
    fitted = pipeline if pipeline is not None else preprocess
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {PREDICTIONS: predictions.__file__, CONFIG: write_json(config, Path(tmp) / "config.json")}
        key = PIPELINE if pipeline is not None else PREPROCESS
        artifacts[key] = str(Path(tmp) / key)
        with _preprocessor_flavor_note_off(pipeline is None):
            try:
                trusted = trusted_types(fitted, sample=True)
                mlflow.sklearn.save_model(fitted, artifacts[key], skops_trusted_types=trusted, pip_requirements=pins)
            except MlflowException as error:
                if "untrusted types" not in str(error):
                    raise
                shutil.rmtree(artifacts[key])  # what the refused save left
                trusted = trusted_types(fitted)
                mlflow.sklearn.save_model(fitted, artifacts[key], skops_trusted_types=trusted, pip_requirements=pins)
        code = local_code(trusted) if pipeline is not None else []
        if network is not None:
            artifacts[NETWORK] = _network_file(network, Path(tmp))
        model = TabularModel().setup(config, fitted, predictions.to_frame, _load_network(network))
        params = {THRESHOLD: predictions.DEFAULT_THRESHOLD} if task == "binary" else None
        with integer_columns_hint_off():
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=str(Path(__file__).with_name("tabular_model.py")),
                artifacts=artifacts,
                signature=signature(example, model.predict(None, example), params),
                input_example=example,
                pip_requirements=pins,
                code_paths=code or None,  # on the loader's path before the pipeline is read
            )
    packaging.attach_project_files(info.model_id)
    return info


def servable(frame):
    """``frame`` as any served model takes it: category columns as plain values. Models logged with typed input
    columns (before :func:`signature` took any type; a champion may be one) are checked by MLflow, which refuses
    pandas' category dtype for a string column."""
    import pandas as pd

    categories = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
    return frame.astype({c: object for c in categories}) if categories else frame


#: MLflow's hint that integer columns cannot hold gaps, given whenever it reads a frame with one.
INTEGER_COLUMNS_HINT = "Hint: Inferred schema contains integer column"


@contextmanager
def integer_columns_hint_off():
    """Silence :data:`INTEGER_COLUMNS_HINT`: said once, in :func:`signature`'s docstring, instead of at every model
    logged. A sweep turns it off for its whole process too (:func:`raysweep.sweep.run`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=INTEGER_COLUMNS_HINT)
        yield


@contextmanager
def torchscript_deprecation_off():
    """Silence torch's deprecation of ``torch.jit.save``/``load``, said at every call: the network stays
    TorchScript, which serves without the user's Python code."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.(save|load)` is deprecated", category=FutureWarning)
        yield


@contextmanager
def _preprocessor_flavor_note_off(preprocessor: bool):
    # A preprocessor alone has no predict, so MLflow warns that it logs no python_function flavor for it; none is
    # wanted: the TabularModel around it serves.
    logger = logging.getLogger("mlflow.sklearn")
    level = logger.level
    if preprocessor:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def signature(example, answer, params: dict[str, Any] | None = None):
    """The model signature: ``example``'s raw columns in, ``answer``'s table out.

    Every input column is optional, so a served row may leave any value out (JSON ``null``): the preprocessing
    imputes it. And every input column takes any type: MLflow's schema check refuses much of what the same data
    arrives as - an int64 column to a double one (a column that had gaps in training), float64 to float32 (JSON
    to a Parquet column), pandas' nullable ``Int64``/``boolean`` and category dtypes - so the model itself turns
    each column into what it trained on (:meth:`raysweep.tabular_model.TabularModel.as_trained`).
    """
    from mlflow.models import infer_signature
    from mlflow.models.signature import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    with integer_columns_hint_off():
        inferred = infer_signature(example, answer, params)
    inputs = Schema([ColSpec(AnyType(), spec.name, required=False) for spec in inferred.inputs.inputs])
    return ModelSignature(inputs=inputs, outputs=inferred.outputs, params=inferred.params)


def _network_file(network, folder: Path) -> str:
    if isinstance(network, (str, Path)):
        return str(network)
    import torch

    path = folder / "network.pt"
    with torchscript_deprecation_off():
        torch.jit.save(network, str(path))
    return str(path)


def _load_network(network):
    if network is None or not isinstance(network, (str, Path)):
        return network
    import torch

    with torchscript_deprecation_off():
        return torch.jit.load(str(network), map_location="cpu").eval()


def _plain(value):
    # numpy scalars -> Python ones: the model config is JSON.
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value
