# For the community haproxy formula (saltstack-formulas/haproxy-formula), which
# the haproxy role applies unmodified: its pillar is how it is configured. See
# README.md, "External formulas".
haproxy:
  global:
    user: haproxy
    group: haproxy
    chroot:
      enable: true
      path: /var/lib/haproxy
    # /run/haproxy comes from the package's tmpfiles.d, which the image's start
    # applies as a machine's boot does (workbench-services).
    stats:
      /run/haproxy/admin.sock:
        mode: 660
        level: admin
  defaults:
    mode: http
    log: global
    options:
      - httplog
      - dontlognull
    timeouts:
      - connect 5s
      - client 30s
      - server 30s
  frontends:
    www:
      bind: '*:80'
      # haproxy answers this itself while it runs: the role's health check.
      monitoruri: /health
      default_backend: apps
  backends:
    apps:
      balance: roundrobin
      servers:
        # Stands for the application servers; point it at a pool's members.
        app1:
          host: 127.0.0.1
          port: 8000
          check: check
  listens:
    stats:
      bind:
        - '*:8404'
      mode: http
      stats:
        enable: true
        uri: /stats
