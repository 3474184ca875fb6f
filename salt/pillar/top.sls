# Pillar by the grains the bake sets: workbench_role (the role being baked)
# and workbench_environment ("build" during bakes).
base:
  'workbench_role:db':
    - match: grain
    - timezone
