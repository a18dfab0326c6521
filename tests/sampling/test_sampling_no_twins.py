"""No two modules of `sampling` define a public function, class or constant of the same name: a reader who meets
`to_pil` or `LIMITS` should not have to check which of two meanings it has. The subcommand protocol's
`add_arguments`/`run` are the one intended exception."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SAMPLING = Path(__file__).resolve().parents[2] / "sampling"
PROTOCOL = {"add_arguments", "run"}


def _public_names(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield node.name
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            yield from (t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper())


def test_no_public_name_is_defined_twice():
    where = defaultdict(list)
    for path in sorted(SAMPLING.rglob("*.py")):
        for name in _public_names(ast.parse(path.read_text(encoding="utf-8"))):
            where[name].append(str(path.relative_to(SAMPLING)))
    twins = {name: files for name, files in where.items() if len(files) > 1 and name not in PROTOCOL}
    assert not twins, twins
