"""Example inventories of pools, shared by the unit tests of pools and ssh.config and their
integration counterparts (the same files read by `fab` and by OpenSSH)."""

from __future__ import annotations

from pathlib import Path

from tests.support.config import stub_role_tests

# Roles with the ports the pools' addresses take.
ROLES = """
[workbench]
prefix = "wbt-pools"
state_dir = "{state}"

[roles.app]
ports = [80]
[roles.cache]
ports = [11211]
[roles.db]
ports = [3306]
"""

POOLS = """
[pools.db]
role = "db"
used_by = ["app"]
members = [
  { name = "db1", private = "10.0.0.5", public = "203.0.113.5" },
  { name = "db2", private = "10.0.0.6" },
]
variables = { database = "app", user = "app" }

[pools.sessions]
role = "cache"
port = 11311
used_by = ["app"]
environments = ["production"]
members = [{ name = "cache1", private = "10.0.1.5" }]

[pools.cache]
role = "cache"
used_by = ["app", "db"]
members = [{ name = "cache1", private = "10.0.1.5", public = "203.0.113.9" }]
"""

# The roles and pools `fab ssh.config` reads: a jump box, internal hosts behind it.
SSH_ROLES = """
[workbench]
prefix = "wbt-ssh"
state_dir = "{state}"

[roles.app]
[roles.cache]
[roles.db]
[roles.jumpbox]
ports = [22]
"""

SSH_POOLS = """
[pools.jump]
role = "jumpbox"
members = [{ name = "jump1", private = "10.0.0.2", public = "203.0.113.2", ssh_port = "2222" }]

[pools.db]
role = "db"
members = [{ name = "db1", private = "10.0.0.5" }, { name = "db2", private = "10.0.0.6", ssh_port = "2200" }]

[pools.cache]
role = "cache"
members = [{ name = "cache1", private = "10.0.1.5" }]

[pools.sessions]
role = "cache"
members = [{ name = "cache1", private = "10.0.1.5" }]
"""


def write(root: Path, pools_text: str, roles_text: str = ROLES) -> Path:
    """`root/workbench.toml`: `roles_text` (its state under `root`) and then `pools_text`."""
    stub_role_tests(root, ("app", "cache", "db", "jumpbox"))
    path = root / "workbench.toml"
    path.write_text(roles_text.format(state=root / "state") + pools_text)
    return path
