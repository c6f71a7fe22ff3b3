"""raysweep as a library: the built wheel carries the built-in configs, a user's ./conf and --config-dir come
first, and the wheel installed into a fresh virtual environment runs a sweep from an empty folder.

The fresh environment gets raysweep from the wheel only (``uv pip install --no-deps``); its third-party
packages are the project's locked ones, reached through a ``.pth`` line to this environment's site-packages
(whose editable raysweep hook is not run from there), so the tests need neither the network nor a second copy
of torch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest
from mlflow import MlflowClient

from raysweep import compose
from raysweep.config import CONF_DIR, search_path
from raysweep.errors import RaySweepError

ROOT = CONF_DIR.parent
UV = os.environ.get("UV") or shutil.which("uv")  # `uv run` names its own binary in UV


def _uv() -> str:
    """The uv binary. Without it the wheel tests fail, never skip: .ci/run installs uv on a fresh machine."""
    assert UV, "uv (the project's package manager) builds the wheel here; install it (.ci/run does) and rerun"
    return UV

#: A sweep in seconds: little data, two trials of two iterations, small forests, no progress table.
TINY = ["data.n_samples=2000", "trainer.iterations=2", "sweep.num_samples=2", "search_space.n_estimators=10",
        "search_space.max_depth=4", "cluster.verbose=0", "cluster.num_cpus=2"]


# --- where configs come from (in this process) ----------------------------------------------------------------


def _sweep_file(folder: Path, name: str, sweep_name: str) -> None:
    (folder / "sweep").mkdir(parents=True, exist_ok=True)
    (folder / "sweep" / f"{name}.yaml").write_text(textwrap.dedent(f"""\
        # @package _global_
        defaults:
          - override /data: fraud
        sweep:
          name: {sweep_name}
        mlflow:
          experiment_name: {sweep_name}
          registered_model: {sweep_name}-rf
        """))


@pytest.fixture
def user_project(tmp_path, monkeypatch):
    """An empty working directory with ./conf (a new sweep, a replaced built-in sweep and data file) and
    another config folder for --config-dir."""
    _sweep_file(tmp_path / "conf", "mine", "mine")
    _sweep_file(tmp_path / "conf", "fraud", "cwd-fraud")
    (tmp_path / "conf" / "data").mkdir()
    (tmp_path / "conf" / "data" / "fraud.yaml").write_text(
        (CONF_DIR / "data" / "fraud.yaml").read_text().replace("n_samples: 20000", "n_samples: 1234"))
    # Another Hydra app's primary config, as many projects keep in conf/: raysweep does not read it.
    (tmp_path / "conf" / "config.yaml").write_text("defaults:\n  - _self_\nanother_app:\n  lr: 0.1\n")
    _sweep_file(tmp_path / "other", "fraud", "dir-fraud")
    _sweep_file(tmp_path / "other", "theirs", "theirs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_search_path_puts_the_users_folders_before_the_builtins(user_project):
    assert search_path() == [user_project / "conf", CONF_DIR]
    assert search_path("other") == [user_project / "conf", user_project / "other", CONF_DIR]
    with pytest.raises(RaySweepError, match="--config-dir nope: no such folder"):
        search_path("nope")


def test_search_path_from_the_checkout_keeps_builtins_last(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # ./conf is the built-ins themselves
    assert search_path() == [CONF_DIR]
    _sweep_file(tmp_path, "x", "x")
    assert search_path(tmp_path) == [tmp_path, CONF_DIR]


def test_user_configs_replace_and_add_to_builtins(user_project):
    cfg = compose.compose(["+sweep=fraud"])
    assert cfg.sweep.name == "cwd-fraud"  # ./conf/sweep/fraud.yaml replaces the built-in
    assert cfg.data.n_samples == 1234  # ./conf/data/fraud.yaml too, though the sweep names the group only
    assert cfg.trainer.family == "random_forest"  # the rest comes from the built-ins
    assert "another_app" not in cfg
    assert compose.compose(["+sweep=mine"]).sweep.name == "mine"
    assert compose.compose(["+sweep=theirs"], config_dir="other").sweep.name == "theirs"
    assert compose.compose(["+sweep=fraud"], config_dir="other").sweep.name == "cwd-fraud"  # ./conf first
    (user_project / "conf" / "sweep" / "fraud.yaml").unlink()
    assert compose.compose(["+sweep=fraud"], config_dir="other").sweep.name == "dir-fraud"  # then --config-dir
    assert compose.compose(["+sweep=fraud"]).sweep.name == "fraud"  # then the built-in


def test_compose_errors_are_one_line(user_project):
    with pytest.raises(RaySweepError, match=r"Could not find 'sweep/nope'; available: fraud, .*mine.*sweep=NAME"):
        compose.compose(["+sweep=nope"])


def test_compose_leaves_a_callers_hydra_as_it_was(tmp_path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        compose.compose(["+sweep=fraud"])
        assert hydra_compose("config", overrides=["+sweep=fraud_hgb"]).sweep.name == "fraud-hgb"


def test_submit_ships_the_package_as_the_wheel_lays_it_out(tmp_path):
    from raysweep import submit

    package = submit.package_with_conf(tmp_path)
    assert package.name == "raysweep" and (package / "__main__.py").is_file()
    assert (package / "conf" / "config.yaml").read_text() == (CONF_DIR / "config.yaml").read_text()
    assert not list(package.rglob("__pycache__"))


# --- the wheel --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    out = subprocess.run([_uv(), "build", "--wheel", "--out-dir", str(dist)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (built,) = dist.glob("raysweep-*.whl")
    return built


def test_wheel_carries_every_builtin_config_group_and_nothing_of_the_checkout(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"raysweep/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    assert configs <= names, sorted(configs - names)
    assert {"raysweep/__main__.py", "raysweep/conf/config.yaml", "raysweep/ensemble_model.py"} <= names
    assert not {n for n in names if n.startswith(("tests/", "bench/", "conf/", "src/")) or "__pycache__" in n}


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with raysweep installed from the wheel (not editable); returns its python."""
    folder = tmp_path_factory.mktemp("venv") / "env"
    for cmd in ([_uv(), "venv", "--quiet", "--python", sys.executable, str(folder)],
                [_uv(), "pip", "install", "--quiet", "--offline", "--no-deps", "--python", str(folder / "bin" / "python"),
                 str(wheel)]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
    (site,) = folder.glob("lib/python*/site-packages")
    # Third-party packages: this project's locked environment, searched after the venv's own site-packages.
    (site / "_project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return folder / "bin" / "python"


def _env(**extra: str) -> dict[str, str]:
    """What a user's shell has: no PYTHONPATH, no RAYSWEEP_*, no RAY_ADDRESS, nothing from uv run."""
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**keep, "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
            **extra}


def _run(python: Path, args: list[str], cwd: Path, env: dict[str, str], timeout: int = 120):
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_installed_raysweep_comes_from_the_wheel_with_its_configs(venv, tmp_path):
    out = _run(venv, ["-c", "import raysweep, raysweep.config as c; print(raysweep.__file__); print(c.CONF_DIR)"],
               tmp_path, _env())
    assert out.returncode == 0, out.stderr
    package, conf = out.stdout.split()
    site = venv.parent.parent
    assert Path(package).is_relative_to(site) and Path(conf) == Path(package).parent / "conf", out.stdout
    assert not Path(package).is_relative_to(ROOT)


def test_installed_help_lists_builtin_and_user_sweeps(venv, tmp_path):
    _sweep_file(tmp_path / "conf", "mine", "mine")
    for command in ([str(venv), "-m", "raysweep"], [str(venv.parent / "raysweep")]):  # and the console script
        out = subprocess.run([*command, "--help"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        assert f"yours:    mine  ({tmp_path / 'conf' / 'sweep'})" in out.stdout
        assert "built-in: fraud, fraud_hgb, fraud_torch" in out.stdout
        (group,) = [line for line in out.stdout.splitlines() if line.startswith("sweep: ")]
        assert {"fraud", "fraud_hgb", "mine"} <= set(group.removeprefix("sweep: ").split(", "))


def test_installed_conf_and_config_dir_override_builtins(venv, tmp_path):
    _sweep_file(tmp_path / "conf", "fraud", "cwd-fraud")
    _sweep_file(tmp_path / "other", "fraud", "dir-fraud")
    _sweep_file(tmp_path / "other", "theirs", "theirs")

    def name(*args: str) -> str:
        out = _run(venv, ["-m", "raysweep", *args, "--cfg", "job"], tmp_path, _env())
        assert out.returncode == 0, out.stderr
        return next(line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("  name: "))

    assert name("+sweep=fraud") == "cwd-fraud"
    assert name("--config-dir", "other", "+sweep=theirs") == "theirs"
    (tmp_path / "conf" / "sweep" / "fraud.yaml").unlink()
    assert name("--config-dir", "other", "+sweep=fraud") == "dir-fraud"
    assert name("+sweep=fraud") == "fraud"
    out = _run(venv, ["-m", "raysweep", "--config-dir", "nope", "+sweep=fraud"], tmp_path, _env())
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "raysweep: --config-dir nope: no such folder; point it at a folder of config groups (e.g. one holding "
        "sweep/NAME.yaml)"]


@pytest.mark.slow
def test_installed_wheel_sweeps_from_an_empty_folder(venv, tmp_path):
    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    out = _run(venv, ["-m", "raysweep", "+sweep=fraud", *TINY, f"cluster.storage_path={tmp_path / 'ray'}"], empty,
               _env(MLFLOW_TRACKING_URI=store), timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert "registered  fraud-rf v1 (new version; @challenger, @champion)" in out.stdout

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("fraud-detection").experiment_id])
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    (version,) = client.search_model_versions("name = 'fraud-rf'")
    assert version.version in ("1", 1)


@pytest.mark.slow
def test_trials_find_modules_in_the_drivers_working_directory(ray_address):
    """Ray's rule that runtime.start relies on: the driver's directory at ray.init is on its workers' path."""
    import ray

    @ray.remote(num_cpus=0)
    def worker_path() -> list[str]:
        return sys.path

    assert os.getcwd() in ray.get(worker_path.remote()), (
        "Ray no longer puts the driver's working directory on its workers' path: trials cannot import the user's "
        "modules (put it there in runtime.start, e.g. through the worker set-up hook)")
