"""Releases on the real engine and the real registry: promote, rollback, history, load, bad tags,
parallel promotes, kill -9 mid-promote, a tag never overwritten.

The tests of this module run in order and build on each other's releases (as a
user's session would): staging gets app-1, app-2, then a rollback to app-1.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.commands import fab, kill_9_after
from tests.support.config import config_data, write_config
from tests.support.net import free_port
from tests.support.releasekit import assert_served, clean_environments, make_app, make_frontend
from workbench.core import config as wb_config
from workbench.core import engine
from workbench.core.errors import DeployFailed, ReleaseError
from workbench.release import docker, ledger, loadgen, registry, target
from workbench.release import releases as release


class Env:
    """The module's configuration, images and ports."""

    def __init__(self, path: Path, config: wb_config.Config, ids: dict[str, str], base: str) -> None:
        self.base = base
        self.path = path
        self.config = config
        self.ids = ids
        self.staging = f"http://127.0.0.1:{config.environment('staging').frontend_port}/health"
        self.production = f"http://127.0.0.1:{config.environment('production').frontend_port}/health"

    def fab(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return fab(*args, config=self.path, check=check)

    def history(self, env: str = "staging") -> list[ledger.Release]:
        return release.history(self.config, env, "app")

    def serving(self, url: str) -> str:
        import json
        import urllib.request

        with urllib.request.urlopen(url, timeout=5) as response:
            return str(json.loads(response.read())["release"])

    def containers(self, env: str) -> list[str]:
        labels = {engine.PREFIX_LABEL: self.config.prefix, target.ENV_LABEL: env, engine.ROLE_LABEL: "app"}
        return sorted(c.name for c in engine.containers(labels) if c.status == "running")


@pytest.fixture(scope="module")
def env(wb_prefix: str, wb_state: Path, base_image: object) -> Iterator[Env]:
    # A prefix of its own: the images made here must not mix with bakes of the session.
    prefix = f"{wb_prefix}-rel"
    engine.remove_prefix(prefix)
    state = wb_state / "releases"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    data = config_data(
        prefix,
        state,
        registry={"port": free_port()},
        # The cold path: every rollback starts the old image again (the warm standby has its own tests in
        # test_release_data.py).
        environments={
            "staging": {"frontend_port": free_port(), "variables": {"GREETING": "hello from staging"},
                        "standby": 0},
            "production": {"frontend_port": free_port(), "standby": 0},
            "sandbox": {"retention": 2, "standby": 0},
        },
    )
    path = write_config(state / "workbench.toml", data)
    config = wb_config.load(path)
    try:
        base = base_image.tag  # type: ignore[attr-defined]
        ids = {
            "frontend": make_frontend(config, base),
            "v1": make_app(config, base, 1),
            "v2": make_app(config, base, 2),
            "v4-unverified": make_app(config, base, 4, verify="failed"),
        }
        yield Env(path, config, ids, base)
    finally:
        clean_environments(config)
        engine.remove_prefix(prefix)
        shutil.rmtree(state, ignore_errors=True)


def promote_under_load(env: Env, *args: str) -> tuple[subprocess.CompletedProcess[str], loadgen.LoadResult]:
    with loadgen.Load(env.staging, max_seconds=120) as load:
        time.sleep(0.3)
        proc = env.fab(*args)
        time.sleep(0.3)
    return proc, load.result


def test_unverified_image_is_refused(env: Env) -> None:
    proc = env.fab("release.promote", "app", "--env", "staging", "--version", "4")
    assert proc.returncode != 0
    assert "did not pass verification (workbench.verify=failed)" in proc.stderr
    assert env.history() == []
    assert env.containers("staging") == []


def test_first_promote(env: Env) -> None:
    env.fab("release.promote", "app", "--env", "staging", "--version", "1", "--message", "first", check=True)
    assert env.serving(env.staging) == "app-1"
    first = env.history()[-1]
    assert (first.tag, first.version, first.status, first.replaces, first.message) == ("app-1", 1, "released", None,
                                                                                        "first")
    assert first.image_id == env.ids["v1"]
    assert first.digest.startswith("sha256:") and first.verify == "passed"
    # Per-environment settings reach the container at deploy time.
    import json
    import urllib.request

    with urllib.request.urlopen(env.staging) as response:
        body = json.loads(response.read())
    assert body == {"status": "ok", "release": "app-1", "version": "1", "role": "app", "environment": "staging",
                    "greeting": "hello from staging"}


def test_second_promote_drops_no_request(env: Env) -> None:
    proc, load = promote_under_load(env, "release.promote", "app", "--env", "staging")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("app-2 serves app in staging")
    assert_served(load, 20)
    assert load.releases["app-1"] > 0 and load.releases["app-2"] > 0
    assert env.serving(env.staging) == "app-2"
    assert env.containers("staging") == [f"{env.config.prefix}-staging-app-2"]


def test_rollback_by_tag_serves_the_first_digest(env: Env) -> None:
    first = release.show(env.config, "app-1")[0]
    proc, load = promote_under_load(env, "release.rollback", "app-1", "--message", "bad deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_served(load, 20)
    back = env.history()[-1]
    assert (back.tag, back.action, back.rollback_of, back.replaces) == ("app-3", "rollback", "app-1", "app-2")
    assert (back.path, back.runs) == ("cold", "")
    assert back.digest == first.digest and back.image_id == first.image_id
    assert env.serving(env.staging) == "app-3"
    container = engine.client().containers.get(f"{env.config.prefix}-staging-app-3")
    assert container.image.id == first.image_id


def test_history_has_all_three(env: Env) -> None:
    proc = env.fab("release.history", "--env", "staging", "--role", "app", "--json", check=True)
    import json

    records = json.loads(proc.stdout)
    assert [(r["tag"], r["action"], r["status"]) for r in records] == [
        ("app-1", "promote", "released"), ("app-2", "promote", "released"), ("app-3", "rollback", "released"),
    ]
    listed = json.loads(env.fab("release.list", "--json", check=True).stdout)
    assert [(r["environment"], r["tag"]) for r in listed] == [("staging", "app-3")]
    shown = json.loads(env.fab("release.show", "app-3", "--json", check=True).stdout)
    assert shown["rollback_of"] == "app-1" and shown["pinned"] is False
    diff = json.loads(env.fab("release.diff", "app-1", "app-2", "--json", check=True).stdout)
    # Both images are the base plus a file: the same packages; their inputs differ.
    assert (diff["added"], diff["removed"], diff["upgraded"]) == ({}, {}, {})
    assert diff["inputs_changed"] is True and "did not record its git commit" in diff["note"]


def _untouched(env: Env, proc: subprocess.CompletedProcess[str], before: list[ledger.Release], text: str) -> None:
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: ") and text in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert env.history() == before
    assert env.serving(env.staging) == before[-1].tag
    assert env.containers("staging") == [f"{env.config.prefix}-staging-{before[-1].tag}"]


def test_bad_tags_leave_the_environment_untouched(env: Env) -> None:
    before = env.history()
    _untouched(env, env.fab("release.rollback", "app-99"), before, "no release 'app-99' in the ledger")
    _untouched(env, env.fab("release.rollback", "app-2", "--env", "production"), before,
               "app-2 was never released in production")
    _untouched(env, env.fab("release.rollback", "nonsense"), before, "is not a release tag")
    _untouched(env, env.fab("release.rollback", "app-3"), before, "already serves app in staging")


def test_rollback_to_an_image_that_is_gone(env: Env) -> None:
    # In the sandbox (no frontend): a release whose image is then removed from
    # the engine and its manifest from the registry's storage, as if the disk
    # lost it (the tool itself never deletes).
    doomed = make_app(env.config, env.base, 6)
    gone = release.promote(env.config, "app", "sandbox", version=6)
    release.promote(env.config, "app", "sandbox", version=1)
    for tag in engine.client().images.get(doomed).tags:
        engine.client().images.remove(tag, force=True)
    engine.remove_image(doomed)
    revision = (registry.directory(env.config) / "data/docker/registry/v2/repositories" / env.config.prefix / "app"
                / "_manifests/revisions/sha256" / gone.digest.split(":")[1])
    assert revision.is_dir()
    shutil.rmtree(revision)
    before = env.history("sandbox")
    proc = env.fab("release.rollback", gone.tag)
    assert proc.returncode != 0 and f"the image of {gone.tag}" in proc.stderr and "is gone" in proc.stderr
    assert env.history("sandbox") == before
    assert env.containers("sandbox") == [f"{env.config.prefix}-sandbox-{before[-1].tag}"]
    # Staging never noticed.
    assert env.serving(env.staging) == "app-3"


def test_retention_prunes_outside_the_window_but_never_a_pin(env: Env) -> None:
    # sandbox keeps 2 releases; it has served v6 (gone) and v1 so far.
    seven = release.promote(env.config, "app", "sandbox", version=make_version(env, 7))
    nine = release.promote(env.config, "app", "sandbox", version=make_version(env, 9))
    release.promote(env.config, "app", "sandbox", version=make_version(env, 8))
    release.promote(env.config, "app", "sandbox", version=1)
    would = env.fab("release.prune", "--dry-run", check=True).stdout
    assert seven.image_id[7:19] in would and nine.image_id[7:19] in would
    assert env.ids["v1"][7:19] not in would and engine.get_image(seven.image_id) is not None
    assert ledger.referenced_images(env.config) >= {env.ids["v1"], env.ids["v2"]}
    env.fab("release.pin", seven.tag, check=True)
    pruned = env.fab("release.prune", check=True).stdout
    assert nine.image_id[7:19] in pruned and seven.image_id[7:19] not in pruned
    assert engine.get_image(nine.image_id) is None
    assert engine.get_image(seven.image_id) is not None
    # The registry keeps every released tag: the pruned release can still come back.
    reg = registry.ensure(env.config)
    assert registry.manifest_digest(reg, nine.repository, nine.tag) == nine.digest
    back = release.rollback(env.config, nine.tag)
    assert back.digest == nine.digest and engine.get_image(nine.image_id) is not None


def make_version(env: Env, version: int) -> int:
    make_app(env.config, env.base, version)
    return version


def test_failed_health_check_is_never_switched_to(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.ids["v3-unhealthy"] = make_app(env.config, env.base, 3, env={"FAKEAPP_STATUS": "500"})
    monkeypatch.setattr(docker, "HEALTH_TIMEOUT", 5.0)
    before = env.history()
    with loadgen.Load(env.staging) as load, pytest.raises(DeployFailed, match="not switched to .app-3 keep"):
        release.promote(env.config, "app", "staging", version=3, message="broken")
    assert_served(load.result, 10)
    failed = env.history()[-1]
    assert (failed.status, failed.version) == ("failed", 3)
    assert "health check" in failed.detail
    assert "`[environments.staging] health_timeout` gives it longer" in failed.detail
    assert env.history()[:-1] == before
    assert env.serving(env.staging) == "app-3"
    assert env.containers("staging") == [f"{env.config.prefix}-staging-app-3"]
    # A tag that never served cannot be rolled back to.
    with pytest.raises(ReleaseError, match=f"{failed.tag} never served"):
        release.rollback(env.config, failed.tag)


def test_a_released_tag_is_never_overwritten(env: Env) -> None:
    reg = registry.ensure(env.config)
    first = release.show(env.config, "app-1")[0]
    with pytest.raises(ReleaseError, match="already names .* a released tag is never overwritten"):
        registry.push(reg, env.ids["v3-unhealthy"], first.repository, "app-1")
    assert registry.manifest_digest(reg, first.repository, "app-1") == first.digest


def test_rollback_back_one_and_the_fabric1_form(env: Env) -> None:
    # Serving app-3, which put app-1's image back: there is no promote before app-1.
    proc = env.fab("release.rollback", "--env", "staging", "--role", "app")
    assert proc.returncode != 0 and "no release of app in staging before app-1" in proc.stderr
    with loadgen.Load(env.staging) as load:
        proc = env.fab("release.rollback:app-2")
    assert proc.returncode == 0, proc.stderr
    assert_served(load.result, 10)
    to_two = env.history()[-1]
    assert to_two.rollback_of == "app-2" and env.serving(env.staging) == to_two.tag
    with loadgen.Load(env.staging) as load:
        proc = env.fab("release.rollback", "--env", "staging", "--role", "app")
    assert proc.returncode == 0, proc.stderr
    assert_served(load.result, 10)
    back = env.history()[-1]
    assert (back.rollback_of, back.replaces) == ("app-1", to_two.tag)
    assert back.image_id == env.ids["v1"] and env.serving(env.staging) == back.tag


def test_kill_9_before_the_switch_is_undone(env: Env) -> None:
    current = ledger_current(env)
    proc = killed_at(env, "started", "release.promote", "app", "--env", "staging", "--version", "1")
    assert proc
    # The killed promote left its container and its intent; the next command undoes it.
    listed = env.fab("release.list", check=True)
    assert "recover" in listed.stderr
    last = env.history()[-1]
    assert last.status == "aborted" and "interrupted after 'started'" in last.detail
    assert ledger_current(env) == current
    assert env.serving(env.staging) == current
    assert env.containers("staging") == [f"{env.config.prefix}-staging-{current}"]


def test_kill_9_after_the_switch_is_finished(env: Env) -> None:
    killed_at(env, "switched", "release.rollback", "app-2")
    pending = ledger_intent(env)
    assert pending and pending.step == "switched"
    env.fab("release.history", check=True)
    last = env.history()[-1]
    assert last.tag == pending.tag and last.status == "released" and "completed by recovery" in last.detail
    assert env.serving(env.staging) == last.tag
    assert env.containers("staging") == [f"{env.config.prefix}-staging-{last.tag}"]


def ledger_current(env: Env) -> str:
    with ledger.opened(env.config) as led:
        current = led.current("staging", "app")
    assert current is not None
    return current.tag


def ledger_intent(env: Env) -> ledger.Intent | None:
    with ledger.opened(env.config) as led:
        found = led.intents("staging", "app")
    return found[0] if found else None


def killed_at(env: Env, step: str, *args: str) -> bool:
    """Run `fab *args` until it pauses after `step`, then kill -9 it."""
    assert kill_9_after(env.path, step, *args) == -signal.SIGKILL
    intent = ledger_intent(env)
    assert intent is not None and intent.step == step
    return True


def _promote(path: str, version: int) -> str:
    config = wb_config.load(Path(path))
    return release.promote(config, "app", "production", version=version, message=f"parallel {os.getpid()}").tag


def test_parallel_promotes(env: Env) -> None:
    workers = 3
    with loadgen.Load(env.production) as load, multiprocessing.get_context("spawn").Pool(workers) as pool:
        tags = pool.starmap(_promote, [(str(env.path), 1 + n % 2) for n in range(workers)])
    history = env.history("production")
    assert sorted(r.tag for r in history) == sorted(tags) and len(set(tags)) == workers
    assert all(r.status == "released" for r in history)
    assert [r.replaces for r in history] == [None, *[r.tag for r in history[:-1]]]
    assert env.serving(env.production) == history[-1].tag
    assert env.containers("production") == [f"{env.config.prefix}-production-{history[-1].tag}"]
    # The load started before the first promote, so early requests see no release yet (502).
    assert load.result.ok > 0
