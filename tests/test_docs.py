"""The docs hold what the code does: relative links and anchors resolve, the README fits in 200 lines, every
``raysweep`` command and option the docs show exists in that command's ``--help``, and every config key the docs
set (``group.key=value``) exists in the config that command composes. No Ray: ``--help`` runs in a subprocess
(it imports no Ray), configs are composed in-process with :func:`raysweep.compose.compose`.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

#: Fenced blocks whose every line is something a user types; in other blocks only ``$ `` lines are commands
#: (the rest is output, a diagram or a file tree).
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
#: Options of the main command that take a value (``--cfg job``, ``-sc install=bash``).
MAIN_VALUE_OPTIONS = {
    "--config-dir", "-cd", "--cfg", "-c", "--package", "-p", "--shell-completion", "-sc", "--info", "-i",
    "--config-name", "-cn", "--config-path", "-cp", "--experimental-rerun",
}
#: What the main command's --help must show whatever the docs use (the CLI introduces itself).
MAIN_HELP_MUST_SHOW = ["--help", "--version", "--cfg", "--config-dir", "--shell-completion", "-sc", "+sweep="]
#: Dotted ``a.b=value`` words in code that are not config keys: raysweep's MLflow tags (``raysweep.ended_by=...``).
NON_CONFIG_NAMESPACES = {"raysweep"}
#: The sweep a key is looked up in when nothing around it picks one.
DEFAULT_SWEEP = "+sweep=fraud"

_FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_COMMAND = re.compile(r"(?:^|(?<=[\s(]))raysweep(?=\s|$)")
_OPTION = re.compile(r"^(--?[A-Za-z][\w-]*)(=.*)?$")
_OVERRIDE = re.compile(r"^([+~]{0,2})([A-Za-z_][\w.]*)(=.*)?$")
_DOTTED_KEY = re.compile(r"(?<![\w.\-/$])([+~]{0,2})([a-z_]\w*(?:\.\w+)+)(?==(?!=))")
_GROUP_CHOICE = re.compile(r"(?<![\w.\-/$])(\+?)([a-z_]+)=([A-Za-z_]\w*)(?![\w.=])")


# --- reading markdown -------------------------------------------------------------------------------------


@dataclass
class Unit:
    """A piece of code in a doc: a logical line of a fenced block, or an inline span."""

    doc: Path
    line: int
    text: str
    shell: bool  # something a user types at a shell prompt
    inline: bool
    example: bool = False  # a ``$ `` line shown with its output (may be an error example)
    cwd: Path = ROOT  # where the block has ``cd``'d to
    context: list[str] = field(default_factory=list)  # group choices of the paragraph (inline spans)

    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}: {self.text.strip()[:100]}"


def _split_fences(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str, list[str]]]]:
    """Prose lines (numbered) and fenced blocks (first line number, language, lines) of a markdown file."""
    prose, blocks, block = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        fence = _FENCE.match(line)
        if block is None and fence:
            block = (number + 1, fence.group(2).lower(), [], fence.group(1))
        elif block is not None and line.strip().startswith(block[3]) and not line.strip().strip(block[3][0]):
            blocks.append(block[:3])
            block = None
        elif block is not None:
            block[2].append(line)
        else:
            prose.append((number, line))
    return prose, blocks


def _paragraphs(prose: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Prose joined into paragraphs (first line number, text): inline code may wrap across lines."""
    paragraphs, current, start = [], [], 0
    for number, line in prose:
        if not line.strip() or _HEADING.match(line) or line.lstrip().startswith(("- ", "* ", "|")):
            if current:
                paragraphs.append((start, " ".join(current)))
            current, start = [], number
            if not line.strip():
                continue
        if not current:
            start = number
        current.append(line.strip())
    if current:
        paragraphs.append((start, " ".join(current)))
    return paragraphs


def _logical_lines(lines: list[str]) -> list[tuple[int, str]]:
    """Lines with ``\\`` continuations joined (offset of the first line, text)."""
    out, current, start = [], "", 0
    for offset, line in enumerate(lines):
        if not current:
            start = offset
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
        else:
            out.append((start, current + line))
            current = ""
    if current:
        out.append((start, current))
    return out


