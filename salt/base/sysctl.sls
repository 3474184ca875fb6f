# Out of memory means panic, and a panic reboots after 10 s: a wedged machine
# comes back clean instead of limping on. Containers cannot set kernel
# parameters, so this is the file only; VMs and the homelab apply it at boot.
/etc/sysctl.d/90-workbench-oom-reboot.conf:
  file.managed:
    - source: salt://base/files/90-workbench-oom-reboot.conf
    - makedirs: True
    - mode: '0644'
