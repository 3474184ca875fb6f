# The hypervisor role: the netbooted live system of the homelab. Disk-image tools, a
# bridge for guests, forwarding, and OpenStack compute (nova-compute with libvirt,
# the neutron linuxbridge agent), installed but neither configured nor started here:
# workbench-cloud (workbench/netboot/files/, installed with the live image) fetches
# this node's configuration from the networking node at boot, renders it and starts
# the services. A lab without a cloud gets a 404 for it and starts none of them.
{% set compute_services = ['libvirtd', 'neutron-linuxbridge-agent', 'nova-compute'] %}
hypervisor-packages:
  pkg.installed:
    - pkgs:
      - qemu-utils
      - iproute2
      # -kvm, not -qemu (which pulls every qemu architecture); virt_type qemu and lxc work with it.
      - nova-compute-kvm
      - libvirt-daemon-system
      # Only recommended by nova-compute-lxc: virt_type lxc needs it.
      - libvirt-daemon-driver-lxc
      - python3-libvirt
      - neutron-linuxbridge-agent
      # The agent's iptables firewall (ipset by default), its ARP protection (ebtables),
      # conntrack for cleaning up connections; rootwrap runs through sudo.
      - iptables
      - ipset
      - ebtables
      - conntrack
      - sudo
    - install_recommends: False

# The agent's ARP protection deletes ebtables rules with --among-src, which the nf_tables
# ebtables (Debian's default) refuses ("RULE_DELETE failed (Invalid argument)"): the agent
# then retries forever and never reports a guest's port up. The legacy one takes them.
# (cmd.run: Salt's alternatives module does not load in the live image's chroot.)
ebtables-legacy:
  cmd.run:
    - name: update-alternatives --set ebtables /usr/sbin/ebtables-legacy
    - unless: "readlink -f /usr/sbin/ebtables | grep -qx /usr/sbin/ebtables-legacy"
    - require:
      - pkg: hypervisor-packages

# udev gives every new virtual interface a "persistent" MAC of its own (MACAddressPolicy) unless
# its creator set one first; libvirt sets an lxc guest's MAC just after creating its veth, and
# when udev won that race the guest used a MAC that was not its port's: the agent's MAC
# protection dropped all its frames (no DHCP, no answer; about one server in two here).
/etc/systemd/network/99-default.link.d/workbench-keep-mac.conf:
  file.managed:
    - makedirs: True
    - contents: |
        # Written by salt/hypervisor: interfaces keep the MAC their creator gives them.
        [Link]
        MACAddressPolicy=none

# The packages enable their services for boot; here nothing of the cloud starts at
# boot on its own: workbench-cloud starts them once their configuration is in place.
{% for unit in compute_services + ['libvirt-guests'] %}
/etc/systemd/system/multi-user.target.wants/{{ unit }}.service:
  file.absent:
    - require:
      - pkg: hypervisor-packages
{% endfor %}
# libvirtd's sockets would start libvirtd on the first connection; starting the service
# starts them (its Wants=).
{% for socket in ['libvirtd', 'libvirtd-ro', 'libvirtd-admin'] %}
/etc/systemd/system/sockets.target.wants/{{ socket }}.socket:
  file.absent:
    - require:
      - pkg: hypervisor-packages
{% endfor %}

# And whatever starts them (a socket, an upgrade, a hand): not before workbench-cloud
# has written their configuration and the mark.
{% for unit in compute_services %}
/etc/systemd/system/{{ unit }}.service.d/workbench-cloud.conf:
  file.managed:
    - makedirs: True
    - contents: |
        # Configured at boot by workbench-cloud.service from the networking node; it starts
        # this unit after writing the configuration and this mark. Without a cloud, never.
        [Unit]
        ConditionPathExists=/run/workbench/cloud/configured
{%- if unit == 'libvirtd' %}
        # A hypervisor's libvirtd stays (Debian's default exits after 120 s without clients).
        [Service]
        Environment=LIBVIRTD_ARGS=
{%- endif %}
{%- if unit == 'nova-compute' %}
        # Ready (Type=notify) only once it reaches the controller's conductor: systemd's
        # default 90 s would kill it into a restart loop on a slow node or a late controller.
        [Service]
        TimeoutStartSec=15min
{%- endif %}
{% endfor %}

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
