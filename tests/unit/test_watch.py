"""The watcher on real git repositories, with a fake bake (the real one is tested in e2e)."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.commands import git
from tests.support.net import free_port
from workbench.build import bake as wb_bake
from workbench.core import config as wb_config
from workbench.core.errors import BakeFailed, ConfigError, WorkbenchError
from workbench.ops import hook, watch
from workbench.ops.gitmirror import Mirror, parse_ls_remote

DATA = Path(__file__).parent / "data"

TOML = """
[workbench]
prefix = "wbt-watch"
state_dir = "{state}"

[roles.base]
states = ["base"]

[roles.app]
ports = [80]

[roles.cache]
ports = [11211]
"""


def commit(repo: Path, message: str, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A workbench checkout in git, branch master, with three roles."""
    src = tmp_path / "src"
    src.mkdir()
    git(src, "init", "-q", "-b", "master")
    commit(
        src,
        "initial",
        {
            "workbench.toml": TOML.format(state=tmp_path / "state"),
            "salt/base/init.sls": "base: {}\n",
            "salt/app/init.sls": "app: {}\n",
            "salt/cache/init.sls": "cache: {}\n",
            "tests/roles/conftest.py": "",
            "tests/roles/basesystem.py": "",
            "tests/roles/test_base.py": "from basesystem import *\n",
            "tests/roles/test_app.py": "from basesystem import *\n",
            "tests/roles/test_cache.py": "",
            "README": "hello\n",
        },
    )
    return src


@pytest.fixture
def cfg(repo: Path) -> wb_config.Config:
    loaded = wb_config.load(repo / "workbench.toml")
    return dataclasses.replace(loaded, cache=wb_config.CacheSettings(port=3999))


class FakeBake:
    """Records what it baked; fails the roles in `failing`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.failing: set[str] = set()

    def __call__(self, config: wb_config.Config, role: str) -> str:
        self.calls.append((role, (config.root / f"salt/{role}/init.sls").read_text()))
        assert config.prefix == "wbt-watch"
        assert config.cache.port == 3999  # the watcher's machine settings, not the commit's
        if role in self.failing:
            raise BakeFailed(f"state {role} failed")
        return f"wbt-watch/{role}:{len(self.calls)}"

    @property
    def roles(self) -> list[str]:
        return [role for role, _ in self.calls]


def watcher(cfg: wb_config.Config, bake: FakeBake, **overrides: object) -> watch.Watcher:
    return watch.Watcher(cfg, watch.target(cfg, **overrides), bake)


def test_first_look_bakes_every_role_then_nothing_until_a_commit(cfg: wb_config.Config) -> None:
    bake = FakeBake()
    events = watcher(cfg, bake).poll()
    assert len(events) == 1
    assert events[0].status == "ok"
    assert sorted(bake.roles) == ["app", "base", "cache"]
    assert watcher(cfg, bake).poll() == []
    assert len(bake.calls) == 3


def test_a_commit_bakes_only_the_roles_whose_inputs_changed(cfg: wb_config.Config, repo: Path) -> None:
    bake = FakeBake()
    w = watcher(cfg, bake)
    w.poll()
    bake.calls.clear()
    sha = commit(repo, "tune the cache", {"salt/cache/init.sls": "cache: {size: 64}\n"})
    (event,) = w.poll()
    assert event.commit == sha and event.subject == "tune the cache"
    assert event.changed == ("cache",)
    assert bake.calls == [("cache", "cache: {size: 64}\n")]
    # The common state is an input of every role.
    bake.calls.clear()
    commit(repo, "base change", {"salt/base/init.sls": "base: {x: 1}\n"})
    (event,) = w.poll()
    assert sorted(event.changed) == ["app", "base", "cache"]
    # A commit touching no role's inputs is an event that bakes nothing.
    bake.calls.clear()
    commit(repo, "docs", {"README": "more\n"})
    (event,) = w.poll()
    assert event.status == "unchanged" and event.changed == () and bake.calls == []


def bake_hashes(cfg: wb_config.Config) -> dict[str, str]:
    """The bake's inputs hash of each role in the working tree (the base id does not matter here)."""
    return {role: wb_bake.hash_inputs(wb_bake.role_inputs(cfg, cfg.role(role), "sha256:b")) for role in cfg.roles}


