"""Checks of the basesystem (salt/base), which every role image carries.

Each role's test file imports them all (`from basesystem import *`), so every
bake verifies the base too. Module-level `pytestmark` of the importing file
applies, so they run once monit has brought the role's services up.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

BASE_PACKAGES = ("ca-certificates", "curl", "iproute2", "less", "procps", "monit", "tini", "unattended-upgrades")

# Nothing of the bake may stay in the image: Salt and its tree, pillar, minion
# id and keys, caches; Packer's and the pipeline's leftovers.
BUILD_LEFTOVERS = (
    "/usr/bin/salt-call",
    "/usr/bin/salt-minion",
    "/usr/local/bin/salt-call",
    "/etc/salt",
    "/srv/salt",
    "/srv/pillar",
    "/srv/formulas",
    "/var/cache/salt",
    "/var/log/salt",
    "/var/run/salt",
    "/usr/sbin/policy-rc.d",
    "/packer-files",
    # The fences that keep daemons from starting during the bake (images/scripts/provision.sh).
    "/lib/lsb/init-functions.d/01-workbench-bake",
    "/sbin/start-stop-daemon.REAL",
)
BUILD_LEFTOVER_GLOBS = ("/tmp/salt*", "/tmp/packer*", "/var/tmp/salt*", "/tmp/thin*")
ZOMBIE_READINGS = 6  # one a second: longer than monit's cycle (1 s) and a parent's next wait


def test_base_packages_installed(host: Any) -> None:
    missing = [name for name in BASE_PACKAGES if not host.package(name).is_installed]
    assert not missing, f"base packages not installed: {missing}"


def test_webapps_user_is_unprivileged(host: Any) -> None:
    user = host.user("webapps")
    assert user.exists
    assert 0 < user.uid < 1000, "a system account"
    assert user.group == "webapps"
    assert user.shell == "/usr/sbin/nologin"
    assert "sudo" not in user.groups and "root" not in user.groups
    assert user.home == "/srv/apps"


def test_webapps_owns_the_apps(host: Any) -> None:
    apps = host.file("/srv/apps")
    assert apps.is_directory
    assert (apps.user, apps.group) == ("webapps", "webapps")
    assert apps.mode == 0o755


def test_automatic_security_updates(host: Any) -> None:
    periodic = host.file("/etc/apt/apt.conf.d/20auto-upgrades")
    assert periodic.contains('^APT::Periodic::Update-Package-Lists "1";')
    assert periodic.contains('^APT::Periodic::Unattended-Upgrade "1";')
    # What apt (and so unattended-upgrade) reads once every file is merged.
    dump = host.check_output("apt-config dump Unattended-Upgrade::Origins-Pattern")
    origins = re.findall(r'^Unattended-Upgrade::Origins-Pattern:: "(.*)";$', dump, re.MULTILINE)
    assert origins == ["origin=Debian,codename=${distro_codename}-security,label=Debian-Security"], dump


def test_out_of_memory_reboots(host: Any) -> None:
    conf = host.file("/etc/sysctl.d/90-workbench-oom-reboot.conf")
    settings = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition("=") for line in conf.content_string.splitlines())
        if key.strip() and not key.startswith("#")
    )
    assert settings == {"vm.panic_on_oom": "1", "kernel.panic": "10"}


def test_monit_is_the_image_command(host: Any) -> None:
    # workbench-init execs tini (the reaper of orphans), which runs monit in
    # the foreground; monit owns the services. In a container tini is PID 1;
    # in a VM systemd is, and runs the image's command as workbench-image.service.
    monit = host.process.get(comm="monit")
    assert "-I" in monit.args.split()
    tini = host.process.get(pid=monit.ppid)
    assert tini.args.split()[:3] == ["/usr/bin/tini", "--", "/usr/bin/monit"], tini.args
    if host.file("/proc/1/comm").content_string.strip() == "systemd":
        unit = host.service("workbench-image")
        assert unit.is_enabled and unit.is_running
        assert not host.service("monit").is_enabled, "one monit only: the image's"
    else:
        assert tini.pid == 1
    init = host.file("/usr/local/sbin/workbench-init")
    assert init.is_file and init.mode == 0o755


def zombies(host: Any) -> tuple[set[str], str]:
    listing = host.check_output("ps -eo pid=,stat=,args=")
    return {line.split()[0] for line in listing.splitlines() if line.split()[1].startswith("Z")}, listing


def test_no_zombies(host: Any) -> None:
    # Daemons that detach leave orphans; PID 1 must reap them. A child that has
    # just exited is a zombie until its own parent waits for it (neutron's agents
    # run commands all the time), so only a zombie that outlives a few seconds
    # of readings is one nobody reaps.
    lasting, listing = zombies(host)
    for _ in range(ZOMBIE_READINGS - 1):
        if not lasting:
            break
        time.sleep(1.0)
        found, listing = zombies(host)
        lasting &= found
    assert not lasting, listing


def test_monit_configuration(host: Any) -> None:
    monitrc = host.file("/etc/monit/monitrc")
    assert monitrc.mode == 0o600, "monit refuses a control file others can read"
    assert monitrc.contains(r"^set daemon 1$")
    assert monitrc.contains(r"^include /etc/monit/conf.d/\*$")
    assert monitrc.contains(r"^include /run/workbench/monit.d/\*$"), "the checks generated at start"
    assert monitrc.contains(r"use address 127.0.0.1")
    assert host.socket("tcp://127.0.0.1:2812").is_listening
    assert not host.socket("tcp://0.0.0.0:2812").is_listening


def test_monit_watches_every_configured_service(host: Any, monit_ready: dict[str, tuple[str, str]]) -> None:
    # Hand-written checks, and those generated at start for the declared services.
    configured = set()
    for directory in ("/etc/monit/conf.d", "/run/workbench/monit.d"):
        for path in host.file(directory).listdir():
            text = host.file(f"{directory}/{path}").content_string
            found = re.findall(r"^check (process|program) \"?([^\s\"]+)", text, re.MULTILINE)
            configured.update((name, kind.capitalize()) for kind, name in found)
    watched = {(name, kind) for name, (_, kind) in monit_ready.items() if kind != "System"}
    assert watched == configured
    assert all(monit_ready[name][0] == "OK" for name, _ in configured)


def test_declared_services_are_the_generated_checks(host: Any) -> None:
    # What the role's Salt service states declared (the bake's service module
    # records it) is what the image runs: a generated check each, unless a
    # hand-written check of that name exists.
    record = host.file("/etc/workbench/services.json")
    declared = json.loads(record.content_string)["services"] if record.exists else {}
    running = sorted(name for name, e in declared.items() if (e["running"] or e["enabled"]) and not e["masked"])
    assert host.check_output("workbench-services list").split() == running
    hand_written = set()
    for path in host.file("/etc/monit/conf.d").listdir():
        text = host.file(f"/etc/monit/conf.d/{path}").content_string
        hand_written.update(re.findall(r"^check \w+ \"?([^\s\"]+)", text, re.MULTILINE))
    generated = set(host.file("/run/workbench/monit.d").listdir())
    assert generated <= set(running)
    assert set(running) - hand_written - generated <= aliases_of(host, generated), (running, generated)


def aliases_of(host: Any, names: set[str]) -> set[str]:
    """Other names (unit aliases) of the services `names`: each runs once, under its unit's name."""
    found = set()
    for link in host.run("find /etc/systemd/system -maxdepth 1 -type l -name '*.service'").stdout.split():
        target = host.file(link).linked_to
        if target and target.rsplit("/", 1)[-1].removesuffix(".service") in names:
            found.add(link.rsplit("/", 1)[-1].removesuffix(".service"))
    return found


