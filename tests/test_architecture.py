"""The architecture is checked, not only written down: layers (import-linter), no import cycles (counting
imports made inside functions), and no private names imported across modules."""
import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kmeans_dist", "pipelines", "flows")


def test_import_linter_contracts():
    """The layering contract of pyproject.toml ([tool.importlinter]) holds."""
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "broken" in r.stdout and "0 broken" in r.stdout


def _cycles(graph, modules):
    """Strongly connected components of more than one module (Tarjan), module to module."""
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in modules} for m in modules}
    # a package's __init__ importing its own submodules is how packages re-export; a submodule importing
    # its parent package back is a cycle like any other
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for m in sorted(modules):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycles():
    """No cycle between modules, even through imports inside functions (grimp reads every import)."""
    graph = grimp.build_graph(*PACKAGES)
    modules = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    assert _cycles(graph, modules) == []


def _source_files():
    for pkg in PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", list(_source_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_names_imported_across_modules(path):
    """``from x import _name`` between the project's modules, and from other libraries, is refused."""
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    bad.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}")
        if isinstance(node, ast.ImportFrom) and node.module and any(
                part.startswith("_") and not part.startswith("__") for part in node.module.split(".")):
            bad.append(f"line {node.lineno}: from {node.module} import ... (a private module)")
    assert bad == []


RESEARCH_NAMES = ("CT-bal", "CT-graph", "msplit", "CT-fcm", "CT-mse", "CT-reinit1", "AEKM-bal", "DKM-anneal",
                  "consensus_window", "graph_split", "merge_split", "knn_graph", "size_entropy", "init_candidates",
                  "select=\"balanced\"", "kmeans_candidates")


@pytest.mark.parametrize("path", list(_source_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_research_variant_names_in_the_product(path):
    """The research on MNIST lives in research/deep_ct/; the library, pipelines and flows hold the paper's
    methods only."""
    text = path.read_text()
    assert [n for n in RESEARCH_NAMES if n in text] == []


def test_product_docs_speak_of_the_project():
    """README, docs and RESULTS files: no diary (the word "session") and no research variant names."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "benchmarks").glob("*.md"))]
    bad = {}
    for f in files:
        text = f.read_text()
        found = [w for w in ("session", *RESEARCH_NAMES) if w in text]
        if found:
            bad[str(f.relative_to(ROOT))] = found
    assert bad == {}
