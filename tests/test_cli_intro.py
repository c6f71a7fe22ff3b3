"""The command line introduces itself: --help, --version, one-line hints for wrong input, tab completion.

Each case runs the real command in a subprocess from a project folder with its own ./conf (a sweep ``mine`` and a
sweep ``broken`` whose defaults list names a trainer that does not exist). None of them starts Ray or writes an
MLflow store.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from raysweep.compose import HYDRA_FLAGS, split_flags
from raysweep.config import config_keys
from raysweep.keys import did_you_mean
from raysweep.usage import completion_line, describe, local_choices, refine_choices
from raysweep.errors import RaySweepError

PYTHON = [sys.executable, "-m", "raysweep"]
SCRIPT = [str(Path(sys.executable).parent / "raysweep")]
SUBCOMMANDS = ("submit", "analyse", "promote", "rollback", "copy", "ensemble", "reproduce", "stop")

MINE = """# @package _global_
# My own sweep: a small forest on the generated data. Second sentence, not shown.
defaults:
  - override /trainer: random_forest
sweep:
  name: mine
"""
BROKEN = """# @package _global_
# A sweep whose defaults list names a trainer nobody has.
defaults:
  - override /trainer: forest
sweep:
  name: broken
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A user's project folder: ./conf/sweep/mine.yaml and ./conf/sweep/broken.yaml."""
    root = tmp_path_factory.mktemp("project")
    (root / "conf" / "sweep").mkdir(parents=True)
    (root / "conf" / "sweep" / "mine.yaml").write_text(MINE)
    (root / "conf" / "sweep" / "broken.yaml").write_text(BROKEN)
    return root


@pytest.fixture(scope="module")
def env(project) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}", "PYTHONUNBUFFERED": "1"}


def run(command: list[str], args: list[str], cwd: Path, env: dict[str, str], **extra_env: str):
    done = subprocess.run([*command, *args], cwd=cwd, env={**env, **extra_env}, capture_output=True, text=True,
                          timeout=120)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    assert not (cwd / "mlflow.db").exists() and not (cwd / "multirun").exists(), "a CLI message left files behind"
    return done


@pytest.fixture(scope="module")
def help_text(project, env) -> str:
    done = run(PYTHON, ["--help"], project, env)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout


def test_help_introduces_raysweep(help_text):
    assert help_text.startswith(f"raysweep {importlib.metadata.version('raysweep')}: ")
    assert "raysweep +sweep=NAME [GROUP=OPTION ...] [KEY=VALUE ...]" in help_text  # usage
    assert "raysweep +sweep=NAME --cfg job" in help_text and "COMMAND --help" in help_text  # pointers
    for flag in ("--version", "--config-dir", "--shell-completion", "-sc", "--hydra-help", "--multirun"):
        assert f"  {flag}" in help_text or f", {flag}" in help_text, flag
    assert "powered by Hydra" not in help_text and "$CONFIG" not in help_text


def _section(text: str, title: str) -> list[str]:
    return text.split(f"== {title}")[1].split("\n== ")[0].splitlines()[1:]


def test_help_lists_built_in_and_own_sweeps_with_their_description(help_text, project):
    sweeps = _section(help_text, "Sweeps")
    assert f"yours:    broken, mine  ({project / 'conf' / 'sweep'})" in sweeps
    assert any(line.startswith("built-in: fraud, fraud_hgb, fraud_torch") for line in sweeps)
    described = {line.split()[0]: line.split(None, 1)[1] for line in sweeps if line.startswith("  ")}
    assert described["mine"] == "My own sweep: a small forest on the generated data"  # first sentence only
    assert described["fraud"].startswith("Fraud detection with a random forest")