def test_release_record(host: Any) -> None:
    record = json.loads(host.file("/run/workbench/release.json").content_string)
    assert set(record) == {"role", "release", "version", "environment"}
    assert record["role"] == host.file("/etc/workbench/role").content_string.strip()
    assert record["role"], "the bake records the role in /etc/workbench/role"
    assert record["release"], "'unreleased' when the container was given none"


def test_no_build_machinery(host: Any) -> None:
    present = [path for path in BUILD_LEFTOVERS if host.file(path).exists]
    for pattern in BUILD_LEFTOVER_GLOBS:
        present += host.run(f"ls -d {pattern} 2>/dev/null").stdout.split()
    assert not present, f"left over from the bake: {present}"
    assert host.run("python3 -c 'import salt'").rc != 0, "Salt is importable in the image"
    assert "start-stop-daemon" not in host.check_output("dpkg-divert --list"), "the bake's diversion"


def test_no_package_caches(host: Any) -> None:
    lists = host.run("find /var/lib/apt/lists -type f ! -name lock").stdout.split()
    debs = host.run("find /var/cache/apt -name '*.deb' -o -name '*.bin'").stdout.split()
    assert not lists + debs, f"apt caches left in the image: {lists + debs}"


def test_no_build_host_ca(host: Any) -> None:
    assert host.run("find /usr/local/share/ca-certificates -type f").stdout.split() == []
    dangling = host.run("find /etc/ssl/certs -xtype l").stdout.split()
    assert not dangling, f"links to removed certificates: {dangling}"
    # The build host's own CAs (an intercepting proxy's) must not be trusted
    # by the image either; these tests run on that host, and read the CAs where
    # the bake did (workbench/build/ca.py). tests/e2e/test_bake.py lends one of
    # its own, so that this is checked on a host without any.
    bundle = host.file("/etc/ssl/certs/ca-certificates.crt")
    bundle_text = bundle.content_string if bundle.exists else ""
    lent = Path(os.environ.get("WORKBENCH_HOST_CA_DIR") or "/usr/local/share/ca-certificates")
    for cert in lent.glob("**/*.crt"):
        body = "".join(cert.read_text().split("-----")[2].split())
        assert body not in "".join(bundle_text.split()), f"the host's CA {cert} is in the image's bundle"
