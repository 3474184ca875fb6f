from __future__ import annotations

import pytest

from tests.support.config import small_config
from workbench.core import config as wb_config
from workbench.core import naming
from workbench.core.errors import ConfigError, HostNameError


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> wb_config.Config:
    return small_config(
        tmp_path_factory.mktemp("checkout"),
        roles={"app": {}, "redis": {}, "hypervisor": {"aliases": ["hv"]}},
        environments={"production": {}, "staging": {}, "lab": {}},
    )


def test_the_users_example(cfg: wb_config.Config) -> None:
    host = naming.parse("redis-sessions.production.wpdn", cfg)
    assert (host.role, host.variant, host.environment, host.domain, host.index) == (
        "redis", "sessions", "production", "wpdn", None,
    )
    assert host.short == "redis-sessions"


def test_alias_and_index(cfg: wb_config.Config) -> None:
    host = naming.parse("hv1.lab.wpdn", cfg)
    assert (host.role, host.index, host.environment) == ("hypervisor", 1, "lab")


def test_variant_with_dashes_and_case_and_trailing_dot(cfg: wb_config.Config) -> None:
    host = naming.parse("App2-Blue-Green.Staging.wpdn.", cfg)
    assert (host.role, host.index, host.variant, host.fqdn) == ("app", 2, "blue-green", "app2-blue-green.staging.wpdn")


def test_round_trip(cfg: wb_config.Config) -> None:
    name = naming.host_name("redis", "production", "wpdn", "sessions")
    assert naming.parse(name, cfg).fqdn == name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("", "empty host name"),
        ("app.production", "not in the domain 'wpdn'"),
        ("app.production.example", "not in the domain 'wpdn'"),
        ("app.wpdn", "exactly a host and an environment"),
        ("app.x.production.wpdn", "exactly a host and an environment"),
        ("app..production.wpdn", "is not a DNS label"),
        ("-app.production.wpdn", "is not a DNS label"),
        ("app_1.production.wpdn", "is not a DNS label"),
        ("1app.production.wpdn", "is not <role>[<n>][-<variant>]"),
        ("app-.production.wpdn", "is not a DNS label"),
        ("app--x.production.wpdn", "is not <role>[<n>][-<variant>]"),
        ("mongo.production.wpdn", "unknown role 'mongo'"),
        ("app.moon.wpdn", "unknown environment 'moon'"),
    ],
)
def test_malformed_names(cfg: wb_config.Config, name: str, expected: str) -> None:
    with pytest.raises(HostNameError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        naming.parse(name, cfg)


def test_name_errors_are_config_errors() -> None:
    assert issubclass(HostNameError, ConfigError)
