"""The bake's `service` module (salt/_modules/workbench_service.py) under Salt's own service
states, as the bake's `providers` setting wires them; and the container bakes' refusals of
kernel parameters and modules (workbench_sysctl, workbench_kmod).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def load(path: Path, name: str) -> types.ModuleType:
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


# --- the bake's service module, under Salt's own service states ---------------------------------


@pytest.fixture
def salt_service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Any, types.ModuleType, list[Any]]]:
    """Salt's `service` states wired to workbench_service, as the bake's `providers` setting does.

    Yields (the state module, the execution module, the `workbench-services check` calls).
    """
    import salt.states.service as states

    module = load(REPO / "salt/_modules/workbench_service.py", "workbench_service")
    units = tmp_path / "units"
    units.mkdir()
    for name in ("redis-server", "unrunnable"):
        (units / f"{name}.service").write_text("[Service]\nExecStart=/bin/true\n")
    runner = tmp_path / "workbench-services"
    runner.write_text("#!/bin/sh\n")
    runner.chmod(0o755)
    monkeypatch.setattr(module, "RECORD", str(tmp_path / "etc/workbench/services.json"))
    monkeypatch.setattr(module, "UNIT_DIRS", (str(units),))
    monkeypatch.setattr(module, "INIT_DIR", str(tmp_path / "init.d"))
    monkeypatch.setattr(module, "RUNNER", str(runner))
    checks: list[Any] = []

    def run_all(argv: list[str], **kwargs: Any) -> dict[str, Any]:
        checks.append(argv)
        if argv[-1] == "unrunnable":
            return {"retcode": 1, "stdout": "", "stderr": "unrunnable: Type=oneshot runs once and exits"}
        return {"retcode": 0, "stdout": f"{argv[-1]} runs from ...", "stderr": ""}

    module.__salt__ = {"cmd.run_all": run_all}  # type: ignore[attr-defined]
    functions = {
        f"service.{name.rstrip('_')}": getattr(module, name)
        for name in dir(module)
        if not name.startswith("_") and callable(getattr(module, name))
        and name not in ("CommandExecutionError",)
    }
    functions.update({f"service.{alias}": getattr(module, name) for name, alias in module.__func_alias__.items()})
    for dunder, value in (("__salt__", functions), ("__opts__", {"test": False}), ("__context__", {})):
        monkeypatch.setattr(states, dunder, value, raising=False)
    yield states, module, checks


def record(module: types.ModuleType) -> dict[str, Any]:
    return dict(json.loads(Path(module.RECORD).read_text())["services"])


def test_running_records_and_is_idempotent(salt_service: Any) -> None:
    states, module, checks = salt_service
    first = states.running("redis-server", enable=True)
    assert first["result"] is True and first["changes"] == {"redis-server": True}, first
    assert record(module) == {"redis-server": {"running": True, "enabled": True, "masked": False}}
    assert checks and checks[0][-2:] == ["check", "redis-server"]
    again = states.running("redis-server", enable=True)
    assert again["result"] is True and again["changes"] == {}, again
    assert "already running" in again["comment"]


def test_watch_restarts_and_reloads_succeed(salt_service: Any) -> None:
    states, module, _ = salt_service
    states.running("redis-server")
    restarted = states.mod_watch("redis-server", sfun="running")
    reloaded = states.mod_watch("redis-server", sfun="running", reload=True)
    assert (restarted["result"], restarted["comment"]) == (True, "Service restarted")
    assert (reloaded["result"], reloaded["comment"]) == (True, "Service reloaded")
    assert record(module)["redis-server"]["running"] is True


def test_dead_disabled_enabled(salt_service: Any) -> None:
    states, module, _ = salt_service
    states.running("redis-server", enable=True)
    dead = states.dead("redis-server", enable=False)
    assert dead["result"] is True and dead["changes"], dead
    assert record(module)["redis-server"] == {"running": False, "enabled": False, "masked": False}
    assert states.dead("redis-server", enable=False)["changes"] == {}
    enabled = states.enabled("redis-server")
    assert enabled["result"] is True and enabled["changes"] == {"redis-server": True}
    assert states.disabled("redis-server")["changes"] == {"redis-server": True}
    assert record(module)["redis-server"]["enabled"] is False


def test_a_missing_or_unrunnable_service_fails_its_state(salt_service: Any) -> None:
    states, module, _ = salt_service
    missing = states.running("no-such-daemon")
    assert missing["result"] is False
    assert missing["comment"] == "The named service no-such-daemon is not available"
    unrunnable = states.running("unrunnable")
    assert unrunnable["result"] is False
    assert "Type=oneshot runs once" in unrunnable["comment"]
    assert not Path(module.RECORD).exists(), "nothing recorded for either"
    # Dead needs nothing to exist (as Salt's own: a missing service is dead).
    assert states.dead("no-such-daemon")["result"] is True


def test_without_the_runner_nothing_would_run_it(salt_service: Any) -> None:
    states, module, _ = salt_service
    Path(module.RUNNER).unlink()
    failed = states.running("redis-server")
    assert failed["result"] is False and "the base state installs it" in failed["comment"]


def test_not_loaded_under_its_own_name() -> None:
    # Sandboxes sync salt/_modules too: there Salt's own service module stays.
    for name in ("workbench_service", "workbench_sysctl", "workbench_kmod"):
        module = load(REPO / f"salt/_modules/{name}.py", name)
        assert module.__virtual__()[0] is False


def test_container_refuses_kernel_parameters_and_modules() -> None:
    from salt.exceptions import CommandExecutionError

    sysctl = load(REPO / "salt/_modules/workbench_sysctl.py", "workbench_sysctl")
    with pytest.raises(CommandExecutionError, match="cannot set the kernel parameter vm.overcommit_memory = 1"):
        sysctl.persist("vm.overcommit_memory", 1)
    kmod = load(REPO / "salt/_modules/workbench_kmod.py", "workbench_kmod")
    with pytest.raises(CommandExecutionError, match="cannot load kernel modules"):
        kmod.mod_list()
