# The image's command: /usr/local/sbin/workbench-init records the release the
# container runs, runs the roles' start hooks, then runs monit in the
# foreground (under tini, the reaper a container's PID 1 must be), which
# starts and supervises the role's services.
{%- set role = salt['grains.get']('workbench_role', '') %}

{%- if not role %}
workbench-role-grain:
  test.fail_without_changes:
    - name: "the grain workbench_role is not set: the bake sets it to the role being baked"
{%- endif %}

/usr/local/sbin/workbench-init:
  file.managed:
    - source: salt://base/files/workbench-init
    - mode: '0755'

# Runs the services the role's service states declared (recorded during the
# bake in /etc/workbench/services.json by salt/_modules/workbench_service.py):
# workbench-init has it write a monit check for each at every start.
/usr/local/sbin/workbench-services:
  file.managed:
    - source: salt://base/files/workbench-services
    - mode: '0755'

# Scripts run (run-parts) at every container start, before monit: roles use
# them for what must exist at run time only, such as directories under /run.
/etc/workbench/init.d:
  file.directory:
    - makedirs: True
    - mode: '0755'

# The role the image was baked for, so the release record names it even when
# the container is started without WORKBENCH_ROLE.
/etc/workbench/role:
  file.managed:
    - contents: {{ role | yaml_encode }}
    - mode: '0644'
    - require:
      - file: /etc/workbench/init.d
