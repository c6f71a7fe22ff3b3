"""The trainer interface: built-in and user trainers load through one checked lookup, errors name what is wrong."""

from __future__ import annotations

import sys
import textwrap
import uuid
from dataclasses import fields

import pytest

from raysweep import trainables
from raysweep.config import validate, validate_trainer
from raysweep.errors import RaySweepError
from raysweep.trainables import OPTIONAL_MEMBERS, REQUIRED_MEMBERS, LoadedTrainer, Trainer

#: A complete user trainer as a module: every required member, no optional one.
COMPLETE = """
METRICS = ("loss", "accuracy")

def validate(trainer_cfg, search_space):
    if "colour" in search_space:
        from raysweep.errors import RaySweepError
        raise RaySweepError("colour is not a parameter of this trainer")

def resource_needs(trainer_cfg):
    return {"cpus_per_trial": 1.0}

def make_trainable(trainer_cfg, dataset, context):
    return lambda config: None

def best_checkpoint(result, metric, mode):
    return None

def log_model(checkpoint_dir):
    return None
"""


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """``write(module, source) -> "PACKAGE.module"``: a module in a fresh package on ``sys.path``."""
    package = f"usertrainers_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(module: str, source: str) -> str:
        (tmp_path / package / f"{module}.py").write_text(textwrap.dedent(source))
        return f"{package}.{module}"

    yield write
    for name in [n for n in sys.modules if n.split(".")[0] == package]:
        del sys.modules[name]


def test_the_protocol_says_what_is_required_and_what_is_optional():
    assert REQUIRED_MEMBERS == (
        "METRICS", "validate", "resource_needs", "make_trainable", "best_checkpoint", "log_model"
    )
    assert OPTIONAL_MEMBERS == {"MAKES_MODELS": True, "NEEDS_DATA": True, "RESTORES_CHECKPOINTS": False,
                                "LOGS_FINAL_MODEL": False, "structural_params": None, "retrain": None, "metrics": None,
                                "REGISTRATION_IMPORTS": (), "check_task": None}
    # A loaded trainer carries every member under the protocol's name.
    assert {f.name for f in fields(LoadedTrainer)} == {"name", "source", *REQUIRED_MEMBERS, *OPTIONAL_MEMBERS}


@pytest.mark.parametrize(
    ("name", "source", "makes_models", "needs_data", "restores", "retrains", "logs_final_model"),
    [
        ("sklearn", "raysweep.trainables.sklearn", True, True, True, True, True),
        ("estimator", "raysweep.trainables.estimator", True, True, True, True, True),
        ("torch", "raysweep.trainables.torch_mlp", True, True, True, False, False),
        ("fixed_cost", "raysweep.trainables.fixed_cost", False, False, False, False, False),
    ],
)
def test_built_in_trainers_load_with_their_optional_members_resolved(name, source, makes_models, needs_data,
                                                                     restores, retrains, logs_final_model):
    trainer = trainables.load(name)
    assert (trainer.name, trainer.source) == (name, source)
    assert trainer.METRICS and all(isinstance(m, str) for m in trainer.METRICS)
    assert (trainer.MAKES_MODELS, trainer.NEEDS_DATA, trainer.RESTORES_CHECKPOINTS) == (
        makes_models, needs_data, restores
    )
    assert (trainer.retrain is not None) == retrains
    assert trainer.LOGS_FINAL_MODEL == logs_final_model  # which trials rank by their last report in worker mode
    assert not trainables.load("function").LOGS_FINAL_MODEL  # a user's function logs no model raysweep registers
    module = sys.modules[source]
    for member in REQUIRED_MEMBERS:
        assert getattr(trainer, member) == (tuple(module.METRICS) if member == "METRICS" else getattr(module, member))


def test_a_user_module_loads_by_its_dotted_path_with_the_protocol_defaults(user_package):
    path = user_package("trainer", COMPLETE)
    trainer = trainables.load(path)
    assert (trainer.name, trainer.source, trainer.METRICS) == (path, path, ("loss", "accuracy"))
    assert (trainer.MAKES_MODELS, trainer.NEEDS_DATA, trainer.RESTORES_CHECKPOINTS, trainer.retrain) == (
        True, True, False, None
    )
    assert trainer.resource_needs(None) == {"cpus_per_trial": 1.0}


