"""Session fixtures shared by every tier (each tier's own are in its conftest.py;
helpers that are not fixtures are in tests/support).

Integration tests create everything under a unique prefix (images, containers,
networks, state directory) and remove it at the end of the session, even when
tests fail. While iterating, `WB_TEST_PREFIX=wbdev` reuses one prefix across
runs and keeps it (the base is then built once, not per run).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import REPO, config_data, write_config
from workbench.core import config as wb_config

# Role tests (tests/roles) run against images, by the bake, never against this
# machine; tests/e2e/sandbox_tree and formulas_tree are small checkouts tests copy.
collect_ignore = ["roles", "e2e/sandbox_tree", "e2e/formulas_tree", "support"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The tier is the folder: tests/unit, tests/integration, tests/e2e.
    for item in items:
        tier = Path(str(item.fspath)).relative_to(REPO / "tests").parts[0]
        if tier in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def wb_prefix() -> Iterator[str]:
    """A prefix no other run uses; everything under it is removed at the end."""
    kept = os.environ.get("WB_TEST_PREFIX")
    prefix = kept or f"wbt-{secrets.token_hex(3)}"
    yield prefix
    if not kept:
        from workbench.core import engine

        engine.remove_prefix(prefix)


@pytest.fixture(scope="session")
def wb_state(wb_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's state directory (builds, ledger, registry data)."""
    if os.environ.get("WB_TEST_PREFIX"):
        path = Path("/var/tmp") / f"{wb_prefix}-state"
        path.mkdir(exist_ok=True)
        yield path
        return
    path = tmp_path_factory.mktemp(f"{wb_prefix}-state")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def wb_config_path(wb_prefix: str, wb_state: Path) -> Path:
    """A workbench.toml for this session: the repo's, under the test prefix."""
    return write_config(wb_state / "workbench.toml", config_data(wb_prefix, wb_state))


@pytest.fixture(scope="session")
def wb_cfg(wb_config_path: Path) -> wb_config.Config:
    return wb_config.load(wb_config_path)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip nothing: the engine is part of the test set-up (`make test` starts it)."""
    from workbench.core import engine

    engine.client()


@pytest.fixture(scope="session")
def base_image(wb_cfg: wb_config.Config, docker_engine: None) -> Any:
    """The vanilla base, built once per session under the test prefix."""
    from workbench.build import base

    return base.build_base(wb_cfg)
