"""The packages' dependency direction, checked on the source (imports anywhere in a module, lazy ones included):
data_pipeline imports nothing of ours, finetune imports data_pipeline at most, sampling may import both; and no
package's modules import each other in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data_pipeline", "finetune", "sampling")
MAY_IMPORT = {"data_pipeline": set(), "finetune": {"data_pipeline"}, "sampling": {"data_pipeline", "finetune"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = [ast.Pass()]  # imports for annotations only, never run
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return found


def our_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (REPO_ROOT / package).rglob("*.py")}


def test_packages_import_only_downstream_of_themselves():
    wrong = []
    for name, path in our_modules().items():
        own = name.split(".")[0]
        for target in imported_modules(path):
            other = target.split(".")[0]
            if other in PACKAGES and other != own and other not in MAY_IMPORT[own]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles_between_modules():
    modules = our_modules()
    graph = {name: {t for t in imported_modules(path) if t in modules and t != name} for name, path in modules.items()}
    # a package's __init__ re-exporting its children is not a cycle of the children
    graph = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(trail[trail.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)
