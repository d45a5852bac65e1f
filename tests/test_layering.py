"""The house's layering is one-way: the worker's side never imports the CLI's.

Lower layer (what a worker runs, and what it shares): the SDK (``flash_runtime/__init__.py``,
``endpoint``, ``resources``, ``errors``), ``manifest``, ``bootstrap``, ``worker/``, ``calls/``,
``protocol/``. Upper layer: ``pack/``, ``deploy/``, ``platform/``, ``devserver/``, ``testing/`` and the CLI.
Every import is checked, also those inside functions and under ``TYPE_CHECKING``: an import
from the lower layer into the upper one fails this test (``pack/core.py`` vendors exactly the
lower layer into artifacts for Runpod's images, so such an import would break workers there).
"""

from __future__ import annotations

import ast
from pathlib import Path

from flash_runtime.pack.core import CORE_MODULES

PACKAGE = Path(__file__).resolve().parent.parent / "flash_runtime"
UPPER = {"pack", "deploy", "platform", "devserver", "testing", "cli", "_terminal", "_entry"}
LOWER = {name.removesuffix(".py") for name in CORE_MODULES if name != "py.typed"}


def module_name(path: Path) -> str:
    parts = list(path.with_suffix("").relative_to(PACKAGE.parent).parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "flash_runtime" or len(parts) < 2:
        return None
    return "upper" if parts[1] in UPPER else "lower" if parts[1] in LOWER else None


def test_the_core_list_covers_the_package() -> None:
    tops = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    tops -= {"py.typed"}
    assert tops == LOWER | UPPER, "a new top-level module: put it in a layer (pack/core.py)"


def test_the_lower_layer_never_imports_the_upper_one() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if layer_of(module_name(path)) != "lower" and path.parent != PACKAGE:
            continue
        if path.parent == PACKAGE and path.stem in UPPER:
            continue
        for line, name in imports(path):
            if layer_of(name) == "upper":
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_lazy_imports() -> None:
    source = PACKAGE / "calls" / "context.py"
    assert any(name.startswith("flash_runtime.protocol.target") for _, name in imports(source))


def import_graph() -> dict[str, set[str]]:
    """Module -> the flash_runtime modules it imports (any import, lazy or for types only)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        targets = set()
        for _, name in imports(path):
            # "from pkg import sub" names the submodule; "from mod import name" the module.
            if name in paths and name != module:
                targets.add(name)
        # "from pkg import sub" also lists pkg: keep the submodule only.
        graph[module] = {t for t in targets if not any(o.startswith(t + ".") for o in targets)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    graph = import_graph()
    # A package importing its own submodules is not a circle.
    graph = {m: {t for t in ts if not m.startswith(t + ".") and not t.startswith(m + ".")}
             for m, ts in graph.items()}  # fmt: skip
    assert cycles(graph) == []


def test_the_circle_checker_finds_circles() -> None:
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
