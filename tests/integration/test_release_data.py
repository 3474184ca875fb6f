"""Stateful roles, replicas and `release.down` on the real engine.

A stand-in stateful role ("store": rows kept under /srv/data, declared as its
data path) goes through promote -> promote -> rollback -> failed promote ->
kill -9 mid-switch, and its rows survive each; a watcher checks that no two
containers ever have its volume mounted at once. The tests run in order and
build on each other's releases. The real MariaDB goes through the same switch
in tests/e2e/test_release_db.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.commands import fab
from tests.support.config import REPO, config_data, write_config
from tests.support.db import Writers
from tests.support.net import free_port
from tests.support.releasekit import assert_served, clean_environments, make_app, make_frontend, make_store
from workbench.core import config as wb_config
from workbench.core import engine
from workbench.core.errors import ConfigError, DeployFailed
from workbench.release import docker, ledger, loadgen, target
from workbench.release import releases as release


class Site:
    def __init__(self, path: Path, config: wb_config.Config) -> None:
        self.path = path
        self.config = config
        self.staging = config.environment("staging")
        self.volume = docker.DockerTarget(config).data_volume_name(self.staging, "store", "/srv/data")

    def fab(self, *args: str, check: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[
        str
    ]:
        if env:
            os.environ.update(env)
        try:
            return fab(*args, config=self.path, check=check)
        finally:
            for key in env or {}:
                os.environ.pop(key, None)

    def store(self) -> dict[str, object]:
        """GET /rows from the store serving in staging, through its container's address."""
        [instance] = docker.DockerTarget(self.config).instances(self.staging, "store")
        with urllib.request.urlopen(f"http://{instance.address}/rows", timeout=5) as response:
            return dict(json.loads(response.read()))

    def write(self, row: str) -> None:
        [instance] = docker.DockerTarget(self.config).instances(self.staging, "store")
        request = urllib.request.Request(f"http://{instance.address}/{row}", method="POST")
        urllib.request.urlopen(request, timeout=5).read()

    def serving(self, env: str = "staging", role: str = "store") -> str | None:
        with ledger.opened(self.config) as led:
            current = led.current(env, role)
        return current.tag if current else None

    def store_containers(self) -> list[str]:
        labels = {engine.PREFIX_LABEL: self.config.prefix, engine.ROLE_LABEL: "store"}
        return sorted(c.name for c in engine.containers(labels))


@pytest.fixture(scope="module")
def site(wb_prefix: str, wb_state: Path, base_image: object) -> Iterator[Site]:
    prefix = f"{wb_prefix}-data"
    engine.remove_prefix(prefix)
    state = wb_state / "release-data"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    data = config_data(
        prefix,
        state,
        registry={"port": free_port()},
        environments={
            "staging": {"frontend_port": free_port()},
            "scaled": {"frontend_port": free_port(), "replicas": 2},
            "warm": {"frontend_port": free_port(), "standby": 300},
            "brief": {"frontend_port": free_port(), "standby": 1},
        },
    )
    data["roles"]["store"] = {
        "ports": [80], "health": "/health", "data": ["/srv/data"], "tests": "tests/roles/test_app.py",
    }
    path = write_config(state / "workbench.toml", data)
    config = wb_config.load(path)
    base = base_image.tag  # type: ignore[attr-defined]
    try:
        make_frontend(config, base)
        make_app(config, base, 1)
        make_app(config, base, 2)
        make_store(config, base, 1)
        make_store(config, base, 2)
        make_store(config, base, 3, env={"FAKEAPP_STATUS": "500"})
        yield Site(path, config)
    finally:
        clean_environments(config)
        for volume in engine.client().volumes.list(filters={"label": f"{engine.PREFIX_LABEL}={prefix}"}):
            volume.remove(force=True)
        engine.remove_prefix(prefix)
        shutil.rmtree(state, ignore_errors=True)


def test_first_promote_fills_the_data_volume_from_the_image(site: Site) -> None:
    site.fab("release.promote", "store", "--env", "staging", "--version", "1", check=True)
    volume = engine.client().volumes.get(site.volume)
    assert volume.attrs["Labels"][docker.DATA_LABEL] == "/srv/data"
    assert volume.attrs["Labels"][target.ENV_LABEL] == "staging"
    assert site.store()["rows"] == ["from-the-image"]
    site.write("row1")
    assert site.store()["rows"] == ["from-the-image", "row1"]


