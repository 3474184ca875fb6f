"""`fab netboot.serve --interface`: the node serves a LAN behind a host interface (real namespaces, no VM).

The LAN is a stand-in: a veth pair whose one end, named with the test's prefix,
stays in the host's namespace as the interface to serve, and whose other end
sits in a namespace of its own as a PC on that LAN. Only addresses inside the
namespaces made here carry traffic (the inventory's lab subnet).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.commands import FAB, fab
from tests.support.config import REPO
from tests.support.netboot import EXAMPLE
from workbench.core import config as wb_config
from workbench.core.errors import NetbootError
from workbench.netboot import inventory, netns, node, uplink

PC_MAC = "52:54:00:77:00:11"  # hv1's, so the node offers its reserved address
PC_IF = "lan0"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def link_state(name: str) -> dict[str, Any]:
    """What the host should keep of its interface: index, MAC, flags, master, addresses."""
    data = json.loads(ip("-j", "addr", "show", "dev", name).stdout)[0]
    return {
        "ifindex": data["ifindex"],
        "address": data["address"],
        "up": "UP" in data["flags"],
        "master": data.get("master"),
        "addresses": sorted((a["family"], a["local"]) for a in data.get("addr_info", [])),
    }


def uppers(name: str) -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net", name).glob("upper_*"))


@pytest.fixture()
def lan(nb_cfg: wb_config.Config) -> Iterator[tuple[str, str]]:
    """(the host's end, the PC's namespace): a veth pair, one end here, one in a namespace as a PC."""
    host_end = f"{nb_cfg.prefix}-lan"
    pc = f"{nb_cfg.prefix}-pc"
    assert len(host_end) <= 15, f"prefix {nb_cfg.prefix!r} too long for an interface name"
    try:
        ip("netns", "add", pc)
        ip("link", "add", host_end, "type", "veth", "peer", "name", PC_IF, "netns", pc)
        ip("-n", pc, "link", "set", PC_IF, "address", PC_MAC)
        ip("-n", pc, "link", "set", "lo", "up")
        ip("-n", pc, "link", "set", PC_IF, "up")
        ip("link", "set", host_end, "up")
        yield host_end, pc
    finally:
        ip("link", "del", host_end, check=False)
        netns.remove(pc)
        assert not Path("/sys/class/net", host_end).exists()


# A DHCP client in a few lines: DISCOVER on the interface (SO_BINDTODEVICE, no address
# yet, broadcast flag set) and the first OFFER for our transaction, as JSON.
DHCP_DISCOVER = r"""
import json, os, socket, struct, sys, time
iface, mac = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", ""))
xid = int.from_bytes(os.urandom(4), "big")
head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
                   bytes(4), bytes(4), bytes(4), bytes(4), mac, b"", b"")
packet = head + bytes([99, 130, 83, 99, 53, 1, 1, 55, 4, 1, 3, 6, 15, 255])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
s.bind(("0.0.0.0", 68))
s.settimeout(1.0)
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    s.sendto(packet, ("255.255.255.255", 67))
    try:
        while True:
            reply = s.recv(4096)
            op, _, _, _, rxid = struct.unpack("!BBBBI", reply[:8])
            if op != 2 or rxid != xid or reply[236:240] != bytes([99, 130, 83, 99]):
                continue
            options, i = {}, 240
            while i < len(reply) and reply[i] != 255:
                if reply[i] == 0:
                    i += 1
                    continue
                options[reply[i]] = reply[i + 2 : i + 2 + reply[i + 1]]
                i += 2 + reply[i + 1]
            print(json.dumps({
                "type": options.get(53, b"\0")[0],
                "yiaddr": socket.inet_ntoa(reply[16:20]),
                "server": socket.inet_ntoa(options.get(54, bytes(4))),
                "router": socket.inet_ntoa(options.get(3, bytes(4))[:4]),
                "file": reply[108:236].rstrip(b"\0").decode(),
            }))
            sys.exit(0)
    except socket.timeout:
        pass
