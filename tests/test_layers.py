"""The package layering of `fl`, checked on the import graph (every import statement, module
level or inside a function, parsed with `ast`), and what `import fl.client` loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fl

ROOT = Path(fl.__file__).parent

# Layers, bottom first: a package may import its own layer's packages' public modules only
# through the rules below, and any package of a lower layer; never a higher one.
LAYERS: list[set[str]] = [
    {"fl.schema"},
    {"fl.protocol"},
    {"fl.data", "fl.models"},
    {"fl.client"},
    {"fl.executors", "fl.robust", "fl.profiling"},
    {"fl.strategies", "fl.sim"},  # siblings: neither imports the other
    {"fl.loops"},
    {"fl.experiment"},
    {"fl.flower"},
    {"fl.cli"},
]
FORBIDDEN = {  # explicit rules of the design, beside the layer order
    "fl.client": {"fl.sim", "fl.strategies", "fl.robust", "fl.executors", "fl.loops"},
    "fl.strategies": {"fl.sim", "fl.loops", "fl.experiment"},
    "fl.sim": {"fl.strategies", "fl.loops", "fl.experiment"},
    "fl.data": {"fl.models"},
    "fl.models": {"fl.data"},
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every `fl...` module `path` imports, anywhere in the file."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    typing_only = {  # `if TYPE_CHECKING:` blocks import nothing at run time
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "fl")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "fl":
                continue
            # `from fl import client` imports the module fl.client; `from fl.x import y, f`
            # imports fl.x itself only for the names that are not modules
            modules = {f"{mod}.{a.name}" for a in node.names if _exists(f"{mod}.{a.name}")}
            out.update(modules)
            if len(modules) < len(node.names):
                out.add(mod)
    return out


def _exists(module: str) -> bool:
    p = ROOT.parent / Path(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = _module_name(path)
        graph[name] = {m for m in _imports(path, name) if m != name and m != "fl"}
    return graph


def _package(module: str) -> str:
    """The layer unit a module belongs to: fl.<package> (or fl.<module> at the top)."""
    return ".".join(module.split(".")[:2])


def _layer(package: str) -> int:
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    raise AssertionError(f"{package} is in no layer: add it to LAYERS in tests/test_layers.py")


def test_every_import_points_down_the_layers() -> None:
    wrong = []
    for module, deps in _graph().items():
        if module == "fl":
            continue
        src = _package(module)
        for dep in deps:
            dst = _package(dep)
            if dst == src:
                continue
            if _layer(dst) > _layer(src) or (
                _layer(dst) == _layer(src) and dst != src
            ):  # same layer: siblings never import each other
                wrong.append(f"{module} imports {dep} ({src} is below {dst} or beside it)")
            if dst in FORBIDDEN.get(src, set()):
                wrong.append(f"{module} imports {dep}, which {src} must never import")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_no_import_cycles_between_modules() -> None:
    graph = _graph()
    # Package __init__ modules re-export their children; an edge child → its own package's
    # __init__ would be a real cycle too, so every edge counts.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if d not in graph:
                continue
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d) :], d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_is_not_empty_and_sees_function_level_imports() -> None:
    graph = _graph()
    assert len(graph) > 60
    # fl.executors.base imports fl.client inside a function only: the graph must see it
    assert "fl.client" in graph["fl.executors.base"]


def test_import_fl_client_loads_nothing_of_the_simulator_or_the_strategies() -> None:
    code = (
        "import sys, fl.client\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in "
        "[['fl', p] for p in ('sim', 'strategies', 'robust', 'loops', 'experiment', "
        "'executors', 'flower', 'profiling')])\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
