"""`workbench.core.files`: a file replaced whole, with its mode, leaving nothing behind; the whole lines
of a file another process appends to."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.core import files, secrets
from workbench.core.files import locked, write_whole


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def own_partial(path: Path) -> Path:
    """The partial file this thread's `write_whole(path, ...)` uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_native_id()}.partial")


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def test_new_file_bytes_and_text(tmp_path: Path) -> None:
    write_whole(tmp_path / "a.bin", b"\x00\xffdata")
    write_whole(tmp_path / "a.txt", "line one\nline two\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\xffdata"
    assert (tmp_path / "a.txt").read_text() == "line one\nline two\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.txt"]


def test_content_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("a much longer old content than the new one\n" * 10)
    write_whole(path, "{}\n")
    assert path.read_text() == "{}\n"
    assert partials(tmp_path) == []


def test_replaced_not_rewritten_in_place(tmp_path: Path) -> None:
    # A reader holding the old file open keeps reading the old content.
    path = tmp_path / "node.json"
    path.write_text("old")
    with path.open() as reader:
        write_whole(path, "new")
        assert reader.read() == "old"
    assert path.read_text() == "new"


def test_default_mode_follows_umask(tmp_path: Path, umask_022: None) -> None:
    write_whole(tmp_path / "plain", "x")
    assert mode_of(tmp_path / "plain") == 0o644


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o400])
def test_mode_applied(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "file"
    path.write_text("old")
    path.chmod(0o666)
    write_whole(path, "new", mode)
    assert mode_of(path) == mode
    assert path.read_text() == "new"


def test_mode_is_not_narrowed_by_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_whole(tmp_path / "shared", "x", 0o644)
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "shared") == 0o644


def test_private_from_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None) -> None:
    # The partial file already has the mode when the data goes in, not only after the rename.
    seen: list[int] = []
    real_replace = Path.replace

    def replace(self: Path, target: Path) -> Path:
        seen.append(mode_of(self))
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", replace)
    write_whole(tmp_path / "key.pem", b"secret", 0o600)
    assert seen == [0o600]


def test_failed_write_leaves_old_file_and_no_partial(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("old\n")
    path.chmod(0o600)
    with pytest.raises(UnicodeEncodeError):
        write_whole(path, "cannot be encoded: \udcff", 0o600)  # fails while writing, after the partial file is made
    assert path.read_text() == "old\n"
    assert mode_of(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config"]


def test_interrupted_write_leaves_no_partial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")

    def interrupted(fd: int, mode: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fchmod", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_whole(path, b"new", 0o600)
    assert path.read_bytes() == b"old"
    assert partials(tmp_path) == []


def test_failed_rename_leaves_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "inside").write_text("kept")
    with pytest.raises(OSError):
        write_whole(target, "data")
    assert (target / "inside").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_whole(tmp_path / "absent" / "file", "x")
    assert list(tmp_path.iterdir()) == []


def test_stale_partial_of_a_killed_writer(tmp_path: Path) -> None:
    # Left with a wide mode by an earlier writer that had the same pid: not reused as it is.
    path = tmp_path / "secret"
    write_whole(path, b"first", 0o600)
    own = own_partial(path)
    own.write_bytes(b"half")
    own.chmod(0o666)
    write_whole(path, b"second", 0o600)
    assert path.read_bytes() == b"second"
    assert mode_of(path) == 0o600
    assert partials(tmp_path) == []


def test_partial_is_never_a_symlink_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    path = tmp_path / "out"
    own_partial(path).symlink_to(victim)
    write_whole(path, "data", 0o600)
    assert victim.read_text() == "untouched"
    assert path.read_text() == "data" and not path.is_symlink()


def test_write_private(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "passwords.json"
    path.write_text("{}")
    path.chmod(0o644)
    secrets.write_private(path, b'{"db": "x"}\n')
    assert path.read_bytes() == b'{"db": "x"}\n'
    assert mode_of(path) == 0o600
    assert partials(tmp_path) == []


def test_locked_excludes_threads_of_one_process(tmp_path: Path) -> None:
    """Two threads, two opens of one lock file: the second waits, as another process would."""
    lock = tmp_path / "locks" / "x.lock"
    inside: list[str] = []
    overlap: list[bool] = []

    def hold(name: str) -> None:
        with locked(lock) as held:
            assert held
            overlap.append(bool(inside))
            inside.append(name)
            threading.Event().wait(0.2)
            inside.remove(name)

    threads = [threading.Thread(target=hold, args=(str(n),)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlap == [False, False, False]


def test_locked_without_waiting_says_it_is_taken(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with locked(lock) as first, locked(lock, wait=False) as second:
        assert (first, second) == (True, False)
    with locked(lock, wait=False) as again:
        assert again


def test_made_once_makes_a_whole_file_once_and_leaves_nothing_of_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "store" / "disk.img"
    made: list[Path] = []

    def make(work: Path, partial: Path) -> None:
        assert work.is_dir() and not list(work.iterdir()), "a scratch directory of its own, empty"
        (work / "scratch").write_text("x")
        partial.write_text("whole")
        made.append(work)

    # A killed attempt's scratch directory and partial file are cleared first.
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / ".disk.d").mkdir()
    (tmp_path / "store" / ".disk.d" / "old").write_text("left")
    (tmp_path / "store" / "disk.partial").write_text("half")
    assert files.made_once(path, make) == path and path.read_text() == "whole"
    assert files.made_once(path, make) == path and len(made) == 1, "made once"
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["disk.img"]

    def fail(work: Path, partial: Path) -> None:
        partial.write_text("half")
        raise RuntimeError("the tool failed")

    other = tmp_path / "store" / "other.img"
    with pytest.raises(RuntimeError):
        files.made_once(other, fail)
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["disk.img"]


def test_appended_lines_are_the_whole_ones_numbered_as_in_the_file(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    assert files.appended_lines(log) == []
    log.write_text('{"a": 1}\n\n{"b": 2}\n{"c": ')
    assert files.appended_lines(log) == [(1, '{"a": 1}'), (3, '{"b": 2}')]
    with log.open("a") as out:
        out.write("3}\n")
    assert files.appended_lines(log)[-1] == (4, '{"c": 3}')
