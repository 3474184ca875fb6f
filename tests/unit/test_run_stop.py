"""run.stop_group: the first signal to the whole group, SIGKILL for what ignores it."""

from __future__ import annotations

import signal
import subprocess
import time

from workbench.core import run


def _default_sigint() -> None:
    # A shell cannot trap a signal that was ignored when it started, and a test session run
    # in the background of a non-interactive shell (`make test &`) starts with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _group(script: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True, text=True, stdout=subprocess.PIPE,
                            preexec_fn=_default_sigint)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_the_first_signal_ends_the_group() -> None:
    proc = _group("trap 'exit 7' INT; echo ready; while :; do sleep 0.1; done")
    assert run.stop_group(proc, grace=10, first=signal.SIGINT) == 7


def test_what_ignores_it_is_killed_after_the_grace() -> None:
    proc = _group("trap '' TERM; echo ready; while :; do sleep 0.1; done")
    start = time.monotonic()
    assert run.stop_group(proc, grace=0.5) == -signal.SIGKILL
    assert time.monotonic() - start < 5


def test_a_finished_process_gives_its_exit_code() -> None:
    proc = subprocess.Popen(["sh", "-c", "exit 3"], start_new_session=True)
    proc.wait()
    assert run.stop_group(proc, grace=1) == 3
