"""The house rules of the code, checked on the source: imports only run down the floors, no module
imports another in a circle, and no function is longer than a screen.

Floors, lowest first (a module may import its own floor and those below it, never above):
the library (`diffusion`, by sub-package), then `expectations`, `evaluation`, `tasks`, `flows`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("diffusion", "expectations", "evaluation", "tasks", "flows")
# (module prefix, floor): the longest matching prefix gives a module's floor
FLOORS = (
    ("diffusion.errors", 0),
    ("diffusion.typed", 0),
    ("diffusion.hashing", 0),
    ("diffusion.yamlfile", 0),
    ("diffusion.config", 1),
    ("diffusion.data", 2),
    ("diffusion.privacy", 3),
    ("diffusion.encoding", 4),
    ("diffusion.model", 5),
    ("diffusion.training", 6),
    ("diffusion.bundle", 7),
    ("diffusion.conditional", 8),  # the old path of diffusion.bundle.conditional, for registered models
    ("diffusion", 0),  # the package's own __init__ (a docstring)
    ("expectations", 10),
    ("evaluation", 11),
    ("tasks", 12),
    ("flows", 13),
)
# no function in these packages is longer than this many lines (signature and docstring included)
MAX_FUNCTION_LINES = 60
LIBRARY = ("diffusion", "expectations", "evaluation")


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def floor(module: str) -> int:
    matches = [(len(p), f) for p, f in FLOORS if module == p or module.startswith(p + ".")]
    assert matches, f"{module} is on no floor: add it to FLOORS"
    return max(matches)[1]


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules that `module` imports (at the top or inside a function)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_imports_never_run_up_a_floor():
    ups = [
        f"{m} (floor {floor(m)}) imports {d} (floor {floor(d)})"
        for m, deps in graph().items()
        for d in deps
        if floor(d) > floor(m)
    ]
    assert not ups, "\n".join(ups)


def test_no_module_imports_another_in_a_circle():
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for d in sorted(g[m]):
            if d == m.rpartition(".")[0]:  # a module naming its own package's __init__ is not a circle of code
                continue
            if state.get(d) == 1:
                cycles.append(trail[trail.index(d) :] + [d])
            elif d not in state:
                visit(d, trail + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", LIBRARY + ("tasks", "flows"))
def test_no_function_is_longer_than_a_screen(package):
    long = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "\n".join(long)


def test_the_library_never_imports_the_orchestration():
    forbidden = ("prefect", "mlflow")
    hits = []
    for package in LIBRARY:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                hits += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in forbidden]
    assert not hits, "\n".join(hits)


def test_the_checker_sees_a_planted_upward_import_and_a_circle(tmp_path, monkeypatch):
    """The rules can fail: a schema importing the model folder is up a floor, two modules that
    import each other are a circle."""
    known = {"diffusion.data.schema": tmp_path / "a.py", "diffusion.bundle.folder": tmp_path / "b.py"}
    known["diffusion.data.schema"].write_text("from diffusion.bundle.folder import HealthGymModel\n")
    known["diffusion.bundle.folder"].write_text("import diffusion.data.schema\n")
    deps = {m: imports(m, p, known) for m, p in known.items()}
    assert deps == {"diffusion.data.schema": {"diffusion.bundle.folder"}, "diffusion.bundle.folder": {"diffusion.data.schema"}}
    assert floor("diffusion.bundle.folder") > floor("diffusion.data.schema")
