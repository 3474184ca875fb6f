"""Fixtures of the unit tier: configurations built in memory, no daemon, no program but Python."""

from __future__ import annotations

import pytest

from tests.support.netboot import EXAMPLE, netboot_config
from workbench.core import config as wb_config
from workbench.netboot import inventory


@pytest.fixture(scope="module")
def netboot_cfg(tmp_path_factory: pytest.TempPathFactory) -> wb_config.Config:
    """The netboot configuration (tests/support/netboot.py), a state directory per module."""
    return netboot_config(tmp_path_factory.mktemp("netboot-state"), "nbunit", "staging")


@pytest.fixture(scope="module")
def netboot_inv(netboot_cfg: wb_config.Config) -> inventory.Inventory:
    """The example inventory, netboot/inventory.toml."""
    return inventory.load(netboot_cfg, EXAMPLE)