def test_help_lists_every_group_with_its_options_described(help_text):
    groups = _section(help_text, "Config groups")
    listed = {line.split(": ")[0]: line.split(": ")[1].split(", ") for line in groups if not line.startswith(" ")}
    assert {"broken", "fraud", "mine", "overhead"} <= set(listed["sweep"])
    assert {"random_forest", "mlp", "estimator", "function"} <= set(listed["trainer"])
    for group in ("data", "mlflow", "search_alg", "scheduler", "cluster"):
        assert group in listed, group
    assert "hydra" not in listed and "ensemble" not in listed
    assert "  random_forest (default)  scikit-learn RandomForestClassifier" in help_text
    assert "  optuna            Optuna's TPE sampler" in help_text
    keys = "\n".join(_section(help_text, "Keys"))
    assert "num_samples" in keys and "sweep.{" in keys and "cluster.{" in keys


def test_help_lists_the_commands_with_a_line_each(help_text):
    commands = {line.split()[0]: line.split(None, 1)[1] for line in _section(help_text, "Commands") if line.strip()}
    assert set(commands) == set(SUBCOMMANDS)
    assert all(len(text) > 20 for text in commands.values())


def test_console_script_help_and_version(project, env, help_text):
    short = run(SCRIPT, ["-h"], project, env)
    assert short.returncode == 0 and short.stdout == help_text  # the console script, -h: the same page
    version = run(SCRIPT, ["--version"], project, env)
    assert (version.returncode, version.stdout, version.stderr) == (
        0, f"raysweep {importlib.metadata.version('raysweep')}\n", "")


