"""The agent layer (`rayrl/agent`) stays below the actors: it imports none of the modules
that run roles, place them or drive training."""

import ast
from pathlib import Path

AGENT_LAYER = Path(__file__).resolve().parents[2] / "rayrl" / "agent"
ABOVE = (
    "rayrl.actors",
    "rayrl.placement",
    "rayrl.trainer",
    "rayrl.training",
    "rayrl.pipeline",
    "rayrl.recovery",
    "rayrl.offline",
    "rayrl.serve",
)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_agent_layer_imports_nothing_above_it():
    offending = {
        f"{path.name}: {name}"
        for path in AGENT_LAYER.glob("*.py")
        for name in imported_modules(path)
        if name.startswith(ABOVE)
    }
    assert not offending
    assert len(list(AGENT_LAYER.glob("*.py"))) >= 8  # the walk saw the package
