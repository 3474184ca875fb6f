# The jumpbox role: the one host reachable from outside. A hardened sshd
# (keys only, no root login, no passwords) whose only job is to let ops
# engineers jump to the internal hosts (ProxyJump). Needs base.
#
# Nothing secret is baked: host keys are made at each container start (every
# instance its own), and authorized keys are given at deploy time
# (WORKBENCH_SSH_AUTHORIZED_KEYS), see files/init-hook.
jumpbox-packages:
  pkg.installed:
    - pkgs:
      - openssh-server
    - install_recommends: False
    - refresh: False
    - require:
      - cmd: apt-lists

# The account people jump as. It may log in, but only with a key.
ops-group:
  group.present:
    - name: ops

ops-user:
  user.present:
    - name: ops
    - gid: ops
    - home: /home/ops
    - createhome: True
    - shell: /bin/bash
    # A locked password: no password can ever match.
    - password: '!'
    - require:
      - group: ops-group

# Read before Debian's own settings (sshd keeps the first value it reads),
# so these win over anything sshd_config says further down.
/etc/ssh/sshd_config.d/10-workbench-hardening.conf:
  file.managed:
    - source: salt://jumpbox/files/sshd-hardening.conf
    - mode: '0644'
    - require:
      - pkg: jumpbox-packages

/etc/ssh/authorized_keys:
  file.directory:
    - mode: '0755'
    - require:
      - pkg: jumpbox-packages

# The package's postinst made host keys: an image shared by every jump box
# must not carry them. The start hook makes fresh ones.
{%- for kind in ('rsa', 'ecdsa', 'ed25519') %}
/etc/ssh/ssh_host_{{ kind }}_key:
  file.absent:
    - require:
      - pkg: jumpbox-packages
/etc/ssh/ssh_host_{{ kind }}_key.pub:
  file.absent:
    - require:
      - pkg: jumpbox-packages
{%- endfor %}

/etc/workbench/init.d/40-jumpbox:
  file.managed:
    - source: salt://jumpbox/files/init-hook
    - mode: '0755'
    - require:
      - file: /etc/workbench/init.d

/etc/monit/conf.d/sshd:
  file.managed:
    - source: salt://jumpbox/files/monit-sshd
    - mode: '0644'
    - require:
      - file: /etc/monit/conf.d
