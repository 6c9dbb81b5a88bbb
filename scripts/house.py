"""Measure the shape of the code (issue 19): lines, import floors, circles, back arrows, biggest units.

    .venv/bin/python scripts/house.py [--json OUT]

Imports are read by grimp (import-linter's graph library), counting imports inside functions too.
*Floors* are the length of the longest import chain between m3e_rag's modules (circles condensed);
a *circle* is a set of modules that import each other; a *back arrow* is an import of a module that
imports the importer (directly or through others), or of a package that contains the importer.
Classes and functions are measured in source lines, decorators and docstrings included.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("m3e_rag", "langchain_m3e", "llama_index")
SOURCES = (ROOT / "m3e_rag", ROOT / "integrations")


def _units(path: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    classes: list[tuple[int, str]] = []
    functions: list[tuple[int, str]] = []
    rel = path.relative_to(ROOT).as_posix()

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                size = (child.end_lineno or child.lineno) - start + 1
                name = f"{rel}:{prefix}{child.name}"
                (classes if isinstance(child, ast.ClassDef) else functions).append((size, name))
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return classes, functions


def _condense(graph: grimp.ImportGraph, modules: set[str]) -> tuple[list[set[str]], dict[str, set[str]]]:
    edges = {m: {b for b in graph.find_modules_directly_imported_by(m) if b in modules} for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    sccs: list[set[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            sccs.append(comp)

    for m in sorted(modules):
        if m not in index:
            strong(m)
    return sccs, edges


def measure() -> dict[str, object]:
    """Return the measures as a JSON-able dict."""
    files = sorted(p for src in SOURCES for p in src.rglob("*.py"))
    lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in files)
    classes: list[tuple[int, str]] = []
    functions: list[tuple[int, str]] = []
    for p in files:
        c, f = _units(p)
        classes += c
        functions += f
    sys.path[:0] = [str(ROOT), str(ROOT / "integrations")]
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    modules = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    modules = {m for m in modules if not m.startswith("llama_index.") or ".m3e" in m}
    sccs, edges = _condense(graph, modules)
    comp_of = {m: i for i, comp in enumerate(sccs) for m in comp}
    circles = [sorted(c) for c in sccs if len(c) > 1]
    back = sorted(
        f"{a} -> {b}"
        for a in modules
        for b in edges[a]
        if comp_of[a] == comp_of[b] or a.startswith(b + ".")
    )
    # Floors: longest chain in the condensed graph (Tarjan emits components in reverse topological order).
    depth: dict[int, int] = {}
    for i, comp in enumerate(sccs):
        below = [depth[comp_of[b]] for a in comp for b in edges[a] if comp_of[b] != i]
        depth[i] = 1 + max(below, default=0)
    engine = [m for m in modules if m.startswith("m3e_rag")]
    return {
        "files": len(files),
        "lines": lines,
        "modules": len(modules),
        "floors_m3e_rag": max(depth[comp_of[m]] for m in engine),
        "floors_all": max(depth.values()),
        "circles": circles,
        "back_arrows": back,
        "classes_over_300": len([c for c in classes if c[0] > 300]),
        "functions_over_80": len([f for f in functions if f[0] > 80]),
        "modules_over_500": sorted(
            f"{p.relative_to(ROOT).as_posix()} {n}"
            for p in files
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
        ),
        "biggest_classes": [f"{name} {size}" for size, name in sorted(classes, reverse=True)[:5]],
        "biggest_functions": [f"{name} {size}" for size, name in sorted(functions, reverse=True)[:8]],
    }


def main() -> None:
    """Print the measures; with --json, write them too."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = measure()
    for key, value in result.items():
        if isinstance(value, list):
            print(f"{key} ({len(value)}):")
            for item in value:
                print(f"  {item}")
        else:
            print(f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
