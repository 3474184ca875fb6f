"""`fab watch --once` with the real bake on a real git repository (a copy of this checkout).

The watched role is the jumpbox (small, quick to bake). Each `fab watch --once`
is a fresh process, so what one run processed must be remembered by the next.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.commands import fab, git
from tests.support.config import REPO, ops_config_data, write_config

SKIP = {".git", ".venv", ".workbench", ".vagrant", ".pytest_cache", ".mypy_cache", ".ruff_cache", "__pycache__"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("ops-watch") / "checkout"
    shutil.copytree(REPO, src, ignore=lambda _d, names: [n for n in names if n in SKIP or n.endswith(".egg-info")])
    git(src, "init", "-q", "-b", "master")
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", "the workbench")
    return src


@pytest.fixture(scope="module")
def watch_config(repo: Path, wb_prefix: str, wb_state: Path) -> Path:
    data = ops_config_data(
        wb_prefix, wb_state, watch={"repository": str(repo), "branch": "master", "roles": ["jumpbox"], "hook_port": 0}
    )
    return write_config(wb_state / "ops-watch.toml", data)


def commit(repo: Path, path: str, text: str, message: str) -> str:
    (repo / path).write_text(text)
    git(repo, "commit", "-q", "-am", message)
    return git(repo, "rev-parse", "HEAD").strip()


def events(config: Path, repo: Path) -> list[dict[str, object]]:
    """The events of `repo` (a kept state directory also holds earlier runs')."""
    out = fab("watch.log", "--json", "--lines", "0", config=config, check=True)
    return [e for e in map(json.loads, out.stdout.splitlines()) if e["repository"] == str(repo)]


def test_watch_bakes_changed_roles_and_survives_failures(repo: Path, watch_config: Path, base_image: object) -> None:
    first = fab("watch", "--once", config=watch_config, timeout=1500)
    assert first.returncode == 0, first.stdout + first.stderr
    (event,) = events(watch_config, repo)
    assert event["status"] == "ok" and event["changed"] == ["jumpbox"]
    assert event["outcomes"][0]["status"] == "baked"
    tag = str(event["outcomes"][0]["image"])
    assert tag.split("/")[-1].startswith("jumpbox:")

    # A new process, nothing new: nothing baked again.
    again = fab("watch", "--once", config=watch_config)
    assert again.returncode == 0 and "0 event(s)" in again.stdout
    assert len(events(watch_config, repo)) == 1

    # A change to the role's inputs: a new image, with its tests.
    conf = "salt/jumpbox/files/sshd-hardening.conf"
    sha = commit(repo, conf, (repo / conf).read_text() + "MaxSessions 4\n", "jumpbox: at most 4 sessions")
    changed = fab("watch", "--once", config=watch_config, timeout=1500)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    event = events(watch_config, repo)[-1]
    assert event["commit"] == sha and event["status"] == "ok"
    assert event["outcomes"][0]["image"] != tag
    # The bake saw the commit's tree: the image carries the new setting.
    image = str(event["outcomes"][0]["image"])
    inside = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "cat", image, "/etc/ssh/sshd_config.d/10-workbench-hardening.conf"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "MaxSessions 4" in inside

    # A commit that breaks the role: the event fails, the run says so, the next run goes on.
    state = "salt/jumpbox/init.sls"
    broken = (repo / state).read_text().replace("- openssh-server", "- openssh-server\n      - no-such-package-wb")
    bad = commit(repo, state, broken, "jumpbox: a package that does not exist")
    failed = fab("watch", "--once", config=watch_config, timeout=1500)
    assert failed.returncode == 1
    event = events(watch_config, repo)[-1]
    assert event["commit"] == bad and event["status"] == "failed"
    assert event["outcomes"][0]["status"] == "failed" and "no-such-package-wb" in str(event["outcomes"][0]["detail"])
    after = fab("watch", "--once", config=watch_config)
    assert after.returncode == 0 and "0 event(s)" in after.stdout

    log = fab("watch.log", config=watch_config, check=True).stdout
    assert "jumpbox failed" in log and "jumpbox baked" in log and "at most 4 sessions" in log


def test_watch_bad_repository_and_branch(watch_config: Path, tmp_path: Path) -> None:
    missing = fab("watch", "--once", "--repository", str(tmp_path / "nowhere"), config=watch_config)
    assert missing.returncode == 2
    assert f"repository {tmp_path / 'nowhere'} does not exist" in missing.stderr
    branch = fab("watch", "--once", "--branch", "release", config=watch_config)
    assert branch.returncode == 2
    assert "branch 'release' does not exist in" in branch.stderr and "(its branches: master)" in branch.stderr


def test_the_service_fires_on_the_http_hook_and_stops_on_sigterm(repo: Path, watch_config: Path) -> None:
    # Runs after the bakes above: the branch head (the broken commit) is processed.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "WORKBENCH_CONFIG": str(watch_config)}
    argv = [str(REPO / ".venv/bin/fab"), "watch", "--hook-port", str(port), "--interval", "3600"]
    service = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert service.stdout is not None
        for line in service.stdout:
            if "hook listening" in line:
                break
        before = len(events(watch_config, repo))
        # Reverting the broken commit brings back inputs that were baked: nothing to bake.
        git(repo, "revert", "--no-edit", "HEAD")
        sha = git(repo, "rev-parse", "HEAD").strip()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/hook", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 202
        deadline = time.monotonic() + 300
        while len(events(watch_config, repo)) == before and time.monotonic() < deadline:
            time.sleep(0.5)
        event = events(watch_config, repo)[-1]
        assert event["commit"] == sha and event["trigger"] == "hook" and event["status"] == "unchanged"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as reply:
            assert json.loads(reply.read())["last_commit"] == sha
        service.send_signal(signal.SIGTERM)
        rest, _ = service.communicate(timeout=30)
        assert service.returncode == 0, rest
        assert "1 event(s), 0 failed" in rest
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