@pytest.mark.parametrize(
    ("files", "changed"),
    [
        # A state that app's own state includes, and a file that state uses.
        pytest.param({"salt/shared/web.sls": "web: {v: 2}\n"}, ["app"], id="included-state"),
        pytest.param({"salt/shared/files/site": "v2\n"}, ["app"], id="file-of-included-state"),
        # Loaded for every role test by pytest.
        pytest.param({"tests/roles/conftest.py": "# touched\n"}, ["app", "base", "cache"], id="conftest"),
        # Imported by the tests of base and app, not by cache's.
        pytest.param({"tests/roles/basesystem.py": "# touched\n"}, ["app", "base"], id="basesystem"),
        # Another role's state, and a module no role test imports.
        pytest.param({"salt/cache/init.sls": "cache: {v: 2}\n"}, ["cache"], id="other-roles-state"),
        pytest.param({"tests/roles/scratch.py": "x = 2\n"}, [], id="module-nobody-imports"),
    ],
)
def test_watcher_and_bake_agree_on_what_a_commit_changed(
    cfg: wb_config.Config, repo: Path, files: dict[str, str], changed: list[str]
) -> None:
    commit(
        repo,
        "app includes a shared state",
        {
            "salt/app/init.sls": "include:\n  - shared.web\napp: {}\n",
            "salt/shared/web.sls": "web:\n  file.managed:\n    - source: salt://shared/files/site\n",
            "salt/shared/files/site": "v1\n",
            "tests/roles/scratch.py": "x = 1\n",
        },
    )
    bake = FakeBake()
    w = watcher(cfg, bake)
    w.poll()
    before = bake_hashes(cfg)
    commit(repo, "the change", files)
    (event,) = w.poll()
    after = bake_hashes(cfg)
    assert sorted(event.changed) == changed
    assert sorted(r for r in cfg.roles if before[r] != after[r]) == changed


def test_role_settings_in_the_commit_are_inputs(cfg: wb_config.Config, repo: Path) -> None:
    bake = FakeBake()
    w = watcher(cfg, bake)
    w.poll()
    bake.calls.clear()
    text = (repo / "workbench.toml").read_text().replace("ports = [80]", "ports = [8080]")
    commit(repo, "app port", {"workbench.toml": text})
    (event,) = w.poll()
    assert event.changed == ("app",)


def test_one_event_per_commit_oldest_first(cfg: wb_config.Config, repo: Path) -> None:
    bake = FakeBake()
    w = watcher(cfg, bake)
    w.poll()
    shas = [commit(repo, f"app {n}", {"salt/app/init.sls": f"app: {{n: {n}}}\n"}) for n in range(3)]
    events = w.poll()
    assert [e.commit for e in events] == shas
    assert [e.changed for e in events] == [("app",)] * 3
    assert [e.commit for e in watch.read_log(cfg)][-3:] == shas


def test_a_failing_bake_is_recorded_and_retried_on_the_next_commit(cfg: wb_config.Config, repo: Path) -> None:
    bake = FakeBake()
    bake.failing = {"app"}
    w = watcher(cfg, bake)
    (event,) = w.poll()
    assert event.status == "failed"
    outcome = {o.role: o for o in event.outcomes}
    assert outcome["app"].status == "failed" and "state app failed" in outcome["app"].detail
    assert outcome["base"].status == "baked" and outcome["cache"].status == "baked"
    # The commit is processed (not re-run forever), but app is still owed a bake.
    assert w.poll() == []
    bake.failing = set()
    bake.calls.clear()
    commit(repo, "docs", {"README": "again\n"})
    (event,) = w.poll()
    assert event.changed == ("app",) and event.status == "ok"


