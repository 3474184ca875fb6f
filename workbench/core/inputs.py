"""Content addressing: what went into an artifact, and the hash that names it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def hash_inputs(inputs: dict[str, Any]) -> str:
    """A stable sha256 of a JSON-able description of an artifact's inputs."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def hash_tree(root: Path, paths: Iterable[Path] | None = None) -> str:
    """sha256 over the relative paths, modes and contents of the files under `root`.

    Only file content and the executable bit count: timestamps and owners do
    not, so a fresh clone hashes like the working tree it came from.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in (paths if paths is not None else root.rglob("*")) if p.is_file())
    for path in files:
        rel = path.relative_to(root).as_posix()
        if "__pycache__" in rel or rel.endswith(".pyc"):
            continue
        digest.update(rel.encode() + b"\0")
        digest.update(b"x" if path.stat().st_mode & 0o111 else b"-")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
