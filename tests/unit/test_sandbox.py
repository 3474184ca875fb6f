"""Sandbox names, the spec the Vagrantfile reads, reading a provision's output, what the tasks print."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from invoke.context import Context

from workbench.build import salt
from workbench.cli import tasks
from workbench.core import config as wb_config
from workbench.core import progress
from workbench.core.errors import ConfigError, HostNameError
from workbench.sandbox import image as sandbox_image
from workbench.sandbox import provision as sandbox_provision
from workbench.sandbox import sandboxes as sandbox

DATA = Path(__file__).parent / "data" / "sandbox"

CONFIG = """
[workbench]
prefix = "wbt-sbx"
state_dir = "{state}"
default_role = "app"

[environments.sandbox]
[environments.staging]

[roles.app]
ports = [80]
health = "/health"
[roles.db]
ports = [3306]
formulas = ["formulas/tz"]

[pools.db]
role = "db"
used_by = ["app"]
"""


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> wb_config.Config:
    for role in ("app", "db"):
        (tmp_path / "tests/roles").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"tests/roles/test_{role}.py").write_text("")
    (tmp_path / "formulas/tz").mkdir(parents=True)
    path = tmp_path / "workbench.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state"))
    # The boundaries: Salt's thin bundle and ssh-keygen.
    thin = tmp_path / "thin" / "thin.tgz"
    thin.parent.mkdir()
    thin.write_bytes(b"thin")
    monkeypatch.setattr(salt, "thin_bundle", lambda config: thin)
    key = sandbox_image.SshKey(tmp_path / "key", tmp_path / "authorized_keys")
    monkeypatch.setattr(sandbox_image, "ensure_key", lambda config: key)
    return wb_config.load(path)


def test_default_role_gives_its_sandbox(cfg: wb_config.Config) -> None:
    sb = sandbox.resolve(cfg)
    assert (sb.fqdn, sb.role.name, sb.machine) == ("app.sandbox.wpdn", "app", "app")
    assert sb.container == "wbt-sbx-sandbox-app"


def test_role_comes_from_the_name(cfg: wb_config.Config) -> None:
    assert sandbox.resolve(cfg, "db").fqdn == "db.sandbox.wpdn"
    named = sandbox.resolve(cfg, "db-replica.sandbox.wpdn")
    assert (named.role.name, named.machine, named.host.variant) == ("db", "db-replica", "replica")


def test_unknown_role(cfg: wb_config.Config) -> None:
    with pytest.raises(ConfigError, match="unknown role 'nosuch'.*defines app, db"):
        sandbox.resolve(cfg, "nosuch")
    with pytest.raises(HostNameError, match="unknown role 'nosuch'"):
        sandbox.resolve(cfg, "nosuch.sandbox.wpdn")


def test_a_name_outside_the_sandbox_environment(cfg: wb_config.Config) -> None:
    with pytest.raises(ConfigError, match="staging environment: sandboxes are <role>.sandbox.<domain>"):
        sandbox.resolve(cfg, "app.staging.wpdn")


def test_unknown_provider(cfg: wb_config.Config) -> None:
    with pytest.raises(ConfigError, match="unknown provider 'kvm': use one of docker, libvirt, virtualbox"):
        sandbox.up(cfg, "app", provider="kvm")


def test_bad_provider_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "workbench.toml"
    path.write_text('[sandbox]\nprovider = "lxc"\n')
    with pytest.raises(ConfigError, match=r"\[sandbox\] provider = 'lxc': must be one of docker, libvirt, virtualbox"):
        wb_config.load(path)


def test_spec_describes_every_role_for_the_vagrantfile(cfg: wb_config.Config) -> None:
    path = sandbox.write_spec(cfg, "wbt-sbx/sandbox:abc")
    spec = json.loads(path.read_text())
    assert spec["image"] == "wbt-sbx/sandbox:abc"
    assert spec["network"] == "wbt-sbx-sandbox"
    machines = {m["name"]: m for m in spec["machines"]}
    assert sorted(machines) == ["app", "db"]
    app = machines["app"]
    assert app["hostname"] == "app.sandbox.wpdn"
    assert app["command"] == [sandbox_image.INIT_PATH, "/usr/local/sbin/workbench-init"]
    assert app["labels"] == {
        "workbench.prefix": "wbt-sbx", "workbench.role": "app", "workbench.sandbox": "app.sandbox.wpdn"
    }
    shares = {s["guest"]: s["host"] for s in app["shares"]}
    assert shares["/srv/salt"] == str(cfg.root / "salt")
    assert shares["/srv/workbench/thin-src"] == str(cfg.root / "thin")
    # app uses the db pool: its rendered directory is shared where a deploy mounts it
    assert shares["/run/workbench/pools"] == str(cfg.state_dir / "pools" / "sandbox" / "app")
    assert app["env"]["WORKBENCH_POOLS"] == "/run/workbench/pools/pools.json"
    assert app["env"]["WORKBENCH_ENVIRONMENT"] == "sandbox"
    db_shares = {s["guest"]: s["host"] for s in machines["db"]["shares"]}
    assert db_shares["/srv/workbench/formulas/tz"] == str(cfg.root / "formulas/tz")
    assert "/run/workbench/pools" not in db_shares


def test_a_variant_name_stays_known_until_destroyed(cfg: wb_config.Config) -> None:
    replica = sandbox.resolve(cfg, "db-replica.sandbox.wpdn")
    sandbox._remember(cfg, replica, True)
    assert [s.machine for s in sandbox.known(cfg)] == ["app", "db", "db-replica"]
    sandbox._remember(cfg, replica, False)
    assert [s.machine for s in sandbox.known(cfg)] == ["app", "db"]


def test_minion_config_is_a_bakes_with_the_live_tree(cfg: wb_config.Config) -> None:
    sb = sandbox.resolve(cfg, "db")
    sandbox._write_control(cfg, sb, ["base", "db"], "http://172.17.0.1:3142")
    directory = cfg.state_dir / "sandbox" / "machines" / "db"
    minion = json.loads((directory / "minion").read_text())
    assert minion["file_roots"] == {"base": ["/srv/salt", "/srv/workbench/formulas/tz"]}
    assert minion["pillar_roots"] == {"base": ["/srv/salt/pillar"]}
    assert minion["grains"] == {"workbench_role": "db", "workbench_environment": "sandbox"}
    assert minion["id"] == "db.sandbox.wpdn"
    script = (directory / "provision.sh").read_text()
    assert "'--local' '--out=json'" in script and "'--retcode-passthrough' 'state.sls' 'base,db'" in script
    # apt goes through the package cache while the states apply, and direct once the script ends.
    proxy = """printf 'Acquire::http::Proxy "%s";\\n' "http://172.17.0.1:3142" >$proxy_conf"""
    assert proxy in script
    assert script.index(proxy) < script.index("trap 'rm -f $proxy_conf' EXIT") < script.index("salt-call")


def feed(name: str) -> sandbox_provision.SaltWatcher:
    watcher = sandbox_provision.SaltWatcher()
    for line in (DATA / name).read_text().splitlines():
        watcher.feed(line)
    return watcher


def test_watcher_reads_a_successful_run() -> None:
    shown = io.StringIO()
    activities = []
    with progress.session("plain", stream=shown) as session, progress.job("sandbox web"):
        progress.step("sandbox web", "applying base, web")
        watcher = sandbox_provision.SaltWatcher()
        for line in (DATA / "provision-ok.txt").read_text().splitlines():
            watcher.feed(line)
            step = session.current()
            assert step is not None
            activities.append(step.activity)
    run = salt.parse_state_run(watcher.result())
    assert run.ok
    assert [s.id for s in run.states] == ["workbench-init", "web-page", "web-service"]
    assert [s.id for s in run.changed()] == ["web-page"]
    assert watcher.restart
    # The live line names each state as it runs; the terminal gets none of Salt's log.
    assert "state 2: /srv/web/index.html" in activities
    assert "Calling roots find_file" not in shown.getvalue() and "+hello from web" not in shown.getvalue()


def test_watcher_reads_a_failed_state(capsys: pytest.CaptureFixture[str]) -> None:
    watcher = feed("provision-failed.txt")
    run = salt.parse_state_run(watcher.result())
    assert [s.id for s in run.failed] == ["web-broken"]
    assert not watcher.restart
    assert "[ERROR   ] Command 'false' failed with return code: 1" in capsys.readouterr().err


def test_watcher_reads_a_render_error() -> None:
    run = salt.parse_state_run(feed("provision-render-error.txt").result())
    assert not run.ok
    assert "Rendering SLS 'base:web' failed" in run.errors[0]


def test_watcher_without_a_result() -> None:
    watcher = sandbox_provision.SaltWatcher()
    watcher.feed("python3: can't open file '/srv/workbench/thin/salt-call'")
    assert watcher.result() is None
    assert not salt.parse_state_run(watcher.result()).ok


def test_an_engine_race_is_told_from_a_real_failure() -> None:
    raced = (
        "vagrant up web --provider docker --no-provision failed: A Docker command executed by Vagrant didn't "
        'complete successfully!\nCommand: ["docker", "inspect", "2dc4325e8da2", {:notify=>[:stdout, :stderr]}]\n'
        "Stderr: Error: No such object: 2dc4325e8da2"
    )
    assert sandbox._raced(raced)
    assert not sandbox._raced("vagrant up peer --provider docker --no-provision failed: Conflict. The container name")


PROVISIONED = sandbox.ProvisionResult(
    sandbox="app.sandbox.wpdn",
    states=("base", "app"),
    applied=12,
    changed=("web-page", "web-service"),
    address="172.18.0.2",
    seconds=3.2,
)


@pytest.fixture
def results(cfg: wb_config.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox functions answer with fixed results; the tasks print them."""
    monkeypatch.setattr(tasks, "_config", lambda: cfg)
    monkeypatch.setattr(sandbox, "up", lambda config, role, provider: sandbox.UpResult(PROVISIONED, "docker", 9.5))
    monkeypatch.setattr(sandbox, "provision", lambda config, role: PROVISIONED)
    monkeypatch.setattr(sandbox, "test", lambda config, role: sandbox.TestResult("app.sandbox.wpdn", "tests/t.py", 4.0))
    row = sandbox.SandboxStatus("app.sandbox.wpdn", "app", "app", "running", "docker", "172.18.0.2")
    monkeypatch.setattr(sandbox, "status", lambda config: [row])


