"""For Fabric's own `fab`: the workbench's tasks live in the package (workbench/cli/tasks.py)."""

from workbench.cli.tasks import ns

__all__ = ["ns"]
