"""Configurations for tests: the repository's workbench.toml under a test prefix, and small ones built in memory."""

from __future__ import annotations

import hashlib
import shutil
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.support.net import free_low_port
from workbench.core import config as wb_config

REPO = Path(__file__).resolve().parents[2]


def config_data(prefix: str, state: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """The repo's workbench.toml with the test's prefix and state, and `sections` merged in."""
    data = tomllib.loads((REPO / "workbench.toml").read_text())
    data["workbench"] = {**data["workbench"], "prefix": prefix, "state_dir": str(state), "checkout": str(REPO)}
    # Sessions run side by side (scripts/test-tiers.sh, the background qemu bakes), each with a
    # package cache of its own: a port per prefix keeps two caches starting at once from both
    # finding the configured port free and racing for it.
    data["cache"] = {**data.get("cache", {}), "port": cache_port(prefix)}
    for name, body in sections.items():
        data[name] = {**data.get(name, {}), **body}
    return data


def cache_port(prefix: str) -> int:
    """A package cache port for the prefix, in 10000-29999 (apt-cacher-ng binds no port above 32767)."""
    return 10000 + int(hashlib.sha256(prefix.encode()).hexdigest(), 16) % 20000


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write `data` as TOML (the subset workbench.toml uses)."""
    lines: list[str] = []

    def emit(table: str, body: dict[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict) or k == "variables"}
        lines.append(f"[{table}]")
        for key, value in scalars.items():
            lines.append(f"{key} = {_toml(value)}")
        lines.append("")
        for key, value in body.items():
            if isinstance(value, dict) and key != "variables":
                emit(f"{table}.{key}", value)

    for section, body in data.items():
        emit(section, body)
    path.write_text("\n".join(lines))
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def fresh_dir(path: Path) -> Path:
    """`path`, emptied: the state directory of one module's own, whatever an earlier run left in it."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def stub_role_tests(checkout: Path, roles: Iterable[str]) -> None:
    """An empty tests/roles/test_<role>.py per role: the configuration requires each role's test file."""
    (checkout / "tests" / "roles").mkdir(parents=True, exist_ok=True)
    for role in roles:
        (checkout / "tests" / "roles" / f"test_{role}.py").touch()


def small_config(root: Path, prefix: str = "wbx", **sections: dict[str, Any]) -> wb_config.Config:
    """A configuration of `sections` alone (the repo's file is not read) for the checkout `root`.

    Its state is `root/state` unless `[workbench] state_dir` says otherwise; each
    role it names gets an empty test file under `root`.

        small_config(tmp_path, cache={"offline": True}).state_dir == tmp_path / "state"
    """
    data: dict[str, Any] = dict(sections)
    data["workbench"] = {"prefix": prefix, "state_dir": str(root / "state"), **sections.get("workbench", {})}
    stub_role_tests(root, data.get("roles", {}))
    return wb_config.from_dict(data, root / "workbench.toml")


def ops_config_data(prefix: str, state: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """`config_data` with a package cache port of its own (below 32768: apt-cacher-ng's limit)."""
    return config_data(prefix, state, cache={"port": free_low_port()}, **sections)
