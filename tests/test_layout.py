"""The module layout: no import loop, readers apart from the writer, one home for the frame layout.

The import graph is read from the sources of the installed ``walogs`` (the
``.pyx`` files too, where they are there): an edge for every ``import`` of a
walogs module. Imports run at import time (the module's body, its classes,
its ``if``/``try`` blocks) make the graph that must have no cycle: a cycle
there means some module is used half-initialized, whichever is imported
first. Imports inside functions are deferred; they must not close a cycle
either. ``if TYPE_CHECKING:`` blocks never run and are left out.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from vectors import VECTORS, frame

import walogs
from walogs import _format

PACKAGE = Path(walogs.__file__).parent
TEMPORARY_SHIMS: set[str] = set()
"""Modules whose deferred imports may close a loop (none now that the writer takes its names from _impl)."""
# walogs._impl loads the compiled modules by name (importlib), which no import statement shows.
DYNAMIC = {"walogs._impl": {"walogs._frame", "walogs._writer", "walogs._shared_writer"}}
_PYX_IMPORT = re.compile(r"^(?:from\s+walogs(?:\.(\w+))?\s+c?import\b(.*)|c?import\s+walogs\.(\w+))", re.M)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.iterdir()):
        stem, suffix = path.name.split(".", 1)[0], path.suffix
        if suffix in (".py", ".pyx") and stem != "__main__":
            found["walogs" if stem == "__init__" else f"walogs.{stem}"] = path
    return found


MODULES = _modules()


def _target(module: str | None, name: str | None) -> str:
    """The walogs module an import names: ``from walogs import x`` is the submodule x if there is one."""
    if module:
        return f"walogs.{module}"
    return f"walogs.{name}" if f"walogs.{name}" in MODULES or any(PACKAGE.glob(f"{name}.*.so")) else "walogs"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _py_edges(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(imports run at import time, imports deferred into functions) of walogs modules."""
    now: set[str] = set()
    later: set[str] = set()

    def visit(node: ast.AST, deferred: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, deferred)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("walogs."):
                    (later if deferred else now).add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "walogs":
                (later if deferred else now).update(_target(None, alias.name) for alias in node.names)
            elif node.module.startswith("walogs."):
                (later if deferred else now).add(node.module)
        inner = deferred or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return now, later


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Module -> walogs modules it imports: (at import time, deferred)."""
    now: dict[str, set[str]] = {}
    later: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        text = path.read_text()
        if path.suffix == ".py":
            now[name], later[name] = _py_edges(ast.parse(text, str(path)))
        else:
            now[name] = set()
            for module, names, dotted in _PYX_IMPORT.findall(text):
                if dotted:
                    now[name].add(f"walogs.{dotted}")
                elif module:
                    now[name].add(f"walogs.{module}")
                else:
                    now[name].update(_target(None, n.split()[0]) for n in names.strip(" ()").split(",") if n.strip())
            later[name] = set()
        now[name] |= DYNAMIC.get(name, set())
        now[name].discard(name)
    return now, later


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = walk(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = walk(node)
            if found:
                return found
    return None


def test_the_graph_sees_the_modules():
    now, _ = _graph()
    assert {"walogs._format", "walogs._impl", "walogs._damage", "walogs.reader", "walogs.wal"} <= set(now)
    assert "walogs._frame_py" in now["walogs._impl"] and "walogs._format" in now["walogs._segments"]
    for module, targets in DYNAMIC.items():  # the table above still says what the source does
        source = MODULES[module].read_text()
        assert all(f'"{t.rsplit(".", 1)[1]}"' in source for t in targets), (module, targets)


def test_no_import_loop_at_import_time():
    now, _ = _graph()
    assert _cycle(now) is None, " -> ".join(_cycle(now) or [])


def test_a_loop_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    tree = ast.parse("import os\nfrom walogs import _io\nif TYPE_CHECKING:\n    from walogs import wal\n"
                     "def f():\n    from walogs._format import SECTOR\n")
    assert _py_edges(tree) == ({"walogs._io"}, {"walogs._format"})


def test_deferred_imports_close_no_loop_but_through_the_codec_shim():
    now, later = _graph()
    merged = {m: (now[m] | later[m]) - TEMPORARY_SHIMS for m in now if m not in TEMPORARY_SHIMS}
    assert _cycle(merged) is None, " -> ".join(_cycle(merged) or [])


def _import_time_closure(module: str) -> set[str]:
    now, _ = _graph()
    seen: set[str] = set()
    todo = [module]
    while todo:
        for nxt in now.get(todo.pop(), ()):
            if nxt not in seen and nxt != "walogs":  # the package itself is always imported first
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_readers_do_not_depend_on_the_writer():
    """A reader imports neither the writer (wal) nor the writer's open (_recovery). It does import
    walogs._impl, which chooses the writer's implementation along with the codec's."""
    for module in ("walogs.reader", "walogs._segments", "walogs._damage"):
        needs = _import_time_closure(module)
        assert not needs & {"walogs.wal", "walogs._recovery"}, (module, sorted(needs))


def test_format_imports_nothing_from_walogs():
    assert _import_time_closure("walogs._format") == set()


# Each module imported first, in a fresh interpreter, with the package's __init__ (which imports
# most of them in one fixed order) left out: a loop shows as a half-initialized module.
CHILD = (
    "import importlib, sys, types\n"
    "package = types.ModuleType('walogs'); package.__path__ = [sys.argv[1]]; sys.modules['walogs'] = package\n"
    "importlib.import_module(sys.argv[2])\n"
)


def test_each_module_imports_first_in_a_fresh_interpreter():
    now, _ = _graph()
    # Modules that import a name from the package itself (cli: __version__) need its __init__.
    first = [m for m in MODULES if m != "walogs" and "walogs" not in now[m]]
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent), PYTHONWARNINGS="ignore::RuntimeWarning")
    children = {m: subprocess.Popen([sys.executable, "-c", CHILD, str(PACKAGE), m], cwd=PACKAGE.parent, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for m in first if m.rsplit(".", 1)[1] not in ("_frame", "_writer", "_shared_writer") or _built(m)}
    failed = {}
    for module, child in children.items():
        out, err = child.communicate(timeout=120)
        if child.returncode:
            failed[module] = err.strip().splitlines()[-1] if err.strip() else out
    assert not failed, failed


def _built(module: str) -> bool:
    return any(PACKAGE.glob(f"{module.rsplit('.', 1)[1]}.*.so"))


@pytest.mark.parametrize("lsn, data, hexframe", VECTORS)
def test_format_lays_out_the_literal_vectors(lsn, data, hexframe):
    """walogs._format's frame layout builds the literal test vectors, which are written without it."""
    crc = zlib.crc32(data, zlib.crc32(_format.FRAME_CRC_PREFIX.pack(len(data), lsn)))
    built = _format.FRAME_HEADER.pack(len(data), crc, lsn) + data
    assert built.hex() == hexframe == frame(lsn, data).hex()
    assert _format.FRAME_HEADER_SIZE == 16 and _format.frame_size(data) == len(built)
    assert _format.FRAME_HEADER.unpack_from(built) == (len(data), crc, lsn)
