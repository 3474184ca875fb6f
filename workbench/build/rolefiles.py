"""The files that define a role: one answer for the bake's inputs hash and for `fab watch`.

A role image is made from its states and everything they reach (the include
closure), the pillar, its formulas and images/ (the Packer template and the
provision script); it is accepted by its test file, with the conftest.py files
pytest loads for it and the local modules they import (every role test does
`from basesystem import *`). The bake hashes these files, plus what is not a
file (base, builder, Salt version); the watcher hashes the same files in a
commit's tree to decide which roles the commit changed.
"""

from __future__ import annotations

import ast
import re
import threading
from collections.abc import Iterable
from pathlib import Path

from workbench.build import salt
from workbench.core.config import Config, Role
from workbench.core.inputs import hash_inputs, hash_tree

IMAGES_DIR = "images"
# Where the role tests run from: verify.pytest_argv's --confcutdir and --rootdir.
ROLE_TESTS_DIR = "tests/roles"


def role_files(config: Config, role: Role) -> list[Path]:
    """Every file whose content decides what the role's image is, sorted.

    `role_files(config, config.role("app"))` holds salt/app/init.sls and
    salt/base/monit.sls (the common state includes it), salt/pillar/top.sls,
    images/role.json, tests/roles/test_app.py, tests/roles/conftest.py and
    tests/roles/basesystem.py; nothing of salt/db.
    """
    root = config.root
    salt_root = root / "salt"
    files = [
        *state_closure(salt_root, salt.state_list(config, role)),
        *_files(salt_root / "pillar"),
        *(path for formula in role.formulas for path in _files(root / formula)),
        *_files(root / IMAGES_DIR),
        *role_test_files(root, root / role.tests_path),
    ]
    return sorted(set(files))


def files_digest(config: Config, role: Role) -> str:
    """sha256 over the paths, modes and contents of `role_files`."""
    root = config.root
    files = role_files(config, role)
    inside = [p for p in files if p.is_relative_to(root)]
    # A formula may be an absolute path outside the checkout: named by its full path.
    outside = [p for p in files if not p.is_relative_to(root)]
    if not outside:
        return hash_tree(root, inside)
    return hash_inputs({"checkout": hash_tree(root, inside), "elsewhere": hash_tree(Path("/"), outside)})


# --- states ---------------------------------------------------------------------------


# What makes one state directory reach another, in .sls and .jinja files:
# `salt://cache/files/x`, `{% from "cache/map.jinja" import ... %}`,
# `- sls: cache` (a requisite), and the items of an `include:` list.
_REFERENCE_RES = (
    re.compile(r"salt://([\w.-]+)/"),
    re.compile(r"(?:from|import_yaml|import_json|import_text|include|import)\s+['\"]([\w.-]+)/"),
    re.compile(r"\bsls:\s*['\"]?([\w-]+)"),
)
_INCLUDE_ITEM_RE = re.compile(r"^\s+-\s*['\"]?\.?([\w-]+)")


def state_references(text: str) -> set[str]:
    """Top-level state names a state file refers to: {'cache'} for `include: [cache.client]`."""
    found: set[str] = set()
    for pattern in _REFERENCE_RES:
        found.update(m.group(1) for m in pattern.finditer(text))
    in_include = False
    for line in text.splitlines():
        if re.match(r"^include:\s*$", line):
            in_include = True
            continue
        if in_include:
            match = _INCLUDE_ITEM_RE.match(line)
            if match:
                found.add(match.group(1))
            elif line.strip() and not line.lstrip().startswith("#"):
                in_include = False
    return found


def state_closure(salt_root: Path, states: Iterable[str]) -> list[Path]:
    """The files of salt/ that the given states can reach (the include closure).

    A top-level name (`app` for `app` or `app.nginx`) is reached when a reached
    .sls or .jinja file refers to it (see `state_references`); top-level files
    and `_*` extension directories are always in. The pillar is not a state.
    """
    if not salt_root.is_dir():
        return []
    entries = {p.stem if p.suffix == ".sls" else p.name: p for p in salt_root.iterdir() if p.name != "pillar"}
    always = [p for name, p in entries.items() if name.startswith("_") or (p.is_file() and p.suffix != ".sls")]
    todo = [s.split(".")[0] for s in states]
    reached: set[str] = set()
    while todo:
        name = todo.pop()
        if name in reached or name not in entries:
            continue
        reached.add(name)
        for path in _files(entries[name]):
            if path.suffix in (".sls", ".jinja"):
                todo.extend(state_references(path.read_text(errors="replace")) - reached)
    files: list[Path] = []
    for path in [*always, *(entries[n] for n in sorted(reached))]:
        files.extend(_files(path))
    return sorted(set(files))


# --- tests ----------------------------------------------------------------------------


def role_test_files(root: Path, test: Path) -> list[Path]:
    """The role's test file, the conftest.py files pytest loads for it, and the local modules they import.

    pytest loads conftest.py from its confcutdir (tests/roles) down to the test's
    directory and puts those directories on sys.path, so `from basesystem import *`
    in tests/roles/test_app.py reads tests/roles/basesystem.py.
    """
    dirs = _dirs_down(root / ROLE_TESTS_DIR, test.parent)
    todo = [p for p in (test, *(d / "conftest.py" for d in dirs)) if p.is_file()]
    found: set[Path] = set()
    while todo:
        path = todo.pop()
        if path not in found:
            found.add(path)
            todo.extend(_local_modules(path, dirs))
    return sorted(found)


def _dirs_down(top: Path, bottom: Path) -> list[Path]:
    """`top`, then each directory down to `bottom`; just both when `bottom` is elsewhere."""
    if not bottom.is_relative_to(top):
        return [top, bottom]
    dirs = [top]
    for part in bottom.relative_to(top).parts:
        dirs.append(dirs[-1] / part)
    return dirs


# CPython 3.11's parser is not safe from several threads at once (`--all` bakes roles in
# threads): "SystemError: AST constructor recursion depth mismatch". One parse at a time.
_PARSE_LOCK = threading.Lock()


def _local_modules(path: Path, dirs: list[Path]) -> list[Path]:
    """The files of the modules `path` imports that live in `dirs` (or beside it), not installed ones."""
    try:
        with _PARSE_LOCK:
            tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return []  # a broken file is still an input; pytest will report it
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    found: list[Path] = []
    for directory in dict.fromkeys([path.parent, *dirs]):
        for name in sorted(names):
            module, package = directory / f"{name}.py", directory / name / "__init__.py"
            if module.is_file():
                found.append(module)
            elif package.is_file():
                found.extend(p for p in _files(package.parent) if p.suffix == ".py")
    return found


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
