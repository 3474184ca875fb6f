"""`[roles.<r>] capabilities`, `verify_environment` and `start_timeout`: validated, and used
by verification (the candidate's container) and the Docker deploy target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from workbench.build import verify
from workbench.core import config as wb_config
from workbench.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
PATH = REPO / "workbench.toml"


def load(roles: dict[str, Any]) -> wb_config.Config:
    return wb_config.from_dict({"roles": roles}, PATH)


def problems(roles: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        load(roles)
    return str(info.value)


def test_defaults_ask_for_nothing() -> None:
    role = load({"app": {}}).roles["app"]
    assert role.capabilities == ()
    assert role.verify_environment == ()
    assert role.start_timeout == 0
    assert verify.container_options(role) == {}
    assert verify.ready_timeout(role) == verify.READY_TIMEOUT == 90.0


def test_the_controller_asks_for_its_capabilities_and_throwaway_settings() -> None:
    role = wb_config.load(PATH).role("controller")
    assert verify.container_options(role) == {
        "cap_add": ["NET_ADMIN", "SYS_ADMIN", "DAC_READ_SEARCH", "SYS_PTRACE"],
        "environment": ["WORKBENCH_CLOUD_THROWAWAY=1"],
    }
    assert verify.ready_timeout(role) == float(role.start_timeout) > verify.READY_TIMEOUT
    assert f"time.monotonic() + {float(role.start_timeout)!r}" in verify.ready_probe(role)


def test_a_vm_gets_the_verification_environment_and_emulation_time(tmp_path: Path) -> None:
    """A qcow2 candidate's image command gets the same environment as a candidate container, from a
    drop-in systemd reads (quoted as it parses it); under software emulation the wait is longer."""
    role = load({"app": {"verify_environment": ["A=1", "B=two words"]}}).roles["app"]
    text = verify.verify_drop_in(role)
    assert text.endswith("[Service]\nEnvironment=A=1\nEnvironment='B=two words'\n")
    assert verify.ready_timeout(role, emulated=True) == verify.READY_TIMEOUT * verify.EMULATION_SLOWDOWN
    if Path("/usr/bin/systemd-analyze").exists():
        unit = tmp_path / "wbtest-verify.service"
        unit.write_text("[Service]\nExecStart=/bin/true\n" + text.split("[Service]\n", 1)[1])
        shown = __import__("subprocess").run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        assert "ignoring" not in shown.stderr, shown.stderr


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        ({"app": {"capabilities": ["NET_ADMN"]}},
         "[roles.app] capabilities: 'NET_ADMN' is not a Linux capability"),
        ({"app": {"capabilities": ["CAP_NET_ADMIN"]}},
         "[roles.app] capabilities: 'CAP_NET_ADMIN' is not a Linux capability"),
        ({"app": {"capabilities": "NET_ADMIN"}},
         "[roles.app] capabilities = 'NET_ADMIN': expected a list, got a string"),
        ({"app": {"verify_environment": ["WORKBENCH_CLOUD_THROWAWAY"]}},
         "[roles.app] verify_environment: 'WORKBENCH_CLOUD_THROWAWAY' is not KEY=VALUE"),
        ({"app": {"verify_environment": ["1X=a"]}}, "[roles.app] verify_environment: '1X=a' is not KEY=VALUE"),
        ({"app": {"verify_environment": ["=a"]}}, "[roles.app] verify_environment: '=a' is not KEY=VALUE"),
        ({"app": {"verify_environment": [1]}}, "[roles.app] verify_environment = [1]: in the list: expected a string"),
        ({"app": {"start_timeout": -1}}, "[roles.app] start_timeout = -1: give 1 to 3600 seconds"),
        ({"app": {"start_timeout": "300"}}, "[roles.app] start_timeout = '300': expected an integer"),
    ],
)
def test_bad_values_are_one_error_naming_file_and_key(roles: dict[str, Any], expected: str) -> None:
    message = problems(roles)
    assert message.startswith(f"{PATH}: 1 problem(s):")
    assert expected in message


def test_good_values_load() -> None:
    role = load({"app": {
        "capabilities": ["NET_ADMIN", "SYS_PTRACE"],
        "verify_environment": ["A=1", "B=x=y", "C="],
        "start_timeout": 300,
    }}).roles["app"]
    assert role.capabilities == ("NET_ADMIN", "SYS_PTRACE")
    assert verify.container_options(role)["environment"] == ["A=1", "B=x=y", "C="]
    assert verify.ready_timeout(role) == 300.0
