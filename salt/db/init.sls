# The db role: MariaDB on port 3306 of every interface, supervised by monit.
# Debian's postinst initialises the data directory; policy-rc.d keeps it from
# starting the server during the bake. Needs base.

# Written before the package, so that the data directory the postinst makes
# already follows it (see the file for why).
/etc/mysql/mariadb.conf.d/60-workbench.cnf:
  file.managed:
    - source: salt://db/files/60-workbench.cnf
    - makedirs: True
    - mode: '0644'

mariadb-server:
  pkg.installed:
    - install_recommends: False
    - refresh: False
    - require:
      - cmd: apt-lists
      - file: /etc/mysql/mariadb.conf.d/60-workbench.cnf

/etc/monit/conf.d/mariadb:
  file.managed:
    - source: salt://db/files/monit-mariadb
    - mode: '0644'
    - require:
      - file: /etc/monit/conf.d

# Deploy-time settings (server id, TLS from the environment's CA): rendered at
# each start from what the deploy gives the container, never baked.
/etc/workbench/init.d/50-db:
  file.managed:
    - source: salt://db/files/init-hook
    - mode: '0755'
    - require:
      - file: /etc/workbench/init.d
