"""`netboot.serve --interface`: the host interface's checks, the macvlan's commands, the inventory key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.netboot import EXAMPLE, example
from workbench.core import config as wb_config
from workbench.core import run
from workbench.core.errors import CommandFailed, ConfigError, NetbootError
from workbench.netboot import dnsmasq, inventory, netns, node, uplink


@pytest.fixture()
def sys_net(tmp_path: Path) -> Path:
    """A stand-in for /sys/class/net: eth0 up, lo, a down one, a bridge with a port, a tunnel."""
    root = tmp_path / "net"

    def link(name: str, flags: int, kind: int = 1, master: str = "", bridge: bool = False) -> None:
        (root / name).mkdir(parents=True)
        (root / name / "flags").write_text(f"{flags:#x}\n")
        (root / name / "type").write_text(f"{kind}\n")
        if master:
            (root / name / "master").symlink_to(root / master)
        if bridge:
            (root / name / "bridge").mkdir()

    link("eth0", 0x1003)
    link("lo", 0x9, kind=772)
    link("eth1", 0x1002)
    link("br0", 0x1003, bridge=True)
    link("eth2", 0x1103, master="br0")
    link("bond0", 0x1403)
    link("eth3", 0x1803, master="bond0")
    link("wg0", 0x91, kind=65534)
    return root


def test_an_ethernet_interface_that_is_up_passes(sys_net: Path) -> None:
    uplink.check("eth0", sys_net)
    uplink.check("br0", sys_net)  # a host bridge itself is fine: the macvlan sits on it


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("eth9", r"--interface eth9: no such network interface on this host; `ip -br link` lists them"),
        ("lo", r"--interface lo: the loopback interface reaches no LAN"),
        ("eth1", r"--interface eth1 is down: `ip link set eth1 up`, then serve again"),
        ("eth2", r"--interface eth2: a port of bridge br0, which takes all its traffic; give --interface br0"),
        ("eth3", r"--interface eth3: a port of device bond0, .* give --interface bond0"),
        ("wg0", r"--interface wg0: not an Ethernet interface \(type 65534\)"),
        ("nb0", r"--interface nb0: that is one of the node's own links inside its namespace"),
        (uplink.LINK, r"one of the node's own links"),
    ],
)
def test_interfaces_that_cannot_carry_the_node(sys_net: Path, name: str, message: str) -> None:
    with pytest.raises(NetbootError, match=message):
        uplink.check(name, sys_net)


@pytest.mark.parametrize("name", ["", "a" * 16, "eth0/../lo", "eth 0", "eth0:1"])
def test_names_linux_would_not_accept(sys_net: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="not a network interface name"):
        uplink.check(name, sys_net)


def _result(argv: list[str], stdout: str = "") -> run.Result:
    return run.Result(list(argv), 0, stdout, "", 0.0)


def test_attach_makes_a_bridge_mode_macvlan_inside_the_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def capture(argv: list[str], **_: Any) -> run.Result:
        calls.append(list(argv))
        return _result(argv, "0a:1b:2c:3d:4e:5f\n" if argv[-1].endswith("/address") else "")

    monkeypatch.setattr(run, "capture", capture)
    lab = netns.Lab("wbu-nb", netns.BRIDGE)
    up = uplink.attach(lab, "eth0")
    assert up == uplink.Uplink("eth0", "nbup0", "0a:1b:2c:3d:4e:5f")
    inside = ["ip", "netns", "exec", "wbu-nb"]
    assert calls == [
        # Created straight in the node's namespace: it never shows in the host's.
        ["ip", "link", "add", "nbup0", "link", "eth0", "netns", "wbu-nb", "type", "macvlan", "mode", "bridge"],
        [*inside, "ip", "link", "set", "nbup0", "master", "nb0"],
        [*inside, "cat", "/sys/class/net/nbup0/address"],
        # The bridge answers with the macvlan's MAC, the only unicast MAC the macvlan receives.
        [*inside, "ip", "link", "set", "nb0", "address", "0a:1b:2c:3d:4e:5f"],
        [*inside, "ip", "link", "set", "nbup0", "up"],
    ]


@pytest.mark.parametrize(
    ("stderr", "hint"),
    [
        ("RTNETLINK answers: Operation not permitted", r"no permission: run as root or with CAP_NET_ADMIN"),
        (
            "RTNETLINK answers: Device or resource busy",
            r"busy: a bridge, bond or ipvlan already holds it; give that device instead",
        ),
    ],
)
def test_a_macvlan_the_kernel_refuses_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, stderr: str, hint: str
) -> None:
    def capture(argv: list[str], **_: Any) -> run.Result:
        raise CommandFailed(list(argv), 2, 0.0, [stderr])

    monkeypatch.setattr(run, "capture", capture)
    with pytest.raises(NetbootError, match=rf"cannot make a macvlan of eth0 for the node \({hint}\)"):
        uplink.attach(netns.Lab("wbu-nb", netns.BRIDGE), "eth0")


def test_running_checks_the_interface_before_anything_is_made(
    netboot_cfg: wb_config.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = inventory.load(netboot_cfg, EXAMPLE)
    monkeypatch.setattr(netns, "check_free", lambda name: None)
    monkeypatch.setattr(uplink, "SYS_NET", Path("/nonexistent"))
    made: list[str] = []
    monkeypatch.setattr(netns, "lab", lambda *a: made.append("lab"))
    with (
        pytest.raises(NetbootError, match="no such network interface"),
        node.running(netboot_cfg, inv, interface="eth0"),
    ):
        pass
    assert made == [] and not node.node_dir(netboot_cfg).exists()


def test_running_without_root_says_so_first(netboot_cfg: wb_config.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    inv = inventory.load(netboot_cfg, EXAMPLE)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with (
        pytest.raises(NetbootError, match=r"which need root \(CAP_NET_ADMIN\)"),
        node.running(netboot_cfg, inv, interface="lo"),
    ):
        pass


def test_inventory_interface_key(netboot_cfg: wb_config.Config) -> None:
    assert inventory.load(netboot_cfg, EXAMPLE).network.interface == ""
    data = example()
    data["network"]["interface"] = "enp3s0"
    assert inventory.from_dict(data, EXAMPLE, netboot_cfg).network.interface == "enp3s0"
    for bad in (7, "eth 0", "a" * 16):
        data["network"]["interface"] = bad
        with pytest.raises(ConfigError, match=r"\[network\] interface = .*: expected a host interface name like eth0"):
            inventory.from_dict(data, EXAMPLE, netboot_cfg)


def test_serve_takes_the_inventorys_interface_unless_told_otherwise(
    netboot_cfg: wb_config.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = example()
    data["network"]["interface"] = "eth0"
    inv = inventory.from_dict(data, EXAMPLE, netboot_cfg)
    seen: list[str] = []

    def running(config: Any, inv: Any, live: Any = None, interface: str = "") -> Any:
        seen.append(interface)
        raise NetbootError("stop here")

    monkeypatch.setattr(node, "running", running)
    for override in (None, "eth1"):
        with pytest.raises(NetbootError, match="stop here"):
            node.serve(netboot_cfg, inv, interface=override)
    assert seen == ["eth0", "eth1"]  # the inventory's, then --interface's


def test_on_a_lan_the_node_is_no_ipv6_default_router(netboot_cfg: wb_config.Config, tmp_path: Path) -> None:
    inv = inventory.load(netboot_cfg, EXAMPLE)
    plan = dnsmasq.Plan("nb0", tmp_path / "tftp", tmp_path / "log", tmp_path / "leases", tmp_path / "d.conf", lan=True)
    lines = dnsmasq.config_text(inv, plan).splitlines()
    assert "ra-param=nb0,0,0" in lines and "enable-ra" in lines
    isolated = dnsmasq.config_text(inv, dnsmasq.Plan("nb0", *(tmp_path / n for n in ("t", "l", "s", "c"))))
    assert "ra-param" not in isolated
