"""Every command the documentation shows still works as written, so none goes stale.

The documents are README.md, docs/*.md and results/README.md. A command is a line of a fenced block (every line of a
``bash`` / ``sh`` block; in any other block a line that starts with ``python``, ``bash``, ``pip`` or a ``$ `` prompt;
a trailing ``\\`` continues it) or an inline code span that runs ``python``. For each ``python run_bench.py ...`` and
``python -m <module> ...`` the check is: the script or module file exists; every option is one its own argparse
parser declares, and the parser accepts the arguments (types and choices included); every ``--preset NAME`` is a file
``experiments/presets/NAME.json``; every ``--strategies a,b`` names strategies of the catalog; every committed path it
reads (``results/``, ``experiments/``, ``models/``, ``tests/``, ``.ci/``) exists. ``bash FILE`` needs the file, ``pip
install ".[extra]"`` an extra of pyproject.toml. Shell placeholders (``<preset>``, ``$VAR``, ``FOLDER...``, a lone
``...``, ``[--jobs 2]``) stand for the user's values: a placeholder argument is not checked, the options around it are.
The quick ones are run: ``--help`` of every script and module the documents use, and every documented
``run_bench.py`` command made only of ``--help`` / ``--list-strategies`` / ``--verbose``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")), "results/README.md")
PROJECT_PACKAGES = ("bench", "data", "models", "strategies")
SHELL_FENCES = ("bash", "sh", "shell", "zsh")
COMMAND_WORDS = ("python", "python3", "bash", "pip", "pip3")
COMMITTED = ("results/", "experiments/", "models/", "tests/", ".ci/")  # committed folders a command may read
OUTPUT_OPTIONS = ("--out", "--work")  # what these name is written, not read
SEPARATORS = ("&&", "||", ";", "|")
PLACEHOLDER = "PLACEHOLDER"
QUICK_OPTIONS = {"--help", "--list-strategies", "--verbose", "-v"}  # run_bench.py answers these in seconds
FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")


@dataclass(frozen=True)
class Command:
    document: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.document}:{self.line}: {self.text}"


@dataclass(frozen=True)
class Invocation:
    """One program call of a command: ``kind`` is script (a .py file), module (``-m``), bash, pip or other."""
    kind: str
    name: str
    args: tuple[str, ...]


# --- finding the commands --------------------------------------------------------------------------------------------

def is_command_line(line: str) -> bool:
    """A line of a non-shell fence that is a command: a ``$ `` prompt, or a program of COMMAND_WORDS first."""
    words = line.split()
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # leading environment assignments
        words = words[1:]
    return line.startswith("$ ") or bool(words) and Path(words[0]).name in COMMAND_WORDS


def fenced_commands(text: str, document: str) -> list[Command]:
    commands, fence, pending = [], None, None
    for number, line in enumerate(text.split("\n"), 1):
        if (match := FENCE.match(line)) and pending is None:
            fence = None if fence is not None else match.group(2).lower()
            continue
        stripped = line.strip()
        if pending is not None:  # a continued command
            pending = (pending[0], f"{pending[1]} {stripped}")
        elif fence is None or not stripped or stripped.startswith("#"):
            continue
        elif fence in SHELL_FENCES or is_command_line(stripped):
            pending = (number, stripped.removeprefix("$ "))
        if pending is not None and not pending[1].endswith("\\"):
            commands.append(Command(document, pending[0], pending[1]))
            pending = None
        elif pending is not None:
            pending = (pending[0], pending[1][:-1].rstrip())
    return commands


def without_fences(text: str) -> str:
    """The text with every fenced block's lines emptied (line numbers kept), so inline spans are found in prose."""
    lines, inside = text.split("\n"), False
    for i, line in enumerate(lines):
        if FENCE.match(line):
            inside, lines[i] = not inside, ""
        elif inside:
            lines[i] = ""
    return "\n".join(lines)


def inline_commands(text: str, document: str) -> list[Command]:
    prose, commands = without_fences(text), []
    for match in INLINE.finditer(prose):
        span = " ".join(match.group(1).split())  # a span may wrap over lines
        if any(invocation.kind in ("script", "module", "bash") for invocation in invocations(span, strict=False)):
            commands.append(Command(document, prose.count("\n", 0, match.start()) + 1, span))
    return commands


