"""Fixtures of the integration tier: real programs and the real engine, stand-ins for what bakes make."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.config import config_data, write_config
from tests.support.netboot import standin_live
from workbench.core import config as wb_config
from workbench.netboot import netns, node


@pytest.fixture()
def nb_cfg(wb_prefix: str, tmp_path: Path) -> Iterator[wb_config.Config]:
    """A configuration under a prefix and state of its own, with stand-ins for the live image's files;
    at the end no node of it runs and its namespace is gone."""
    # Short: the LAN tests name interfaces `<prefix>-lan` (at most 15 characters).
    prefix = f"{wb_prefix}n"
    cfg = wb_config.load(write_config(tmp_path / "workbench.toml", config_data(prefix, tmp_path / "state")))
    standin_live(cfg)
    try:
        yield cfg
    finally:
        node.stop(cfg)
        assert not netns.exists(netns.namespace_name(prefix))
