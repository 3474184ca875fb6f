"""Rules of the test tree that pytest enforces only at collection time, with a confusing error."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
NOT_COLLECTED = (TESTS / "roles", TESTS / "e2e" / "sandbox_tree")


def test_module_basenames_are_unique_across_tiers() -> None:
    # Without __init__.py files pytest imports test modules by basename: two
    # tests/*/test_x.py break the whole run ("import file mismatch").
    modules = [
        p for p in TESTS.rglob("test_*.py") if not any(p.is_relative_to(skip) for skip in NOT_COLLECTED)
    ]
    twice = [name for name, count in Counter(p.name for p in modules).items() if count > 1]
    assert not twice, f"test modules with the same name in several folders: {twice}"


def test_only_the_top_conftest_is_importable_as_conftest() -> None:
    # Tests import helpers with `from conftest import ...`; a second collected
    # conftest.py would shadow tests/conftest.py for some of them.
    collected = [
        p for p in TESTS.rglob("conftest.py") if not any(p.is_relative_to(skip) for skip in NOT_COLLECTED)
    ]
    assert collected == [TESTS / "conftest.py"]
