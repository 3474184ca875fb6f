# The hypervisor role, lean on purpose: it is netbooted under software emulation
# in CI, so the full qemu-kvm / libvirt stack (several hundred MB) is left to the
# OpenStack issue. What is here: disk-image tools, a bridge for guests, forwarding.
hypervisor-packages:
  pkg.installed:
    - pkgs:
      - qemu-utils
      - iproute2
    - install_recommends: False

/etc/systemd/network/10-workbench-br0.netdev:
  file.managed:
    - makedirs: True
    - contents: |
        # The bridge guests attach to (made by systemd-networkd when it runs).
        [NetDev]
        Name=br0
        Kind=bridge

/etc/sysctl.d/60-workbench-hypervisor.conf:
  file.managed:
    - contents: |
        # Guests behind br0 are routed through the host.
        net.ipv4.ip_forward = 1
