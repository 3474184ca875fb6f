from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.config import REPO, config_data, write_config
from workbench.cli import demo
from workbench.core import config as wb_config
from workbench.core.errors import WorkbenchError


def test_changed_checkout_is_a_copy_with_one_change(tmp_path: Path) -> None:
    cfg = wb_config.load(write_config(tmp_path / "workbench.toml", config_data("wbt-demo", tmp_path / "state")))
    changed = demo.changed_checkout(cfg)
    assert changed.root == tmp_path / "state" / "demo" / "checkout"
    assert changed.state_dir == cfg.state_dir, "ledger, registry and cache stay shared"
    app = (changed.root / demo.CHANGED_FILE).read_text()
    assert demo.CHANGED in app and demo.ORIGINAL not in app
    assert demo.CHANGED in (changed.root / demo.CHANGED_TEST).read_text()
    # The user's own tree is untouched.
    assert demo.ORIGINAL in (REPO / demo.CHANGED_FILE).read_text()
    assert (changed.root / "salt/base").is_dir()
    assert set(changed.roles) == set(cfg.roles)


def test_changed_checkout_refuses_a_tree_without_the_line(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    for part in demo.CHECKOUT_PARTS:
        source = REPO / part
        if source.exists():
            shutil.copytree(source, checkout / part)
    (checkout / demo.CHANGED_FILE).write_text("# no title here\n")
    data = config_data("wbt-demo", tmp_path / "state")
    data["workbench"]["checkout"] = str(checkout)
    cfg = wb_config.load(write_config(tmp_path / "workbench.toml", data))
    with pytest.raises(WorkbenchError, match="no longer holds it"):
        demo.changed_checkout(cfg)


def test_demo_needs_a_frontend(tmp_path: Path) -> None:
    cfg = wb_config.load(write_config(tmp_path / "workbench.toml", config_data("wbt-demo", tmp_path / "state")))
    with pytest.raises(WorkbenchError, match=r"\[environments.sandbox\] frontend_port"):
        demo.run(cfg, "sandbox")