@functools.cache
def units(doc: Path) -> tuple[Unit, ...]:
    prose, blocks = _split_fences(doc.read_text())
    found = []
    for start, language, lines in blocks:
        cwd = ROOT
        for offset, text in _logical_lines(lines):
            shell, example = language in SHELL_LANGUAGES, text.lstrip().startswith("$ ")
            if example:
                shell, text = True, text.lstrip()[2:]
            if shell and (cd := re.match(r"\s*cd\s+(\S+)\s*(?:#.*)?$", text)):
                cwd = (cwd / cd.group(1)).resolve()
            found.append(Unit(doc, start + offset, text, shell=shell, inline=False, example=example, cwd=cwd))
    for number, paragraph in _paragraphs(prose):
        spans = [m.group(2).strip() for m in _INLINE_CODE.finditer(paragraph)]
        choices = [c for span in spans for c in group_choices(span)]
        found += [Unit(doc, number, span, shell=False, inline=True, context=choices) for span in spans]
    return tuple(found)


# --- GitHub's heading anchors -----------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's markdown text: its rendered text, lower-cased, punctuation dropped
    (letters, digits, ``_``, ``-`` and spaces stay), spaces become ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "")
    text = re.sub(r"(\*+|(?<!\w)_+|_+(?!\w))", "", text)  # emphasis, not snake_case
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


@functools.cache
def anchors(doc: Path) -> frozenset[str]:
    prose, _ = _split_fences(doc.read_text())
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose:
        if heading := _HEADING.match(line):
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


@pytest.mark.parametrize(
    "heading, expected",
    [
        ("Quickstart", "quickstart"),
        ("4. Where configs come from", "4-where-configs-come-from"),
        ("Environment: which store and experiment", "environment-which-store-and-experiment"),
        ("Analysis of a 1,000-child sweep", "analysis-of-a-1000-child-sweep"),
        ("The `mlflow=` modes", "the-mlflow-modes"),
        ("What **is** [new](x.md)", "what-is-new"),
        ("search_alg and scheduler", "search_alg-and-scheduler"),
        ("Searching, stopping early, stopping the sweep", "searching-stopping-early-stopping-the-sweep"),
    ],
)
def test_slug_follows_github(heading, expected):
    assert slug(heading) == expected


