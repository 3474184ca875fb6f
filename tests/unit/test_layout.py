"""Rules of the test tree that pytest enforces late, with a confusing error, or not at all."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
TIERS = [TESTS / tier for tier in ("unit", "integration", "e2e")]
# Copied checkouts that tests bake or provision: their files are data, not tests.
DATA_TREES = [TESTS / "e2e" / "sandbox_tree", TESTS / "e2e" / "formulas_tree", TESTS / "unit" / "data"]


def tier_python_files() -> list[Path]:
    return [
        p for tier in TIERS for p in tier.rglob("*.py") if not any(p.is_relative_to(tree) for tree in DATA_TREES)
    ]


def test_module_basenames_are_unique_across_tiers() -> None:
    # Without __init__.py files pytest imports test modules by basename: two
    # tests/*/test_x.py break the whole run ("import file mismatch").
    counts = Counter(p.name for p in tier_python_files() if p.name != "conftest.py")
    twice = [name for name, n in counts.items() if n > 1]
    assert not twice, f"test modules with the same name in several folders: {twice}"


def test_tiers_hold_only_tests_and_their_conftest() -> None:
    # A helper module beside the tests is imported under two names (`x` and
    # `tests.e2e.x`) as soon as two files spell it differently; tests/support is its home.
    helpers = [str(p.relative_to(TESTS)) for p in tier_python_files() if not p.name.startswith(("test_", "conftest"))]
    assert not helpers, f"helpers belong in tests/support: {helpers}"


def test_nothing_imports_a_conftest() -> None:
    # Each tier has its own conftest.py; pytest imports every one of them as
    # `conftest`, so `from conftest import x` gets whichever was imported last.
    offenders = []
    for path in [*tier_python_files(), *(TESTS / "support").rglob("*.py"), *(TESTS.parent / "bench").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(name == "conftest" or name.endswith(".conftest") for name in names):
                offenders.append(f"{path.relative_to(TESTS.parent)}:{node.lineno}")
    assert not offenders, f"import helpers from tests.support, not from a conftest: {offenders}"


def test_support_holds_no_tests() -> None:
    # tests/support is not collected (tests/conftest.py's collect_ignore).
    assert not list((TESTS / "support").rglob("test_*.py"))