def document_commands(text: str, document: str) -> list[Command]:
    return sorted(fenced_commands(text, document) + inline_commands(text, document), key=lambda c: c.line)


def all_commands() -> list[Command]:
    return [c for doc in DOCUMENTS for c in document_commands((ROOT / doc).read_text(encoding="utf-8"), doc)]


# --- reading one command ---------------------------------------------------------------------------------------------

def invocations(text: str, *, strict: bool = True) -> list[Invocation]:
    """The program calls of a command line, split at ``&&``, ``||``, ``;`` and ``|``; a trailing comment dropped."""
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:
        if strict:
            raise
        return []
    calls, current = [], []
    for token in [*tokens, "&&"]:
        if token in SEPARATORS:
            calls += [invocation(current)] if current else []
            current = []
        else:
            current.append(token)
    return [call for call in calls if call is not None]


def invocation(tokens: list[str]) -> Invocation | None:
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", tokens[0]):
        tokens = tokens[1:]
    if not tokens:
        return None
    program, rest = Path(tokens[0]).name, tokens[1:]
    if program in ("python", "python3") and rest[:1] == ["-m"] and len(rest) > 1:
        return Invocation("module", rest[1], tuple(rest[2:]))
    if program in ("python", "python3") and rest and rest[0].endswith(".py"):
        return Invocation("script", rest[0], tuple(rest[1:]))
    if program in ("bash", "pip", "pip3"):
        return Invocation(program.removesuffix("3"), program, tuple(rest))
    return Invocation("other", program, tuple(rest))


def is_placeholder(token: str) -> bool:
    return bool(re.search(r"<[^>]*>|\$\{?\w|\.\.\.|…", token))


def cleaned(args: tuple[str, ...]) -> list[str]:
    """Arguments as a parser should see them: ``[--jobs 2]`` unbracketed, a placeholder (``...`` for omitted
    arguments or an option's value included) replaced by PLACEHOLDER."""
    tokens = (token.removeprefix("[").removesuffix("]") for token in args)
    return [PLACEHOLDER if is_placeholder(token) else token for token in tokens if token]


def option_values(args: list[str]) -> list[tuple[str, str | None]]:
    """(option, value) pairs: ``--x=v`` or ``--x v`` (the next token when it is not an option), value None if none."""
    pairs = []
    for i, token in enumerate(args):
        if token.startswith("-") and not re.fullmatch(r"-\d[\d.e-]*", token):
            if "=" in token:
                pairs.append(tuple(token.split("=", 1)))
            else:
                following = args[i + 1] if i + 1 < len(args) else None
                pairs.append((token, None if following is None or following.startswith("-") else following))
    return pairs


# --- the parsers of the project's entry points -----------------------------------------------------------------------

def module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__main__.py"):
        if path.is_file():
            return path
    return None


def project_parser(name: str) -> argparse.ArgumentParser | None:
    """The argparse parser an entry point builds (``build_parser`` or ``_parser``), or None where it has none."""
    module = importlib.import_module("bench.cli" if name == "run_bench.py" else name)
    builder = getattr(module, "build_parser", None) or getattr(module, "_parser", None)
    return builder() if builder is not None else None


