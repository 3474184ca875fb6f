"""dnsmasq configuration and log parsing, boot scripts, timelines, qemu's command line, errors.

What dnsmasq itself makes of the configurations: tests/integration/test_generated_files.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.netboot import plan
from workbench.build import chroot
from workbench.core import config as wb_config
from workbench.core.errors import ConfigError, NetbootError
from workbench.netboot import (
    artifacts,
    boot,
    dnsmasq,
    httpserve,
    image_files,
    inventory,
    labtest,
    netns,
    nfs,
    node,
    qemu,
    router,
    timeline,
)

DATA = Path(__file__).parent / "data" / "netboot"


@pytest.fixture()
def live(tmp_path: Path) -> artifacts.LiveImage:
    return artifacts.LiveImage("0123456789ab", tmp_path / "live", "hypervisor", {}, True, 0.0)


def test_full_mode_config(netboot_inv: inventory.Inventory, tmp_path: Path) -> None:
    text = dnsmasq.config_text(netboot_inv, plan(tmp_path))
    lines = text.splitlines()
    assert "dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,1h" in lines
    assert "dhcp-host=52:54:00:77:00:11,set:hv1,10.77.0.11,hv1,infinite" in lines
    assert "host-record=hv1.lab.wpdn,hv1,10.77.0.11" in lines
    # First stage by architecture over TFTP, then HTTP for iPXE itself.
    assert "dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe,,10.77.0.1" in lines
    assert "dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi,,10.77.0.1" in lines
    assert "dhcp-boot=tag:ipxe,tag:hv1,http://10.77.0.1:8080/boot/hv1.ipxe" in lines
    assert "dhcp-boot=tag:ipxe,tag:!known,http://10.77.0.1:8080/boot/menu.ipxe" in lines
    assert "local=/lab.wpdn/" in lines and "no-resolv" in lines
    # The cloud's servers are Neutron's to answer (workbench.cloud).
    assert "dhcp-host=fa:16:3e:*:*:*,ignore" in lines


def test_proxy_mode_config(netboot_cfg: wb_config.Config, netboot_inv: inventory.Inventory, tmp_path: Path) -> None:
    proxy = inventory.Inventory(
        netboot_inv.path,
        inventory.Network("10.77.0.0/24", "10.77.0.2", "10.77.0.1", "proxy", None, "lab.wpdn", 8080),
        netboot_inv.export,
        netboot_inv.nodes,
    )
    lines = dnsmasq.config_text(proxy, plan(tmp_path)).splitlines()
    assert "dhcp-range=10.77.0.0,proxy,255.255.255.0" in lines
    assert not any(line.startswith("dhcp-boot=") for line in lines)
    assert 'pxe-service=tag:!ipxe,x86PC,"iPXE (BIOS)",undionly.kpxe' in lines
    assert 'pxe-service=tag:!ipxe,X86-64_EFI,"iPXE (UEFI)",ipxe.efi' in lines
    assert 'pxe-service=tag:ipxe,tag:hv1,x86PC,"hv1.lab.wpdn",http://10.77.0.2:8080/boot/hv1.ipxe' in lines
    # x86-64 UEFI announces architecture 7 or 9 (OVMF: 7): a menu for each, as the efi64 tag in full mode.
    for csa in ("X86-64_EFI", "BC_EFI"):
        assert f'pxe-service=tag:!ipxe,{csa},"iPXE (UEFI)",ipxe.efi' in lines
        assert f'pxe-service=tag:ipxe,tag:hv1,{csa},"hv1.lab.wpdn",http://10.77.0.2:8080/boot/hv1.ipxe' in lines


def test_parse_recorded_dnsmasq_log() -> None:
    events = dnsmasq.parse_log((DATA / "dnsmasq.log").read_text())
    kinds = [e.kind for e in events]
    assert kinds[:4] == ["DHCPDISCOVER", "DHCPOFFER", "DHCPDISCOVER", "DHCPOFFER"]
    offer = events[1]
    assert (offer.mac, offer.ip, offer.stamp) == ("52:54:00:77:00:11", "10.77.0.11", "Nov 22 03:30:12")
    assert "DHCPACK" in kinds
    tftp = events[-1]
    assert (tftp.kind, tftp.ip, tftp.detail) == ("TFTP", "10.77.0.1", "undionly.kpxe")


def test_node_script_and_menu(netboot_inv: inventory.Inventory, live: artifacts.LiveImage) -> None:
    hv1 = netboot_inv.node("hv1")
    script = boot.node_script(netboot_inv, live, hv1)
    assert script.startswith("#!ipxe\n")
    assert "kernel http://10.77.0.1:8080/live/0123456789ab/vmlinuz " in script
    assert "fetch=http://10.77.0.1:8080/live/0123456789ab/filesystem.squashfs" in script
    assert "wb.role=hypervisor" in script and "wb.report=http://10.77.0.1:8080/report" in script
    # The node names the machine it knows by MAC: in proxy mode the router's DHCP knows no names.
    assert " wb.name=hv1.lab.wpdn" in script
    menu = boot.menu_script(netboot_inv, live)
    # An unknown machine boots its own disk unless someone chooses otherwise.
    assert "choose --default local" in menu
    assert "sanboot --no-describe --drive 0x80" in menu
    assert "wb.role" not in menu


def test_write_tree(netboot_inv: inventory.Inventory, live: artifacts.LiveImage, tmp_path: Path) -> None:
    written = boot.write_tree(netboot_inv, live, tmp_path / "http")
    assert sorted(p.name for p in written) == ["hv1.ipxe", "hv2.ipxe", "menu.ipxe"]
    assert (tmp_path / "http" / "live" / "0123456789ab").resolve() == live.directory.resolve()


def test_timeline_from_recorded_logs(netboot_inv: inventory.Inventory, tmp_path: Path) -> None:
    for name in ("dnsmasq.log", "http.jsonl", "reports"):
        source = DATA / name
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, tmp_path / name)
    with open(tmp_path / "dnsmasq.log", "a") as log:
        log.write("Nov 22 03:30:14 dnsmasq-tftp[27711]: sent /srv/tftp/undionly.kpxe to 10.77.0.12\n")
    lines = {t.node.short: t for t in timeline.build(netboot_inv, tmp_path)}
    hv1 = lines["hv1"].to_dict()
    assert hv1["last"] == "reported"
    assert list(hv1["events"]) == [
        "dhcp offer",
        "dhcp ack",
        "ipxe script",
        "kernel",
        "initrd",
        "root image",
        "reported",
    ]
    assert hv1["events"]["dhcp offer"] == 0.0
    assert hv1["events"]["reported"] > hv1["events"]["root image"] > hv1["events"]["ipxe script"]
    assert lines["hv1"].report is not None and lines["hv1"].report["name"] == "hv1.lab.wpdn"
    # hv2 only fetched its loader: a stalled boot shows where it stopped.
    assert lines["hv2"].last == "ipxe loader"
    assert "hv2.lab.wpdn" in timeline.render(list(lines.values()))
    split = labtest.phases(lines["hv1"], lines["hv1"].events["dhcp offer"] - 2)
    assert set(split) == {"dhcp+ipxe", "kernel+initrd", "kernel boot", "root image", "userspace"}
    assert all(v >= 0 for v in split.values())


def test_qemu_argv_is_software_emulated_network_boot(tmp_path: Path) -> None:
    vm = qemu.VM("52:54:00:77:00:11", "nbtap0", tmp_path / "d.qcow2", tmp_path / "console.log")
    argv = qemu.argv(vm)
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert "-enable-kvm" not in argv
    assert "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:11" in argv
    assert argv[argv.index("-boot") + 1] == "order=n"


def test_missing_live_image_says_how_to_build(netboot_cfg: wb_config.Config) -> None:
    with pytest.raises(NetbootError, match=r"not built .* run `fab netboot.build` first"):
        artifacts.require_live(netboot_cfg)


def test_namespace_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(NetbootError, match=r"need root \(CAP_NET_ADMIN\)"), netns.lab("nbunit-never", "10.77.0.1", 24):
        pass
    assert not netns.exists("nbunit-never")


def test_stop_with_nothing_running(netboot_cfg: wb_config.Config) -> None:
    assert node.stop(netboot_cfg) == []


def test_stop_removes_what_a_killed_node_left(netboot_cfg: wb_config.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    state = node.node_dir(netboot_cfg)
    state.mkdir(parents=True, exist_ok=True)
    (state / "node.json").write_text('{"netns": "x", "pids": {}, "serve": 999999999}')
    removed: list[str] = []
    monkeypatch.setattr(netns, "remove", lambda name: removed.append(name) or True)
    assert node.stop(netboot_cfg) == ["removed namespace nbunit-nbr", "removed namespace nbunit-nb"]
    # The proxy-mode test's stand-in router goes too.
    assert removed == ["nbunit-nbr", "nbunit-nb"] and not (state / "node.json").exists()


def test_stop_signals_no_recorded_pid_that_is_not_the_nodes(
    netboot_cfg: wb_config.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node killed outright, long ago: its pids now belong to other programs.
    strangers = [subprocess.Popen(["sleep", "60"]) for _ in range(4)]
    try:
        pids = dict(zip(("http", "nfs", "dnsmasq"), (p.pid for p in strangers), strict=False))
        record = {"netns": "x", "pids": pids, "serve": strangers[3].pid, "interface": ""}
        state = node.node_dir(netboot_cfg)
        state.mkdir(parents=True, exist_ok=True)
        (state / "node.json").write_text(json.dumps(record))
        monkeypatch.setattr(netns, "remove", lambda name: False)
        assert node.stop(netboot_cfg, timeout=1) == []
        time.sleep(0.2)
        assert [p.poll() for p in strangers] == [None] * 4, "every stranger survives"
    finally:
        for proc in strangers:
            proc.kill()
            proc.wait()


def test_live_inputs_change_with_the_states(netboot_cfg: wb_config.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    before = artifacts.live_inputs(netboot_cfg)
    monkeypatch.setattr(artifacts, "RECIPE_VERSION", artifacts.RECIPE_VERSION + 1)
    assert artifacts.live_inputs(netboot_cfg) != before
    assert "hypervisor" in before["states"]  # type: ignore[operator]


def test_nfs_export_config(tmp_path: Path) -> None:
    plan = nfs.Plan("10.77.0.1", tmp_path / "persist", tmp_path / "nfs")
    text = nfs.config_text(plan, "10.77.0.0/24")
    assert "Protocols = 4;" in text and "Bind_addr = 10.77.0.1;" in text
    assert f"Path = {tmp_path / 'persist'};" in text and "Pseudo = /persist;" in text
    # Only the lab subnet gets read-write access; everyone else none.
    assert "Access_Type = None;" in text
    assert "Clients = 10.77.0.0/24;" in text and "Access_Type = RW;" in text
    assert "Graceless = true;" in text


def test_kernel_args_name_the_persistence_export(netboot_inv: inventory.Inventory, live: artifacts.LiveImage) -> None:
    assert "wb.persist=10.77.0.1:/persist" in boot.kernel_args(netboot_inv, live, netboot_inv.nodes[0])


def test_salt_result_line_is_found_after_warnings() -> None:
    out = 'DeprecationWarning: crypt\n{"local": {"pkg_|-p_|-p_|-installed": {"result": true, "changes": {}}}}\n'
    assert chroot._last_json(out) == {"local": {"pkg_|-p_|-p_|-installed": {"result": True, "changes": {}}}}
    assert chroot._last_json("Traceback (most recent call last):\n  boom\n") is None


def test_qemu_uefi_boots_through_the_firmwares_own_pxe(tmp_path: Path) -> None:
    vm = qemu.VM("52:54:00:77:00:11", "nbtap0", tmp_path / "d.qcow2", tmp_path / "c.log", firmware="uefi")
    argv = qemu.argv(vm)
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={qemu.OVMF_CODE}" in argv
    assert f"if=pflash,format=raw,unit=1,file={tmp_path / 'OVMF_VARS.fd'}" in argv
    # No iPXE option ROM: OVMF's PXE must fetch ipxe.efi over TFTP, as on a real PC.
    assert "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:11,romfile=" in argv
    assert not any("pflash" in a for a in qemu.argv(qemu.VM("m", "t", tmp_path / "d", tmp_path / "c")))


def test_unknown_firmware_is_a_clear_error(netboot_cfg: wb_config.Config, netboot_inv: inventory.Inventory) -> None:
    with pytest.raises(ConfigError, match="firmware 'coreboot': must be one of bios, uefi"):
        labtest.run_test(netboot_cfg, netboot_inv, firmware="coreboot")


def test_router_stand_in_for_proxy_mode(netboot_inv: inventory.Inventory, tmp_path: Path) -> None:
    proxy = netboot_inv.with_mode("proxy")
    # server == gateway: the router takes the highest free address and lends the 50 below it.
    stand_in = router.plan(proxy)
    assert (stand_in.address, stand_in.pool) == ("10.77.0.254", ("10.77.0.204", "10.77.0.253"))
    assert stand_in.lends("10.77.0.204") and not stand_in.lends("10.77.0.11") and not stand_in.lends("10.77.0.254")
    text = router.config_text(stand_in, "lan0", tmp_path / "leases", tmp_path / "router.log")
    lines = text.splitlines()
    assert "port=0" in lines and "interface=lan0" in lines
    assert "dhcp-range=10.77.0.204,10.77.0.253,255.255.255.0,1h" in lines
    assert "dhcp-option=option:router,10.77.0.254" in lines
    # A plain home router: no boot options, no TFTP, no names of ours.
    assert not any(k in text for k in ("pxe", "dhcp-boot", "tftp", "dhcp-host", "lab.wpdn"))
    # A gateway apart from the server is the router's address; the pool avoids the nodes and dhcp_range.
    net = proxy.network
    apart = inventory.Inventory(
        netboot_inv.path,
        inventory.Network(net.subnet, net.server, "10.77.0.160", "proxy", net.dhcp_range, net.domain, 8080),
        netboot_inv.export,
        netboot_inv.nodes,
    )
    assert router.plan(apart).address == "10.77.0.160"
    assert router.plan(apart).pool == ("10.77.0.205", "10.77.0.254")


def test_proxy_override_with_no_room_for_a_router_is_one_clear_error(
    netboot_cfg: wb_config.Config, tmp_path: Path
) -> None:
    # A full-mode /29: the server (also the gateway), hv1 and dhcp_range take every address.
    network = {"subnet": "10.77.0.0/29", "server": "10.77.0.1", "domain": "lab.wpdn"}
    data = {
        "network": {**network, "mode": "full", "dhcp_range": ["10.77.0.3", "10.77.0.6"]},
        "nodes": [{"mac": "52:54:00:77:00:11", "name": "hv1.lab.wpdn", "address": "10.77.0.2"}],
    }
    small = inventory.from_dict(data, tmp_path / "i.toml", netboot_cfg)
    # Refused before anything is built or started.
    with pytest.raises(ConfigError) as info:
        labtest.run_test(netboot_cfg, small, dhcp_mode="proxy")
    message = str(info.value)
    assert "no room in 10.77.0.0/29" in message and "an address for itself and one to lend" in message
    assert "set [network] gateway to a free address" in message and "\n" not in message


def test_router_leases_name_the_address_lent(tmp_path: Path) -> None:
    leases = tmp_path / "router.leases"
    leases.write_text("1763800000 52:54:00:77:00:11 10.77.0.253 * 01:52:54:00:77:00:11\n")
    assert router.leased(leases, "52:54:00:77:00:11") == "10.77.0.253"
    assert router.leased(leases, "52:54:00:77:00:12") == ""
    assert router.leased(tmp_path / "none", "52:54:00:77:00:11") == ""


def test_proxy_mode_timeline_learns_the_routers_address(netboot_inv: inventory.Inventory, tmp_path: Path) -> None:
    """The node gave no address: the logs, the machine's own fetches and its report tie .253 to hv1."""
    (tmp_path / "dnsmasq.log").write_text(
        "Nov 22 03:30:12 dnsmasq-dhcp[1]: 11 PXE(nb0) 52:54:00:77:00:11 proxy\n"
        "Nov 22 03:30:12 dnsmasq-dhcp[1]: 12 PXE(nb0) 52:54:00:77:00:12 proxy-ignored\n"
        "Nov 22 03:30:15 dnsmasq-tftp[1]: sent /srv/tftp/ipxe.efi to 10.77.0.253\n"
    )
    requests = [("/boot/hv1.ipxe", 20.0), ("/live/x/vmlinuz", 25.0), ("/live/x/initrd.img", 30.0)]
    requests.append(("/live/x/filesystem.squashfs", 60.0))
    with open(tmp_path / "http.jsonl", "w") as log:
        for path, end in requests:
            entry = {"client": "10.77.0.253", "path": path, "status": 200, "start": 1e9 + end - 1, "end": 1e9 + end}
            log.write(json.dumps(entry) + "\n")
    (tmp_path / "reports").mkdir()
    report = {"name": "hv1.lab.wpdn", "mac": "52:54:00:77:00:11", "client": "10.77.0.253", "received": 1e9 + 90}
    (tmp_path / "reports" / "10.77.0.253.json").write_text(json.dumps(report))
    proxy = netboot_inv.with_mode("proxy")
    lines = {t.node.short: t for t in timeline.build(proxy, tmp_path)}
    # On a real network the router's ack is not in any log of ours.
    assert list(lines["hv1"].to_dict()["events"]) == [s for s in timeline.STAGES if s != "dhcp ack"]
    assert lines["hv1"].report == report
    assert lines["hv2"].last == "nothing yet"
    # The lab test's stand-in router leaves its log beside the node's: offer and ack, the earliest counting.
    (tmp_path / "router").mkdir()
    (tmp_path / "router" / "router.log").write_text(
        "Nov 22 03:30:11 dnsmasq-dhcp[2]: 11 DHCPOFFER(lan0) 10.77.0.253 52:54:00:77:00:11\n"
        "Nov 22 03:30:13 dnsmasq-dhcp[2]: 11 DHCPACK(lan0) 10.77.0.253 52:54:00:77:00:11\n"
    )
    hv1 = next(t for t in timeline.build(proxy, tmp_path) if t.node.short == "hv1")
    assert list(hv1.to_dict()["events"]) == list(timeline.STAGES)
    assert hv1.events["dhcp ack"] - hv1.events["dhcp offer"] == 2


