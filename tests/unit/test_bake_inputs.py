"""The bake's content address, state closure, labels and template rendering (no engine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.config import REPO
from workbench.build import bake, builders, images, rolefiles, salt
from workbench.core import config


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    states = {
        "base/init.sls": "include:\n  - base.users\n",
        "base/users.sls": "webapps:\n  user.present: []\n",
        "app/init.sls": "include:\n  - shared.web\nnginx:\n  pkg.installed: []\n",
        "app/files/site": "mentions db and cache in prose only\n",
        "shared/web.sls": "/etc/web:\n  file.managed:\n    - source: salt://shared/files/web\n",
        "shared/files/web": "web\n",
        "cache/init.sls": "memcached:\n  pkg.installed: []\n",
        "db/init.sls": "{% from 'dbmap/map.jinja' import db %}\nmariadb-server:\n  pkg.installed: []\n",
        "dbmap/map.jinja": "{% set db = {} %}\n",
        "pillar/top.sls": "base: {}\n",
    }
    for rel, text in states.items():
        path = tmp_path / "salt" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "role.json").write_text((REPO / "images/role.json").read_text())
    tests = {
        "conftest.py": "import pytest\n",
        # Every role test but cache's imports the basesystem checks, which import a helper.
        "basesystem.py": "from checks import wait\n",
        "checks.py": "import json\nwait = 1\n",
        "scratch.py": "nobody imports this\n",
        **{f"test_{r}.py": "from basesystem import *\n\ndef test_x(host):\n    pass\n" for r in ("base", "app", "db")},
        "test_cache.py": "import json\n\ndef test_x(host):\n    pass\n",
    }
    (tmp_path / "tests" / "roles").mkdir(parents=True)
    for name, text in tests.items():
        (tmp_path / "tests" / "roles" / name).write_text(text)
    return tmp_path


def make_config(root: Path, **roles: dict[str, object]) -> config.Config:
    data = {
        "workbench": {"prefix": "unit", "common_states": ["base"], "default_role": "app"},
        "roles": {"base": {"states": ["base"]}, "app": {"ports": [80]}, "cache": {}, "db": {}, **roles},
    }
    return config.from_dict(data, root / "workbench.toml")


def closure_dirs(root: Path, states: list[str]) -> set[str]:
    return {p.relative_to(root / "salt").parts[0] for p in rolefiles.state_closure(root / "salt", states)}


def test_closure_follows_includes_salt_urls_and_imports_not_prose(checkout: Path) -> None:
    assert closure_dirs(checkout, ["base", "app"]) == {"base", "app", "shared"}
    assert closure_dirs(checkout, ["base", "db"]) == {"base", "db", "dbmap"}
    assert closure_dirs(checkout, ["base", "cache"]) == {"base", "cache"}


def test_touching_one_roles_state_changes_only_that_roles_inputs(checkout: Path) -> None:
    cfg = make_config(checkout)
    before = {r: bake.role_inputs(cfg, cfg.role(r), "sha256:base") for r in cfg.roles}
    (checkout / "salt/cache/init.sls").write_text("memcached:\n  pkg.installed: []\n# touched\n")
    after = {r: bake.role_inputs(cfg, cfg.role(r), "sha256:base") for r in cfg.roles}
    assert [r for r in cfg.roles if before[r] != after[r]] == ["cache"]


@pytest.mark.parametrize(
    ("change", "roles_changed"),
    [
        pytest.param(lambda root: (root / "salt/base/users.sls").write_text("changed\n"),
                     {"base", "app", "cache", "db"}, id="state-included-by-the-common-state"),
        pytest.param(lambda root: (root / "salt/pillar/top.sls").write_text("base: {'*': []}\n"),
                     {"base", "app", "cache", "db"}, id="pillar"),
        pytest.param(lambda root: (root / "images/role.json").write_text("{}"),
                     {"base", "app", "cache", "db"}, id="template"),
        pytest.param(lambda root: (root / "salt/shared/files/web").write_text("other\n"),
                     {"app"}, id="file-of-a-state-app-includes"),
        pytest.param(lambda root: (root / "tests/roles/test_db.py").write_text("x = 1\n"),
                     {"db"}, id="role-test"),
        pytest.param(lambda root: (root / "tests/roles/conftest.py").write_text("# touched\n"),
                     {"base", "app", "cache", "db"}, id="conftest"),
        pytest.param(lambda root: (root / "tests/roles/basesystem.py").write_text("# touched\n"),
                     {"base", "app", "db"}, id="basesystem"),
        pytest.param(lambda root: (root / "tests/roles/checks.py").write_text("wait = 2\n"),
                     {"base", "app", "db"}, id="module-basesystem-imports"),
        pytest.param(lambda root: (root / "tests/roles/scratch.py").write_text("still nobody's\n"),
                     set(), id="module-nobody-imports"),
    ],
)
def test_what_counts_as_an_input(checkout: Path, change, roles_changed: set[str]) -> None:  # type: ignore[no-untyped-def]
    cfg = make_config(checkout)
    before = {r: bake.hash_inputs(bake.role_inputs(cfg, cfg.role(r), "b")) for r in cfg.roles}
    change(checkout)
    after = {r: bake.hash_inputs(bake.role_inputs(cfg, cfg.role(r), "b")) for r in cfg.roles}
    assert {r for r in cfg.roles if before[r] != after[r]} == roles_changed


def test_role_files_of_this_checkout() -> None:
    cfg = config.load(REPO / "workbench.toml")
    files = {p.relative_to(REPO).as_posix() for p in rolefiles.role_files(cfg, cfg.role("app"))}
    expected = {
        "salt/app/init.sls",
        "salt/app/files/nginx-site",
        "salt/base/init.sls",
        "salt/base/monit.sls",  # included by the common state
        "salt/pillar/top.sls",
        "images/role.json",
        "images/scripts/provision.sh",
        "tests/roles/test_app.py",
        "tests/roles/conftest.py",
        "tests/roles/basesystem.py",  # `from basesystem import *`
    }
    assert expected <= files
    assert not {f for f in files if f.startswith(("salt/db/", "tests/roles/test_db", "formulas/"))}
    db = {p.relative_to(REPO).as_posix() for p in rolefiles.role_files(cfg, cfg.role("db"))}
    assert "formulas/timezone-formula/timezone/init.sls" in db


def test_role_test_files_follow_conftests_and_local_imports_down_to_the_test(tmp_path: Path) -> None:
    roles = tmp_path / "tests/roles"
    (roles / "edge").mkdir(parents=True)
    (roles / "helpers").mkdir()
    files = {
        "conftest.py": "",
        "edge/conftest.py": "import helpers.net\n",
        "helpers/__init__.py": "",
        "helpers/net.py": "",
        "edge/test_edge.py": "import os, json\nfrom near import x\n",
        "edge/near.py": "x = 1\n",
        "broken.py": "def (\n",
        "test_plain.py": "import broken\n",
    }
    for name, text in files.items():
        (roles / name).write_text(text)
    found = {p.relative_to(roles).as_posix() for p in rolefiles.role_test_files(tmp_path, roles / "edge/test_edge.py")}
    assert found == {
        "conftest.py", "edge/conftest.py", "helpers/__init__.py", "helpers/net.py", "edge/test_edge.py", "edge/near.py"
    }
    # A module that does not parse is still an input (pytest reports it).
    plain = {p.name for p in rolefiles.role_test_files(tmp_path, roles / "test_plain.py")}
    assert plain == {"conftest.py", "test_plain.py", "broken.py"}


def test_a_formula_outside_the_checkout_is_an_input(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    formula = tmp_path_factory.mktemp("shared-formulas") / "tz"
    (formula / "tz").mkdir(parents=True)
    (formula / "tz/init.sls").write_text("tz: {}\n")
    cfg = make_config(checkout, db={"formulas": [str(formula)]})
    before = rolefiles.files_digest(cfg, cfg.role("db"))
    (formula / "tz/init.sls").write_text("tz: {zone: UTC}\n")
    assert rolefiles.files_digest(cfg, cfg.role("db")) != before


def test_base_id_and_role_settings_are_inputs(checkout: Path) -> None:
    cfg = make_config(checkout)
    app = cfg.role("app")
    digest = bake.hash_inputs(bake.role_inputs(cfg, app, "sha256:one"))
    assert digest == bake.hash_inputs(bake.role_inputs(cfg, app, "sha256:one"))
    assert digest != bake.hash_inputs(bake.role_inputs(cfg, app, "sha256:two"))
    other = make_config(checkout, app={"ports": [8080]})
    assert digest != bake.hash_inputs(bake.role_inputs(other, other.role("app"), "sha256:one"))


def test_state_list_puts_common_states_first_once(checkout: Path) -> None:
    cfg = make_config(checkout, app={"states": ["base", "app", "extra"]})
    assert salt.state_list(cfg, cfg.role("app")) == ["base", "app", "extra"]
    assert salt.state_list(cfg, cfg.role("base")) == ["base"]


def test_minion_config_keeps_everything_under_the_build_dir(checkout: Path) -> None:
    cfg = make_config(checkout, db={"formulas": []})
    conf = salt.minion_config("/var/tmp/b", cfg.role("db"), ["formulas/0"])
    assert conf["root_dir"] == "/var/tmp/b/root"
    assert conf["file_roots"]["base"] == ["/var/tmp/b/states", "/var/tmp/b/formulas/0"]
    assert conf["grains"] == {"workbench_role": "db", "workbench_environment": "build"}


def test_docker_builder_sets_command_ports_labels_and_names_the_container(checkout: Path) -> None:
    cfg = make_config(checkout, app={"ports": [80, 443], "command": ["/bin/app", "--serve"]})
    template = json.loads((checkout / "images/role.json").read_text())
    labels = {"workbench.prefix": "unit", "workbench.bake.pid": "42", "workbench.role": 'a"b'}
    request = builders.BuildRequest(
        cfg, cfg.role("app"), "bid", "sha256:base", labels, "unit-build-app-bid", checkout / "work"
    )
    rendered = builders.DockerBuilder().configure(template, request)
    (block,) = rendered["builders"]
    assert block["changes"][:4] == ['ENTRYPOINT [""]', 'CMD ["/bin/app", "--serve"]', "EXPOSE 80", "EXPOSE 443"]
    assert 'LABEL "workbench.role"="a\\"b"' in block["changes"]
    assert block["run_command"][block["run_command"].index("--name") + 1] == "unit-build-app-bid"
    assert "workbench.candidate=building" in block["run_command"]
    assert rendered["provisioners"] == template["provisioners"]


def test_builder_type_selects_the_builder(checkout: Path) -> None:
    data = {"workbench": {"prefix": "unit", "default_role": "app"}, "roles": {"app": {}}}
    (checkout / "tests/roles/test_app.py").touch()
    for kind, cls in (("docker", builders.DockerBuilder), ("qemu", builders.QemuBuilder)):
        cfg = config.from_dict({**data, "builder": {"type": kind}}, checkout / "workbench.toml")
        assert type(builders.builder_for(cfg)) is cls


def test_label_changes_quote_values() -> None:
    assert images.label_changes({"b": "2", "a": "x y"}) == ['LABEL "a"="x y"', 'LABEL "b"="2"']


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (90, "1m"), (7200, "2h"), (200000, "2d"), (-1, "?")])
def test_human_age(seconds: int, text: str) -> None:
    assert images.human_age(seconds) == text
