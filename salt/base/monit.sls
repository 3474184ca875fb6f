# monit (base.packages) supervises the role's services: roles drop a check
# into /etc/monit/conf.d/. Nothing starts it at bake time; workbench-init runs
# it in the foreground as the image's command.
/etc/monit/monitrc:
  file.managed:
    - source: salt://base/files/monitrc
    # monit refuses to start with a control file others can read.
    - mode: '0600'
    - require:
      - pkg: base-packages

/etc/monit/conf.d:
  file.directory:
    - mode: '0755'
    - require:
      - pkg: base-packages
