# Automatic security updates: unattended-upgrades (base.packages), run daily,
# security archive only (point-release updates come by re-baking instead).
/etc/apt/apt.conf.d/20auto-upgrades:
  file.managed:
    - source: salt://base/files/20auto-upgrades
    - mode: '0644'
    - require:
      - pkg: base-packages

# Debian's 50unattended-upgrades is left untouched (a conffile); this file
# clears its origin list and allows the security archive only.
/etc/apt/apt.conf.d/52workbench-security-only:
  file.managed:
    - source: salt://base/files/52workbench-security-only
    - mode: '0644'
    - require:
      - pkg: base-packages