def task_output(capsys: pytest.CaptureFixture[str], task: Callable[..., object], **kwargs: object) -> str:
    task(Context(), **kwargs)
    return capsys.readouterr().out


def test_up_and_provision_json_is_one_flat_object(results: None, capsys: pytest.CaptureFixture[str]) -> None:
    provisioned = {
        "sandbox": "app.sandbox.wpdn",
        "states": ["base", "app"],
        "applied": 12,
        "changed": ["web-page", "web-service"],
        "address": "172.18.0.2",
        "seconds": 3.2,
    }
    assert json.loads(task_output(capsys, tasks.sandbox_provision, json=True)) == provisioned
    # `seconds` of an up counts the whole up, not only its provision.
    up = json.loads(task_output(capsys, tasks.sandbox_up, json=True))
    assert up == {**provisioned, "provider": "docker", "seconds": 9.5}
    rows = json.loads(task_output(capsys, tasks.sandbox_status, json=True))
    assert rows == [{"name": "app.sandbox.wpdn", "machine": "app", "role": "app", "state": "running",
                     "provider": "docker", "address": "172.18.0.2"}]


def test_sandbox_tasks_print_one_line(results: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert task_output(capsys, tasks.sandbox_up) == (
        "sandbox app.sandbox.wpdn up (docker, 172.18.0.2): 12 states, 2 changed, 9.5s\n"
    )
    assert task_output(capsys, tasks.sandbox_provision) == (
        "sandbox app.sandbox.wpdn provisioned: 12 states, changed web-page, web-service, 3.2s\n"
    )
    assert task_output(capsys, tasks.sandbox_test) == "sandbox app.sandbox.wpdn: tests/t.py passed, 4.0s\n"
