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


ARCHITECTURE = Path(__file__).parents[1] / "docs" / "reference" / "architecture.md"
UP_A_FLOOR = "# up a floor:"


def _floor_patterns() -> dict[str, int]:
    """The floors table of docs/reference/architecture.md: module pattern -> floor."""
    rows = re.findall(r"^\| (\d+) \|[^|]*\|([^|]*)\|$", ARCHITECTURE.read_text(encoding="utf-8"), re.M)
    return {pattern: int(floor) for floor, cell in rows for pattern in re.findall(r"`([\w.]+)`", cell)}


def _floor(module: str, patterns: dict[str, int]) -> int | None:
    matching = [p for p in patterns if module == p or module.startswith(p + ".")]
    return patterns[max(matching, key=len)] if matching else None


def _import_lines(path: Path, module: str) -> list[str]:
    """The source lines of ``path`` that import ``module`` (to read the comment that allows an upward import)."""
    short = module.rpartition(".")
    return [line for line in path.read_text(encoding="utf-8").splitlines()
            if "import" in line and (module in line or (short[0] in line and short[2] in line))]


def test_every_import_stays_on_its_floor_or_goes_down():
    patterns = _floor_patterns()
    assert len(set(patterns.values())) >= 5, "the floors table of architecture.md was not found"
    assert [m for m in MODULES if _floor(m, patterns) is None] == []
    assert [p for p in patterns if not any(m == p or m.startswith(p + ".") for m in MODULES)] == []
    upward, unexplained = [], []
    for name, path in MODULES.items():
        for target in _imports(name, path):
            if _floor(target, patterns) > _floor(name, patterns):
                upward.append(f"{name} -> {target}")
                if not any(UP_A_FLOOR in line for line in _import_lines(path, target)):
                    unexplained.append(f"{name} -> {target}")
    assert unexplained == []
    assert len(upward) <= 2, upward


def test_the_floor_check_catches_an_upward_import():
    patterns = {"edgekit.results": 0, "edgekit.api": 4, "edgekit": 5}
    assert _floor("edgekit.api", patterns) > _floor("edgekit.results", patterns)
    assert _floor("edgekit.results.x", patterns) == 0 and _floor("edgekit.cli", patterns) == 5


def _function_lengths(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1)
            for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_no_function_in_edgekit_is_longer_than_60_lines():
    long = [f"{where} ({n} lines)" for path in PACKAGE.rglob("*.py") for where, n in _function_lengths(path)
            if n > 60]
    assert long == []


def test_every_module_says_what_it_owns():
    silent = [str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py")
              if p.name not in ("__main__.py", "_version.py")
              and not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert silent == []


SCRIPT_FOLDERS = ("tools", "benchmarks", "examples", "dev")


def test_nothing_in_the_package_or_the_tests_imports_a_script():
    """Scripts are run by users or maintainers; the package and the tests may run one as a subprocess (as a user
    would) or name an example as a model source, never import one."""
    folders = "|".join(SCRIPT_FOLDERS)
    pattern = re.compile(rf"^\s*(from|import)\s+({folders})\b|sys\.path\.(insert|append)\(.*\b({folders})\b", re.M)
    hits = [f"{p.relative_to(PACKAGE.parent)}: {m.group(0).strip()}"
            for root in (PACKAGE, PACKAGE.parent / "tests") for p in root.rglob("*.py")
            for m in pattern.finditer(p.read_text(encoding="utf-8"))]
    assert hits == []
