"""The architecture is visible in the tree: data → models → eval → pipeline → cli, no upward imports."""

import ast
from pathlib import Path

import relevel

PACKAGE = Path(relevel.__file__).parent
# Lower rank may not import higher rank. errors and config sit beside the layers they serve.
RANKS = {"errors": 0, "data": 1, "models": 2, "config": 2, "eval": 3, "pipeline": 4, "cli": 5, "__main__": 6}


def layer_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else module


def test_no_upward_imports():
    violations = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        layer = relative.parts[1] if len(relative.parts) > 2 else relative.parts[-1]
        if layer == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                if name.startswith("relevel."):
                    target = layer_of(name)
                    if RANKS.get(target, 0) > RANKS[layer]:
                        violations.append(f"{relative} imports {name}")
    assert not violations
