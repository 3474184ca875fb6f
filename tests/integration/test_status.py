"""`fab status`: the whole workbench on one screen, and as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.commands import fab
from workbench.core import config as wb_config
from workbench.ops import status as wb_status


def test_status_json_covers_every_part(wb_config_path: Path, wb_cfg: wb_config.Config, base_image: Any) -> None:
    proc = fab("status", "--json", config=wb_config_path, check=True)
    data = json.loads(proc.stdout)
    assert set(data) == {f.name for f in wb_status.WorkbenchStatus.__dataclass_fields__.values()}
    assert data["prefix"] == wb_cfg.prefix
    assert data["base"]["built"] is True and data["base"]["tag"] == base_image.tag
    assert [r["role"] for r in data["roles"]] == list(wb_cfg.roles)
    assert set(data["registry"]) == {"name", "running", "address", "pid", "data", "size"}
    assert data["registry"]["address"] == f"{wb_cfg.registry.host}:{wb_cfg.registry.port}"
    assert data["cache"]["running"] is False, "the package cache runs for bakes only"
    assert {e["name"] for e in data["environments"]} <= set(wb_cfg.environments)
    nodes = data["netboot"]["nodes"]
    assert nodes and {"name", "mac", "address", "last"} == set(nodes[0])
    assert data["problems"] == []


def test_status_screen_names_each_part(wb_config_path: Path, base_image: Any) -> None:
    shown = fab("status", config=wb_config_path, check=True).stdout.splitlines()
    heads = [line.split()[0] for line in shown if line and not line.startswith(" ")]
    assert heads == ["workbench", "base", "roles", "environments", "registry", "package", "sandboxes", "netboot"]
    assert len(shown) < 40, "one screen"
