"""The jumpbox role: a hardened sshd (keys only, no root login, no passwords) under monit."""

from __future__ import annotations

from typing import Any

import pytest
from basesystem import *  # noqa: F403 -- every role image carries the basesystem

pytestmark = pytest.mark.usefixtures("monit_ready")


def effective(host: Any) -> dict[str, str]:
    """`sshd -T`: the settings sshd really uses, one `key value` a line, keys in lower case."""
    out = host.check_output("/usr/sbin/sshd -T")
    return {key: value for key, _, value in (line.partition(" ") for line in out.splitlines())}


def test_openssh_server_installed(host: Any) -> None:
    assert host.package("openssh-server").is_installed


def test_sshd_listens_and_is_supervised(host: Any, monit_ready: dict[str, tuple[str, str]]) -> None:
    assert monit_ready.get("sshd", ("", ""))[0] == "OK"
    assert host.socket("tcp://0.0.0.0:22").is_listening


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("passwordauthentication", "no"),
        ("kbdinteractiveauthentication", "no"),
        ("permitemptypasswords", "no"),
        ("permitrootlogin", "no"),
        ("pubkeyauthentication", "yes"),
        ("authenticationmethods", "publickey"),
        ("allowtcpforwarding", "local"),
        ("allowagentforwarding", "no"),
        ("x11forwarding", "no"),
        ("permittunnel", "no"),
        ("authorizedkeysfile", "/etc/ssh/authorized_keys/%u"),
    ],
)
def test_hardened_setting(host: Any, key: str, value: str) -> None:
    assert effective(host)[key] == value


def test_host_keys_made_at_start_not_baked(host: Any) -> None:
    # The image has none; the start hook made these, so they are newer than
    # the sshd configuration the bake installed.
    key = host.file("/etc/ssh/ssh_host_ed25519_key")
    assert key.exists and key.mode == 0o600
    assert key.mtime > host.file("/etc/ssh/sshd_config.d/10-workbench-hardening.conf").mtime


def test_ops_user_has_no_usable_password(host: Any) -> None:
    user = host.user("ops")
    assert user.exists and user.shell == "/bin/bash"
    assert user.password in ("!", "*", "!*") or user.password.startswith("!")


def test_a_password_login_is_refused(host: Any) -> None:
    # The server offers publickey only: a client with keys disabled has nothing to try.
    out = host.run(
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        "-o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive "
        "-o ConnectTimeout=5 ops@127.0.0.1 true"
    )
    assert out.rc != 0
    assert "Permission denied (publickey)" in out.stderr
