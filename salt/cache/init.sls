# The cache role: memcached on port 11211 of every interface (other
# containers use it), supervised by monit. Needs base.
memcached:
  pkg.installed:
    - install_recommends: False
    - refresh: False
    - require:
      - cmd: apt-lists

# Debian's file, but listening on every interface instead of loopback only.
/etc/memcached.conf:
  file.managed:
    - source: salt://cache/files/memcached.conf
    - mode: '0644'
    - require:
      - pkg: memcached

/etc/monit/conf.d/memcached:
  file.managed:
    - source: salt://cache/files/monit-memcached
    - mode: '0644'
    - require:
      - file: /etc/monit/conf.d
