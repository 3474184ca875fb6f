# The controller role: the homelab's OpenStack control plane (Zed, Debian's packages)
# in one image: keystone, glance, placement, nova's API, conductor and scheduler,
# neutron (server and linuxbridge, DHCP and metadata agents), RabbitMQ, MariaDB and
# memcached, each supervised by monit. Needs base.
#
# The image holds no secret and no database: /etc/workbench/init.d/50-controller
# renders every configuration from the cloud's settings at each start, and makes
# the data (databases, schemas, keys, catalogue) when the data paths are empty.

# Written before the package, so that the server never runs with Debian's defaults.
/etc/mysql/mariadb.conf.d/60-controller.cnf:
  file.managed:
    - source: salt://controller/files/60-controller.cnf
    - makedirs: True
    - mode: '0644'

controller-packages:
  pkg.installed:
    - pkgs:
      - keystone
      - glance
      - placement-api
      - nova-api
      - nova-conductor
      - nova-scheduler
      - neutron-server
      - neutron-linuxbridge-agent
      - neutron-dhcp-agent
      - neutron-metadata-agent
      - rabbitmq-server
      - mariadb-server
      - memcached
      - python3-openstackclient
      - python3-osc-placement
    # Recommends would add 300 packages (systemd, gcc, gtk, exim4).
    - install_recommends: False
    - refresh: False
    - require:
      - cmd: apt-lists
      - file: /etc/mysql/mariadb.conf.d/60-controller.cnf

# What the packages' postinsts made that belongs to a cloud, not to the image: the
# MariaDB data directory, RabbitMQ's node data and Erlang cookie, glance's store.
# The start hook makes them again, from the cloud's settings, in its data paths.
controller-no-baked-data:
  cmd.run:
    - name: find /var/lib/mysql /var/lib/rabbitmq /var/lib/glance -mindepth 1 -delete
    - onlyif: test -n "$(find /var/lib/mysql /var/lib/rabbitmq /var/lib/glance -mindepth 1 -print -quit)"
    - require:
      - pkg: controller-packages

# keystone's key repositories: data paths, empty in the image.
{%- for repository in ('fernet-keys', 'credential-keys') %}
/etc/keystone/{{ repository }}:
  file.directory:
    - user: keystone
    - group: keystone
    - mode: '0700'
    - require:
      - pkg: controller-packages
{%- endfor %}

# The configuration templates the start hook renders (no secret in them).
/usr/local/share/workbench/controller:
  file.recurse:
    - source: salt://controller/files/templates
    - file_mode: '0644'
    - dir_mode: '0755'
    - makedirs: True

/etc/workbench/init.d/50-controller:
  file.managed:
    - source: salt://controller/files/init-hook
    - mode: '0755'
    - require:
      - file: /etc/workbench/init.d
      - file: /usr/local/share/workbench/controller
      - pkg: controller-packages

# MariaDB: a hand-written check (mysqld_safe, the MySQL protocol), as the db role's.
/etc/monit/conf.d/mariadb:
  file.managed:
    - source: salt://controller/files/monit-mariadb
    - mode: '0644'
    - require:
      - file: /etc/monit/conf.d

# The services the image runs: monit starts each from its unit (workbench-services).
{%- for service in (
    'memcached', 'rabbitmq-server', 'keystone', 'glance-api', 'placement-api',
    'nova-api', 'nova-api-metadata', 'nova-conductor', 'nova-scheduler',
    'neutron-api', 'neutron-rpc-server', 'neutron-linuxbridge-agent',
    'neutron-dhcp-agent', 'neutron-metadata-agent') %}
{{ service }}:
  service.running:
    - enable: True
    - require:
      - pkg: controller-packages
      - file: /etc/workbench/init.d/50-controller
{%- endfor %}
