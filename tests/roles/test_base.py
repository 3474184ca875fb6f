"""The base role: the basesystem alone, what every other role image carries."""

from __future__ import annotations

from typing import Any

import pytest
from basesystem import *  # noqa: F403 -- the checks of the basesystem itself

pytestmark = pytest.mark.usefixtures("monit_ready")


def test_baked_for_the_base_role(host: Any) -> None:
    assert host.file("/etc/workbench/role").content_string.strip() == "base"


def test_monit_supervises_no_service(monit_ready: dict[str, tuple[str, str]]) -> None:
    # Only monit's own entry for the machine: the base runs no service.
    assert [kind for _, kind in monit_ready.values()] == ["System"]


def test_start_hooks_directory(host: Any) -> None:
    hooks = host.file("/etc/workbench/init.d")
    assert hooks.is_directory
    assert hooks.user == "root" and hooks.mode == 0o755
