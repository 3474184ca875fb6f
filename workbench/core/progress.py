"""Progress lines for long work: one line per step as it starts, a summary at the end.

The core reports through these functions; the Fabric layer prints results and
errors. Progress goes to stderr, flushed, so it interleaves correctly with the
streamed output of Packer, Salt and debootstrap (also on stderr), and stdout
carries results only: `fab x --json | jq` works whatever the command did first.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def step(scope: str, message: str) -> None:
    """`==> [bake app] provision: applying base, app`"""
    sys.stderr.write(f"==> [{scope}] {message}\n")
    sys.stderr.flush()


def detail(message: str) -> None:
    sys.stderr.write(f"    {message}\n")
    sys.stderr.flush()


@contextmanager
def timed(scope: str, message: str) -> Iterator[None]:
    """Announce a step, and say how long it took when it ends."""
    step(scope, message)
    start = time.monotonic()
    yield
    detail(f"({message.split(':')[0]} took {time.monotonic() - start:.1f}s)")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
