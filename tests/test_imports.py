"""The house's imports run one way: a module never imports one above it (docs/design.md, "The house").

Read from the source with `ast`, so a cycle kept alive by an import inside a
function fails here as well: no package module may be imported inside a function.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jaxswarm"

# Floors, ground first. A module may import modules on its own floor or below.
FLOORS = [
    ("data", "results", "costs", "ops"),
    ("space",),
    ("design", "pso", "optim", "schedules", "task"),
    ("strategies", "optuna_record"),
    ("models",),
    ("train", "saved"),
    ("execute",),
    ("layouts",),
    ("study",),
    ("tuners",),
    ("sklearn",),
    ("cli",),
]
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, parts


def _room(parts) -> str | None:
    """The floor plan's name of a module: its first component (None for the package's face)."""
    return None if parts == ("__init__",) else parts[0]


def _imported(node) -> list[str]:
    """Package rooms an import statement reaches."""
    if isinstance(node, ast.Import):
        return [a.name.split(".")[1] for a in node.names if a.name.startswith("jaxswarm.")]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module == "jaxswarm":
            return [a.name for a in node.names]
        if node.module.startswith("jaxswarm."):
            return [node.module.split(".")[1]]
    return []


def _imports(tree):
    """(import node, inside a function?) for every import in a module."""
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.append((child, in_function))
            visit(child, inner)

    visit(tree, False)
    return out


def test_every_module_has_a_floor():
    rooms = {_room(parts) for _, parts in _modules()} - {None}
    assert rooms <= set(FLOOR), f"place {sorted(rooms - set(FLOOR))} in FLOORS (and the house in docs/design.md)"


def test_no_module_imports_one_above_it():
    bad = []
    for path, parts in _modules():
        room = _room(parts)
        if room is None:  # the package's face re-exports the public API
            continue
        for node, _ in _imports(ast.parse(path.read_text())):
            for target in _imported(node):
                if target in FLOOR and FLOOR[target] > FLOOR[room]:
                    bad.append(f"{'/'.join(parts)}.py:{node.lineno} imports {target} (floor {FLOOR[target]} "
                               f"> {room}'s {FLOOR[room]})")
    assert not bad, "\n".join(bad)


def test_no_package_module_is_imported_inside_a_function():
    bad = []
    for path, parts in _modules():
        for node, in_function in _imports(ast.parse(path.read_text())):
            if in_function and _imported(node):
                bad.append(f"{'/'.join(parts)}.py:{node.lineno}")
    assert not bad, "package imports inside functions: " + ", ".join(bad)


def test_the_check_itself_sees_upward_and_inner_imports():
    """Guard against a vacuous pass: the reader finds both kinds of violation in a sample."""
    tree = ast.parse("from jaxswarm import study\ndef f():\n    from jaxswarm.models import mlp\n")
    found = [(_imported(n), inner) for n, inner in _imports(tree)]
    assert found == [(["study"], False), (["models"], True)]
