# The app role: nginx on port 80 in front of a small WSGI app that gunicorn
# runs as the unprivileged webapps user on 127.0.0.1:8000, both supervised by
# monit. Needs base (the webapps user, monit, apt lists).
app-packages:
  pkg.installed:
    - pkgs:
      - nginx
      - gunicorn
    - install_recommends: False
    - refresh: False
    - require:
      - cmd: apt-lists

# --- the application -----------------------------------------------------

/srv/apps/app:
  file.directory:
    - user: webapps
    - group: webapps
    - mode: '0755'
    - require:
      - file: /srv/apps

/srv/apps/app/workbench_app.py:
  file.managed:
    - source: salt://app/files/workbench_app.py
    - user: webapps
    - group: webapps
    - mode: '0644'
    - require:
      - file: /srv/apps/app

# GET /pools: checks the pools the deploy renders (workbench/pools.py).
/srv/apps/app/workbench_pools.py:
  file.managed:
    - source: salt://app/files/workbench_pools.py
    - user: webapps
    - group: webapps
    - mode: '0644'
    - require:
      - file: /srv/apps/app

/etc/workbench/app/gunicorn.conf.py:
  file.managed:
    - source: salt://app/files/gunicorn.conf.py
    - makedirs: True
    - mode: '0644'

/var/log/gunicorn:
  file.directory:
    - user: webapps
    - group: webapps
    - mode: '0750'
    - require:
      - user: webapps-user

# gunicorn runs as webapps from its first instruction, so its pid file lives
# in a directory webapps owns, made at each start (/run is empty on a VM).
/etc/workbench/init.d/50-app:
  file.managed:
    - source: salt://app/files/init-hook
    - mode: '0755'
    - require:
      - file: /etc/workbench/init.d

# --- the frontend --------------------------------------------------------

/etc/nginx/sites-available/workbench-app:
  file.managed:
    - source: salt://app/files/nginx-site
    - mode: '0644'
    - require:
      - pkg: app-packages

/etc/nginx/sites-enabled/workbench-app:
  file.symlink:
    - target: /etc/nginx/sites-available/workbench-app
    - require:
      - file: /etc/nginx/sites-available/workbench-app

# Debian's welcome page would otherwise also claim port 80.
/etc/nginx/sites-enabled/default:
  file.absent:
    - require:
      - pkg: app-packages

# --- supervision ---------------------------------------------------------

/etc/monit/conf.d/gunicorn:
  file.managed:
    - source: salt://app/files/monit-gunicorn
    - mode: '0644'
    - require:
      - file: /etc/monit/conf.d

/etc/monit/conf.d/nginx:
  file.managed:
    - source: salt://app/files/monit-nginx
    - mode: '0644'
    - require:
      - file: /etc/monit/conf.d
