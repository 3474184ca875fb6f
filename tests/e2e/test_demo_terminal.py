"""`fab demo` as a person sees it on a terminal: about one screen, ending with what to open and try.

Run under a pseudo-terminal (100 columns), the transcript replayed through a
terminal emulator (pyte). Its first bakes are the session's (same prefix and
base: cache hits when tests/e2e/test_release_e2e.py ran first); the changed
app is baked once.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyte
import pytest

from tests.support.commands import fab
from tests.support.config import REPO, config_data, write_config
from tests.support.net import free_port
from workbench.core import config as wb_config
from workbench.release import registry

COLUMNS, ROWS = 100, 40


@pytest.fixture(scope="module")
def demo_config(wb_prefix: str, wb_state: Path, base_image: Any) -> Iterator[Path]:
    state = wb_state / "demo-terminal"
    state.mkdir(exist_ok=True)
    data = config_data(wb_prefix, state, registry={"port": free_port()},
                       environments={"staging": {"frontend_port": free_port()}})
    path = write_config(state / "workbench.toml", data)
    try:
        yield path
    finally:
        fab("release.down", "--env", "staging", config=path)
        registry.down(wb_config.load(path))


def run_in_terminal(argv: list[str], env: dict[str, str], timeout: float = 1500) -> tuple[int, str]:
    """Run `argv` with a pseudo-terminal of COLUMNS x ROWS as its stdin, stdout and stderr."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, start_new_session=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed, the program is done
                break
            if not chunk:
                break
            chunks.append(chunk)
        return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def screen(raw: str) -> list[str]:
    """The lines a terminal holds after `raw`, scrolled-off ones included (a tall screen)."""
    shown = pyte.Screen(COLUMNS, 1000)
    pyte.Stream(shown).feed(raw)
    lines = [line.rstrip() for line in shown.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def test_demo_fits_a_screen_and_says_what_to_do_next(demo_config: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("WORKBENCH_PROGRESS", "NO_COLOR", "COLUMNS", "LINES")}
    env.update({wb_config.ENV_CONFIG: str(demo_config), "TERM": "xterm-256color"})
    code, raw = run_in_terminal([str(REPO / ".venv/bin/fab"), "demo"], env)
    lines = screen(raw)
    text = "\n".join(lines)
    assert code == 0, text
    assert len(lines) <= 45, f"{len(lines)} lines:\n{text}"
    headings = [line for line in lines if line.startswith("demo ") and "/5 " in line]
    assert [h.split()[1] for h in headings] == ["1/5", "2/5", "3/5", "4/5", "5/5"], text
    assert any(line.startswith("✔ bake app") for line in lines), text
    assert sum(line.startswith(("✔ promote app-", "✔ rollback app-")) for line in lines) == 3, text
    port = wb_config.load(demo_config).environment("staging").frontend_port
    assert f"demo done: http://127.0.0.1:{port} answered" in text
    assert f"open http://127.0.0.1:{port}/" in text
    assert "fab release.history --env staging --role app" in text
    assert re.search(r"fab release\.rollback app-\d+ ", text), text
    # One line as printed: a long state dir (pytest's) may wrap it on the screen, so look at what was written.
    # What is left of each line once the terminal has carried out its carriage returns.
    printed = [line.rstrip("\r").split("\r")[-1] for line in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw).split("\n")]
    assert any(re.fullmatch(r"log: \S+\.log \(fab log\)", line) for line in printed), "\n".join(printed[-5:])
    # Nothing of Salt's, Packer's or pytest's own output reached the terminal.
    for noise in ("[INFO", "Running state", "==> docker:", "PASSED"):
        assert noise not in raw, noise
