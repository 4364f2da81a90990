"""raftd/core must stay pure: the standard library only, and none of its effectful parts.

Parsing imports (rather than trusting a linter config) makes the rule fail loudly the day
someone adds ``import time`` for a quick debug.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "raftd" / "core"
FORBIDDEN = {
    "asyncio",
    "datetime",
    "logging",
    "multiprocessing",
    "os",
    "pathlib",
    "secrets",
    "selectors",
    "socket",
    "subprocess",
    "sys",
    "threading",
    "time",
    "trio",
    "io",
    "shutil",
    "signal",
    "tempfile",
}


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


CORE_FILES = sorted(CORE.glob("*.py"))


def test_core_has_modules() -> None:
    assert len(CORE_FILES) >= 4


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_imports_only_pure_stdlib(path: Path) -> None:
    for name in imported_modules(path):
        top = name.split(".")[0]
        if name.startswith("raftd.core") or top == "__future__":
            continue
        assert top in sys.stdlib_module_names, f"{path.name} imports non-stdlib {name}"
        assert top not in FORBIDDEN, f"{path.name} imports effectful module {name}"


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_uses_no_global_randomness(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
        ):
            # random.Random (the type, injected) is fine; random.randrange() etc. are not.
            assert node.attr == "Random", f"{path.name} calls random.{node.attr}"
