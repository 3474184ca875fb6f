"""The programs tests run as a user would: the venv's `fab`, and git as a fixed author."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.support.config import REPO
from workbench.core import config as wb_config
from workbench.release import releases as release

FAB = REPO / ".venv" / "bin" / "fab"


def fab(*args: str, config: Path, check: bool = False, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the real `fab` command of the venv against `config`."""
    env = {**os.environ, wb_config.ENV_CONFIG: str(config)}
    proc = subprocess.run([str(FAB), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"fab {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def kill_9_after(path: Path, step: str, *args: str) -> int:
    """Run `fab *args` until it pauses after `step` (stderr says so), then kill -9 it; its exit status."""
    env = {**os.environ, wb_config.ENV_CONFIG: str(path), release.PAUSE_ENV: step, "WORKBENCH_PROGRESS": "plain"}
    proc = subprocess.Popen([str(FAB), *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if f"paused after {step}" in line:
                break
        else:
            raise AssertionError(f"fab {' '.join(args)} ended without pausing at {step}")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    return proc.returncode


def git(repo: Path, *args: str) -> str:
    """git in `repo` as a fixed author, with none of the user's own git configuration."""
    env = {
        "GIT_AUTHOR_NAME": "Ops",
        "GIT_AUTHOR_EMAIL": "ops@example.invalid",
        "GIT_COMMITTER_NAME": "Ops",
        "GIT_COMMITTER_EMAIL": "ops@example.invalid",
        "PATH": "/usr/bin:/bin",
        "HOME": str(repo),
    }
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout
