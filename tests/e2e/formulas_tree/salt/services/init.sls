# A test role (tests/e2e/test_formulas.py): Salt's service states in a bake, as
# formulas write them. Nothing may start during the bake, whatever is called;
# the image runs what the states declare: wbt-unit (a systemd unit only),
# wbt-init (an init script only), wbt-forking (declared enabled only), and never
# wbt-dead or wbt-disabled.

/var/lib/wbt-started:
  file.directory:
    - mode: '1777'

/srv/wbt/index.html:
  file.managed:
    - contents: wbt
    - makedirs: True

/usr/local/bin/wbt-daemon:
  file.managed:
    - source: salt://services/files/wbt-daemon
    - mode: '0755'

/etc/init.d/wbt-init:
  file.managed:
    - source: salt://services/files/wbt-init
    - mode: '0755'

{%- for name in ('unit', 'forking', 'dead', 'disabled') %}

/etc/systemd/system/wbt-{{ name }}.service:
  file.managed:
    - source: salt://services/files/wbt-{{ name }}.service
    - makedirs: True
{%- endfor %}

# What formulas call besides service states: each would start a daemon outside
# a bake. Run once, as a formula's `onchanges` commands are.
{%- for how, command in [
    ('service', 'service wbt-init start'),
    ('service-by-path', '/usr/sbin/service wbt-init start'),
    ('invoke-rc.d', 'invoke-rc.d wbt-init start'),
    ('init-script', '/etc/init.d/wbt-init restart'),
    ('systemctl', 'systemctl start wbt-unit'),
    ('start-stop-daemon', 'start-stop-daemon --start --background --exec /usr/local/bin/wbt-daemon -- ssd 8089'),
] %}

try-{{ how }}:
  cmd.run:
    - name: {{ command }}
    - onchanges:
      - file: /usr/local/bin/wbt-daemon
    - require:
      - file: /var/lib/wbt-started
      - file: /etc/init.d/wbt-init
      - file: /etc/systemd/system/wbt-unit.service
{%- endfor %}

wbt-unit:
  service.running:
    - enable: True
    - require:
      - file: /usr/local/bin/wbt-daemon
      - file: /etc/systemd/system/wbt-unit.service

wbt-init:
  service.running:
    - enable: True
    - require:
      - file: /usr/local/bin/wbt-daemon
      - file: /etc/init.d/wbt-init

wbt-forking:
  service.enabled:
    - require:
      - file: /etc/systemd/system/wbt-forking.service

wbt-dead:
  service.dead:
    - enable: False
    - require:
      - file: /etc/systemd/system/wbt-dead.service

wbt-disabled:
  service.disabled:
    - require:
      - file: /etc/systemd/system/wbt-disabled.service

# A configuration change restarts or reloads running services (`watch`): here
# the services already run, so the watch is what triggers (mod_watch).
/etc/wbt/config:
  file.managed:
    - contents: changed
    - makedirs: True

wbt-unit-reloaded:
  service.running:
    - name: wbt-unit
    - reload: True
    - watch:
      - file: /etc/wbt/config

wbt-init-restarted:
  service.running:
    - name: wbt-init
    - watch:
      - file: /etc/wbt/config
