"""The package's import graph: no cycles, no reaching into another module's private names.

Every module of ``hcsmito`` is parsed with :mod:`ast` (no import runs), including the
imports inside functions: an import deferred into a function still couples the two modules
and hides a cycle rather than removing it.

Edges are module-level and precise:

- ``import a.b`` and ``from a import b`` where ``a.b`` is a module are edges to ``a.b``;
- ``from pkg import name`` where ``pkg`` is a package whose ``__init__`` only re-exports
  ``name`` (``from pkg.mod import name``) is an edge to ``pkg.mod``, the module that
  defines it: a package's re-exports do not make cycles of their own;
- importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, but those implicit
  imports are not edges (every module would otherwise depend on its package).

A *private* name starts with ``_``. A module may import a private module of its own
package (``hcsmito.measure.morphometry`` imports ``hcsmito.measure._scan``, the
scikit-image layout), never a private module of another package, and never a private
name (function, class, constant) of another module. ``PRIVATE_IMPORTS_ALLOWED`` lists the
debts still tolerated, each to be removed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import hcsmito

PACKAGE_DIR = Path(hcsmito.__file__).parent
ROOT = PACKAGE_DIR.parent

# (importer, imported module, name): private imports tolerated for now. Each entry is a
# debt: the test fails when a new one appears, and when one is paid off (then delete it).
PRIVATE_IMPORTS_ALLOWED: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Import:
    importer: str  # module doing the import
    module: str  # module imported (after following a package's re-exports)
    name: str | None  # the name taken from it (None for ``import a.b`` / a submodule)
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


MODULES = _modules()
PACKAGES = {m for m, p in MODULES.items() if p.name == "__init__.py"}
TREES = {m: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for m, p in MODULES.items()}


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module of ``from ... import``, resolving relative imports."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if importer not in PACKAGES:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _reexports(package: str) -> dict[str, str]:
    """Names a package's ``__init__`` imports from one of its modules: name -> module."""
    out: dict[str, str] = {}
    for node in TREES[package].body:  # top level only: that is what re-exports
        if isinstance(node, ast.ImportFrom):
            src = _absolute(package, node)
            if src in MODULES:
                for alias in node.names:
                    out[alias.asname or alias.name] = src
    return out


REEXPORTS = {p: _reexports(p) for p in PACKAGES}


def _resolve(module: str, name: str) -> str:
    """The module that ``from module import name`` really depends on."""
    seen = set()
    while module in PACKAGES and name in REEXPORTS[module] and module not in seen:
        seen.add(module)
        module = REEXPORTS[module][name]
    return module


