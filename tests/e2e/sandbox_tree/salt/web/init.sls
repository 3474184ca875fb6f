web-page:
  file.managed:
    - name: /srv/web/index.html
    - makedirs: True
    - contents: "{{ pillar['greeting'] }} from {{ grains['workbench_role'] }} in {{ grains['workbench_environment'] }}"

web-service:
  file.managed:
    - name: /etc/workbench/services/web.sh
    - makedirs: True
    - contents: exec python3 -m http.server 8000 --directory /srv/web
