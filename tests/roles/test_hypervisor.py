"""The hypervisor role (the netbooted live system's states).

The live image applies these states in a chroot and runs no tests; the bake of
the role as an image runs this file (tests/e2e/test_bake.py).
"""


def test_qemu_img_installed(host):
    assert host.package("qemu-utils").is_installed


def test_bridge_for_guests(host):
    netdev = host.file("/etc/systemd/network/10-workbench-br0.netdev")
    assert netdev.exists
    assert "Kind=bridge" in netdev.content_string


def test_forwarding_enabled(host):
    conf = host.file("/etc/sysctl.d/60-workbench-hypervisor.conf")
    assert conf.contains("net.ipv4.ip_forward *= *1")
