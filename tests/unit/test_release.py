"""Releases without an engine: the dpkg parser, package comparison, the frontend's upstream
file, deploy-time variables, "back one release", rollback argument errors, the registry's
config, and `release.rollback`'s optional tag on the command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.support.config import small_config
from workbench.core import config as wb_config
from workbench.core.errors import ConfigError, ReleaseError
from workbench.release import diff as release_diff
from workbench.release import ledger, registry, target
from workbench.release import releases as release
from workbench.release.ledger import Ledger, Release

DATA = Path(__file__).parent / "data"


def record(tag: str, **changes: object) -> Release:
    base = Release(
        tag=tag, role="app", environment="staging", action=ledger.PROMOTE, status=ledger.RELEASED, version=1,
        image="wbx/app:1", image_id=f"sha256:{tag}", digest=f"sha256:d-{tag}", repository="127.0.0.1:5000/wbx/app",
        inputs="i", verify="passed", replaces=None, rollback_of=None, who="t", at="2026-01-01T00:00:00+00:00",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def add(led: Ledger, **changes: object) -> Release:
    changes.setdefault("image_id", f"sha256:image-{len(led.history())}")
    intent = led.begin(record("", **changes))
    return led.finish(intent, intent.release)


# --- release.diff ----------------------------------------------------------------


def test_dpkg_status_parser_reads_installed_packages_only() -> None:
    packages = release_diff.parse_dpkg_status((DATA / "dpkg-status-app").read_text())
    assert packages == {
        "gunicorn": "20.1.0-6+deb12u1",
        "libc6": "2.36-9+deb12u14",
        "monit": "1:5.33.0-1",
        "nginx": "1.22.1-9+deb12u11",
        "python3": "3.11.2-1+b1",
        "zlib1g": "1:1.2.13.dfsg-1",
    }


def test_compare_packages_with_debian_version_order() -> None:
    a = {"nginx": "1.22.1-9", "curl": "7.88.1-10", "libc6": "2.36-9+deb12u4", "gone": "1"}
    b = {"nginx": "1.22.1-9+deb12u1", "curl": "7.88.1-9", "libc6": "2.36-9+deb12u4", "new": "2"}
    out = release_diff.compare_packages(a, b)
    assert out == {
        "added": {"new": "2"},
        "removed": {"gone": "1"},
        "upgraded": {"nginx": ("1.22.1-9", "1.22.1-9+deb12u1")},
        "downgraded": {"curl": ("7.88.1-10", "7.88.1-9")},
    }


def test_render_diff() -> None:
    d = release_diff.ReleaseDiff(a="app-1", b="app-2", added={"new": "2"}, upgraded={"nginx": ("1", "2")},
                                 inputs_changed=True, commits=("a" * 40, "b" * 40), states=[("M", "salt/app/init.sls")])
    text = release_diff.render(d)
    assert "1 added, 0 removed, 1 upgraded, 0 downgraded" in text
    assert "  + new 2" in text and "  ^ nginx 1 -> 2" in text and "  M salt/app/init.sls" in text


# --- deploy --------------------------------------------------------------------------


def test_upstream_file_names_the_release_or_refuses() -> None:
    assert "server 172.18.0.5:80;" in target.upstream_conf(["172.18.0.5:80"])
    assert f"upstream {target.UPSTREAM_NAME} {{" in target.upstream_conf([])
    assert "server 127.0.0.1:1;" in target.upstream_conf([])
    shipped = Path(__file__).parents[2] / "salt/frontend/files/upstream.conf"
    assert shipped.read_text() == target.upstream_conf([])


def test_upstream_file_lists_every_replica() -> None:
    text = target.upstream_conf(["172.18.0.5:80", "172.18.0.6:80"])
    assert "server 172.18.0.5:80;" in text and "server 172.18.0.6:80;" in text
    assert "127.0.0.1:1" not in text


def test_settings_reach_the_container_and_cannot_fake_the_release(tmp_path: Path) -> None:
    config = small_config(
        tmp_path,
        environments={"staging": {"variables": {"DB_PASSWORD": "s3cret", "WORKBENCH_RELEASE": "forged"}}},
        roles={},
    )
    plan = target.Plan(wb_config.Role(name="app"), config.environment("staging"), "app-3", 7, "sha256:x", "sha256:y")
    assert target.environment_variables(plan) == {
        "DB_PASSWORD": "s3cret",
        "WORKBENCH_RELEASE": "app-3",
        "WORKBENCH_VERSION": "7",
        "WORKBENCH_ROLE": "app",
        "WORKBENCH_ENVIRONMENT": "staging",
    }


# --- rollback ----------------------------------------------------------------------------


def test_back_one_release_follows_promotes_not_rollbacks(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    one = add(led)
    two = add(led, replaces="app-1")
    three = add(led, replaces="app-2")
    assert release._previous(led, "staging", "app", three) == two
    # app-4 puts app-2 back; back one from there is app-1, not app-3.
    four = add(led, action=ledger.ROLLBACK, rollback_of="app-2", image_id=two.image_id, replaces="app-3")
    assert release._previous(led, "staging", "app", four) == one
    with pytest.raises(ReleaseError, match="before app-1: nothing to go back to"):
        release._previous(led, "staging", "app", record("x", action=ledger.ROLLBACK, rollback_of="app-1",
                                                        image_id=one.image_id))
    with pytest.raises(ReleaseError, match="nothing of role db was ever released in staging"):
        release._previous(led, "staging", "db", None)


def test_rollback_target_checks(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    add(led)
    failed = led.begin(record(""))
    led.finish(failed, dataclasses.replace(failed.release, status=ledger.FAILED, detail="health check failed"))
    assert release._rollback_target(led, "app-1", "staging", "app").tag == "app-1"
    with pytest.raises(ReleaseError, match="no release 'app-7' in the ledger"):
        release._rollback_target(led, "app-7", None, None)
    with pytest.raises(ReleaseError, match="app-1 was never released in production"):
        release._rollback_target(led, "app-1", "production", None)
    with pytest.raises(ReleaseError, match="app-1 is a release of role app, not db"):
        release._rollback_target(led, "app-1", None, "db")
    with pytest.raises(ReleaseError, match="app-2 never served .failed: health check failed"):
        release._rollback_target(led, "app-2", None, None)


def test_rollback_needs_a_tag_or_env_and_role(tmp_path: Path) -> None:
    config = small_config(tmp_path, roles={})
    with pytest.raises(ConfigError, match="needs a release tag"):
        release.rollback(config, env="staging")
    with pytest.raises(ReleaseError, match="not a release tag"):
        release.rollback(config, "app12")


def test_pause_hook_only_on_its_step(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(release.time, "sleep", slept.append)
    monkeypatch.setenv(release.PAUSE_ENV, "started")
    monkeypatch.setenv(release.PAUSE_SECONDS_ENV, "7")
    release._pause("pushed")
    release._pause("started")
    assert slept == [7.0]


# --- registry ------------------------------------------------------------------------------


def test_registry_config_is_loopback_without_deletes(tmp_path: Path) -> None:
    text = registry.render_config(tmp_path / "data", "127.0.0.1", 5001)
    assert "addr: 127.0.0.1:5001" in text
    assert f"rootdirectory: {tmp_path / 'data'}" in text
    assert "delete:\n    enabled: false" in text


def test_registry_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    config = small_config(tmp_path, registry={"host": "0.0.0.0"}, roles={})
    with pytest.raises(ConfigError, match=r"\[registry\] host = '0.0.0.0': .* loopback only"):
        registry._write_config(config)
    assert not (config.state_dir / "registry").exists()


# --- the command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collection() -> object:
    import fabfile

    return fabfile.ns


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["release.rollback", "app-12"], ["release.rollback", "--tag=app-12"]),
        (["release.rollback", "--env", "staging", "--role", "app"], ["release.rollback", "--env", "staging",
                                                                       "--role", "app"]),
        (["release.rollback", "--message", "oops", "app-3"], ["release.rollback", "--message", "oops",
                                                               "--tag=app-3"]),
        (["release.show", "app-1", "--json"], ["release.show", "app-1", "--json"]),
        (["release.rollback", "app-1", "release.list"], ["release.rollback", "--tag=app-1", "release.list"]),
    ],
)
def test_optional_positional_tag(collection: object, argv: list[str], expected: list[str]) -> None:
    from workbench.cli.main import _fill_optional_positionals

    assert _fill_optional_positionals(argv, collection) == expected  # type: ignore[arg-type]
