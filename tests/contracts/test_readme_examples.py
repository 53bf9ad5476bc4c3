"""Every code block of README.md is run, or checked if it is marked as not run.

Policy (stated in the README too):

- A fenced ```python block is executed on its own (a fresh namespace: every block must
  be self-contained) in a temporary folder holding ``.patterning/demo/chi.zarr`` and
  ``.patterning/induce/chi.zarr``, small stores laid out like the demo's (see
  ``tests/chi_stores.py``).
- A fenced ```bash block is run there by ``bash -euo pipefail`` with this environment's
  ``patterning`` on the PATH; afterwards every file a ``patterning chi export`` in it
  writes must exist.
- A block preceded by ``<!-- not run: reason -->`` (set-up, servers, benchmarks) is not
  run but checked: Python compiles; bash passes ``bash -n``, every ``patterning`` command
  parses with the real argument parser, every ``prefect`` command with Prefect's (and a
  ``prefect deployment run`` names a deployment of ``deployments/prefect.yaml`` and
  parameters of its flow), every script run by ``python``/``bash``/``source`` exists, and
  every ``--flag`` given to a Python script is defined in it.
- Any other block fails the test: a code block must be run or say why not.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chi_stores import demo_stores

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(?P<reason>.*?)\s*-->\s*$")
LANGUAGES = ("python", "bash")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    section: str
    language: str
    code: str
    not_run: str | None  # the reason, if marked

    @property
    def id(self) -> str:
        return f"{self.language}-line{self.line}"


def readme_blocks(text: str) -> list[Block]:
    """Fenced code blocks with their section, language and not-run marker."""
    lines = text.splitlines()
    blocks, section, i = [], "", 0
    while i < len(lines):
        if lines[i].startswith("#"):
            section = lines[i].lstrip("#").strip()
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, language = opening.groups()
        body, j = [], i + 1
        while j < len(lines) and lines[j].strip() != "```":
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            raise AssertionError(f"README.md:{i + 1}: code block never closed")
        previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = NOT_RUN.match(previous)
        reason = marker.group("reason") if marker else None
        blocks.append(Block(i + 1, section, language, "\n".join(body) + "\n", reason))
        i = j + 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
RUN = [b for b in BLOCKS if b.not_run is None and b.language in LANGUAGES]
CHECKED = [b for b in BLOCKS if b.not_run is not None and b.language in LANGUAGES]


def test_every_block_is_run_or_says_why_not():
    for block in BLOCKS:
        where = f"README.md:{block.line} ({block.section})"
        assert block.language in LANGUAGES, (
            f"{where}: a ```{block.language} block is neither run nor checked; write it as "
            "```python or ```bash (or extend tests/contracts/test_readme_examples.py)"
        )
        if block.not_run is not None:
            assert block.not_run, f"{where}: <!-- not run: --> needs a reason"
    queries = [b for b in RUN if b.section == "Querying χ"]
    assert [b.language for b in queries] == ["python", "python", "bash", "bash", "python"], queries


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    demo_stores(folder)
    return folder


# ----------------------------------------------------------------------------- run


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_block_runs(block: Block, demo_folder: Path, monkeypatch):
    monkeypatch.chdir(demo_folder)
    if block.language == "python":
        code = compile(block.code, f"README.md:{block.line}", "exec")
        exec(code, {"__name__": "__readme__"})
        return
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        cwd=demo_folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"README.md:{block.line}:\n{done.stdout}\n{done.stderr}"
    for args in commands(block.code):
        if args[:3] == ["patterning", "chi", "export"]:
            assert export_target(args[1:]).exists(), f"{shlex.join(args)} wrote nothing"


def export_target(argv: list[str]) -> Path:
    from flows.cli import build_parser
    from patterning_core.store.export import default_export_path
    from patterning_core.store.runs import one_or_runs

    args = build_parser().parse_args(argv)
    return Path(args.out or default_export_path(one_or_runs(args.path, args.run), args.format))


# ----------------------------------------------------------------------------- checked


@pytest.mark.parametrize("block", CHECKED, ids=[b.id for b in CHECKED])
def test_block_not_run_is_checked(block: Block):
    where = f"README.md:{block.line}"
    if block.language == "python":
        compile(block.code, where, "exec")
        return
    syntax = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
    assert syntax.returncode == 0, f"{where}: {syntax.stderr}"
    found = commands(block.code)
    assert found, f"{where}: no commands found"
    for args in found:
        check_command(args, where)


def commands(code: str) -> list[list[str]]:
    """The simple commands of a shell snippet: one or more per line (split at ``&&``,
    ``||``, ``|`` and ``;`` written as separate words), comments and leading
    ``VAR=value`` assignments removed."""
    found = []
    for line in code.replace("\\\n", " ").splitlines():
        current: list[str] = []
        for token in [*shlex.split(line, comments=True), ";"]:
            if token in ("&&", "||", "|", ";", "&"):
                while current and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", current[0]):
                    current.pop(0)
                if current:
                    found.append(current)
                current = []
            else:
                current.append(token)
    return found


def check_command(args: list[str], where: str) -> None:
    program, rest = args[0], args[1:]
    shown = f"{where}: `{shlex.join(args)}`"
    if program == "patterning":
        from flows.cli import build_parser

        try:
            build_parser().parse_args(rest)
        except SystemExit as err:
            raise AssertionError(f"{shown} is not a valid patterning command") from err
    elif program == "prefect":
        check_prefect(rest, shown)
    elif program in ("python", "python3") or program.endswith("/python"):
        script = next(a for a in rest if not a.startswith("-"))
        path = ROOT / script
        assert path.is_file(), f"{shown}: {script} does not exist"
        source = path.read_text(encoding="utf-8")
        for flag in (a.split("=", 1)[0] for a in rest if a.startswith("--")):
            assert f'"{flag}"' in source, f"{shown}: {script} defines no option {flag}"
    elif program in ("bash", "source", "."):
        assert (ROOT / rest[0]).is_file(), f"{shown}: {rest[0]} does not exist"
    elif program not in ("export", "cd"):
        raise AssertionError(f"{shown}: no check for {program!r}; add one to this test")


def check_prefect(argv: list[str], shown: str) -> None:
    """Parse with Prefect's own command line (without running it); check the files and the
    deployment it names."""
    import yaml
    from prefect.cli._app import _app

    try:
        command, bound, _ = _app.parse_args(argv, exit_on_error=False, print_error=False)
    except Exception as err:
        raise AssertionError(f"{shown} is not a valid prefect command: {err}") from err
    given = bound.arguments
    if "prefect_file" in given:
        assert (ROOT / given["prefect_file"]).is_file(), f"{shown}: no such file"
    if argv[:2] == ["deployment", "run"]:
        spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
        flow_name, name = given["name"].split("/")
        entry = next((d for d in spec["deployments"] if d["name"] == name), None)
        assert entry, f"{shown}: no deployment {name!r} in deployments/prefect.yaml"
        path, function = entry["entrypoint"].split(":")  # the flow, found as a worker does
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, function)
        assert flow.name == flow_name, f"{shown}: the deployment runs flow {flow.name!r}"
        params = inspect.signature(flow.fn).parameters
        for pair in given.get("params", []):
            key = pair.split("=", 1)[0]
            assert key in params, f"{shown}: flow {flow.name!r} has no parameter {key!r}"
    assert command is not None
