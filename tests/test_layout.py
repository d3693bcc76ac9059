"""The tree's rules, read from the source: no import cycle between modules or packages, no private name imported
from another module, and no Prefect in tasks/ (flows/ is the wiring)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = ("tasks", "flows", "localapi")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for top in OURS for p in (ROOT / top).rglob("*.py")}


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import of ours in the file, at any depth."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] not in OURS:
                continue
            names = [a.name for a in node.names]
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in known]
            if submodules:  # `from tasks.call import send`: the module itself
                out += [(m, [], node.lineno) for m in submodules]
            else:
                out.append((base, names, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] in OURS]
    return out


def graph(level) -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        for target, _, _ in imports(path, known):
            a, b = level(name), level(target)
            if a != b and not b.startswith(a + ".") and not a.startswith(b + "."):
                edges[a].add(b)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected part that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def package_of(module: str) -> str:
    """tasks.call.send -> tasks.call; flows.run -> flows.run; a top-level module is its own package."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_import_cycle_between_modules():
    assert cycles(graph(lambda m: m)) == []


def test_no_import_cycle_between_packages():
    assert cycles(graph(package_of)) == []


def test_no_private_name_is_imported_from_another_module():
    known = modules()
    found = [f"{module_name(p)}:{line} imports {target}.{n}" for p in known.values()
             for target, names, line in imports(p, known) for n in names if n.startswith("_")]
    assert found == []


def test_tasks_do_not_import_prefect():
    """Plain steps, testable without Prefect: the Prefect half of anything lives in flows/."""
    found = []
    for path in (ROOT / "tasks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            found += [f"{module_name(path)}:{node.lineno} imports {n}" for n in names if n.split(".")[0] == "prefect"]
    assert found == []


def test_the_checks_see_a_cycle_and_a_private_import(tmp_path):
    """The helpers above find what they look for (a check that cannot fail proves nothing)."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert package_of("tasks.call.send") == "tasks.call" and package_of("flows.run") == "flows.run"
