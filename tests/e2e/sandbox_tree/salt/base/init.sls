# The image command every role runs: here a tiny stand-in for the real base
# state's monit, starting each service script and staying in the foreground.
workbench-init:
  file.managed:
    - name: /usr/local/sbin/workbench-init
    - mode: '0755'
    - contents: |
        #!/bin/sh
        trap 'kill 0; exit 0' TERM INT
        for svc in /etc/workbench/services/*.sh; do
            [ -e "$svc" ] && sh "$svc" &
        done
        while :; do sleep 3600 & wait $!; done

# What apt is told while the states apply, at the first provision: the bakes' package cache
# (tests/e2e/test_sandbox_live.py).
apt-proxy-seen:
  cmd.run:
    - name: mkdir -p /var/lib/workbench-sandbox && apt-config dump Acquire::http::Proxy > /var/lib/workbench-sandbox/apt-proxy
    - creates: /var/lib/workbench-sandbox/apt-proxy
