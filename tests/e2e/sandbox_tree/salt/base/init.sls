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