def test_a_user_module_overrides_optional_members(user_package):
    path = user_package("trainer", COMPLETE + "MAKES_MODELS = False\nNEEDS_DATA = False\n"
                                              "def retrain(trainer_cfg, dataset, config, until=None):\n    return []\n")
    trainer = trainables.load(path)
    assert (trainer.MAKES_MODELS, trainer.NEEDS_DATA, trainer.RESTORES_CHECKPOINTS) == (False, False, False)
    assert trainer.retrain(None, None, {}) == []


def test_an_object_or_a_class_in_a_module_loads_by_module_colon_attribute(user_package):
    path = user_package("objects", """
        from raysweep.trainables import Trainer

        class Mine(Trainer):  # subclassing the protocol: the optional members come with it
            METRICS = ("score",)
            RESTORES_CHECKPOINTS = True

            def validate(self, trainer_cfg, search_space):
                pass

            def resource_needs(self, trainer_cfg):
                return {"cpus_per_trial": 2.0}

            def make_trainable(self, trainer_cfg, dataset, context):
                return None

            def best_checkpoint(self, result, metric, mode):
                return "here"

            def log_model(self, checkpoint_dir):
                return None

        TRAINER = Mine()
    """)
    for spec in (f"{path}:TRAINER", f"{path}:Mine"):
        trainer = trainables.load(spec)
        assert trainer.METRICS == ("score",) and trainer.RESTORES_CHECKPOINTS and trainer.MAKES_MODELS
        assert trainer.retrain is None and trainer.best_checkpoint(None, "score", "max") == "here"


@pytest.mark.parametrize("name", ["sklearn", "estimator", "torch"])
def test_a_loaded_trainer_keeps_what_the_sweep_imports_while_ray_starts(name):
    # Dropped on the way, the sweep imports skops (seconds) after the last trial instead.
    assert "skops.io" in trainables.load(name).REGISTRATION_IMPORTS


def test_a_user_trainer_names_what_the_sweep_imports_while_ray_starts(user_package):
    ahead = trainables.load(user_package("ahead", COMPLETE + 'REGISTRATION_IMPORTS = ["json"]\n'))
    assert ahead.REGISTRATION_IMPORTS == ("json",)
    assert trainables.load(user_package("plain", COMPLETE)).REGISTRATION_IMPORTS == ()


