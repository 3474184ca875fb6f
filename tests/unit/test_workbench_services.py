"""workbench-services (salt/base/files), which runs the services a role's Salt states declared:
from a unit or an init script to a monit check, against units recorded from Debian 12's
redis-server and haproxy packages (tests/unit/data/services).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import pwd
import signal
import sys
import types
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "services"
UNITS = str(DATA / "lib/systemd/system")


def load(path: Path, name: str) -> types.ModuleType:
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up by name.
    sys.modules[name] = module
    loader.exec_module(module)
    return module


# --- workbench-services: from a unit or an init script to a monit check -------------------------


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.ModuleType:
    """workbench-services, looking at the recorded units and a scratch /etc."""
    module = load(REPO / "salt/base/files/workbench-services", "workbench_services")
    etc_units = tmp_path / "etc/systemd/system"
    etc_units.mkdir(parents=True)
    (tmp_path / "init.d").mkdir()
    (tmp_path / "conf.d").mkdir()
    monkeypatch.setattr(module, "UNIT_DIRS", (str(etc_units), UNITS))
    monkeypatch.setattr(module, "INIT_DIR", tmp_path / "init.d")
    monkeypatch.setattr(module, "MONIT_CONF", tmp_path / "conf.d")
    # The packages' users and binaries are not on this machine: stand-ins.
    real_getpwnam = pwd.getpwnam

    def getpwnam(name: str) -> Any:
        if name in ("redis", "haproxy"):
            return pwd.struct_passwd((name, "x", 990, 990, "", f"/var/lib/{name}", "/usr/sbin/nologin"))
        return real_getpwnam(name)

    monkeypatch.setattr(module.pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(module.os, "access", lambda path, mode: not str(path).endswith("/missing"))
    monkeypatch.setattr(module.grp, "getgrnam", lambda name: types.SimpleNamespace(gr_gid=990))
    return module


def unit(runner: types.ModuleType, name: str, text: str) -> None:
    (Path(runner.UNIT_DIRS[0]) / name).write_text(text)


def test_redis_unit_runs_as_systemd_runs_it(runner: types.ModuleType) -> None:
    plan = runner.plan_for("redis-server")
    assert plan.kind == "unit" and plan.type == "notify"
    assert plan.start.argv == (
        "/usr/bin/redis-server", "/etc/redis/redis.conf", "--supervised", "systemd", "--daemonize", "no",
    )
    assert (plan.user, plan.uid, plan.gid) == ("redis", 990, 990)
    assert plan.umask == 0o007
    assert plan.directories == (("/run/redis", 0o2755),)
    assert plan.nofile == (65535, 65535)
    assert plan.env["HOME"] == "/var/lib/redis"


def test_template_instance_and_specifiers(runner: types.ModuleType) -> None:
    plan = runner.plan_for("redis-server@sessions")
    assert plan.start.argv[:2] == ("/usr/bin/redis-server", "/etc/redis/redis-sessions.conf")
    assert plan.directories == (("/run/redis-sessions", 0o2755),)
    assert plan.check_name == "redis-server@sessions"


def test_haproxy_environment_is_expanded_as_systemd_does(runner: types.ModuleType) -> None:
    # Environment="CONFIG=..." "PIDFILE=..." "EXTRAOPTS=-S /run/haproxy-master.sock";
    # `$EXTRAOPTS` alone is split into words, EnvironmentFile=- may be missing.
    plan = runner.plan_for("haproxy")
    assert plan.start.argv == (
        "/usr/sbin/haproxy", "-Ws", "-f", "/etc/haproxy/haproxy.cfg", "-p", "/run/haproxy.pid",
        "-S", "/run/haproxy-master.sock",
    )
    assert plan.kill_mode == "mixed"
    assert plan.user == "root"


def test_exec_line_prefixes_and_variables(runner: types.ModuleType) -> None:
    table = {"i": "a", "%": "%"}
    env = {"OPTS": "-x  -y", "DIR": "/srv/d"}
    line = runner.parse_exec("-@/bin/daemon argv0 ${DIR}/%i $OPTS '$OPTS' 100%%", env, table)
    assert line.executable == "/bin/daemon"
    assert line.argv == ("argv0", "/srv/d/a", "-x", "-y", "-x", "-y", "100%")
    assert line.ignore_failure and not line.privileged
    assert runner.parse_exec("+sh -c true", env, table).executable.endswith("/sh")
    assert runner.parse_exec(":/bin/echo $OPTS", env, table).argv == ("/bin/echo", "$OPTS")
    with pytest.raises(runner.ServiceError, match="/bin/missing is not installed"):
        runner.parse_exec("/bin/missing", env, table)


def test_dropins_reset_and_override(runner: types.ModuleType) -> None:
    dropins = Path(runner.UNIT_DIRS[0]) / "redis-server.service.d"
    dropins.mkdir()
    # An empty ExecStart= drops the unit's own, as `systemctl edit` writes it.
    override = "[Service]\nExecStart=\nExecStart=/usr/bin/redis-server /etc/r.conf\nUser=root\n"
    (dropins / "override.conf").write_text(override)
    plan = runner.plan_for("redis-server")
    assert plan.start.argv == ("/usr/bin/redis-server", "/etc/r.conf")
    assert plan.user == "root"


def test_alias_link_reads_its_unit(runner: types.ModuleType) -> None:
    link = Path(runner.UNIT_DIRS[0]) / "redis.service"
    link.symlink_to(Path(UNITS) / "redis-server.service")
    assert runner.plan_for("redis").start.executable == "/usr/bin/redis-server"


@pytest.mark.parametrize(("text", "error"), [
    ("[Service]\nType=oneshot\nExecStart=/bin/true\n", "Type=oneshot runs once"),
    ("[Service]\nExecStart=/bin/true\nDynamicUser=yes\n", "DynamicUser= is not supported"),
    ("[Service]\nType=forking\nExecStart=/bin/true\n", "Type=forking without PIDFile="),
    ("[Service]\nExecStart=/bin/true\nUser=no-such-user-here\n", "User=no-such-user-here does not exist"),
    ("[Service]\nExecStart=/bin/missing\n", "/bin/missing is not installed"),
    ("[Service]\nExecStart=/bin/true\nExecStart=/bin/false\n", "exactly one ExecStart="),
])
def test_units_the_image_cannot_run(runner: types.ModuleType, text: str, error: str) -> None:
    unit(runner, "odd.service", text)
    with pytest.raises(runner.ServiceError, match=error):
        runner.plan_for("odd")


def test_masked_and_missing_services(runner: types.ModuleType) -> None:
    (Path(runner.UNIT_DIRS[0]) / "gone.service").symlink_to("/dev/null")
    with pytest.raises(runner.ServiceError, match="masked"):
        runner.plan_for("gone")
    with pytest.raises(runner.ServiceError, match=r"no systemd unit \(nothing.service\) and no init script"):
        runner.plan_for("nothing")


def test_init_script_only(runner: types.ModuleType) -> None:
    script = runner.INIT_DIR / "legacy"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    plan = runner.plan_for("legacy")
    assert (plan.kind, plan.source) == ("init", str(script))
    # A watcher stands for the daemon, whose pid is the script's business.
    check = runner.monit_check(plan)
    assert 'check process "legacy" with pidfile /run/workbench/services/legacy.pid' in check
    assert "# legacy runs from " + str(script) + " (init script)" in check


def test_checks_for_what_the_record_runs(runner: types.ModuleType, tmp_path: Path) -> None:
    (Path(runner.UNIT_DIRS[0]) / "redis.service").symlink_to(Path(UNITS) / "redis-server.service")
    (runner.MONIT_CONF / "haproxy").write_text('check process haproxy with pidfile /run/haproxy.pid\n')
    record = {
        "redis": {"running": True, "enabled": True, "masked": False},  # the alias: one daemon
        "redis-server": {"running": True, "enabled": True, "masked": False},
        "haproxy": {"running": True, "enabled": True, "masked": False},  # checked by hand
        "redis-server@a": {"running": False, "enabled": True, "masked": False},  # enabled: runs
        "redis-server@b": {"running": False, "enabled": False, "masked": False},  # dead: does not
        "redis-server@c": {"running": True, "enabled": True, "masked": True},  # masked: does not
    }
    out = tmp_path / "monit.d"
    out.mkdir()
    (out / "stale").write_text("check process stale\n")
    assert runner.write_checks(out, record) == ["redis-server", "redis-server@a"]
    assert sorted(p.name for p in out.iterdir()) == ["redis-server", "redis-server@a"]
    check = (out / "redis-server").read_text()
    assert 'check process "redis-server" with pidfile /run/workbench/services/redis-server.pid' in check
    assert 'start program = "/usr/local/sbin/workbench-services start redis-server"' in check
    assert "# redis-server runs from " in check and "--daemonize no" in check
    assert runner.services_to_run(record) == ["haproxy", "redis", "redis-server", "redis-server@a"]


def test_tmpfiles_directories_under_run(runner: types.ModuleType) -> None:
    dirs = (str(DATA / "usr/lib/tmpfiles.d"),)
    assert runner.runtime_directories(dirs) == [
        ("/run/haproxy", 0o2775, "haproxy", "haproxy"),
        ("/run/memcached", 0o755, "memcache", "memcache"),
    ]


def test_kill_signal_names(runner: types.ModuleType) -> None:
    assert runner._signal("SIGINT", "x") == signal.SIGINT
    assert runner._signal("HUP", "x") == signal.SIGHUP
    with pytest.raises(runner.ServiceError, match="not a signal"):
        runner._signal("SIGNOPE", "x")