def _imports(importer: str) -> Iterator[Import]:
    for node in ast.walk(TREES[importer]):  # every scope: functions and methods too
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield Import(importer, alias.name, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            src = _absolute(importer, node)
            if src not in MODULES:
                continue
            for alias in node.names:
                sub = f"{src}.{alias.name}"
                if sub in MODULES:
                    yield Import(importer, sub, None, node.lineno)
                elif alias.name == "*":
                    yield Import(importer, src, None, node.lineno)
                else:
                    yield Import(importer, _resolve(src, alias.name), alias.name, node.lineno)


IMPORTS = [imp for m in MODULES for imp in _imports(m)]


def _graph(imports) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in imports:
        if imp.module != imp.importer:
            graph[imp.importer].add(imp.module)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _describe(cycle: list[str], imports) -> str:
    members = set(cycle)
    edges = sorted(
        {
            f"  {imp.importer} -> {imp.module} (line {imp.line})"
            for imp in imports
            if imp.importer in members and imp.module in members and imp.importer != imp.module
        }
    )
    return "cycle between " + ", ".join(cycle) + ":\n" + "\n".join(edges)


def _private_module(module: str) -> str | None:
    """The package that owns ``module`` if a component of it is private, else None."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _private_violations(imports) -> set[tuple[str, str, str]]:
    found = set()
    for imp in imports:
        if imp.module == imp.importer:
            continue
        owner = _private_module(imp.module)
        if owner is not None and not _inside(imp.importer, owner):
            found.add((imp.importer, imp.module, imp.name or imp.module.rsplit(".", 1)[1]))
        if imp.name and imp.name.startswith("_") and not imp.name.startswith("__"):
            found.add((imp.importer, imp.module, imp.name))
    return found


# --------------------------------------------------------------------------------------------


def test_the_graph_sees_the_package():
    # the walk finds the modules and their imports, inside functions included
    assert {"hcsmito.backend", "hcsmito.measure.morphometry", "hcsmito.io.plate"} <= set(MODULES)
    edges = {(i.importer, i.module) for i in IMPORTS}
    assert ("hcsmito.measure.morphometry", "hcsmito.measure._moments") in edges
    # hcsmito.io re-exports PlateError: the edge goes to the module that defines it
    assert ("hcsmito.io", "hcsmito.io.errors") in edges


def test_no_import_cycles():
    cycles = _cycles(_graph(IMPORTS))
    assert not cycles, "import cycles (move the shared part to its own module):\n" + "\n".join(
        _describe(c, IMPORTS) for c in cycles
    )


def test_no_private_names_imported_from_other_modules():
    found = _private_violations(IMPORTS)
    new = sorted(found - PRIVATE_IMPORTS_ALLOWED)
    assert not new, (
        "private names imported from another module (make them public in a module both "
        "can import, or keep them in one module):\n"
        + "\n".join(f"  {a} imports {n} from {b}" for a, b, n in new)
    )
    # an entry whose importer exists but no longer imports it is paid off: delete it
    paid = sorted(e for e in PRIVATE_IMPORTS_ALLOWED - found if e[0] in MODULES)
    assert not paid, f"no longer imported: remove from PRIVATE_IMPORTS_ALLOWED: {paid}"


def _fake(module: str, source: str):
    """IMPORTS with one module's source replaced (the checks' own tests)."""
    saved = TREES[module]
    TREES[module] = ast.parse(source)
    try:
        return [imp for m in MODULES for imp in _imports(m)]
    finally:
        TREES[module] = saved


@pytest.mark.parametrize(
    ("source", "cycle"),
    [
        # a deferred import inside a function is still a cycle
        (
            "def f():\n    from hcsmito.measure.morphometry import regionprops_table\n",
            True,
        ),
        # through the package: hcsmito.measure re-exports regionprops_table from morphometry
        ("from hcsmito.measure import regionprops_table\n", True),
        ("from ..measure import morphometry\n", True),
        ("import hcsmito.measure.morphometry\n", True),
        ("from hcsmito.measure import _moments\n", False),
    ],
)
def test_a_cycle_is_found(source, cycle):
    # _scan is imported by morphometry: importing morphometry back closes a cycle
    imports = _fake("hcsmito.measure._scan", source)
    cycles = _cycles(_graph(imports))
    assert bool([c for c in cycles if "hcsmito.measure._scan" in c]) == cycle


@pytest.mark.parametrize(
    ("module", "source", "violation"),
    [
        ("hcsmito.io.writer", "from hcsmito.io.plate import _field_image\n", True),
        ("hcsmito.stages.foci", "from hcsmito.measure._scan import moments_cpu\n", True),
        ("hcsmito.stages.foci", "import hcsmito.measure._kernels\n", True),
        ("hcsmito.stages.foci", "from hcsmito.measure import _kernels\n", True),
        ("hcsmito.measure.morphometry", "from hcsmito.measure._scan import moments_cpu\n", False),
        ("hcsmito.stages.foci", "from hcsmito.stages._util import gaussian\n", False),
        ("hcsmito.stages.foci", "from hcsmito.io import PlateError\n", False),
    ],
)
def test_a_private_import_is_found(module, source, violation):
    found = _private_violations(_fake(module, source))
    assert bool({f for f in found if f[0] == module} - PRIVATE_IMPORTS_ALLOWED) == violation
