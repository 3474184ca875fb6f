"""The hypervisor role (the netbooted live system's states).

The live image applies these states in a chroot and runs no tests; the bake of
the role as an image runs this file (tests/e2e/test_bake.py). The image carries
OpenStack compute, installed but neither configured nor enabled: workbench-cloud
(installed with the live image, not by these states) configures and starts it at
boot from the networking node.
"""

import pytest

COMPUTE = ("libvirtd", "neutron-linuxbridge-agent", "nova-compute")


def test_qemu_img_installed(host):
    assert host.package("qemu-utils").is_installed


@pytest.mark.parametrize(
    "package",
    [
        "nova-compute-kvm",
        "libvirt-daemon-system",
        "libvirt-daemon-driver-lxc",
        "python3-libvirt",
        "neutron-linuxbridge-agent",
        "iptables",
        "ipset",
        "ebtables",
        "sudo",
    ],
)
def test_compute_packages_installed(host, package):
    assert host.package(package).is_installed


def test_no_recommends_and_only_the_x86_emulator(host):
    # -kvm, not -qemu: one qemu architecture, and none of the recommended extras.
    assert host.exists("qemu-system-x86_64")
    assert not host.package("nova-compute-qemu").is_installed
    assert not host.exists("qemu-system-aarch64")
    assert not host.package("guestmount").is_installed


@pytest.mark.parametrize("unit", [*COMPUTE, "libvirt-guests"])
def test_compute_services_not_enabled_for_boot(host, unit):
    assert not host.file(f"/etc/systemd/system/multi-user.target.wants/{unit}.service").exists


@pytest.mark.parametrize("socket", ["libvirtd", "libvirtd-ro", "libvirtd-admin"])
def test_libvirtd_not_socket_activated_at_boot(host, socket):
    assert not host.file(f"/etc/systemd/system/sockets.target.wants/{socket}.socket").exists


@pytest.mark.parametrize("unit", COMPUTE)
def test_compute_services_wait_for_their_configuration(host, unit):
    dropin = host.file(f"/etc/systemd/system/{unit}.service.d/workbench-cloud.conf")
    assert dropin.exists
    assert "ConditionPathExists=/run/workbench/cloud/configured" in dropin.content_string
    # The unit the package ships is the one the drop-in extends.
    assert host.file(f"/lib/systemd/system/{unit}.service").exists


def test_libvirtd_stays_when_idle(host):
    dropin = host.file("/etc/systemd/system/libvirtd.service.d/workbench-cloud.conf").content_string
    assert "[Service]\nEnvironment=LIBVIRTD_ARGS=\n" in dropin


def test_nova_compute_may_wait_for_the_controller(host):
    dropin = host.file("/etc/systemd/system/nova-compute.service.d/workbench-cloud.conf").content_string
    assert "[Service]\nTimeoutStartSec=15min" in dropin


def test_nothing_of_the_cloud_is_baked(host):
    # Debian's own defaults only: no controller, transport or password of ours.
    for path in ("/etc/nova/nova.conf", "/etc/neutron/neutron.conf", "/etc/neutron/plugins/ml2/linuxbridge_agent.ini"):
        text = host.file(path).content_string
        assert "rabbit://openstack:" not in text and "10.77.0.2" not in text, path
        assert "physical_interface_mappings = provider:" not in text, path
    assert not host.file("/run/workbench/cloud/configured").exists


def test_bridge_for_guests(host):
    netdev = host.file("/etc/systemd/network/10-workbench-br0.netdev")
    assert netdev.exists
    assert "Kind=bridge" in netdev.content_string


def test_forwarding_enabled(host):
    conf = host.file("/etc/sysctl.d/60-workbench-hypervisor.conf")
    assert conf.contains("net.ipv4.ip_forward *= *1")


def test_udev_leaves_new_interfaces_macs_alone(host):
    # libvirt sets an lxc guest's MAC after creating its veth: udev must not replace it.
    drop_in = host.file("/etc/systemd/network/99-default.link.d/workbench-keep-mac.conf")
    assert drop_in.is_file and "MACAddressPolicy=none" in drop_in.content_string


def test_ebtables_is_the_legacy_one(host):
    # The linuxbridge agent's ARP protection needs rule deletions the nf_tables ebtables refuses.
    assert "legacy" in host.check_output("ebtables -V")
