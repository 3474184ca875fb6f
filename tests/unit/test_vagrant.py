"""Parsers of Vagrant's machine-readable output, against output recorded from Vagrant 2.3.4."""

from __future__ import annotations

from pathlib import Path

from workbench.sandbox import vagrant

DATA = Path(__file__).parent / "data" / "vagrant"


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_status_of_every_machine() -> None:
    statuses = vagrant.parse_status(read("status.txt"))
    assert statuses == [
        vagrant.MachineStatus("web", "running", "docker"),
        vagrant.MachineStatus("peer", "running", "docker"),
    ]


def test_status_of_one_machine() -> None:
    assert vagrant.parse_status(read("status-web.txt")) == [vagrant.MachineStatus("web", "running", "docker")]


def test_status_error_is_no_machine_and_an_error() -> None:
    text = read("status-error.txt")
    assert vagrant.parse_status(text) == []
    assert vagrant.parse_error(text) == (
        "The machine with the name 'nosuch' was not found configured for\nthis Vagrant environment."
    )


def test_error_exit_unescapes_commas() -> None:
    message = vagrant.parse_error(read("up-libvirt-missing.txt"))
    assert message is not None
    assert message.startswith("The provider 'libvirt' could not be found, but was requested to\nback the machine")


def test_no_error_in_a_successful_run() -> None:
    assert vagrant.parse_error(read("up.txt")) is None
    assert vagrant.parse_error(read("destroy.txt")) is None


def test_ssh_config() -> None:
    conf = vagrant.parse_ssh_config(read("ssh-config.txt"))
    assert conf["Host"] == "web.sandbox.wpdn"
    assert conf["HostName"] == "172.17.0.3"
    assert conf["User"] == "vagrant"
    assert conf["Port"] == "22"
    assert conf["IdentityFile"].endswith("/sandbox/ssh/id_ed25519")


def test_plugin_list_empty() -> None:
    assert vagrant.parse_plugins(read("plugin-list.txt")) == []


def test_plugin_list_with_plugins() -> None:
    text = (
        "1424145521,,plugin-name,vagrant-libvirt\n"
        "1424145521,vagrant-libvirt,plugin-version,0.11.2%!(VAGRANT_COMMA) global\n"
    )
    assert vagrant.parse_plugins(text) == ["vagrant-libvirt"]


def test_ui_lines_give_their_text_only() -> None:
    messages = [vagrant.ui_message(line) for line in read("up.txt").splitlines()]
    shown = [m for m in messages if m]
    assert shown[0] == "Bringing machine 'peer' up with 'docker' provider..."
    assert "==> peer: Machine booted and ready!" in shown
    # metadata and action lines are not for people
    assert messages[0] is None and messages[2] is None
    assert "peer:   Name: sbxdev-sandbox-peer" in shown


def test_lines_that_are_not_machine_readable_are_skipped() -> None:
    assert vagrant.parse_lines("Vagrant failed to initialize\n\n12,,ui,info,x") == [
        vagrant.MachineLine("", "ui", ("info", "x"))
    ]
