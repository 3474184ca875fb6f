"""Releases of really baked images: the app role (nginx + gunicorn, from salt/app) behind the
baked frontend role, on the real engine and registry, under steady load.

promote, a second promote (a fresh bake), rollback by tag serving the first
release's digest, the history with all three, release.diff between them.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.commands import fab
from tests.support.config import config_data, fresh_dir, write_config
from tests.support.net import free_port
from tests.support.releasekit import assert_served
from workbench.build import bake
from workbench.core import config as wb_config
from workbench.core import engine
from workbench.release import loadgen, registry, target


@pytest.fixture(scope="module")
def rel(wb_prefix: str, wb_state: Path, base_image: Any) -> Iterator[tuple[wb_config.Config, Path]]:
    state = fresh_dir(wb_state / "releases-e2e")
    data = config_data(
        wb_prefix,
        state,
        registry={"port": free_port()},
        environments={"staging": {"frontend_port": free_port(), "variables": {"APP_SETTING": "from-staging"}}},
    )
    path = write_config(state / "workbench.toml", data)
    config = wb_config.load(path)
    try:
        yield config, path
    finally:
        for container in engine.containers({engine.PREFIX_LABEL: config.prefix}):
            if container.labels.get(target.ENV_LABEL) == "staging":
                engine.remove_container(container)
        for network in engine.client().networks.list(names=[f"{config.prefix}-staging"]):
            network.remove()
        registry.down(config)
        shutil.rmtree(state, ignore_errors=True)


def health(config: wb_config.Config) -> dict[str, str]:
    url = f"http://127.0.0.1:{config.environment('staging').frontend_port}/health"
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.loads(response.read()))


def test_promote_promote_rollback_history_diff(rel: tuple[wb_config.Config, Path]) -> None:
    config, path = rel
    first_bake = {r.role: r for r in bake.bake(config, ["frontend", "app"])}["app"]
    fab("release.promote", "app", "--env", "staging", "--version", str(first_bake.version), "--message", "first",
        config=path, check=True)
    first = json.loads(fab("release.list", "--json", config=path, check=True).stdout)[0]
    assert health(config) == {"status": "ok", "role": "app", "release": first["tag"],
                              "version": str(first_bake.version), "environment": "staging"}

    second_bake = bake.bake_role(config, "app", force=True)
    assert second_bake.version > first_bake.version
    url = f"http://127.0.0.1:{config.environment('staging').frontend_port}/health"
    with loadgen.Load(url) as load:
        proc = fab("release.promote", "app", "--env", "staging", "--message", "second", config=path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_served(load.result, 10)
    second = json.loads(fab("release.list", "--json", config=path, check=True).stdout)[0]
    assert health(config)["release"] == second["tag"] and second["version"] == second_bake.version

    with loadgen.Load(url) as load:
        proc = fab(f"release.rollback:{first['tag']}", config=path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_served(load.result, 10)
    history = json.loads(fab("release.history", "--env", "staging", "--json", config=path, check=True).stdout)
    assert [(r["action"], r["rollback_of"]) for r in history] == [
        ("promote", None), ("promote", None), ("rollback", first["tag"]),
    ]
    assert history[2]["digest"] == first["digest"]
    assert history[2]["replaces"] == second["tag"]
    # The first release was kept running as the warm standby: the rollback switched its
    # instances back in, and they answer as the release they were started for.
    assert (history[2]["path"], history[2]["runs"]) == ("warm", first["tag"])
    assert health(config) == {"status": "ok", "role": "app", "release": first["tag"],
                              "version": str(first_bake.version), "environment": "staging"}

    diff = json.loads(fab("release.diff", first["tag"], second["tag"], "--json", config=path, check=True).stdout)
    assert (diff["a"], diff["b"]) == (first["tag"], second["tag"])
    assert diff["inputs_changed"] == (first["inputs"] != second["inputs"])
    # The same role baked twice minutes apart: no package comes or goes.
    assert diff["added"] == {} and diff["removed"] == {}
