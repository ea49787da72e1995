"""The architecture, checked: imports only point down the layers, and no module imports itself round.

Every import counts, the ones inside functions too (they are how llada keeps `--help` instant, and a
lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "llada_cli"

# Lowest first. A module may import from its own layer and the layers below it, never above.
LAYERS = [
    ("llada_cli", "llada_cli.errors", "llada_cli.limits", "llada_cli.paths"),
    ("llada_cli.io",),
    ("llada_cli.models",),
    ("llada_cli.sampling",),
    ("llada_cli.inputs",),
    ("llada_cli.settings",),
    ("llada_cli.runtime",),
    ("llada_cli.checkpoint",),
    ("llada_cli.weights",),
    ("llada_cli.hub",),
    ("llada_cli.memory",),
    ("llada_cli.pipelines",),
    ("llada_cli.records",),
    ("llada_cli.diagnostics",),
    ("llada_cli.engine",),
    ("llada_cli.batch",),
    ("llada_cli.server",),
    ("llada_cli.cli",),
    ("llada_cli.__main__",),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every llada_cli module this file imports, resolved to absolute names."""
    name, is_pkg = module_name(path), path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("llada_cli")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            if not base.startswith("llada_cli"):
                continue
            for alias in node.names:  # `from pkg import module` names a module
                candidate = f"{base}.{alias.name}"
                is_module = any(
                    (PACKAGE.parent / (candidate.replace(".", "/") + s)).exists()
                    for s in (".py", "/__init__.py")
                )
                found.add(candidate if is_module else base)
    return found - {name}


def rank(module: str) -> int:
    for i, members in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members if m != "llada_cli"):
            return i
    assert module == "llada_cli", f"{module} is in no layer: add it to LAYERS"
    return 0


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_every_import_points_down():
    upward = [
        f"{a} (layer {rank(a)}) imports {b} (layer {rank(b)})"
        for a, targets in GRAPH.items()
        for b in targets
        if rank(b) > rank(a)
    ]
    assert upward == []


def test_nothing_below_the_cli_imports_typer_rich_or_the_cli():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if name.startswith("llada_cli.cli") or name == "llada_cli.__main__":
            continue
        text = path.read_text()
        if any(f"import {lib}" in text or f"from {lib}" in text for lib in ("typer", "rich")):
            offenders.append(name)
        offenders += [f"{name} -> {t}" for t in GRAPH[name] if t.startswith("llada_cli.cli")]
    assert offenders == []


def test_no_import_circles():
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt not in GRAPH:
                continue
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []
