"""The house's arrows: no import circle among the project's modules, and the path from a study to a score
(``model.inference``) stands on neither the training loop nor the evaluation (issue 32)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "model", "assets", "bench", "launch")


def _name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    return {id(m) for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
            for m in ast.walk(n)}


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, at the top or inside functions (imports for type checkers aside).
    bench/ scripts import each other by their file names."""
    modules = {_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    scripts = {p.stem: _name(p) for p in (REPO / "bench").glob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                if module.startswith("bench.") and name.split(".")[0] in scripts:
                    name = scripts[name.split(".")[0]]
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name and name != module and not module.startswith(name + "."):  # a package's own parent aside
                    graph[module].add(name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_circles_are_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_model_stands_on_the_pipeline_not_on_its_pair_mining_or_on_the_graph():
    graph = import_graph()
    for module, imports in graph.items():
        if module.startswith("model"):
            assert not {i for i in imports if i.startswith(("assets", "bench", "pipeline.pairs"))}, module
        if module.startswith("pipeline"):
            assert not {i for i in imports if i.startswith(("assets", "bench", "model"))}, module


def test_serving_loads_neither_training_nor_evaluation():
    """Imported in a fresh process, model.inference brings in no module of model.train or model.eval."""
    code = ("import sys, model.inference, model.infer; "
            "print(sorted(m for m in sys.modules if m == 'model.train' or m.startswith('model.eval')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
