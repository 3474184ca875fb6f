"""The services role of tests/e2e/test_formulas.py (its `tests`): what Salt's service states
declared during the bake is what the image runs, and nothing ran during the bake.

Not named test_*.py: the e2e session must not collect it; the bake runs it by name.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from basesystem import *  # noqa: F403 -- every role image carries the basesystem

pytestmark = pytest.mark.usefixtures("monit_ready")

STARTED = "/var/lib/wbt-started"


def starts(host: Any) -> dict[str, int]:
    """How often each stand-in daemon started: {name: starts}."""
    names = host.file(STARTED).listdir()
    return {name: len(host.file(f"{STARTED}/{name}").content_string.split()) for name in names}


def http_body(host: Any, port: int) -> str:
    return str(host.check_output(f"curl -sS --max-time 5 http://127.0.0.1:{port}/"))


def test_each_declared_service_started_once_and_nothing_in_the_bake(host: Any) -> None:
    # A start during the bake would have left its note in the image: only the
    # container's own starts are here.
    assert starts(host) == {"unit": 1, "init-script": 1, "forking": 1}


def test_the_record(host: Any) -> None:
    record = json.loads(host.file("/etc/workbench/services.json").content_string)["services"]
    assert record["wbt-unit"] == {"running": True, "enabled": True, "masked": False}
    assert record["wbt-init"] == {"running": True, "enabled": True, "masked": False}
    assert record["wbt-forking"] == {"running": False, "enabled": True, "masked": False}
    # Already dead and disabled (never declared otherwise): nothing to record, nothing runs.
    assert not any(record.get(name, {}).get("running") or record.get(name, {}).get("enabled")
                   for name in ("wbt-dead", "wbt-disabled"))
    assert host.check_output("workbench-services list").split() == ["wbt-forking", "wbt-init", "wbt-unit"]


def test_unit_only_service_runs_its_exec_start(host: Any) -> None:
    assert http_body(host, 8081) == "wbt"
    daemon = host.process.get(pid=int(host.file("/run/workbench/services/wbt-unit.pid").content_string))
    assert daemon.user == "nobody"
    assert daemon.args.endswith("http.server 8081 --bind 0.0.0.0 --directory /srv/wbt")
    run_dir = host.file("/run/wbt-unit")
    assert run_dir.is_directory and run_dir.user == "nobody"
    check = host.file("/run/workbench/monit.d/wbt-unit").content_string
    assert "check process \"wbt-unit\"" in check and "/etc/systemd/system/wbt-unit.service" in check


def test_init_script_only_service_runs_from_its_script(host: Any) -> None:
    assert http_body(host, 8082) == "wbt"
    check = host.file("/run/workbench/monit.d/wbt-init").content_string
    assert "/etc/init.d/wbt-init (init script)" in check
    # monit watches a watcher, which asks the script's status.
    watcher = host.process.get(pid=int(host.file("/run/workbench/services/wbt-init.pid").content_string))
    assert watcher.args.endswith("workbench-services watch wbt-init")


def test_forking_service_is_followed_to_its_pidfile(host: Any) -> None:
    assert http_body(host, 8083) == "wbt"
    ours = host.file("/run/workbench/services/wbt-forking.pid").content_string.strip()
    assert ours == host.file("/run/wbt-forking.pid").content_string.strip()


def test_dead_and_disabled_services_do_not_run(host: Any) -> None:
    for port in (8084, 8085, 8089):
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert not host.file("/run/workbench/monit.d/wbt-dead").exists
    assert not host.file("/run/workbench/monit.d/wbt-disabled").exists


def test_monit_supervises_the_declared_services(monit_ready: dict[str, tuple[str, str]]) -> None:
    assert monit_ready["wbt-unit"] == ("OK", "Process")
    assert monit_ready["wbt-forking"] == ("OK", "Process")
    assert monit_ready["wbt-init"] == ("OK", "Process")


def test_monit_restarts_killed_services(host: Any, wait: Any, kill_and_wait_restart: Any) -> None:
    # Last in the file: it kills what the checks above use.
    kill_and_wait_restart("wbt-unit", "/run/workbench/services/wbt-unit.pid")
    kill_and_wait_restart("wbt-init", "/run/wbt-init.pid")
    kill_and_wait_restart("wbt-forking", "/run/workbench/services/wbt-forking.pid")
    for port in (8081, 8082, 8083):
        wait(lambda port=port: http_body(host, port) == "wbt", f"port {port} answers again")
    assert starts(host) == {"unit": 2, "init-script": 2, "forking": 2}
