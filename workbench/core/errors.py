"""Every failure the workbench reports. The Fabric layer turns these into exit codes."""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base of every error the workbench raises on purpose; its text is shown as is."""

    exit_code = 1


class ConfigError(WorkbenchError):
    """The configuration file, an inventory or an argument is invalid."""

    exit_code = 2


class HostNameError(ConfigError):
    """A host name does not follow `<role>[-<variant>].<environment>.<domain>`."""


class ToolMissing(WorkbenchError):
    """An external program the step needs is not installed."""

    exit_code = 3


class EngineUnavailable(WorkbenchError):
    """The Docker engine (or another daemon the step needs) does not answer."""

    exit_code = 3


class CommandFailed(WorkbenchError):
    """An external program exited non-zero or was killed by a signal."""

    def __init__(
        self,
        argv: list[str],
        returncode: int,
        duration: float,
        tail: list[str] | None,
    ) -> None:
        self.argv = argv
        self.returncode = returncode
        self.duration = duration
        self.tail = tail
        super().__init__(self._message())

    def _message(self) -> str:
        if self.returncode < 0:
            how = f"was killed by signal {-self.returncode}"
        else:
            how = f"exited with code {self.returncode}"
        head = f"command {' '.join(self.argv)!s} {how} after {self.duration:.1f}s"
        if self.tail is None:
            return f"{head} (output shown above)"
        if not self.tail:
            return f"{head} (no output)"
        body = "\n".join(f"  | {line}" for line in self.tail)
        return f"{head}; last lines of its output:\n{body}"


class BuildFailed(WorkbenchError):
    """Building the base image or another artifact failed."""


class BakeFailed(WorkbenchError):
    """A role bake failed: a Salt state failed, was not idempotent, or Packer failed."""


class VerifyFailed(BakeFailed):
    """A candidate image did not pass its role's testinfra tests."""


class ReleaseError(WorkbenchError):
    """A promotion, rollback or release look-up cannot be done."""


class LedgerError(ReleaseError):
    """The release ledger is unreadable or inconsistent."""


class DeployFailed(ReleaseError):
    """A new release did not become healthy; the previous one keeps serving."""


class BackupError(ReleaseError):
    """A database backup cannot be made, read or restored; the running database is left as it was."""


class SandboxError(WorkbenchError):
    """A sandbox operation failed."""


class NetbootError(WorkbenchError):
    """The networking node or the netboot artifacts failed."""


class CloudError(WorkbenchError):
    """The homelab cloud cannot be brought up, reached or torn down."""
