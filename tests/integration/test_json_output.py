"""`--json` is pure JSON on stdout in every case: after a recovery, and on failure.

A promote killed with -9 midway leaves an intent; the next read recovers it and
says so on stderr, while its stdout still parses. Images are stand-ins
(tests/support/releasekit.py) under a prefix of their own.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.commands import fab, kill_9_after
from tests.support.config import config_data, write_config
from tests.support.net import free_port
from tests.support.releasekit import clean_environments, make_app, make_frontend
from workbench.core import config as wb_config
from workbench.core import engine


@pytest.fixture(scope="module")
def cfg_path(wb_prefix: str, wb_state: Path, base_image: Any) -> Iterator[Path]:
    prefix = f"{wb_prefix}-json"
    state = wb_state / "json-output"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    data = config_data(prefix, state, registry={"port": free_port()},
                       environments={"staging": {"frontend_port": free_port()}})
    path = write_config(state / "workbench.toml", data)
    config = wb_config.load(path)
    try:
        make_frontend(config, base_image.tag)
        make_app(config, base_image.tag, 1)
        make_app(config, base_image.tag, 2)
        yield path
    finally:
        clean_environments(config)
        engine.remove_prefix(prefix)
        shutil.rmtree(state, ignore_errors=True)


def test_json_after_a_recovery_is_still_only_json(cfg_path: Path) -> None:
    fab("release.promote", "app", "--env", "staging", "--version", "1", config=cfg_path, check=True)
    kill_9_after(cfg_path, "started", "release.promote", "app", "--env", "staging", "--version", "2")
    listed = fab("release.list", "--json", config=cfg_path, check=True)
    assert "recover" in listed.stderr, listed.stderr
    serving = json.loads(listed.stdout)
    assert [(r["tag"], r["version"]) for r in serving] == [("app-1", 1)]
    history = json.loads(fab("release.history", "--json", config=cfg_path, check=True).stdout)
    assert [r["status"] for r in history] == ["released", "aborted"]
    status = json.loads(fab("status", "--json", config=cfg_path, check=True).stdout)
    staging = next(e for e in status["environments"] if e["name"] == "staging")
    assert [(r["tag"], r["healthy"]) for r in staging["releases"]] == [("app-1", True)]


def test_json_on_failure_is_the_error_and_its_exit_code(cfg_path: Path) -> None:
    proc = fab("release.diff", "app-1", "app-77", "--json", config=cfg_path)
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert set(data) == {"error", "exit_code"} and data["exit_code"] == 1 and "app-77" in data["error"]
    proc = fab("release.history", "--env", "nowhere", "--json", config=cfg_path)
    assert proc.returncode == 2 and json.loads(proc.stdout)["exit_code"] == 2
    assert "unknown environment 'nowhere'" in json.loads(proc.stdout)["error"]
