"""The shape of the code, checked: no import circle, SQL and the SQLite/PostgreSQL split only in
repositories (and the ``db`` package), routes without SQL, services that never commit, and plugins
that only know the SDK. Read from the source with ``ast``, so a violation names its file and line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "metagov"


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module

    @property
    def relative(self) -> str:
        return str(self.path.relative_to(SRC))

    def imports(self) -> Iterator[tuple[str, int]]:
        """Every module this one imports, anywhere in it (lazy imports included), with the line."""
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, node.lineno
            elif isinstance(node, ast.ImportFrom) and node.module:
                # ``from package import module`` depends on that module (the package is being
                # initialised already when one of its own modules does it).
                submodules = [f"{node.module}.{a.name}" for a in node.names]
                submodules = [name for name in submodules if name in _NAMES]
                if not submodules:
                    yield node.module, node.lineno
                for alias in node.names:
                    yield f"{node.module}.{alias.name}", node.lineno


def _modules() -> list[Module]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append(Module(name, path, ast.parse(path.read_text(), filename=str(path))))
    return found


_NAMES: set[str] = set()
MODULES = _modules()
_NAMES.update(module.name for module in MODULES)
BY_NAME = {module.name: module for module in MODULES}


def _is_repository_or_db(module: Module) -> bool:
    return module.path.name == "repository.py" or module.name.startswith("metagov.db")


def test_no_import_circle() -> None:
    graph: dict[str, set[str]] = {module.name: set() for module in MODULES}
    for module in MODULES:
        for imported, _ in module.imports():
            if imported in BY_NAME and imported != module.name:
                graph[module.name].add(imported)
    cycles = _cycles(graph)
    assert not cycles, f"import circles: {cycles}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_only_repositories_and_the_db_package_use_sqlalchemy() -> None:
    offenders = [
        f"{module.relative}:{line} imports {imported}"
        for module in MODULES
        if not _is_repository_or_db(module)
        for imported, line in module.imports()
        if imported == "sqlalchemy" or imported.startswith("sqlalchemy.")
    ]
    assert not offenders, "SQL outside a repository:\n" + "\n".join(offenders)


def test_only_repositories_and_the_db_package_know_the_dialect() -> None:
    offenders = []
    for module in MODULES:
        if _is_repository_or_db(module) or module.name == "metagov.config":
            continue
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Attribute) and node.attr == "dialect":
                offenders.append(f"{module.relative}:{node.lineno} reads .dialect")
            if isinstance(node, ast.Constant) and node.value in ("postgresql", "sqlite"):
                offenders.append(f"{module.relative}:{node.lineno} names {node.value!r}")
    assert not offenders, "SQLite/PostgreSQL branches outside a repository:\n" + "\n".join(
        offenders
    )


def test_routes_parse_authorize_and_call_services() -> None:
    """Nothing under ``api/`` reaches a repository or the ORM's statement builders."""
    offenders = [
        f"{module.relative}:{line} imports {imported}"
        for module in MODULES
        if module.name.startswith("metagov.api")
        for imported, line in module.imports()
        if imported.endswith(".repository") or ".repository." in imported
    ]
    assert not offenders, "\n".join(offenders)


def test_services_never_commit() -> None:
    offenders = [
        f"{module.relative}:{node.lineno}"
        for module in MODULES
        if module.path.name == "service.py"
        for node in ast.walk(module.tree)
        if isinstance(node, ast.Attribute) and node.attr == "commit"
    ]
    assert not offenders, "a service commits (its caller owns the unit of work): " + ", ".join(
        offenders
    )


@pytest.mark.parametrize(
    "plugin",
    sorted(
        path.name
        for path in (PACKAGE / "plugins").iterdir()
        if path.is_dir() and (path / "__init__.py").exists()
    ),
)
def test_plugins_only_know_the_sdk(plugin: str) -> None:
    """A plugin imports the SDK, its own modules, or another plugin it builds on, and nothing
    else of the gateway."""
    own = f"metagov.plugins.{plugin}"
    offenders = [
        f"{module.relative}:{line} imports {imported}"
        for module in MODULES
        if module.name == own or module.name.startswith(own + ".")
        for imported, line in module.imports()
        if (imported.startswith("metagov") and not imported.startswith("metagov.plugins."))
        or imported.startswith("metagov.plugins.registry")
    ]
    assert not offenders, "a plugin reaches past the SDK:\n" + "\n".join(offenders)
