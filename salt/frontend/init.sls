# The frontend role: the nginx reverse proxy in front of an environment's
# releases. The deploy (workbench/deploy.py) rewrites the upstream file at each
# switch and reloads nginx; nginx keeps its listening socket across the reload
# and lets old workers finish their requests, so no request fails. Needs base
# (monit, apt lists).
frontend-packages:
  pkg.installed:
    - pkgs:
      - nginx
    - install_recommends: False
    - refresh: False
    - require:
      - cmd: apt-lists

/etc/nginx/sites-available/workbench-frontend:
  file.managed:
    - source: salt://frontend/files/nginx-site
    - mode: '0644'
    - require:
      - pkg: frontend-packages

/etc/nginx/sites-enabled/workbench-frontend:
  file.symlink:
    - target: /etc/nginx/sites-available/workbench-frontend
    - require:
      - file: /etc/nginx/sites-available/workbench-frontend

# Debian's welcome page would otherwise also claim port 80.
/etc/nginx/sites-enabled/default:
  file.absent:
    - require:
      - pkg: frontend-packages

# Until the first release is switched to, the upstream refuses: 502.
/etc/nginx/workbench/upstream.conf:
  file.managed:
    - source: salt://frontend/files/upstream.conf
    - makedirs: True
    - mode: '0644'
    # The deploy owns it after the first switch; a re-run of the state must
    # not point a running frontend back at nothing.
    - replace: False

/etc/monit/conf.d/nginx:
  file.managed:
    - source: salt://frontend/files/monit-nginx
    - mode: '0644'
    - require:
      - file: /etc/monit/conf.d