def test_a_top_level_module_loads_by_its_bare_name(tmp_path, monkeypatch):
    name = f"toplevel_trainer_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(COMPLETE)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert trainables.load(name).METRICS == ("loss", "accuracy")
    finally:
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("source", "attribute", "fragment"),
    [
        # Every missing member is named, in the protocol's order, with what a trainer provides.
        ('METRICS = ("a",)\ndef validate(c, s): pass\ndef resource_needs(c): return {}\n'
         "def best_checkpoint(r, m, o): return None\n", "",
         "is missing make_trainable, log_model; a trainer provides METRICS, validate, resource_needs, "
         "make_trainable, best_checkpoint, log_model and may provide metrics, MAKES_MODELS, NEEDS_DATA, "
         "RESTORES_CHECKPOINTS, LOGS_FINAL_MODEL, structural_params, retrain, REGISTRATION_IMPORTS, check_task "
         "(see raysweep.trainables.Trainer)"),
        ("", "", "is missing METRICS, validate, resource_needs, make_trainable, best_checkpoint, log_model;"),
        (COMPLETE + "validate = 3\nretrain = 'no'\n", "", "has validate, retrain not callable;"),
        (COMPLETE + 'METRICS = ("loss")\n', "", "has METRICS that is not a tuple of metric names;"),
        (COMPLETE + "NEEDS_DATA = 'no'\n", "", "has NEEDS_DATA not True/False;"),
        (COMPLETE + 'REGISTRATION_IMPORTS = ("numpy")\n', "", "has REGISTRATION_IMPORTS not a tuple of module names;"),
        # A subclass of the protocol that leaves a method out inherits only its empty stub: still missing.
        ("from raysweep.trainables import Trainer\n"
         "class Half(Trainer):\n    METRICS = ('a',)\n    def validate(self, c, s): pass\n", ":Half",
         "is missing resource_needs, make_trainable, best_checkpoint, log_model;"),
        (COMPLETE, ":NOPE", "has no attribute 'NOPE'; name an object that provides the Trainer members"),
        ("class Needy:\n    def __init__(self, x): pass\n", ":Needy",
         "is a class that cannot be made without arguments"),
        ("import not_a_module_anywhere_xyz\n", "", "cannot be imported: No module named 'not_a_module_anywhere_xyz'; "
                                                   "install what it needs"),
        ("from math import nothing_here\n", "", "cannot be imported: cannot import name 'nothing_here'"),
    ],
)
def test_a_user_trainer_that_is_not_one_is_refused_in_one_line(user_package, source, attribute, fragment):
    path = user_package("broken", source) + attribute
    with pytest.raises(RaySweepError) as err:
        trainables.load(path)
    message = str(err.value)
    assert message.startswith(f"trainer.name={path!r}")
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("sklern", f"trainer.name='sklern' is not known; use one of {', '.join(trainables.BUILT_INS)}, or your own "
                   "trainer as package.module or package.module:attribute"),
        ("", f"is not known; use one of {', '.join(trainables.BUILT_INS)}"),
        (":TRAINER", f"is not known; use one of {', '.join(trainables.BUILT_INS)}"),
        (".relative", f"is not known; use one of {', '.join(trainables.BUILT_INS)}"),
        ("no_such_pkg_xyz.trainer", "trainer.name='no_such_pkg_xyz.trainer': no module named 'no_such_pkg_xyz'; "
                                    "check the spelling and that its folder is on the Python path"),
        ("raysweep.trainables.nope:T", "no module named 'raysweep.trainables.nope'"),
        ("raysweep.errors", "trainer.name='raysweep.errors' is missing METRICS, validate"),
    ],
)
def test_unknown_names_are_refused_in_one_line(name, fragment):
    with pytest.raises(RaySweepError) as err:
        trainables.load(name)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_config_validation_checks_the_sweep_against_a_user_trainer(user_package, make_cfg):
    path = user_package("trainer", COMPLETE + "MAKES_MODELS = False\n")
    base = ["+sweep=overhead", f"trainer.name={path}", "sweep.register=false", "search_space={}"]
    cfg = make_cfg(*base, "sweep.metric=accuracy")
    validate(cfg)
    validate_trainer(cfg)
    for overrides, fragment in [
        (["sweep.metric=score"], f"sweep.metric='score' is not reported by trainer {path!r}; use one of loss, acc"),
        (["sweep.metric=loss", "sweep.register=true"], f"trainer {path!r} makes no model to register"),
        (["sweep.metric=loss", "scheduler=pbt"], f"which trainer {path!r} cannot restore"),
    ]:
        with pytest.raises(RaySweepError, match=fragment):
            validate(make_cfg(*base, *overrides))
    with pytest.raises(RaySweepError, match="colour is not a parameter"):
        validate_trainer(make_cfg(*base, "sweep.metric=loss", "+search_space.colour=red"))


def test_a_loaded_trainer_is_a_trainer():
    # Callers treat LoadedTrainer as the protocol itself: same member names, optional ones always present.
    trainer: Trainer = trainables.load("fixed_cost")
    assert isinstance(trainer, LoadedTrainer) and trainer.NEEDS_DATA is False


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("max", "ckpt/2"), ("min", "ckpt/1")],
)
def test_torch_best_checkpoint_follows_the_one_better_rule(mode, expected):
    import pandas as pd

    from raysweep.compat import TRAIN_CHECKPOINT_KEY
    from raysweep.trainables import torch_mlp

    # Epoch 3 has no checkpoint, epoch 4 no metric; epochs 2 and 5 tie at the top: the first of equals wins.
    frame = pd.DataFrame({
        "val_auc": [0.5, 0.9, 0.95, float("nan"), 0.9],
        TRAIN_CHECKPOINT_KEY: ["ckpt/1", "ckpt/2", None, "ckpt/4", "ckpt/5"],
    }, index=[10, 11, 12, 13, 14])
    result = type("Result", (), {"metrics_dataframe": frame})()
    assert torch_mlp.best_checkpoint(result, "val_auc", mode) == expected
    assert torch_mlp.best_checkpoint(result, "val_loss", mode) is None
    nothing = type("Result", (), {"metrics_dataframe": frame.assign(val_auc=float("nan"))})()
    assert torch_mlp.best_checkpoint(nothing, "val_auc", mode) is None


def test_a_user_module_that_fails_on_import_keeps_its_own_error(user_package):
    # Anything but an ImportError is a bug in the module: its own traceback shows where, so it is not wrapped.
    path = user_package("faulty", "raise ValueError('bad constant')\n")
    with pytest.raises(ValueError, match="bad constant"):
        trainables.load(path)
