"""The `fab` command: Fabric's own program, plus the Fabric 1 argument form."""

from __future__ import annotations

from fabric import Config, Executor
from fabric.main import Fab
from invoke.collection import Collection

from . import legacy_args
from .errors import WorkbenchError


def _lookup(collection: Collection) -> legacy_args.TaskLookup:
    def shape(name: str) -> tuple[list[str], set[str], set[str]] | None:
        try:
            task = collection[name]
        except (KeyError, ValueError):
            return None
        args = task.get_arguments()
        positional = [a.name for a in args if a.positional]
        booleans = {a.name for a in args if a.kind is bool}
        flags = {a.name for a in args}
        return positional, booleans, flags

    return shape


class WorkbenchFab(Fab):
    def parse_tasks(self) -> None:
        # The collection is loaded by now, so the Fabric 1 form can be mapped
        # with full knowledge of each task's parameters.
        try:
            self.core.unparsed = legacy_args.translate(list(self.core.unparsed), _lookup(self.collection))
        except WorkbenchError as exc:
            from invoke.exceptions import Exit

            raise Exit(f"error: {exc}", code=exc.exit_code) from None
        super().parse_tasks()


def make_program() -> WorkbenchFab:
    import fabric

    return WorkbenchFab(name="Fabric", version=fabric.__version__, executor_class=Executor, config_class=Config)


def main() -> None:
    make_program().run()
