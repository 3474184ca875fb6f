"""The local registry: `fab registry.up/down/status` in the background, and the context manager."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.commands import fab
from tests.support.config import config_data, fresh_dir, write_config
from tests.support.net import free_port
from workbench.core import config as wb_config
from workbench.core.errors import ReleaseError
from workbench.release import registry


@pytest.fixture()
def reg_config(wb_prefix: str, wb_state: Path) -> Iterator[tuple[wb_config.Config, Path]]:
    state = fresh_dir(wb_state / "registry-test")
    path = write_config(state / "workbench.toml", config_data(wb_prefix, state, registry={"port": free_port()}))
    config = wb_config.load(path)
    try:
        yield config, path
    finally:
        registry.down(config)
        shutil.rmtree(state, ignore_errors=True)


def test_up_status_down_in_the_background(reg_config: tuple[wb_config.Config, Path]) -> None:
    config, path = reg_config
    assert "registry stopped" in fab("registry.status", config=path, check=True).stdout
    up = fab("registry.up", config=path, check=True).stdout
    assert f"registry started on 127.0.0.1:{config.registry.port}" in up
    status = json.loads(fab("registry.status", "--json", config=path, check=True).stdout)
    assert status["running"] is True and status["data"] == str(config.state_dir / "registry/data")
    pid = status["pid"]
    assert Path(f"/proc/{pid}").exists()
    assert "already running" in fab("registry.up", config=path, check=True).stdout
    assert registry.answers("127.0.0.1", config.registry.port)
    assert fab("registry.down", config=path, check=True).stdout.strip() == "registry stopped"
    assert not registry.answers("127.0.0.1", config.registry.port)
    assert "was not running" in fab("registry.down", config=path, check=True).stdout
    assert (config.state_dir / "registry/data").is_dir()


def test_serving_stops_its_daemon_and_refuses_a_foreign_one(reg_config: tuple[wb_config.Config, Path]) -> None:
    config, _ = reg_config
    with registry.serving(config) as reg:
        assert registry.answers(reg.host, reg.port)
        pid = reg.pid
        # Something (here: this registry) already answers on the port: a second one says so.
        with pytest.raises(ReleaseError, match="something else already answers"), registry.serving(config):
            pass
    assert not registry.answers("127.0.0.1", config.registry.port)
    assert not Path(f"/proc/{pid}").exists()


def test_down_never_signals_a_process_that_took_a_stale_pid(reg_config: tuple[wb_config.Config, Path]) -> None:
    config, path = reg_config
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        (registry.directory(config)).mkdir(parents=True, exist_ok=True)
        (registry.directory(config) / "registry.pid").write_text(f"{stranger.pid}\n")
        assert registry.status(config) is None
        assert "was not running" in fab("registry.down", config=path, check=True).stdout
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
