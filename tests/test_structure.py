"""The shape of the code base: no import cycles, small modules, a small ssd_train top level, and
tests that share helpers only through packages (conftest fixtures, plain helper modules).

The import graph is read with ``ast`` (nothing is imported): every ``import`` and ``from ...
import`` statement counts, including those under ``if TYPE_CHECKING:`` and inside functions;
``from pkg import mod`` is an edge to ``pkg.mod`` when that is a module, else to ``pkg``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(ROOT.glob("packages/*/src"))
MAX_LINES = 400
MAX_TOP_LEVEL = 20


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of every package under packages/."""
    found: dict[str, Path] = {}
    for src in SOURCES:
        for path in src.rglob("*.py"):
            parts = list(path.relative_to(src).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of ours that ``name`` imports (edges of the graph)."""
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    edges: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` where only a.b is ours
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_reader_sees_type_checking_and_from_imports(tmp_path: Path) -> None:
    """The checks below would be blind if the reader missed these edges."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.b\n"
    )
    (pkg / "b.py").write_text("from pkg import a\n")
    (pkg / "c.py").write_text("from . import b\nfrom .a import thing\n")
    modules = {"pkg": pkg / "__init__.py", **{f"pkg.{m}": pkg / f"{m}.py" for m in "abc"}}
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.c"] == {"pkg.b", "pkg.a"}
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]


def test_no_import_cycles_anywhere_in_packages() -> None:
    modules = _modules()
    assert len(modules) > 50
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_core_data_and_eval_do_not_import_each_other_or_ssd_train() -> None:
    modules = _modules()
    layers = ("ssd_core", "ssd_data", "ssd_eval")
    wrong = []
    for name, path in modules.items():
        top = name.split(".")[0]
        if top not in layers:
            continue
        for target in _imports(name, path, modules):
            if target.split(".")[0] != top:
                wrong.append(f"{name} -> {target}")
    assert wrong == []


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.parent.name)
def test_no_module_over_400_lines(src: Path) -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in src.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_ssd_train_top_level_is_small() -> None:
    top = ROOT / "packages/ssd-train/src/ssd_train"
    entries = [p.name for p in top.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()]
    assert len(entries) <= MAX_TOP_LEVEL, sorted(entries)


# loading a file of tests/ by path (infra/ scripts, which are no package, may be loaded by path)
_LOADS_TEST_FILE = re.compile(
    r"(spec_from_file_location|SourceFileLoader)\(.{0,200}?(__file__|\.py[\"'])", re.S
)
_PATH_HACK = re.compile(r"sys\.path\.(insert|append)")


def test_the_loader_pattern_catches_loading_a_sibling_test_file() -> None:
    sibling = "test" + "_x.py"  # spelled apart so that this file itself is no such loader
    bad = f'spec_from_file_location(\n    "h", Path(__file__).with_name("{sibling}")\n)'
    assert _LOADS_TEST_FILE.search(bad)
    assert not _LOADS_TEST_FILE.search("spec_from_file_location(name, INFRA / relative)")


def test_tests_share_helpers_only_through_packages() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("*.py")
        if p != Path(__file__).resolve()
        and (
            _LOADS_TEST_FILE.search(text := p.read_text(encoding="utf-8"))
            or _PATH_HACK.search(text)
        )
    ]
    assert offenders == []
    folders = {p.parent for p in (ROOT / "tests").rglob("test_*.py")}
    assert all((folder / "__init__.py").is_file() for folder in folders)
