from __future__ import annotations

import pytest

from workbench.cli.legacy_args import split_args, translate
from workbench.core.errors import ConfigError

TASKS = {
    "image.bake": (["role"], {"force", "all", "keep-failed"}, {"role", "force", "all", "keep-failed"}),
    "release.rollback": (["tag"], set(), {"tag", "env", "role"}),
    "image.list": ([], {"json"}, {"json"}),
}


def lookup(name: str):  # type: ignore[no-untyped-def]
    return TASKS.get(name)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["image.bake:role=app"], ["image.bake", "--role=app"]),
        (["image.bake:app"], ["image.bake", "app"]),
        (["image.bake:app,force=yes"], ["image.bake", "app", "--force"]),
        (["image.bake:role=app,force=no"], ["image.bake", "--role=app"]),
        (["image.bake:role=app,keep_failed=true"], ["image.bake", "--role=app", "--keep-failed"]),
        (["release.rollback:app-12"], ["release.rollback", "app-12"]),
        (["release.rollback:env=staging,role=app"], ["release.rollback", "--env=staging", "--role=app"]),
        (["image.list:json=1", "image.bake", "app"], ["image.list", "--json", "image.bake", "app"]),
        (["image.bake", "--role", "app"], ["image.bake", "--role", "app"]),
        # Not a task: a value that happens to contain a colon stays as it is.
        (["release.promote", "app:7"], ["release.promote", "app:7"]),
        (["image.bake:"], ["image.bake"]),
    ],
)
def test_translate(argv: list[str], expected: list[str]) -> None:
    assert translate(argv, lookup) == expected


def test_escaped_commas_stay_in_the_value() -> None:
    assert split_args(r"a,b\,c,d=e") == ["a", "b,c", "d=e"]
    assert translate([r"release.rollback:tag=a\,b"], lookup) == ["release.rollback", "--tag=a,b"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["image.bake:app,cache"], "takes 1 positional argument"),
        (["image.bake:colour=red"], "has no argument 'colour'"),
        (["image.bake:force=maybe"], "yes/no flag"),
        (["image.list:x"], "takes 0 positional argument"),
    ],
)
def test_bad_legacy_arguments(argv: list[str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        translate(argv, lookup)
