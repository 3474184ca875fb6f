"""dnsmasq configuration and log parsing, boot scripts, timelines, qemu's command line, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from workbench import chroot
from workbench import config as wb_config
from workbench.errors import ConfigError, NetbootError
from workbench.netboot import artifacts, boot, dnsmasq, inventory, labtest, netns, nfs, node, qemu, timeline

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "netboot"


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> wb_config.Config:
    state = tmp_path_factory.mktemp("state")
    data = {
        "roles": {"hypervisor": {"aliases": ["hv"]}},
        "environments": {"lab": {}},
        "workbench": {"default_role": "hypervisor", "state_dir": str(state), "prefix": "nbunit"},
    }
    return wb_config.from_dict(data, REPO / "workbench.toml")


@pytest.fixture(scope="module")
def inv(cfg: wb_config.Config) -> inventory.Inventory:
    return inventory.load(cfg, REPO / "netboot" / "inventory.toml")


@pytest.fixture()
def live(tmp_path: Path) -> artifacts.LiveImage:
    return artifacts.LiveImage("0123456789ab", tmp_path / "live", "hypervisor", {}, True, 0.0)


def plan(tmp_path: Path) -> dnsmasq.Plan:
    return dnsmasq.Plan("nb0", tmp_path / "tftp", tmp_path / "dnsmasq.log", tmp_path / "leases", tmp_path / "d.conf")


def test_full_mode_config(inv: inventory.Inventory, tmp_path: Path) -> None:
    text = dnsmasq.config_text(inv, plan(tmp_path))
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


def test_proxy_mode_config(cfg: wb_config.Config, inv: inventory.Inventory, tmp_path: Path) -> None:
    proxy = inventory.Inventory(
        inv.path,
        inventory.Network("10.77.0.0/24", "10.77.0.2", "10.77.0.1", "proxy", None, "lab.wpdn", 8080),
        inv.export,
        inv.nodes,
    )
    lines = dnsmasq.config_text(proxy, plan(tmp_path)).splitlines()
    assert "dhcp-range=10.77.0.0,proxy,255.255.255.0" in lines
    assert not any(line.startswith("dhcp-boot=") for line in lines)
    assert 'pxe-service=tag:!ipxe,x86PC,"iPXE (BIOS)",undionly.kpxe' in lines
    assert 'pxe-service=tag:!ipxe,X86-64_EFI,"iPXE (UEFI)",ipxe.efi' in lines
    assert 'pxe-service=tag:ipxe,tag:hv1,x86PC,"hv1.lab.wpdn",http://10.77.0.2:8080/boot/hv1.ipxe' in lines


@pytest.mark.parametrize("mode", ["full", "proxy"])
def test_generated_config_passes_dnsmasq_test(inv: inventory.Inventory, tmp_path: Path, mode: str) -> None:
    net = inv.network
    chosen = inventory.Inventory(
        inv.path,
        inventory.Network(net.subnet, net.server, net.gateway, mode, net.dhcp_range, net.domain, net.http_port),
        inv.export,
        inv.nodes,
    )
    conf = dnsmasq.write(chosen, plan(tmp_path))
    dnsmasq.check(conf)
    assert (tmp_path / "tftp" / "undionly.kpxe").is_file()
    assert (tmp_path / "tftp" / "ipxe.efi").is_file()


def test_a_config_dnsmasq_rejects_is_a_clear_error(tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("dhcp-range=not-an-address\n")
    with pytest.raises(NetbootError, match=r"bad\.conf fails `dnsmasq --test`"):
        dnsmasq.check(conf)


def test_parse_recorded_dnsmasq_log() -> None:
    events = dnsmasq.parse_log((DATA / "dnsmasq.log").read_text())
    kinds = [e.kind for e in events]
    assert kinds[:4] == ["DHCPDISCOVER", "DHCPOFFER", "DHCPDISCOVER", "DHCPOFFER"]
    offer = events[1]
    assert (offer.mac, offer.ip, offer.stamp) == ("52:54:00:77:00:11", "10.77.0.11", "Nov 22 03:30:12")
    assert "DHCPACK" in kinds
    tftp = events[-1]
    assert (tftp.kind, tftp.ip, tftp.detail) == ("TFTP", "10.77.0.1", "undionly.kpxe")


def test_node_script_and_menu(inv: inventory.Inventory, live: artifacts.LiveImage) -> None:
    hv1 = inv.node("hv1")
    script = boot.node_script(inv, live, hv1)
    assert script.startswith("#!ipxe\n")
    assert "kernel http://10.77.0.1:8080/live/0123456789ab/vmlinuz " in script
    assert "fetch=http://10.77.0.1:8080/live/0123456789ab/filesystem.squashfs" in script
    assert "wb.role=hypervisor" in script and "wb.report=http://10.77.0.1:8080/report" in script
    menu = boot.menu_script(inv, live)
    # An unknown machine boots its own disk unless someone chooses otherwise.
    assert "choose --default local" in menu
    assert "sanboot --no-describe --drive 0x80" in menu
    assert "wb.role" not in menu


def test_write_tree(inv: inventory.Inventory, live: artifacts.LiveImage, tmp_path: Path) -> None:
    written = boot.write_tree(inv, live, tmp_path / "http")
    assert sorted(p.name for p in written) == ["hv1.ipxe", "hv2.ipxe", "menu.ipxe"]
    assert (tmp_path / "http" / "live" / "0123456789ab").resolve() == live.directory.resolve()


def test_timeline_from_recorded_logs(inv: inventory.Inventory, tmp_path: Path) -> None:
    for name in ("dnsmasq.log", "http.jsonl", "reports"):
        source = DATA / name
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, tmp_path / name)
    with open(tmp_path / "dnsmasq.log", "a") as log:
        log.write("Nov 22 03:30:14 dnsmasq-tftp[27711]: sent /srv/tftp/undionly.kpxe to 10.77.0.12\n")
    lines = {t.node.short: t for t in timeline.build(inv, tmp_path)}
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


def test_missing_live_image_says_how_to_build(cfg: wb_config.Config) -> None:
    with pytest.raises(NetbootError, match=r"not built .* run `fab netboot.build` first"):
        artifacts.require_live(cfg)


def test_namespace_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(NetbootError, match=r"need root \(CAP_NET_ADMIN\)"), netns.lab("nbunit-never", "10.77.0.1", 24):
        pass
    assert not netns.exists("nbunit-never")


def test_stop_with_nothing_running(cfg: wb_config.Config) -> None:
    assert node.stop(cfg) == []


def test_stop_removes_what_a_killed_node_left(cfg: wb_config.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    state = node.node_dir(cfg)
    state.mkdir(parents=True, exist_ok=True)
    (state / "node.json").write_text('{"netns": "x", "pids": {}, "serve": 999999999}')
    removed: list[str] = []
    monkeypatch.setattr(netns, "remove", lambda name: removed.append(name) or True)
    assert node.stop(cfg) == ["removed namespace nbunit-nb"]
    assert removed == ["nbunit-nb"] and not (state / "node.json").exists()


def test_live_inputs_change_with_the_states(cfg: wb_config.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    before = artifacts.live_inputs(cfg)
    monkeypatch.setattr(artifacts, "RECIPE_VERSION", artifacts.RECIPE_VERSION + 1)
    assert artifacts.live_inputs(cfg) != before
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


def test_kernel_args_name_the_persistence_export(inv: inventory.Inventory, live: artifacts.LiveImage) -> None:
    assert "wb.persist=10.77.0.1:/persist" in boot.kernel_args(inv, live, inv.nodes[0])


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


def test_unknown_firmware_is_a_clear_error(cfg: wb_config.Config, inv: inventory.Inventory) -> None:
    with pytest.raises(ConfigError, match="firmware 'coreboot': must be one of bios, uefi"):
        labtest.run_test(cfg, inv, firmware="coreboot")