def help_text(invocation_name: str) -> str:
    """``--help`` of an entry point without an importable parser builder, run as the documents run it."""
    argv = [invocation_name] if invocation_name.endswith(".py") else ["-m", invocation_name]
    done = subprocess.run([sys.executable, *argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return done.stdout


def parser_problems(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """Options the parser does not declare; else what the parser says of the arguments (types, choices, required
    ones), unless it only objects to a placeholder."""
    known = parser._option_string_actions
    unknown = [option for option, _ in option_values(args) if option not in known]
    if unknown:
        return [f"unknown option {option}" for option in unknown]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(args)
    except SystemExit as stop:
        message = stderr.getvalue().strip().splitlines()[-1:] or [f"exit {stop.code}"]
        if stop.code and PLACEHOLDER.lower() not in message[0].lower():
            return [f"rejected by its parser: {message[0]}"]
    return []


# --- the checks ------------------------------------------------------------------------------------------------------

def entry_point_problems(call: Invocation) -> list[str]:
    """The script or module exists; for the project's own, its parser accepts the arguments."""
    if call.kind == "script":
        if Path(call.name).name == "run_bench.py":
            return parser_problems(project_parser("run_bench.py"), cleaned(call.args))
        return [] if (ROOT / call.name).is_file() else [f"no such script {call.name}"]
    top = call.name.split(".")[0]
    if top not in PROJECT_PACKAGES:
        return [] if importlib.util.find_spec(top) is not None else [f"no such module {call.name}"]
    if module_file(call.name) is None:
        return [f"no such module {call.name} (no {call.name.replace('.', '/')}.py)"]
    parser, args = project_parser(call.name), cleaned(call.args)
    if parser is not None:
        return parser_problems(parser, args)
    options = [option for option, _ in option_values(args)]
    shown = help_text(call.name) if options else ""
    return [f"option {option} not in {call.name} --help" for option in options if option not in shown]


def value_problems(call: Invocation) -> list[str]:
    """Presets, strategies and the committed paths a project command reads."""
    from bench.runner.experiments import strategy_catalog

    args, problems = cleaned(call.args), []
    for option, value in option_values(args):
        if value is None or value == PLACEHOLDER:
            continue
        if option == "--preset" and not value.endswith(".json") and value != "default" and \
                not (ROOT / "experiments" / "presets" / f"{value}.json").is_file():
            problems.append(f"--preset {value}: no experiments/presets/{value}.json")
        if option == "--strategies":
            unknown = [n for n in value.split(",") if n and n != "all" and n not in strategy_catalog()]
            problems += [f"--strategies: unknown strategy {name!r}" for name in unknown]
    return problems + path_problems(args)


def path_problems(args: list[str]) -> list[str]:
    """Every argument under a committed folder exists, except what an output option names."""
    written = {value for option, value in option_values(args) if option in OUTPUT_OPTIONS and value}
    problems = []
    for token in args:
        path = token.split("=", 1)[1] if token.startswith("-") and "=" in token else token
        if path.startswith(COMMITTED) and path not in written and not (ROOT / path).exists():
            problems.append(f"{path}: no such committed file or folder")
    return problems


def pip_problems(call: Invocation) -> list[str]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    asked = [name for token in call.args for group in re.findall(r"\[([^]]+)\]", token) for name in group.split(",")]
    return [f'pip: pyproject.toml has no extra "{name}"' for name in asked if name not in extras]


def pytest_problems(call: Invocation) -> list[str]:
    paths = [a.split("::")[0] for a in cleaned(call.args) if a.startswith("tests") and not a.startswith("-")]
    return [f"{path}: no such test file" for path in paths if not (ROOT / path).exists()]


def problems(command: Command) -> list[str]:
    """Everything stale in one documented command (empty when it still works as written)."""
    found = []
    for call in invocations(command.text):
        if call.kind in ("script", "module"):
            found += entry_point_problems(call)
            is_project = call.kind == "script" or call.name.split(".")[0] in PROJECT_PACKAGES
            found += value_problems(call) if is_project else pytest_problems(call) if call.name == "pytest" else []
        elif call.kind == "bash":
            scripts = [a for a in call.args if not a.startswith("-")][:1]
            found += [f"bash: no such file {s}" for s in scripts if not is_placeholder(s) and not (ROOT / s).is_file()]
        elif call.kind == "pip":
            found += pip_problems(call)
    return found


COMMANDS = all_commands()
EXPECTED_ENTRY_POINTS = {"run_bench.py", "bench.reporting.report", "bench.tools.sensitivity", "data.prepare"}


def command_id(command: Command) -> str:
    return f"{command.document}:{command.line}: {command.text[:80]}"


@pytest.mark.parametrize("command", COMMANDS, ids=command_id)
def test_documented_command_is_current(command):
    found = problems(command)
    assert not found, f"{command}\n  " + "\n  ".join(found)


def test_every_document_has_commands_and_every_entry_point_is_found():
    per_document = {doc: [c for c in COMMANDS if c.document == doc] for doc in DOCUMENTS}
    assert all(per_document[doc] for doc in ("README.md", "docs/running.md", "results/README.md"))
    names = {call.name for c in COMMANDS for call in invocations(c.text) if call.kind in ("script", "module")}
    assert EXPECTED_ENTRY_POINTS <= names


OTHER_TOOLS_OPTIONS = {"--logdir", "--backend-store-uri", "--dist-bn"}  # tensorboard's, mlflow's, timm's (cited)


def test_every_option_the_documents_name_is_declared():
    """Options named in prose too (``--retry-failed``, ``--gpu-tolerance``): each is declared by a project parser."""
    declared = {option for name in entry_points_with_parsers()
                for option in project_parser(name)._option_string_actions}
    named = {(doc, match.group(0)) for doc in DOCUMENTS
             for match in re.finditer(r"(?<![\w-])--[a-z][a-z0-9-]*", (ROOT / doc).read_text(encoding="utf-8"))}
    assert not sorted(f"{doc}: {option}" for doc, option in named if option not in declared | OTHER_TOOLS_OPTIONS)


# --- the checker itself: a made-up flag, preset, strategy, module or path is reported --------------------------------

FAKE_DOCUMENT = """\
```bash
python run_bench.py --strategies frozen --no-such-flag
python run_bench.py --preset no-such-preset --strategies frozen,no_such_strategy
python -m bench.tools.no_such_tool --out runs/x
python -m bench.reporting.report results/no-such-folder
python run_bench.py --frames two
```

Inline too: `python -m bench.tools.sensitivity --strategies full --no-such-option 3`, and a placeholder
`python -m bench.reporting.report runs/<preset> --out DIR` that is fine.

```text
$ python run_bench.py --preset my_preset.json       # a user's own preset file
error: this line is output, not a command
```
"""


def test_checker_reports_what_is_made_up():
    found = {command.line: problems(command) for command in document_commands(FAKE_DOCUMENT, "fake.md")}
    assert sorted(found) == [2, 3, 4, 5, 6, 9, 10, 13]
    assert found[2] == ["unknown option --no-such-flag"]
    assert found[3] == ["--preset no-such-preset: no experiments/presets/no-such-preset.json",
                        "--strategies: unknown strategy 'no_such_strategy'"]
    assert found[4] == ["no such module bench.tools.no_such_tool (no bench/tools/no_such_tool.py)"]
    assert found[5] == ["results/no-such-folder: no such committed file or folder"]
    assert found[6][0].startswith("rejected by its parser: ") and "--frames" in found[6][0]
    assert found[9] == ["unknown option --no-such-option"]
    assert found[10] == [] and found[13] == []


CONTINUED = "```bash\npython run_bench.py --preset paper \\\n    --strategies full --out x\n```\n"
JOINED = "python run_bench.py --preset paper --strategies full --out x"
CHAINED = 'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && X=1 .venv/bin/python -m pytest'


def test_continued_lines_and_chained_commands_are_one_command():
    (command,) = fenced_commands(CONTINUED, "fake.md")
    assert command.line == 2 and command.text == JOINED
    calls = invocations(CHAINED)
    assert [(c.kind, c.name) for c in calls] == [("module", "venv"), ("pip", "pip"), ("module", "pytest")]


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = [c.text for c in COMMANDS if c.document == "README.md" and c.text.endswith("-m pytest")]
    assert len(readme) == 1 and readme[0] in ci


# --- the quick ones, run -------------------------------------------------------------------------------------------

def entry_points_with_parsers() -> list[str]:
    names = {call.name if call.kind == "module" else "run_bench.py"
             for c in COMMANDS for call in invocations(c.text) if call.kind in ("script", "module")
             and (call.kind == "script" or call.name.split(".")[0] in PROJECT_PACKAGES)}
    return sorted(name for name in names if name == "run_bench.py" or project_parser(name) is not None)


def quick_commands() -> list[Command]:
    """The documented run_bench.py commands made only of QUICK_OPTIONS, each distinct one once."""
    chosen = {}
    for command in COMMANDS:
        for call in invocations(command.text):
            if call.kind == "script" and Path(call.name).name == "run_bench.py" and set(call.args) <= QUICK_OPTIONS:
                chosen.setdefault(call.args, command)
    return list(chosen.values())


def run_documented(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.slow  # one process per entry point
@pytest.mark.parametrize("name", entry_points_with_parsers())
def test_help_of_every_documented_entry_point_runs(name):
    done = run_documented([name, "--help"] if name.endswith(".py") else ["-m", name, "--help"])
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("command", quick_commands(), ids=command_id)
def test_quick_documented_command_runs(command):
    (call,) = [c for c in invocations(command.text) if c.kind == "script"]
    done = run_documented(["run_bench.py", *call.args])
    assert done.returncode == 0 and done.stdout.strip(), f"{command}\n{done.stderr[-2000:]}"