def test_an_unexpected_exception_in_a_bake_is_a_failed_role_not_a_dead_watcher(cfg: wb_config.Config) -> None:
    def bake(config: wb_config.Config, role: str) -> str:
        if role == "cache":
            raise RuntimeError("engine hiccup")
        return f"x/{role}:1"

    (event,) = watch.Watcher(cfg, watch.target(cfg), bake).poll()
    outcome = {o.role: o for o in event.outcomes}
    assert outcome["cache"].status == "failed" and outcome["cache"].detail == "RuntimeError: engine hiccup"
    assert outcome["app"].status == "baked"


def test_a_restarted_watcher_does_not_bake_again(cfg: wb_config.Config, repo: Path) -> None:
    bake = FakeBake()
    watcher(cfg, bake).poll()
    commit(repo, "cache", {"salt/cache/init.sls": "cache: {a: 1}\n"})
    # A new process: only the state file carries over.
    bake2 = FakeBake()
    (event,) = watcher(cfg, bake2).poll()
    assert bake2.roles == ["cache"]
    state = json.loads((watch.watch_dir(cfg) / watch.target(cfg).key / "state.json").read_text())
    assert state["last_commit"] == event.commit
    assert set(state["baked"]) == {"app", "base", "cache"}


def test_watched_roles_and_promotion(cfg: wb_config.Config) -> None:
    promoted: list[tuple[str, str, str]] = []

    def promote(config: wb_config.Config, role: str, image: str, env: str) -> str:
        promoted.append((role, image, env))
        if role == "cache":
            raise WorkbenchError("cache is unhealthy")
        return f"{role}-1"

    cfg = dataclasses.replace(cfg, watch=wb_config.WatchSettings(roles=("app", "cache")))
    bake = FakeBake()
    w = watch.Watcher(cfg, watch.target(cfg, promote="staging"), bake, promote)
    (event,) = w.poll()
    assert sorted(bake.roles) == ["app", "cache"]
    statuses = {(o.role, o.status) for o in event.outcomes}
    assert ("app", "promoted") in statuses and ("cache", "promote-failed") in statuses
    assert event.status == "failed"
    assert {(r, e) for r, _, e in promoted} == {("app", "staging"), ("cache", "staging")}


def test_promote_to_an_unknown_environment_is_refused(cfg: wb_config.Config) -> None:
    with pytest.raises(ConfigError, match="cannot promote to 'prod'"):
        watch.target(cfg, promote="prod")


def test_a_remote_url_is_cloned(cfg: wb_config.Config, repo: Path) -> None:
    bake = FakeBake()
    (event,) = watcher(cfg, bake, repository=f"file://{repo}").poll()
    assert event.repository == f"file://{repo}"
    assert sorted(bake.roles) == ["app", "base", "cache"]


def test_other_branch(cfg: wb_config.Config, repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "release")
    sha = commit(repo, "on release", {"salt/app/init.sls": "app: {rel: 1}\n"})
    bake = FakeBake()
    (event,) = watcher(cfg, bake, branch="release").poll()
    assert event.commit == sha and event.branch == "release"


def test_missing_repository(cfg: wb_config.Config, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"repository .*nowhere does not exist \(set by \[watch\] repository"):
        watcher(cfg, FakeBake(), repository=str(tmp_path / "nowhere")).poll()
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ConfigError, match="cannot read the git repository .*plain"):
        watcher(cfg, FakeBake(), repository=str(plain)).poll()


def test_missing_branch_lists_the_branches(cfg: wb_config.Config) -> None:
    with pytest.raises(ConfigError, match=r"branch 'main' does not exist in .* \(its branches: master\)"):
        watcher(cfg, FakeBake(), branch="main").poll()