def test_data_survives_a_promote_with_one_writer_at_a_time(site: Site) -> None:
    with Writers(site.volume) as writers:
        proc = site.fab("release.promote", "store", "--env", "staging", "--version", "2")
    assert proc.returncode == 0, proc.stderr
    assert "stopping store-1 cleanly" in proc.stderr
    assert writers.samples > 10 and writers.most == 1
    assert site.store() == {"release": "store-2", "rows": ["from-the-image", "row1"]}
    assert site.store_containers() == [f"{site.config.prefix}-staging-store-2"]
    assert ("staging", "store") not in release.standbys(site.config)  # never two containers on the data
    site.write("row2")


def test_data_survives_a_rollback(site: Site) -> None:
    with Writers(site.volume) as writers:
        site.fab("release.rollback", "store-1", check=True)
    assert writers.most == 1
    assert site.store() == {"release": "store-3", "rows": ["from-the-image", "row1", "row2"]}


def test_failed_promote_resumes_the_old_release_on_its_data(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker, "HEALTH_TIMEOUT", 5.0)
    with Writers(site.volume) as writers, pytest.raises(DeployFailed, match="store-4 was not switched to"):
        release.promote(site.config, "store", "staging", version=3)
    assert writers.most == 1
    assert release.history(site.config, "staging", "store")[-1].status == "failed"
    assert site.serving() == "store-3"
    assert site.store() == {"release": "store-3", "rows": ["from-the-image", "row1", "row2"]}
    assert site.store_containers() == [f"{site.config.prefix}-staging-store-3"]


@pytest.mark.parametrize("step", ["paused", "started"])
def test_kill_9_mid_switch_serves_one_release_with_its_data(site: Site, step: str) -> None:
    argv = [str(REPO / ".venv/bin/fab"), "release.promote", "store", "--env", "staging", "--version", "2"]
    env = {**os.environ, "WORKBENCH_CONFIG": str(site.path), release.PAUSE_ENV: step}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with ledger.opened(site.config) as led:
                if any(i.step == step for i in led.intents("staging", "store")):
                    break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the promote never reached {step}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    listing = site.fab("release.list", "--json", check=True)
    serving = {(r["environment"], r["role"]): r["tag"] for r in json.loads(listing.stdout)}
    assert serving[("staging", "store")] == "store-3"
    assert site.store() == {"release": "store-3", "rows": ["from-the-image", "row1", "row2"]}
    assert site.store_containers() == [f"{site.config.prefix}-staging-store-3"]
    assert release.history(site.config, "staging", "store")[-1].status == "aborted"


def test_a_stateful_role_refuses_replicas(site: Site) -> None:
    with pytest.raises(ConfigError, match=r"\[environments.scaled\] replicas = 2: set replicas = 1"):
        release.promote(site.config, "store", "scaled", version=1)


def test_replicas_run_behind_the_frontend(site: Site) -> None:
    site.fab("release.promote", "app", "--env", "scaled", "--version", "1", check=True)
    scaled = site.config.environment("scaled")
    running = docker.DockerTarget(site.config).instances(scaled, "app")
    assert [i.name for i in running] == [f"{site.config.prefix}-scaled-app-1", f"{site.config.prefix}-scaled-app-1-2"]
    url = f"http://127.0.0.1:{scaled.frontend_port}/health"
    seen = {target.upstream_of(url) for _ in range(20)}
    assert seen == {i.address for i in running}
    second = release.promote(site.config, "app", "scaled", version=2)
    now = docker.DockerTarget(site.config).instances(scaled, "app")
    assert [i.tag for i in now if not i.name.endswith("-standby")] == [second.tag, second.tag]
    assert [i.tag for i in now if i.name.endswith("-standby")] == ["app-1", "app-1"]


def test_down_stops_everything_keeps_ledger_and_data(site: Site) -> None:
    before = len(release.history(site.config))
    proc = site.fab("release.down", "--env", "staging", check=True)
    assert f"kept {site.volume} (/srv/data of store" in proc.stdout
    assert "staging is down" in proc.stdout
    labels = {engine.PREFIX_LABEL: site.config.prefix, target.ENV_LABEL: "staging"}
    assert engine.containers(labels) == []
    assert not engine.client().networks.list(names=[f"{site.config.prefix}-staging"])
    assert len(release.history(site.config)) == before
    listing = json.loads(site.fab("release.list", "--json", check=True).stdout)
    assert [r for r in listing if r["environment"] == "staging"] == []
    # Recovery and reading commands never bring a downed environment back.
    assert engine.containers(labels) == []
    # The environment scaled is not touched (two replicas serving, two as the standby).
    assert len(docker.DockerTarget(site.config).instances(site.config.environment("scaled"), "app")) == 4


