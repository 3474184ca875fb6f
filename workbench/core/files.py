"""Files written whole: a reader sees the old content or the new, never part of it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


def made_once(path: Path, make: Callable[[Path, Path], None]) -> Path:
    """`path`, made by `make(work, partial)` unless it exists: `make` writes the file `partial`, with the
    empty scratch directory `work` to itself. `partial` then becomes `path` in one rename, so a file at
    `path` is always a whole one; `work` and a partial file go whatever happens (a failed or killed
    earlier attempt's too)."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    work = path.with_name(f".{path.stem}.d")
    partial = path.with_suffix(".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        make(work, partial)
        partial.replace(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        partial.unlink(missing_ok=True)
    return path


def write_whole(path: Path, data: bytes | str, mode: int | None = None) -> None:
    """Replace `path` with `data` in one step.

    Other processes read these files while they are being written (`cloud.up`
    polls the netboot node's state file, containers read their rendered pools,
    ssh reads its configuration): written in place, a reader could find the file
    empty or cut short. The data goes to a hidden partial file next to `path`,
    on the same filesystem, which is then renamed onto it. A failure leaves
    `path` as it was and removes the partial file.

    `mode`, when given, is the file's mode from the moment it exists (a secret
    is never readable by others, even half-written), whatever the umask; without
    it the file is made as `Path.write_text` makes one. A `str` is written as
    `Path.write_text` writes it too, in the default encoding the readers'
    `read_text()` uses.
    """
    # Unique per writer: two processes (or threads) writing the same file must not share a partial file.
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_native_id()}.partial")
    # Left by a killed writer whose pid this one has been given again.
    partial.unlink(missing_ok=True)
    # O_EXCL: a new file of this process's own, never one (or a symlink) someone else put there.
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as out:
            if mode is not None:
                os.fchmod(out.fileno(), mode)  # the umask narrowed the mode given to os.open
            out.write(data)
        partial.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):  # the error that got us here is the one to report
            partial.unlink()
        raise


def appended_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of each whole, non-blank line of a file another process appends to.

    A reader polling such a log can meet the writer's last line before its newline: that line
    is not whole yet, and is left for the next read rather than parsed in half. None when the
    file does not exist.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    whole = text[: text.rfind("\n") + 1]
    return [(number, line) for number, line in enumerate(whole.splitlines(), 1) if line.strip()]


@contextlib.contextmanager
def locked(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on `path` (made if missing) for the block.

    flock, so the kernel drops the lock when its holder dies, even by kill -9: a
    lock is never stale. Each call opens the file anew, so two threads of one
    process exclude each other as two processes do. Yields False, without
    waiting, when `wait` is off and someone else holds it; True once held.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def digests(path: Path, *algorithms: str) -> tuple[str, ...]:
    """The hex digest of the file for each of `algorithms` (hashlib's names), in one read of it."""
    hashers = [hashlib.new(name) for name in algorithms]
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            for hasher in hashers:
                hasher.update(chunk)
    return tuple(hasher.hexdigest() for hasher in hashers)


def sha256_of(path: Path) -> str:
    return digests(path, "sha256")[0]
