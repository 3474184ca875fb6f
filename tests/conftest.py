"""Fixtures shared by every tier.

Integration tests create everything under a unique prefix (images, containers,
networks, state directory) and remove it at the end of the session, even when
tests fail. While iterating, `WB_TEST_PREFIX=wbdev` reuses one prefix across
runs and keeps it (the base is then built once, not per run).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workbench.core import config as wb_config  # noqa: E402

# Role tests (tests/roles) run against images, by the bake, never against this
# machine; tests/e2e/sandbox_tree is a small checkout the sandbox tests copy. Not
# collecting them also keeps their conftest modules from shadowing this one.
collect_ignore = ["roles", "e2e/sandbox_tree"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The tier is the folder: tests/unit, tests/integration, tests/e2e.
    for item in items:
        tier = Path(str(item.fspath)).relative_to(REPO / "tests").parts[0]
        if tier in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, tier))


def pytest_collection_finish(session: pytest.Session) -> None:
    from tests.e2e import qemu_background

    qemu_background.start_if_collected(session)


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.e2e import qemu_background

    qemu_background.finish()


@pytest.fixture(scope="session")
def qemu_bakes() -> Any:
    """The background qemu bakes (tests/e2e/qemu_background.py)."""
    from tests.e2e import qemu_background

    return qemu_background.started()


@pytest.fixture(scope="session")
def wb_prefix() -> Iterator[str]:
    """A prefix no other run uses; everything under it is removed at the end."""
    kept = os.environ.get("WB_TEST_PREFIX")
    prefix = kept or f"wbt-{secrets.token_hex(3)}"
    yield prefix
    if not kept:
        from workbench.core import engine

        engine.remove_prefix(prefix)


@pytest.fixture(scope="session")
def wb_state(wb_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's state directory (builds, ledger, registry data)."""
    if os.environ.get("WB_TEST_PREFIX"):
        path = Path("/var/tmp") / f"{wb_prefix}-state"
        path.mkdir(exist_ok=True)
        yield path
        return
    path = tmp_path_factory.mktemp(f"{wb_prefix}-state")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def config_data(prefix: str, state: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """The repo's workbench.toml with the test's prefix and state, and `sections` merged in."""
    data = tomllib.loads((REPO / "workbench.toml").read_text())
    data["workbench"] = {**data["workbench"], "prefix": prefix, "state_dir": str(state), "checkout": str(REPO)}
    for name, body in sections.items():
        data[name] = {**data.get(name, {}), **body}
    return data


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


@pytest.fixture(scope="session")
def wb_config_path(wb_prefix: str, wb_state: Path) -> Path:
    """A workbench.toml for this session: the repo's, under the test prefix."""
    return write_config(wb_state / "workbench.toml", config_data(wb_prefix, wb_state))


@pytest.fixture(scope="session")
def wb_cfg(wb_config_path: Path) -> wb_config.Config:
    return wb_config.load(wb_config_path)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip nothing: the engine is part of the test set-up (`make test` starts it)."""
    from workbench.core import engine

    engine.client()


@pytest.fixture(scope="session")
def base_image(wb_cfg: wb_config.Config, docker_engine: None) -> Any:
    """The vanilla base, built once per session under the test prefix."""
    from workbench.build import base

    return base.build_base(wb_cfg)


def fab(*args: str, config: Path, check: bool = False, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the real `fab` command of the venv against `config`."""
    env = {**os.environ, wb_config.ENV_CONFIG: str(config)}
    proc = subprocess.run(
        [str(REPO / ".venv/bin/fab"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"fab {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


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
