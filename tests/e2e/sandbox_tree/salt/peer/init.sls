peer-page:
  file.managed:
    - name: /srv/peer/index.html
    - makedirs: True
    - contents: "peer {{ grains['id'] }}"

peer-service:
  file.managed:
    - name: /etc/workbench/services/peer.sh
    - makedirs: True
    - contents: exec python3 -m http.server 8001 --directory /srv/peer