def test_promote_after_down_finds_the_data(site: Site) -> None:
    site.fab("release.promote", "store", "--env", "staging", "--version", "2", check=True)
    assert site.store()["rows"] == ["from-the-image", "row1", "row2"]
    assert site.serving() is not None


def test_down_purge_data_says_what_it_deletes(site: Site) -> None:
    proc = site.fab("release.down", "--env", "staging", "--role", "store", "--purge-data", check=True)
    assert f"deleted {site.volume} (/srv/data of store in staging)" in proc.stdout
    assert f"deleting {site.volume}" in proc.stderr
    assert not engine.client().volumes.list(filters={"name": site.volume})
    bad = site.fab("release.down")
    assert bad.returncode != 0 and "release.down needs --env" in bad.stderr


def _running(site: Site, env: str) -> list[str]:
    labels = {engine.PREFIX_LABEL: site.config.prefix, target.ENV_LABEL: env, engine.ROLE_LABEL: "app"}
    return sorted(c.name for c in engine.containers(labels) if c.status == "running")


def _health(site: Site, env: str) -> str:
    url = f"http://127.0.0.1:{site.config.environment(env).frontend_port}/health"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(json.loads(response.read())["release"])


def test_the_replaced_release_stays_as_a_warm_standby(site: Site) -> None:
    prefix = site.config.prefix
    first = release.promote(site.config, "app", "warm", version=1)
    second = release.promote(site.config, "app", "warm", version=2)
    assert _running(site, "warm") == [f"{prefix}-warm-{first.tag}-standby", f"{prefix}-warm-{second.tag}"]
    assert _health(site, "warm") == second.tag
    listing = json.loads(site.fab("release.list", "--json", check=True).stdout)
    [row] = [r for r in listing if r["environment"] == "warm"]
    assert row["tag"] == second.tag and row["standby"]["tag"] == first.tag
    assert f"warm standby: {first.tag} until" in site.fab("release.list", check=True).stdout


def test_rollback_to_the_standby_is_a_frontend_switch(site: Site) -> None:
    prefix = site.config.prefix
    second = release.current(site.config)
    [serving] = [r for r in second if r.environment == "warm"]
    first = release.standbys(site.config)[("warm", "app")][0]
    url = f"http://127.0.0.1:{site.config.environment('warm').frontend_port}/health"
    with loadgen.Load(url, max_seconds=60) as load:
        time.sleep(0.3)
        back = release.rollback(site.config, first)
        time.sleep(0.3)
    assert_served(load.result, 10)
    assert load.result.releases[first] > 0
    assert (back.path, back.runs, back.rollback_of, back.replaces) == ("warm", first, first, serving.tag)
    assert release.show(site.config, back.tag)[0].path == "warm"
    # The very container that served the first release serves again; the one it replaced is now the standby.
    assert _running(site, "warm") == [f"{prefix}-warm-{first}", f"{prefix}-warm-{serving.tag}-standby"]
    assert _health(site, "warm") == first
    assert release.standbys(site.config)[("warm", "app")][0] == serving.tag
    # Back again: the new standby is reused the same way.
    again = release.rollback(site.config, serving.tag)
    assert (again.path, again.runs) == ("warm", serving.tag)
    assert _health(site, "warm") == serving.tag


def test_down_stops_the_standby_too(site: Site) -> None:
    assert len(_running(site, "warm")) == 2
    site.fab("release.down", "--env", "warm", check=True)
    assert _running(site, "warm") == []
    assert ("warm", "app") not in release.standbys(site.config)


def test_an_expired_standby_is_stopped_and_rollback_starts_cold(site: Site) -> None:
    prefix = site.config.prefix
    first = release.promote(site.config, "app", "brief", version=1)
    second = release.promote(site.config, "app", "brief", version=2)
    assert _running(site, "brief") == [f"{prefix}-brief-{first.tag}-standby", f"{prefix}-brief-{second.tag}"]
    time.sleep(1.5)
    proc = site.fab("release.list", "--json", check=True)
    assert "its 1s are up: stopping it" in proc.stderr
    json.loads(proc.stdout)
    assert _running(site, "brief") == [f"{prefix}-brief-{second.tag}"]
    back = release.rollback(site.config, first.tag)
    assert (back.path, back.runs) == ("cold", "")
    assert _health(site, "brief") == back.tag
