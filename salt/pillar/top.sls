# Pillar by the grains the bake sets: workbench_role (the role being baked)
# and workbench_environment ("build" during bakes).
base:
  'workbench_role:db':
    - match: grain
    - timezone
  # The community formulas' roles (README.md, "External formulas").
  'workbench_role:redis':
    - match: grain
    - redis
  'workbench_role:haproxy':
    - match: grain
    - haproxy