def test_a_commit_without_configuration_is_a_failed_event(cfg: wb_config.Config, repo: Path) -> None:
    bake = FakeBake()
    w = watcher(cfg, bake)
    w.poll()
    git(repo, "rm", "-q", "workbench.toml")
    git(repo, "commit", "-q", "-m", "oops")
    (event,) = w.poll()
    assert event.status == "failed" and "no workbench.toml" in event.error
    text = TOML.format(state="x").replace("[roles.cache]", "[roles.cache]\ndescription = 3")
    commit(repo, "bad config", {"workbench.toml": text})
    (event,) = w.poll()
    assert event.status == "failed" and "description = 3" in event.error


def test_the_log_round_trips(cfg: wb_config.Config) -> None:
    events = watcher(cfg, FakeBake()).poll()
    assert watch.read_log(cfg) == events
    lines = watch.log_path(cfg).read_text().splitlines()
    assert json.loads(lines[0])["schema"] == watch.SCHEMA


def test_a_second_watcher_on_the_same_branch_is_refused(cfg: wb_config.Config) -> None:
    first, second = watcher(cfg, FakeBake()), watcher(cfg, FakeBake())
    with watch.lock(first), pytest.raises(WorkbenchError, match="another watcher"), watch.lock(second):
        pass


def test_the_http_hook_fires_an_event(cfg: wb_config.Config, repo: Path) -> None:
    bake = FakeBake()
    port = free_port()
    tgt = watch.target(cfg, interval=3600, hook_port=port)
    w = watch.Watcher(cfg, tgt, bake)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (w.serve(), done.set()), daemon=True)
    with hook.serving(port, w.wake, w.state_path) as address:
        thread.start()
        deadline = time.monotonic() + 30
        while len(bake.calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        sha = commit(repo, "app", {"salt/app/init.sls": "app: {hooked: 1}\n"})
        request = urllib.request.Request(f"http://{address}/hook", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 202
        while watch.read_log(cfg)[-1].commit != sha and time.monotonic() < deadline:
            time.sleep(0.05)
        last = watch.read_log(cfg)[-1]
        assert last.commit == sha and last.trigger == "hook" and last.changed == ("app",)
        with urllib.request.urlopen(f"http://{address}/status", timeout=10) as reply:
            assert json.loads(reply.read())["last_commit"] == sha
        w.stop.set()
        w.wake.set()
        assert done.wait(10)


def test_hook_port_in_use(cfg: wb_config.Config) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(WorkbenchError, match=f"port {port} on 127.0.0.1 is in use"), hook.serving(
            port, threading.Event(), Path("/nonexistent")
        ):
            pass


def test_parse_ls_remote_recorded() -> None:
    heads = parse_ls_remote((DATA / "git-ls-remote.txt").read_text())
    assert set(heads) == {"dev", "feature/x", "master"}
    assert heads["master"].startswith("13a6482e")


def test_systemd_unit(cfg: wb_config.Config) -> None:
    # What systemd makes of it: tests/integration/test_generated_files.py.
    fab = Path("/opt/workbench/.venv/bin/fab")
    unit = watch.systemd_unit(cfg, fab)
    assert f"ExecStart={fab} watch\n" in unit
    assert f"Environment=WORKBENCH_CONFIG={cfg.path}\n" in unit
    assert f"WorkingDirectory={cfg.root}\n" in unit
    assert "Restart=on-failure" in unit


def test_mirror_exports_the_committed_tree(repo: Path, tmp_path: Path) -> None:
    (repo / "salt/app/init.sls").write_text("uncommitted\n")
    mirror = Mirror(str(repo), "master", tmp_path / "m.git")
    head = mirror.fetch()
    out = mirror.export(head, tmp_path / "out")
    assert (out / "salt/app/init.sls").read_text() == "app: {}\n"
    # Git run inside the export names the commit, clean.
    assert git(out, "rev-parse", "HEAD").strip() == head
    assert git(out, "status", "--porcelain", "--untracked-files=no") == ""
    mirror.remove_export(out)
    assert not out.exists()