sys.exit("no DHCP offer within 15s")
"""


def in_pc(pc: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", pc, *argv], capture_output=True, text=True, check=check, timeout=60)


def test_serve_answers_a_pc_on_the_lan_and_stop_leaves_the_interface(
    nb_cfg: wb_config.Config, lan: tuple[str, str]
) -> None:
    host_end, pc = lan
    before = link_state(host_end)
    env = {**os.environ, wb_config.ENV_CONFIG: str(nb_cfg.path)}
    serve = subprocess.Popen(
        [str(FAB), "netboot.serve", f"--interface={host_end}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lab = netns.namespace_name(nb_cfg.prefix)
    try:
        deadline = time.monotonic() + 60
        while not (node.node_dir(nb_cfg) / "node.json").exists():
            assert serve.poll() is None and time.monotonic() < deadline, serve.stdout and serve.stdout.read()
            time.sleep(0.2)
        # The macvlan sits in the node's namespace, a port of nb0, which took its MAC.
        links = {d["ifname"]: d for d in json.loads(ip("-n", lab, "-j", "-d", "link", "show").stdout)}
        assert links[uplink.LINK]["master"] == netns.BRIDGE
        assert links[uplink.LINK]["linkinfo"]["info_kind"] == "macvlan"
        assert links[uplink.LINK]["linkinfo"]["info_data"]["mode"] == "bridge"
        assert links[netns.BRIDGE]["address"] == links[uplink.LINK]["address"]
        assert not Path("/sys/class/net", uplink.LINK).exists()  # never in the host's namespace

        offer = json.loads(in_pc(pc, "python3", "-c", DHCP_DISCOVER, PC_IF, PC_MAC).stdout)
        assert offer == {
            "type": 2,
            "yiaddr": "10.77.0.11",
            "server": "10.77.0.1",
            "router": "10.77.0.1",
            "file": "undionly.kpxe",
        }
        in_pc(pc, "ip", "addr", "add", f"{offer['yiaddr']}/24", "dev", PC_IF)
        script = in_pc(pc, "curl", "-sf", "-m", "10", "http://10.77.0.1:8080/boot/hv1.ipxe").stdout
        assert script.startswith("#!ipxe") and "wb.role=hypervisor" in script
        log = (node.node_dir(nb_cfg) / "dnsmasq.log").read_text()
        assert f"DHCPOFFER({netns.BRIDGE}) 10.77.0.11 {PC_MAC}" in log
        status = json.loads(fab("netboot.status", "--json", config=nb_cfg.path, check=True).stdout)
        assert (status["running"], status["interface"]) == (True, host_end)

        stop = fab("netboot.stop", config=nb_cfg.path, check=True)
        assert "stopped the node" in stop.stdout
        assert serve.wait(timeout=30) == 0
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
    out = serve.stdout.read() if serve.stdout else ""
    assert f"on the LAN of {host_end}: macvlan {uplink.LINK}" in out
    assert not netns.exists(lab)
    assert uppers(host_end) == []  # the macvlan is gone with the node
    assert link_state(host_end) == before


def test_bad_interfaces_are_refused_before_anything_starts(nb_cfg: wb_config.Config, lan: tuple[str, str]) -> None:
    host_end, _ = lan
    inv = inventory.load(nb_cfg, EXAMPLE)
    lab = netns.namespace_name(nb_cfg.prefix)
    missing = f"{nb_cfg.prefix}-no"
    cases = {
        missing: f"--interface {missing}: no such network interface on this host",
        "lo": "--interface lo: the loopback interface reaches no LAN",
        netns.BRIDGE: f"--interface {netns.BRIDGE}: that is one of the node's own links",
    }
    for name, message in cases.items():
        with pytest.raises(NetbootError, match=message), node.running(nb_cfg, inv, interface=name):
            pass
        assert not netns.exists(lab) and not (node.node_dir(nb_cfg) / "node.json").exists()
    ip("link", "set", host_end, "down")
    # Through fab as well: the message says how to fix it, the exit code is an error's.
    proc = fab("netboot.serve", f"--interface={host_end}", config=nb_cfg.path)
    assert proc.returncode == 1
    assert f"--interface {host_end} is down: `ip link set {host_end} up`" in proc.stderr
    assert not netns.exists(lab) and uppers(host_end) == []
