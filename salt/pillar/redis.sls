# For the community redis formula (saltstack-formulas/redis-formula), which the
# redis role applies unmodified: its pillar is how it is configured. See
# README.md, "External formulas".
redis:
  # The formula's default sets vm.overcommit_memory = 1 with sysctl.present. A
  # container shares its host's kernel and cannot: the bake refuses the state
  # by name. Set it on the hosts that run the containers (redis only warns
  # without it).
  overcommit_memory: false
  # Other containers of the environment use it: every interface, on the
  # internal network only (the jump box is the one way in), hence no
  # protected mode.
  bind: 0.0.0.0
  port: 6379
  protected-mode: 'no'
  # A cache: bounded, least recently used keys go first.
  maxmemory: 64mb
  maxmemory_policy: allkeys-lru
