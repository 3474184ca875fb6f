from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from workbench.core import config as wb_config
from workbench.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
PATH = REPO / "workbench.toml"


def load(data: dict[str, Any]) -> wb_config.Config:
    return wb_config.from_dict(data, PATH)


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        load(data)
    return str(info.value)


def test_repository_configuration_loads() -> None:
    cfg = wb_config.load(PATH)
    assert "app" in cfg.roles
    assert set(wb_config.DEFAULT_ENVIRONMENTS) <= set(cfg.environments)
    assert cfg.role("app").state_list == ("app",)
    assert cfg.role("app").tests_path == "tests/roles/test_app.py"


def test_defaults_apply_to_an_empty_file() -> None:
    cfg = load({})
    assert cfg.workbench.prefix == "workbench"
    assert cfg.base.suite == "bookworm"
    assert cfg.base.packages == ()
    assert list(cfg.environments) == list(wb_config.DEFAULT_ENVIRONMENTS)
    assert cfg.roles == {}
    assert cfg.state_dir == (REPO / ".workbench").resolve()


def test_settings_are_frozen() -> None:
    cfg = load({})
    with pytest.raises(AttributeError):
        cfg.base.suite = "trixie"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"bogus": {}}, "unknown section [bogus]"),
        ({"base": {"suit": "bookworm"}}, "[base]: unknown key 'suit'"),
        ({"base": {"packages": "vim"}}, "[base] packages = 'vim': expected a list, got a string"),
        ({"base": {"packages": ["vim", 3]}}, "in the list: expected a string, got an integer"),
        ({"base": {"distribution": "arch"}}, "[base] distribution = 'arch': must be one of debian"),
        ({"cache": {"enabled": "yes"}}, "[cache] enabled = 'yes': expected true or false"),
        ({"cache": {"port": True}}, "[cache] port = True: expected an integer, got a boolean"),
        ({"cache": {"port": 70000}}, "[cache] port = 70000: not a TCP port"),
        ({"registry": {"port": "5000"}}, "expected an integer, got a string"),
        ({"builder": {"type": "vmware"}}, "must be one of docker, qemu"),
        ({"workbench": {"prefix": "Bad Prefix"}}, "[workbench] prefix = 'Bad Prefix'"),
        ({"workbench": {"domain": "-bad-"}}, "must be a DNS domain"),
        ({"base": []}, "[base] must be a table"),
        ({"roles": {"App": {}}}, "[roles.App]: name 'App' must be lower-case"),
        ({"roles": {"web": {"ports": [80], "health": "health"}}}, "must be an HTTP path starting with '/'"),
        ({"roles": {"web": {"health": "/health"}}}, "health is set but ports is empty"),
        ({"roles": {"web": {"ports": [0]}}}, "ports: 0 is not a TCP port"),
        ({"roles": {"web": {}}}, "tests = 'tests/roles/test_web.py': no such file"),
        ({"roles": {"app": {"formulas": ["nowhere"]}}}, "formulas: 'nowhere' is not a directory"),
        ({"roles": {"app": {"aliases": ["db"]}, "db": {}}}, "'db' already names role"),
        ({"environments": {"staging": {"retention": 0}}}, "retention = 0: keep at least 1 release"),
        ({"environments": {"staging": {"health_timeout": -5}}}, "health_timeout = -5: give 1 to 86400 seconds"),
        ({"environments": {"staging": {"variables": {"1X": "a"}}}}, "'1X' is not an environment variable name"),
        ({"environments": {"staging": {"variables": {"X": 1}}}}, "value of 'X': expected a string"),
        ({"workbench": {"default_role": "nope"}, "roles": {"app": {}}}, "default_role = 'nope': no such role"),
    ],
)
def test_bad_input_is_named_with_file_key_and_rule(data: dict[str, Any], expected: str) -> None:
    message = problems(data)
    assert str(PATH) in message
    assert expected in message


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    message = problems({"base": {"suit": "x", "packages": 1}, "cache": {"port": "p"}})
    assert "3 problem(s)" in message
    assert "suit" in message and "packages" in message and "port" in message


def test_unknown_role_and_environment_lookups() -> None:
    cfg = wb_config.load(PATH)
    with pytest.raises(ConfigError, match=r"unknown role 'nope'.*\[roles.nope\]"):
        cfg.role("nope")
    with pytest.raises(ConfigError, match=r"unknown environment 'moon'"):
        cfg.environment("moon")


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        wb_config.load(tmp_path / "missing.toml")
    broken = tmp_path / "workbench.toml"
    broken.write_text("[base\nsuite = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        wb_config.load(broken)


def test_find_config_walks_up_and_honours_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "workbench.toml").write_text("")
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.delenv(wb_config.ENV_CONFIG, raising=False)
    assert wb_config.find_config(tmp_path / "a" / "b") == tmp_path / "workbench.toml"
    monkeypatch.setenv(wb_config.ENV_CONFIG, str(tmp_path / "other.toml"))
    assert wb_config.find_config(tmp_path) == tmp_path / "other.toml"
    monkeypatch.delenv(wb_config.ENV_CONFIG)
    with pytest.raises(ConfigError, match="no workbench.toml"):
        wb_config.find_config(Path("/"))


def test_reference_covers_every_setting() -> None:
    reference = wb_config.reference_markdown()
    for section in ("[workbench]", "[base]", "[cache]", "[registry]", "[builder]", "[roles.<name>]"):
        assert f"`{section}`" in reference
    assert "| `mirror` | string | `\"http://deb.debian.org/debian\"` |" in reference


def test_readme_reference_is_current() -> None:
    readme = (REPO / "README.md").read_text()
    assert wb_config.reference_markdown().strip() in readme, "README reference is stale: paste `fab config.reference`"
