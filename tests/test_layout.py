"""The house rules, measured from the source: packages in pipeline order, each importing only downward, no
import loops, nothing loose at the top of the package, no module reaching into another's private names, and
no module over 400 lines. A new module must find its room in STAGES (README "How the code is laid out")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "facesearch"
# Pipeline order: a package may import its own modules and any package earlier in this list.
STAGES = [("core",), ("photos",), ("faces",), ("models",), ("store",), ("indexing",), ("eval",), ("search", "people"),
          ("learn",), ("report",), ("service", "install"), ("cli",)]
RANK = {pkg: i for i, group in enumerate(STAGES) for pkg in group}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` for every import of a facesearch module in ``path``, at any depth (lazy ones too)."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("facesearch")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("facesearch"):
                out.append((base, [a.name for a in node.names]))
    return out


def _target(module: str, names: list[str]) -> list[str]:
    """The modules an import really reaches: ``from pkg import mod`` reaches pkg.mod."""
    subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    return subs or [module]


def _graph() -> dict[str, set[str]]:
    return {m: {t for mod, names in _imports(m, p) for t in _target(mod, names) if t in MODULES and t != m}
            for m, p in MODULES.items()}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def test_every_module_lives_in_a_stage_package():
    loose = [m for m in MODULES if m.count(".") == 1 and m not in ("facesearch.__main__",) and _stage(m) is None]
    assert loose == [], f"modules outside the pipeline's packages: {loose}"
    assert set(RANK) >= {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}


def test_packages_import_only_downward():
    upward = [f"{a} -> {b}" for a, deps in _graph().items() for b in deps
              if _stage(a) and _stage(b) and RANK[_stage(b)] > RANK[_stage(a)]]
    assert upward == []


def test_no_import_loops():
    graph, seen, loops = _graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = "open"
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == "open":
                loops.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in seen:
                visit(nxt, stack + [nxt])
        seen[node] = "done"

    for m in sorted(graph):
        if m not in seen:
            visit(m, [m])
    assert loops == []


def test_no_module_imports_another_modules_private_names():
    reach = [f"{m}: from {mod} import {n}" for m, p in MODULES.items() for mod, names in _imports(m, p)
             for n in names if n.startswith("_") and not n.startswith("__") and mod != m]
    assert reach == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines; split it by job"
