"""The qemu bakes of tests/e2e/test_bake_qemu.py, started in the background as soon as collection ends.

A qcow2 bake under software emulation takes minutes of one CPU while the
rest of the session mostly waits on the Docker engine, so the two overlap:
tests/e2e/test_bake_qemu.py waits for results that are usually there by the
time it runs. The bakes are the real `fab image.bake` under a prefix and state
directory of their own (a second package cache, so that neither session
waits on the other's lock), and everything under that prefix is removed at
the end of the session, even on failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.config import REPO, config_data, write_config
from workbench.core import config as wb_config
from workbench.core import run

QEMU_MODULE = "test_bake_qemu.py"
# One virtual CPU: the emulated machine takes one core, the session the other.
VM_SETTINGS = {"cpus": 1}
QEMU_BUILDER = {"type": "qemu", **VM_SETTINGS}
BAKE_TIMEOUT = 1800.0


@dataclass
class QemuBakes:
    """The background job: a bake of the base role (`--builder qemu`), its disk made publishable and
    booted with a config drive (tests/support/boot_published.py), then a bake that must fail
    (`[builder] type = "qemu"` in its configuration)."""

    prefix: str
    root: Path
    results: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    running: subprocess.Popen[str] | None = None
    thread: threading.Thread | None = None

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def config_path(self) -> Path:
        return self.root / "workbench.toml"

    @property
    def broken_config_path(self) -> Path:
        return self.root / "broken" / "workbench.toml"

    def prepare(self) -> None:
        # The base role's configuration keeps the docker builder: its bake chooses qemu on the command line.
        write_config(self.config_path, config_data(self.prefix, self.state, builder=VM_SETTINGS))
        self._broken_checkout()

    def _broken_checkout(self) -> None:
        """A copy of the checkout with one role whose only state fails: Salt stops it early."""
        root = self.root / "broken" / "checkout"
        shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(".git", ".venv", ".workbench", "tests"))
        (root / "salt/broken").mkdir()
        (root / "salt/broken/init.sls").write_text("broken:\n  test.fail_without_changes:\n    - name: made to fail\n")
        (root / "tests/roles").mkdir(parents=True)
        (root / "tests/roles/test_broken.py").write_text("def test_never_runs(host):\n    raise AssertionError\n")
        data = config_data(self.prefix, self.state, builder=QEMU_BUILDER)
        data["workbench"].update(checkout=str(root), common_states=[], default_role="broken")
        data["roles"] = {"broken": {}}
        data["environments"] = {"sandbox": {}}
        data.pop("pools", None)
        data["watch"] = {"branch": "main"}
        write_config(self.broken_config_path, data)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="qemu-bakes", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            fab = str(REPO / ".venv/bin/fab")
            for name, argv, path in (
                ("base", (fab, "image.bake", "base", "--builder", "qemu", "--json"), self.config_path),
                # The base disk made publishable and booted with a config drive, as a kvm/qemu cloud would.
                ("published", (sys.executable, "-m", "tests.support.boot_published", str(self.config_path),
                               "base"), self.config_path),
                ("broken", (fab, "image.bake", "broken"), self.broken_config_path),
            ):
                if self.stopping.is_set():
                    return
                if name == "published" and self.results["base"].returncode != 0:
                    continue  # nothing to publish: the base bake's own test says why
                self.results[name] = self._command(list(argv), path)
        finally:
            self.done.set()

    def _command(self, argv: list[str], config: Path) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, wb_config.ENV_CONFIG: str(config)}
        # Its own process group: the session's end can stop fab, Packer and qemu at once.
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self.running = proc
        try:
            out, err = proc.communicate(timeout=BAKE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._stop(proc)
            out, err = proc.communicate()
            err += f"\n(stopped after {BAKE_TIMEOUT:.0f}s)"
        finally:
            self.running = None
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    @staticmethod
    def _stop(proc: subprocess.Popen[str]) -> None:
        """SIGTERM first: the bake stops Packer, which stops its VM and removes its files."""
        run.stop_group(proc, grace=120)

    def result(self, name: str) -> subprocess.CompletedProcess[str]:
        """Wait for the background bake `name` (the ones before it finish first)."""
        deadline = 2 * BAKE_TIMEOUT + 60
        while name not in self.results and not self.done.wait(timeout=5):
            # A job that died without saying it is done would otherwise be waited for an hour.
            assert self.thread is not None and self.thread.is_alive(), "the background qemu job died (see stderr)"
            deadline -= 5
            assert deadline > 0, f"the background qemu bake {name} did not finish"
        assert name in self.results, f"the background qemu bake {name} did not run"
        return self.results[name]

    def finish(self) -> None:
        self.stopping.set()
        proc = self.running
        if proc is not None and proc.poll() is None:
            self._stop(proc)
        if self.thread is not None:
            self.thread.join(timeout=300)
        from workbench.core import engine

        engine.remove_prefix(self.prefix)
        shutil.rmtree(self.root, ignore_errors=True)


_bakes: QemuBakes | None = None


def start_if_collected(session: pytest.Session) -> None:
    """From tests/e2e/conftest.py's pytest_collection_finish: start only when the qemu tests will run."""
    global _bakes
    if session.config.option.collectonly or not any(item.path.name == QEMU_MODULE for item in session.items):
        return
    root = Path(tempfile.mkdtemp(prefix="wbq-"))
    _bakes = QemuBakes(prefix=f"wbq-{secrets.token_hex(3)}", root=root)
    _bakes.prepare()
    _bakes.start()


def finish() -> None:
    """From tests/e2e/conftest.py's pytest_sessionfinish: stop what still runs, remove everything."""
    if _bakes is not None:
        _bakes.finish()


def started() -> QemuBakes:
    assert _bakes is not None, "the background qemu bakes start when test_bake_qemu.py is collected"
    return _bakes
