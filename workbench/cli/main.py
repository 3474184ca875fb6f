"""The `fab` command: Fabric's own program, plus the Fabric 1 argument form and the
workbench's own global options (`--progress`, `--verbose`)."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from fabric import Config, Executor
from fabric.main import Fab
from invoke.collection import Collection
from invoke.parser import Argument

from workbench.cli import legacy_args
from workbench.core.errors import WorkbenchError


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


def _fill_optional_positionals(
    argv: list[str], collection: Collection, core_valued: frozenset[str] = frozenset()
) -> list[str]:
    """Let a task's positional parameter that has a default be left out.

    Invoke fills a positional parameter from a bare word only while it has no
    value, and a default counts as a value; so for `positional=["tag"]` with
    `tag=""` the bare word is handed over as its flag instead:
    `release.rollback app-12` -> `release.rollback --tag=app-12`, while
    `release.rollback --env staging --role app` runs with the default.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        task = None if word.startswith("-") else _task(collection, word)
        out.append(word)
        i += 1
        if task is None:
            continue
        args = task.get_arguments()
        positional = [a for a in args if a.positional]
        valued = {f"-{'-' if len(n) > 1 else ''}{n}" for a in args if a.kind is not bool for n in a.names}
        # A global option given after the task (`image.bake app --progress plain`) takes its value along.
        valued |= core_valued
        bare = 0
        while i < len(argv) and (argv[i].startswith("-") or _task(collection, argv[i]) is None):
            word = argv[i]
            i += 1
            if word.startswith("-"):
                out.append(word)
                if word in valued and i < len(argv):
                    out.append(argv[i])
                    i += 1
                continue
            if bare < len(positional) and positional[bare].default is not None:
                out.append(f"--{positional[bare].name.replace('_', '-')}={word}")
            else:
                out.append(word)
            bare += 1
    return out


def _task(collection: Collection, name: str) -> Any:
    try:
        return collection[name]
    except (KeyError, ValueError):
        return None


# The global options of the workbench: Invoke accepts them before or after the task.
PROGRESS_OPTION = "progress"
VERBOSE_OPTION = "verbose"


class WorkbenchFab(Fab):
    def core_args(self) -> list[Argument]:
        return [
            *super().core_args(),
            Argument(
                names=(PROGRESS_OPTION,),
                help="How progress is shown on stderr: auto (live on a terminal, else plain), tty, plain "
                "(one line per event); default $WORKBENCH_PROGRESS, else auto.",
            ),
            Argument(
                names=(VERBOSE_OPTION,),
                kind=bool,
                default=False,
                help="Also stream the tools' own output (Packer, Salt, pytest, apt) to stderr; "
                "it is always in the run's log (fab log).",
            ),
        ]

    def update_config(self) -> None:
        super().update_config()
        # Tasks read them from their context (c.config.workbench), as Invoke's own
        # --echo reaches run.echo; Fabric sets its -i the same way.
        self.config._overrides["workbench"] = {
            "progress": self.args[PROGRESS_OPTION].value or None,
            "verbose": bool(self.args[VERBOSE_OPTION].value),
        }
        self.config.merge()

    def parse_tasks(self) -> None:
        # The collection is loaded by now, so the Fabric 1 form can be mapped
        # with full knowledge of each task's parameters.
        try:
            self.core.unparsed = legacy_args.translate(list(self.core.unparsed), _lookup(self.collection))
            self.core.unparsed = _fill_optional_positionals(
                self.core.unparsed, self.collection, frozenset({f"--{PROGRESS_OPTION}"})
            )
        except WorkbenchError as exc:
            from invoke.exceptions import Exit

            raise Exit(f"error: {exc}", code=exc.exit_code) from None
        super().parse_tasks()


def make_program() -> WorkbenchFab:
    import fabric

    from workbench.cli.tasks import ns

    # The tasks ship inside the package, so `fab` works from any directory
    # (the configuration is still found from the current directory up).
    return WorkbenchFab(
        name="Fabric", version=fabric.__version__, namespace=ns, executor_class=Executor, config_class=Config
    )


def interrupt_on_sigterm() -> None:
    """SIGTERM (`kill`, a supervisor's stop, a CI timeout) gets what Ctrl-C gets: the task
    undoes what it started (daemons, containers, VMs) instead of dying with them left running."""

    def interrupt(signum: int, frame: Any) -> None:
        # A second SIGTERM during that clean-up must not cut it short. Not SIG_IGN: an ignored
        # signal stays ignored in every program the clean-up runs.
        signal.signal(signal.SIGTERM, lambda *_: None)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main() -> None:
    interrupt_on_sigterm()
    try:
        try:
            make_program().run()
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`fab release.history | head`): that is not our failure,
        # and Python must not complain again when it flushes at exit. Exit as a
        # program killed by SIGPIPE would (128 + 13), quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            os.dup2(devnull, stream.fileno())
        raise SystemExit(141) from None