MULTIRUN = "raysweep runs the whole sweep as one Ray Tune experiment; put the choices in the search space"


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["sweep=fraud"], ["sweep=fraud: use +sweep=fraud"]),
        (["+sweep=fraud", "trainer=foo"], ["Could not find 'trainer/foo'; available: estimator, ",
                                           "mlp, random_forest, xgboost (pick one with trainer=NAME)"]),
        (["+sweep=nope"], ["Could not find 'sweep/nope'; available: broken, fraud,", "mine", "(pick one with +sweep="]),
        (["+sweep=broken"], ["Could not find 'trainer/forest' (named in a config's defaults list", "random_forest"]),
        (["+sweep=fraud", "sweep.num_sample=4"],
         ["Could not override 'sweep.num_sample': no such key; did you mean sweep.num_samples?"]),
        (["+sweep=fraud", "mlflow.trackng_uri=x"], ["did you mean mlflow.tracking_uri?"]),
        (["+sweep=fraud", "serch_space.x=1"], ["'serch_space.x': no such key; did you mean search_space.x?"]),
        # A search-space dimension is looked up in the composed config; a new one can be added with +.
        (["+sweep=fraud", "search_space.max_dept=3"],
         ["did you mean search_space.max_depth? (+search_space.max_dept=3 adds it)"]),
        (["+sweep=fraud", "+sweep.num_sample=4"], ["did you mean sweep.num_samples?"]),
        (["+sweep=fraud", "-m"], ["--multirun/-m is not supported", MULTIRUN]),
        (["--multirun", "+sweep=fraud"], ["--multirun/-m is not supported", MULTIRUN]),
        (["+sweep=fraud", "hydra.mode=MULTIRUN"], ["--multirun/-m is not supported"]),
        (["+sweep=fraud", "trainer=mlp,random_forest"], ["trainer=mlp,random_forest is a sweep over", MULTIRUN]),
        (["+sweep=fraud", "--frobnicate"], ["unknown option --frobnicate; see raysweep --help"]),
        (["+sweep=fraud", "--cfg"], ["--cfg needs a value"]),
        (["+sweep=fraud", "--resolve"], ["--resolve flag can only be used in conjunction with --cfg"]),  # Hydra's check
        (["-sc", "install=nosh"], ["No completion plugin for 'nosh' found, available : bash fish zsh"]),
    ],
)
def test_wrong_input_is_one_line(args, fragments, project, env):
    done = run(PYTHON, args, project, env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("raysweep: "), done.stderr
    assert not done.stdout
    for fragment in fragments:
        assert fragment in lines[0]
    assert "search path" not in lines[0].lower() and "provider=" not in lines[0]


def test_overrides_and_flags_in_any_order(project, env):
    # Hydra's own parser takes overrides only before its flags; raysweep reorders them.
    done = run(SCRIPT, ["--cfg", "job", "+sweep=mine", "sweep.num_samples=3"], project, env)
    assert done.returncode == 0, done.stderr
    assert "name: mine" in done.stdout and "num_samples: 3" in done.stdout


def query(line: str, project: Path, env: dict[str, str], command=SCRIPT) -> list[str]:
    """What the installed completion asks: ``raysweep -sc query=bash`` with the shell's COMP_LINE."""
    done = run(command, ["-sc", "query=bash"], project, env, COMP_LINE=line, COMP_POINT=str(len(line)))
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize(
    "line, expected, absent",
    [
        ("raysweep trainer=", {"trainer=random_forest", "trainer=mlp", "trainer=estimator"}, set()),
        ("raysweep +sweep=", {"+sweep=fraud", "+sweep=mine"}, set()),  # the user's own ./conf too
        ("raysweep +sweep=fraud sweep.num", {"sweep.num_samples="}, set()),
        ("raysweep +sweep=mine trainer.", {"trainer.iterations=", "trainer.params."}, set()),
        ("raysweep ", {"+sweep=", "trainer=", "search_space.", "analyse", "promote"}, {"hydra.", "sweep="}),
        ("raysweep pro", {"promote"}, set()),
        ("raysweep --con", {"--config-dir"}, {"--config-name"}),
    ],
)
def test_completion_offers_the_real_choices(line, expected, absent, project, env):
    offered = set(query(line, project, env))
    assert expected <= offered, offered
    assert not absent & offered, offered


def test_completion_leaves_a_subcommand_to_the_shell(project, env):
    assert query("raysweep analyse --", project, env) == []


def test_completion_install_is_for_the_raysweep_command(project, env):
    # Also when started as python -m raysweep: the script registers the console script's name.
    done = run(PYTHON, ["-sc", "install=bash"], project, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("-F hydra_bash_completion raysweep")


def test_bash_completes_through_the_installed_script(project, env):
    # No skip without bash: raysweep's completion is for bash, and .ci/run itself is a bash script.
    script = """
    eval "$(raysweep -sc install=bash)"
    COMP_LINE="raysweep +sweep=mine trainer=m"; COMP_POINT=${#COMP_LINE}
    COMP_WORDS=(raysweep +sweep=mine trainer=m); COMP_CWORD=2
    hydra_bash_completion
    echo "${COMPREPLY[*]}"
    """
    path = f"{Path(SCRIPT[0]).parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(["bash", "-c", script], cwd=project, env={**env, "PATH": path}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["trainer=mlp"], done.stdout + done.stderr


# Pure pieces, as tables.


@pytest.mark.parametrize(
    "key, expected",
    [
        ("sweep.num_sample", ["sweep.num_samples"]),
        ("mlflow.trackng_uri", ["mlflow.tracking_uri"]),
        ("serch_space", ["search_space"]),
        ("clustr", ["cluster"]),
        ("sweep.stop.time_budget", ["sweep.stop.time_budget_s"]),
        ("trainer.colour", []),  # nothing close: no guess
        ("nothing.here", []),  # no such parent: no siblings to compare with
    ],
)
def test_did_you_mean(key, expected):
    assert did_you_mean(key, config_keys()) == expected


@pytest.mark.parametrize(
    "args, overrides, flags",
    [
        (["+sweep=a", "--cfg", "job"], ["+sweep=a"], ["--cfg", "job"]),
        (["--cfg=job", "x=1", "--resolve"], ["x=1"], ["--cfg=job", "--resolve"]),
        (["--info", "searchpath", "x=1"], ["x=1"], ["--info", "searchpath"]),
        (["--info", "x=1"], ["x=1"], ["--info"]),
        (["--vers"], [], ["--version"]),  # argparse's abbreviations
        (["-sc", "query=bash"], ["query=bash"], ["-sc"]),
    ],
)
def test_split_flags(args, overrides, flags):
    assert split_flags(args) == (overrides, flags)


@pytest.mark.parametrize("args, message", [
    (["-m"], "--multirun/-m is not supported"),
    (["--multi"], "--multirun/-m is not supported"),
    (["hydra.mode=MULTIRUN"], "--multirun/-m is not supported"),
    (["--config-name", "x"], "raysweep composes its own primary config"),
    (["--bogus"], "unknown option --bogus"),
    (["--help=yes"], "--help takes no value"),
    (["--cfg", "jobs"], "--cfg jobs: use --cfg job"),
    (["--experimental-rerun", "x.pickle"], "raysweep keeps no Hydra job pickle"),
])
def test_split_flags_refuses(args, message):
    with pytest.raises(RaySweepError, match=message):
        split_flags(args)


def test_hydra_flags_table_matches_hydras_parser():
    # raysweep sorts flags from overrides by this table; a Hydra upgrade that adds a flag must show up here.
    from hydra._internal.utils import get_args_parser

    parser_flags = {s for action in get_args_parser()._actions for s in action.option_strings}
    assert parser_flags == set(HYDRA_FLAGS)


@pytest.mark.parametrize(
    "comment, expected",
    [
        ("# @package _global_\n# Short one. Second.\nx: 1\n", "Short one"),
        ("# Ray on this machine: started for the sweep and stopped after it (or the one RAY_ADDRESS points to), "
         "with more.\n", "Ray on this machine"),
        ("# " + "word " * 30 + "\n", ("word " * 17).strip() + "..."),  # at most 88 characters
        ("x: 1\n", ""),
    ],
)
def test_describe_takes_the_first_sentence(comment, expected, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(comment)
    assert describe(path) == expected


def test_completion_line_adds_the_search_path(tmp_path):
    folders = [tmp_path / "conf", tmp_path / "builtin"]
    line = completion_line("raysweep", ["+sweep=a", "trainer="], False, folders)
    assert line == f"raysweep hydra.searchpath=['file://{tmp_path / 'builtin'}'] +sweep=a trainer="
    assert completion_line("raysweep", [], True, folders[:1]) == "raysweep "


@pytest.mark.parametrize(
    "words, new_word, expected",
    [
        (["analyse"], True, []),  # a subcommand's arguments: the shell's file names
        (["analyse", "--exp"], False, []),
        (["-cd"], True, []),  # a folder
        (["--conf"], False, ["--config-dir"]),  # --config-path/--config-name are refused, so not offered
        (["-"], False, [f for f in HYDRA_FLAGS if f not in ("-m", "--multirun", "-cp", "--config-path", "-cn",
                                                              "--config-name", "--experimental-rerun")]),
        (["+sweep=fraud"], True, None),  # Hydra's to answer
        (["anal"], False, None),
    ],
)
def test_local_choices(words, new_word, expected):
    assert local_choices(words, new_word, SUBCOMMANDS) == expected


@pytest.mark.parametrize(
    "offered, words, new_word, expected",
    [
        (["cluster=", "hydra.", "hydra", "ensemble=", "sweep=", "sweep."], [], True,
         [*SUBCOMMANDS, "cluster=", "+sweep=", "sweep."]),
        (["hydra/launcher="], ["hydra/la"], False, ["hydra/launcher="]),  # asked for by name
        (["resume="], ["r"], False, ["rollback", "reproduce", "resume="]),  # the first word: commands too
        (["sweep.num_samples="], ["+sweep=fraud", "sweep.num"], False, ["sweep.num_samples="]),
        (["trainer=mlp"], ["+sweep=fraud", "trainer=m"], False, ["trainer=mlp"]),
    ],
)
def test_refine_choices(offered, words, new_word, expected):
    assert refine_choices(offered, words, new_word, SUBCOMMANDS) == expected
