"""Fixtures of the end-to-end tier: real bakes under the session's prefix and state.

A role baked here is baked once per session (and once across runs with
`WB_TEST_PREFIX`): every later bake of it with the same inputs is a cache hit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support import qemu_background
from workbench.build import bake
from workbench.core import config as wb_config


def pytest_collection_finish(session: pytest.Session) -> None:
    qemu_background.start_if_collected(session)


def pytest_sessionfinish(session: pytest.Session) -> None:
    qemu_background.finish()


@pytest.fixture(scope="session")
def qemu_bakes() -> qemu_background.QemuBakes:
    """The background qemu bakes (tests/support/qemu_background.py)."""
    return qemu_background.started()


@pytest.fixture(scope="session")
def baked(wb_cfg: wb_config.Config, base_image: Any) -> Callable[[str], bake.BakeResult]:
    """`baked(role)`: the role's accepted image under the session's prefix, baked and verified
    by the pipeline the first time, found by its inputs hash after that."""
    done: dict[str, bake.BakeResult] = {}

    def bake_once(role: str) -> bake.BakeResult:
        if role not in done:
            done[role] = bake.bake_role(wb_cfg, role)
        return done[role]

    return bake_once
