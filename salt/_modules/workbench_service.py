"""The `service` module of workbench bakes: service states record, they start nothing.

images/scripts/provision.sh makes this Salt's `service` provider for the bake
(`providers: {service: workbench_service}` in the minion configuration), so
that `service.running`, `.enabled`, `.dead`, `.disabled` and their `watch`
restarts, as any formula writes them, mean for the image what they mean for a
machine: what runs when it starts. Each call records the declared state in
/etc/workbench/services.json; workbench-services (salt/base) turns the record
into monit checks when the image starts. Nothing is started or stopped in the
build container or VM, and Salt's Debian module (which needs `runlevel` and
starts daemons with `service`, past policy-rc.d) is never used.

A service must exist to be declared running: a systemd unit or an init
script. Making it run also asks the image's own workbench-services whether it
can run it (a oneshot unit, a missing User= or binary cannot), so a service the
image would not run fails its state, named, in the bake.

Loaded by `providers` only, never under its own name: sandboxes, which sync
salt/_modules, keep Salt's own service module.
"""

import json
import os

from salt.exceptions import CommandExecutionError

__virtualname__ = "workbench_service"

RECORD = "/etc/workbench/services.json"
RUNNER = "/usr/local/sbin/workbench-services"
INIT_DIR = "/etc/init.d"
UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
)


def __virtual__():
    return (False, "workbench_service is the bake's `service` provider (images/scripts/provision.sh), not a module")


# --- the record -----------------------------------------------------------------


def _name(name):
    """`redis-server.service` and `redis-server` are one service."""
    return name[: -len(".service")] if name.endswith(".service") else name


def _read():
    try:
        with open(RECORD) as record:
            return dict(json.load(record).get("services", {}))
    except FileNotFoundError:
        return {}


def _entry(name):
    return _read().get(_name(name), {"running": False, "enabled": False, "masked": False})


def _record(name, **flags):
    services = _read()
    entry = services.setdefault(_name(name), {"running": False, "enabled": False, "masked": False})
    entry.update(flags)
    text = json.dumps({"services": services}, indent=2, sort_keys=True) + "\n"
    os.makedirs(os.path.dirname(RECORD), exist_ok=True)
    partial = RECORD + ".partial"
    with open(partial, "w") as out:
        out.write(text)
    os.chmod(partial, 0o644)
    os.replace(partial, RECORD)
    return True


def _runnable(name):
    """Raise CommandExecutionError unless the image can run `name` (see workbench-services check)."""
    if not available(name):
        raise CommandExecutionError(f"The named service {name} is not available (no systemd unit, no init script)")
    if not os.access(RUNNER, os.X_OK):
        raise CommandExecutionError(
            f"{RUNNER} is missing: nothing in this image would run {name} "
            "(the base state installs it, with monit and workbench-init)"
        )
    done = __salt__["cmd.run_all"]([RUNNER, "check", _name(name)], python_shell=False, ignore_retcode=True)
    if done["retcode"] != 0:
        raise CommandExecutionError(done["stderr"].strip() or done["stdout"].strip())


# --- what exists ----------------------------------------------------------------


def _unit_files(name):
    unit = name if name.endswith(".service") else f"{name}.service"
    stem = unit[: -len(".service")]
    names = [unit]
    if "@" in stem and not stem.endswith("@"):
        names.append(stem.split("@", 1)[0] + "@.service")
    return [os.path.join(d, n) for d in UNIT_DIRS for n in names]


def available(name):
    """A systemd unit (a template serves its instances) or an executable init script."""
    script = os.path.join(INIT_DIR, _name(name))
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return True
    return any(os.path.lexists(path) for path in _unit_files(name))


def missing(name):
    return not available(name)


def get_all():
    names = set()
    for directory in UNIT_DIRS:
        if os.path.isdir(directory):
            names.update(f[: -len(".service")] for f in os.listdir(directory) if f.endswith(".service"))
    if os.path.isdir(INIT_DIR):
        names.update(f for f in os.listdir(INIT_DIR) if available(f))
    return sorted(n for n in names if not n.endswith("@"))


# --- running: recorded, never started ------------------------------------------------


def status(name, sig=None, **kwargs):
    """Whether the states declared it running (the build itself runs nothing)."""
    return bool(_entry(name).get("running"))


def start(name, **kwargs):
    _runnable(name)
    return _record(name, running=True)


def stop(name, **kwargs):
    return _record(name, running=False)


def restart(name, **kwargs):
    # A restart leaves a service running, as systemctl restart does.
    _runnable(name)
    return _record(name, running=True)


def full_restart(name, **kwargs):
    return restart(name)


def reload_(name, **kwargs):
    # The image starts it with its configuration as the bake leaves it: nothing to reload.
    if not available(name):
        raise CommandExecutionError(f"The named service {name} is not available")
    return True


def force_reload(name, **kwargs):
    return reload_(name)


def get_running():
    return sorted(n for n, e in _read().items() if e.get("running"))


# --- enabled: the image starts it too -------------------------------------------------


def enable(name, **kwargs):
    _runnable(name)
    return _record(name, enabled=True)


def disable(name, **kwargs):
    return _record(name, enabled=False)


def enabled(name, **kwargs):
    return bool(_entry(name).get("enabled"))


def disabled(name, **kwargs):
    return not enabled(name)


def get_enabled():
    return sorted(n for n, e in _read().items() if e.get("enabled"))


def get_disabled():
    return sorted(set(get_all()) - set(get_enabled()))


# --- masked: never runs ---------------------------------------------------------------


def mask(name, runtime=False, **kwargs):
    return _record(name, masked=True)


def unmask_(name, runtime=False, **kwargs):
    return _record(name, masked=False)


def masked(name, runtime=False, **kwargs):
    return bool(_entry(name).get("masked"))


def offline():
    # Salt skips service states when this is true; here they must record.
    return False


__func_alias__ = {"reload_": "reload", "unmask_": "unmask"}
