"""The shape of the house: no import cycles among edgekit's modules (lazy imports included), no runtime named
outside edgekit/backends/, and the worker side free of torch."""
import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "edgekit"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path) -> set[str]:
    """Every edgekit module this one imports when it runs, at the top or inside a function (not for type hints)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in MODULES and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
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
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return cycles


def test_no_import_cycle_among_edgekit_modules():
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert graph["edgekit.api"], "the walker found no imports: it is broken"
    assert "edgekit.report.render" in graph["edgekit.bench.run"]
    assert _cycles(graph) == []


def test_the_walker_sees_a_cycle_made_by_lazy_imports():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


RUNTIME_NAMES = re.compile(r"onnxruntime|openvino|tflite|litert|executorch")


def test_no_runtime_is_named_outside_the_backends():
    hits = [f"{p.relative_to(PACKAGE.parent)}:{i}: {line.strip()}" for p in PACKAGE.rglob("*.py")
            if "backends" not in p.relative_to(PACKAGE).parts
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if RUNTIME_NAMES.search(line)]
    assert hits == []


def test_the_worker_side_imports_no_torch():
    code = ("import sys, edgekit.isolation.worker, edgekit.isolation.process, edgekit.results, "
            "edgekit.backends.execute; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