def test_report_prefers_the_name_the_node_gave(tmp_path: Path) -> None:
    script: dict[str, object] = {}
    exec(image_files.REPORT_SCRIPT.replace("\nsys.exit(main())\n", "\n"), script)
    script["net_conf"] = lambda: {"HOSTNAME": "dhcp-10-77-0-253", "DNSDOMAIN": "home.arpa"}
    node_name = script["node_name"]
    assert callable(node_name)
    assert node_name({"wb.name": "hv1.lab.wpdn"}) == "hv1.lab.wpdn"
    assert node_name({}) == "dhcp-10-77-0-253.home.arpa"


def test_proxy_boot_is_checked_against_the_routers_loan(netboot_inv: inventory.Inventory, tmp_path: Path) -> None:
    hv1 = netboot_inv.node("hv1")
    stand_in = router.plan(netboot_inv.with_mode("proxy"))
    lent = {"address": stand_in.address, "pool": list(stand_in.pool), "leased": "10.77.0.250"}
    fields = dict(node=hv1.name, firmware="uefi", dhcp_mode="proxy", reported_name=hv1.name, reported_role="hypervisor")
    rest = dict(disk_unchanged=True, persisted="x", boot_seconds=1.0, phases={}, timeline={}, console="")
    good = labtest.LabResult(**fields, address="10.77.0.250", router=lent, **rest)  # type: ignore[arg-type]
    labtest._check(good, hv1, stand_in, [])
    with pytest.raises(NetbootError, match=r"node's dnsmasq offered 52:54:00:77:00:11 10.77.0.11 in proxy mode"):
        labtest._check(good, hv1, stand_in, ["10.77.0.11"])
    # What the node would give hv1 in full mode is not the router's loan.
    ours = labtest.LabResult(**fields, address="10.77.0.11", router=lent, **rest)  # type: ignore[arg-type]
    with pytest.raises(NetbootError, match=r"outside the router's pool 10.77.0.204-10.77.0.253"):
        labtest._check(ours, hv1, stand_in, [])


def test_the_request_log_reader_leaves_a_line_being_written_for_next_time(tmp_path: Path) -> None:
    """The server appends while `netboot.test` polls the log: a line without its newline is not
    yet whole, and reading it must neither fail nor return half a request."""
    log = tmp_path / "requests.jsonl"
    log.write_text('{"path": "/boot.ipxe", "status": 200}\n{"path": "/live/vmli')
    assert httpserve.read_log(log) == [{"path": "/boot.ipxe", "status": 200}]
    with log.open("a") as out:
        out.write('nuz", "status": 200}\n')
    assert [e["path"] for e in httpserve.read_log(log)] == ["/boot.ipxe", "/live/vmlinuz"]