def test_duplicate_headings_get_numbered_anchors(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\n## Usage\n\n```bash\n# not a heading\n```\n\n## Usage\n")
    assert anchors(doc) == {"a", "usage", "usage-1"}


# --- (1) links -------------------------------------------------------------------------------------------


def _links(doc: Path) -> list[tuple[int, str]]:
    prose, _ = _split_fences(doc.read_text())
    found = []
    for number, line in prose:
        line = _INLINE_CODE.sub(lambda m: "code", line)
        found += [(number, m.group(1)) for m in _LINK.finditer(line)]
    return found


def test_relative_links_and_anchors_resolve():
    broken = []
    for doc in DOCS:
        for number, target in _links(doc):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            where = f"{doc.relative_to(ROOT)}:{number}: {target}"
            if not file.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
                broken.append(f"{where} (no heading #{anchor} in {file.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_docs_page_links_back_to_the_readme():
    for doc in DOCS[1:]:
        head = "\n".join(doc.read_text().splitlines()[:6])
        assert "](../README.md)" in head, f"{doc.name} does not link back to the README near its top"


# --- (2) size -------------------------------------------------------------------------------------------


def test_readme_fits_in_200_lines():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_readme_keeps_the_test_command_ci_runs():
    # .ci/run runs "README's test command"; both must say the same.
    assert "\nuv run pytest\n" in (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^uv run pytest\s+#", (ROOT / "README.md").read_text(), re.M)


# --- (3) commands and options ---------------------------------------------------------------------------


@dataclass
class Command:
    unit: Unit
    name: str  # "" for the main command (a sweep), else the subcommand
    options: list[str]
    overrides: list[str]
    config_dir: Path | None


def _subcommands() -> dict[str, str]:
    from raysweep.__main__ import SUBCOMMANDS

    return SUBCOMMANDS


def parse_commands(unit: Unit) -> list[Command]:
    """The ``raysweep ...`` / ``python -m raysweep ...`` commands in ``unit`` (shell lines and inline spans)."""
    if not (unit.shell or unit.inline):
        return []
    commands = []
    # A shell comment is prose ("# not raysweep itself"), not a command.
    text = re.sub(r"(?:^|\s)#.*$", "", unit.text) if unit.shell else unit.text
    for match in _COMMAND.finditer(text):
        rest = re.split(r"\s(?:&&|\|\|?|;)\s", text[match.end():])[0]
        try:
            tokens = shlex.split(rest, comments=True)
        except ValueError:
            tokens = rest.split()
        name = ""
        if tokens and tokens[0] in _subcommands():
            name, tokens = tokens[0], tokens[1:]
        elif tokens and re.fullmatch(r"[a-z][\w-]*", tokens[0]):
            name, tokens = tokens[0], tokens[1:]  # not a subcommand: reported by the test
        options, overrides, config_dir, skip = [], [], None, False
        for i, token in enumerate(tokens):
            if skip:
                skip = False
                continue
            if option := _OPTION.match(token):
                options.append(option.group(1))
                # The main command's value options; a subcommand's values never look like overrides
                # (only `submit` takes overrides, and its --address/--submission-id values have no "=").
                value = option.group(2)[1:] if option.group(2) else None
                if not name and option.group(1) in MAIN_VALUE_OPTIONS and value is None and i + 1 < len(tokens):
                    value, skip = tokens[i + 1], True
                if option.group(1) in ("--config-dir", "-cd") and value is not None:
                    config_dir = (unit.cwd / Path(value).expanduser()).resolve()
            elif (override := _OVERRIDE.match(token)) and (override.group(3) or override.group(1) == "~"):
                overrides.append(token)
        if config_dir is None and (unit.cwd / "conf").is_dir() and unit.cwd != ROOT:
            config_dir = unit.cwd / "conf"
        commands.append(Command(unit, name, options, overrides, config_dir))
    return commands


@functools.cache
def help_text(name: str) -> str:
    """``python -m raysweep [NAME] --help``, as a user sees it."""
    args = [sys.executable, "-m", "raysweep", *([name] if name else []), "--help"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(args[1:])} failed:\n{done.stderr[-2000:]}"
    return done.stdout


def _shows(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def all_commands() -> list[Command]:
    return [command for doc in DOCS for unit in units(doc) for command in parse_commands(unit)]


def test_docs_show_raysweep_commands():
    names = {command.name for command in all_commands()}
    # The parser finds what the docs show; if it found nothing, the test below would pass vacuously.
    assert {"", "submit", "analyse", "promote", "rollback", "copy", "ensemble", "reproduce"} <= names


def test_every_command_and_option_the_docs_show_is_in_its_help():
    wrong = []
    for command in all_commands():
        if command.name and command.name not in _subcommands():
            wrong.append(f"{command.unit.where()}: no subcommand {command.name!r} (have: {', '.join(_subcommands())})")
            continue
        text = help_text(command.name)
        for option in command.options:
            if not _shows(text, option):
                shown = f"raysweep {command.name} --help" if command.name else "raysweep --help"
                wrong.append(f"{command.unit.where()}: {option} is not in `{shown}`")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("option", MAIN_HELP_MUST_SHOW)
def test_main_help_introduces_the_options(option):
    text = help_text("")
    shown = option in text if option.endswith("=") else _shows(text, option)
    assert shown, f"`python -m raysweep --help` does not show {option}"


@pytest.mark.parametrize(
    "line, expected",
    [
        ("uv run python -m raysweep +sweep=fraud --cfg job", [("", ["--cfg"], ["+sweep=fraud"])]),
        ("raysweep -sc install=bash", [("", ["-sc"], [])]),
        ("uv run raysweep promote fraud-rf --force --reason \"x y\"", [("promote", ["--force", "--reason"], [])]),
        ("uv run raysweep submit --no-wait +sweep=fraud a.b=1", [("submit", ["--no-wait"], ["+sweep=fraud", "a.b=1"])]),
        ("a && uv run python -m raysweep '~search_space.x' # --not-this", [("", [], ["~search_space.x"])]),
        ("python -m raysweep.analysis --x; raysweep[xgboost]; src/raysweep --y", []),
        ("uv run raysweep frobnicate --z", [("frobnicate", ["--z"], [])]),
    ],
)
def test_parse_commands(line, expected):
    unit = Unit(ROOT / "README.md", 1, line, shell=True, inline=False)
    assert [(c.name, c.options, c.overrides) for c in parse_commands(unit)] == expected


# --- (4) config keys ------------------------------------------------------------------------------------

_MISSING = object()


@functools.cache
def composed(overrides: tuple[str, ...], config_dir: Path | None = None):
    """The config of ``overrides``; a sweep that is not built-in is looked for in the example projects
    (``examples/*/conf``), the only projects the docs can name (``raysweep submit +sweep=wine``)."""
    from raysweep.compose import compose

    if config_dir is None:
        for override in overrides:
            if override.startswith("+sweep="):
                name = override.partition("=")[2]
                found = sorted(ROOT.glob(f"examples/*/conf/sweep/{name}.yaml"))
                if not (ROOT / "conf" / "sweep" / f"{name}.yaml").exists() and len(found) == 1:
                    config_dir = found[0].parents[1]
    return compose(list(overrides), config_dir=config_dir)


@functools.cache
def groups() -> frozenset[str]:
    """Config groups that are top-level keys of a sweep's config (``ensemble`` is raysweep ensemble's own)."""
    from raysweep.compose import config_groups
    from raysweep.config import search_path

    return frozenset(config_groups(search_path())) & set(composed((DEFAULT_SWEEP,)).keys())


def group_choices(text: str) -> list[str]:
    """``group=option`` / ``+sweep=NAME`` in ``text`` as overrides (``sweep=NAME`` read as ``+sweep=NAME``)."""
    found = []
    for plus, group, option in _GROUP_CHOICE.findall(text):
        if group in groups() and not option.isupper():  # +sweep=NAME is a placeholder
            found.append(f"+sweep={option}" if group == "sweep" else f"{plus}{group}={option}")
    return found


def _selection(choices: list[str]) -> tuple[str, ...]:
    """One choice per group, the first; a sweep always (the default one when none is chosen)."""
    picked: dict[str, str] = {}
    for choice in choices:
        picked.setdefault(choice.lstrip("+").partition("=")[0], choice)
    picked.setdefault("sweep", DEFAULT_SWEEP)
    return tuple(sorted(picked.values()))


def key_problem(cfg, prefix: str, key: str) -> str | None:
    """Why ``prefix key=...`` does not fit ``cfg`` (``+`` adds under an existing node, ``~`` drops a key), or None."""
    from omegaconf import DictConfig, OmegaConf

    if "+" in prefix:
        parent = OmegaConf.select(cfg, key.rpartition(".")[0], default=_MISSING)
        return None if isinstance(parent, DictConfig) else f"{key.rpartition('.')[0]} is not a config node"
    if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
        return f"{key} is not in the composed config"
    return None


def keys_in(text: str) -> list[tuple[str, str]]:
    return [(p, k) for p, k in _DOTTED_KEY.findall(text) if k.split(".")[0] not in NON_CONFIG_NAMESPACES]


def test_docs_set_config_keys():
    keys = {k for doc in DOCS for unit in units(doc) for _, k in keys_in(unit.text)}
    assert {"sweep.num_samples", "cluster.dashboard_port", "search_space.max_depth"} <= keys


def test_every_config_key_the_docs_set_exists():
    from raysweep.errors import RaySweepError

    wrong = []
    for doc in DOCS:
        for unit in units(doc):
            commands = [c for c in parse_commands(unit) if c.name in ("", "submit")]
            for command in commands:
                if command.config_dir is not None and not command.config_dir.is_dir():
                    continue  # --config-dir ~/team-configs: a folder of the reader's, not in this checkout
                if not command.overrides:
                    continue
                config_dir = command.config_dir
                # What a user types must compose as it stands; error examples ($ lines with their output)
                # only need their keys to exist.
                if unit.shell and not unit.example:
                    try:
                        composed(tuple(command.overrides), config_dir)
                    except RaySweepError as error:
                        wrong.append(f"{unit.where()}: does not compose: {error}")
                        continue
                try:
                    cfg = composed(_selection(group_choices(" ".join(command.overrides))), config_dir)
                except RaySweepError as error:
                    wrong.append(f"{unit.where()}: its config groups do not compose: {error}")
                    continue
                for prefix, key in keys_in(" ".join(command.overrides)):
                    if problem := key_problem(cfg, prefix, key):
                        wrong.append(f"{unit.where()}: {problem}")
            if commands:
                continue
            found = keys_in(unit.text)
            if not found:
                continue
            own = group_choices(unit.text)
            try:
                cfg = composed(_selection(own + unit.context))
            except RaySweepError:  # the paragraph names options of the reader's (trainer=my_trainer)
                cfg = composed(_selection(own))
            for prefix, key in found:
                if problem := key_problem(cfg, prefix, key):
                    wrong.append(f"{unit.where()}: {problem}")
    assert not wrong, "\n".join(wrong)
