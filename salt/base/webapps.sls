# Applications run as this unprivileged user and live under /srv/apps.
webapps-group:
  group.present:
    - name: webapps
    - system: True

webapps-user:
  user.present:
    - name: webapps
    - gid: webapps
    - system: True
    - home: /srv/apps
    - createhome: False
    - shell: /usr/sbin/nologin
    - require:
      - group: webapps-group

/srv/apps:
  file.directory:
    - user: webapps
    - group: webapps
    - mode: '0755'
    - require:
      - user: webapps-user
