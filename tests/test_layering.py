"""The algorithm packages stay pure: ``packing/`` and ``pruning_data/`` import nothing from the
application layer (``pipelines/``, ``training/``) and no engine or I/O framework, at module level
or inside a function."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("pipelines", "training", "ray", "apache_beam", "pyarrow", "datasets", "fsspec")


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module, node.lineno


@pytest.mark.parametrize("package", ["packing", "pruning_data"])
def test_algorithm_packages_import_no_application_or_engine_code(package):
    bad = [f"{p.relative_to(ROOT)}:{line} imports {name}"
           for p in sorted((ROOT / package).rglob("*.py"))
           for name, line in _imports(p) if name.split(".")[0] in FORBIDDEN]
    assert not bad, "\n".join(bad)
