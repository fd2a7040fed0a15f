"""The layer order of shapediff, read from the import graph (every import, in-function ones included).

Dependencies point one way (docs/architecture.md): a package imports only packages of lower layers. Above all,
models/ (sample, complete, save, load) imports nothing from evaluation/, viz/, training/ or scripts/: models
write no reports. And the layers talk through declared interfaces (ShapeModel), never by probing with hasattr.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "shapediff"

# Lowest first; a package may import its own modules and those of strictly lower layers.
LAYERS = [
    {"_optional", "io_atomic", "batch_split", "config", "devices", "randomness", "threads", "value_checks"},
    {"preflight", "cli"},  # what scripts need before any work: checks, one-line errors, thread settings
    {"diffusion", "nn", "geometry"},
    {"denoisers", "autoencoders", "metrics", "data", "viz"},
    {"models"},
    {"evaluation", "convert"},  # convert: other projects' checkpoints -> model directories
    {"training"},
    {"__init__"},  # the package root re-exports the user-facing API
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def _imports(path: Path) -> set[str]:
    """Top-level shapediff packages (and 'scripts') that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "shapediff" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] == "scripts":
                found.add("scripts")
    return found


@functools.lru_cache(maxsize=1)
def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).parts
        package = rel[0][: -len(".py")] if len(rel) == 1 else rel[0]
        graph.setdefault(package, set()).update(_imports(path) - {package})
    return graph


def test_every_package_has_a_layer():
    assert set(_graph()) <= set(LEVEL), f"add {sorted(set(_graph()) - set(LEVEL))} to LAYERS"


@pytest.mark.parametrize("package", sorted(LEVEL))
def test_imports_point_down_the_layers(package):
    graph = _graph()
    if package not in graph:
        pytest.skip(f"no package {package!r} in shapediff")
    upward = sorted(dep for dep in graph[package] if dep not in LEVEL or LEVEL[dep] >= LEVEL[package])
    assert not upward, f"shapediff/{package} imports {upward}, which are not below it (LAYERS in {__file__})"


def test_models_import_nothing_that_reports_trains_or_runs():
    forbidden = {"evaluation", "viz", "training", "scripts"} & _graph()["models"]
    assert not forbidden, f"shapediff/models imports {sorted(forbidden)}"


@pytest.mark.parametrize("package", ["models", "evaluation", "training"])
def test_no_hasattr_probing_between_layers(package):
    """The trainer and evaluation call ShapeModel's declared hooks; nothing asks a model what it has."""
    offenders = []
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr"):
                target = node.args[0] if node.args else None
                if node.func.id == "hasattr" or (isinstance(target, ast.Name) and "model" in target.id):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"probing instead of the ShapeModel contract: {offenders}"
