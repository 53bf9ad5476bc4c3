"""The layering the architecture promises, checked on the code (every import statement,
including those inside functions), not promised in prose.

- ``patterning_core`` imports nothing from Prefect, Dask, ``flows`` or ``tasks``: a
  researcher can use it from a notebook with the core's dependencies alone.
- Inside the core every import points down the package order below; an experiment may
  import any package, nothing imports an experiment (except ``report`` helpers that an
  experiment renders through, and the experiments themselves).
- ``tasks`` never imports ``flows``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "patterning_core"

FORBIDDEN_IN_CORE = ("prefect", "prefect_dask", "dask", "distributed", "flows", "tasks")

# What each core package may import from the core (besides itself). Top-level modules
# (workspace, recipes) are importable from everywhere except that recipes needs sampling.
ALLOWED = {
    "sampling": set(),
    "toys": {"sampling", "estimators"},
    "estimators": {"sampling"},
    "model": {"sampling"},
    "data": {"sampling", "model", "workspace"},
    "store": {"sampling", "estimators", "model", "data", "toys", "workspace"},
    "report": {"sampling", "estimators"},
    "experiments": {
        "sampling",
        "estimators",
        "model",
        "data",
        "store",
        "toys",
        "report",
        "workspace",
        "recipes",
        "experiments",
    },
    "recipes": {"sampling"},
    "workspace": set(),
}


def imported_modules(path: Path, package: str | None = None) -> list[tuple[int, str]]:
    """``(line, dotted module)`` of every import in a file (absolute imports; a relative
    import is resolved against the file's package, by default its place under ROOT)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    if package is None:
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found.append((node.lineno, module))
            # `from patterning_core import store` imports the subpackage store.
            if module == "patterning_core":
                found += [(node.lineno, f"patterning_core.{a.name}") for a in node.names]
    return found


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def layer_of(path: Path) -> str:
    rel = path.relative_to(CORE).with_suffix("").parts
    return rel[0] if rel[0] != "__init__" else "__init__"


def test_the_scan_sees_imports_inside_functions(tmp_path):
    """Control: the scan finds a deferred import and a relative one, so a pass means
    something."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    import prefect\n    from ..store import chi_store\n")
    modules = [m for _, m in imported_modules(probe, package="patterning_core.sampling")]
    assert "prefect" in modules and "patterning_core.store" in modules


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_orchestration(path):
    bad = [
        f"line {line}: {module}"
        for line, module in imported_modules(path)
        if module.split(".")[0] in FORBIDDEN_IN_CORE
    ]
    assert not bad, f"{path.relative_to(ROOT)} imports the orchestration layer: {bad}"


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_point_down(path):
    layer = layer_of(path)
    if layer == "__init__":
        return
    allowed = ALLOWED[layer] | {layer}
    bad = []
    for line, module in imported_modules(path):
        parts = module.split(".")
        if parts[0] != "patterning_core" or len(parts) < 2:
            continue
        if parts[1] not in allowed:
            bad.append(f"line {line}: {module}")
    assert not bad, f"{path.relative_to(ROOT)} ({layer}) imports against the layering: {bad}"


def test_every_core_package_has_a_rule():
    packages = {p.name for p in CORE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in CORE.glob("*.py") if p.stem != "__init__"}
    assert packages | modules <= set(ALLOWED), sorted((packages | modules) - set(ALLOWED))
    # The top level stays small: packages plus at most a few modules.
    assert len(modules) <= 3, sorted(modules)


@pytest.mark.parametrize("path", sorted((ROOT / "tasks").glob("*.py")), ids=lambda p: p.name)
def test_tasks_do_not_import_flows(path):
    bad = [m for _, m in imported_modules(path) if m.split(".")[0] == "flows"]
    assert not bad, f"tasks/{path.name} imports flows: {bad}"
