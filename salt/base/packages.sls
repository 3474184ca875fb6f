# The base image ships without package lists (they are cleaned to keep it
# small), so fetch them once; on the idempotence run they exist, and nothing
# is reported as changed.
apt-lists:
  cmd.run:
    - name: apt-get update -q
    - unless: ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1

# One transaction for the whole basesystem: each pkg state is an apt run.
base-packages:
  pkg.installed:
    - pkgs:
      # the utilities every machine has for people logged in to it
      - ca-certificates
      - curl
      - iproute2
      - less
      - procps
      # automatic security updates (updates.sls)
      - unattended-upgrades
      # supervision (monit.sls): monit, and tini, the reaper of orphaned
      # processes a container's PID 1 must be and monit is not
      - monit
      - tini
    # Recommends would double the image for tools nobody asked for.
    - install_recommends: False
    - refresh: False
    - require:
      - cmd: apt-lists
