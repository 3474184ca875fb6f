"""Parsers of the bake's tools, against output recorded from the real programs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.build import packer, salt, verify

DATA = Path(__file__).parent / "data"


def test_packer_line_unescapes_commas_and_newlines() -> None:
    event = packer.parse_line("1795317694,,ui,message,    docker: applying base%!(PACKER_COMMA)app\\nnext")
    assert event is not None
    assert event.type == "ui"
    assert event.data == ("message", "    docker: applying base,app\nnext")


@pytest.mark.parametrize("line", ["", "plain text", "abc,def,ghi", "12"])
def test_packer_non_event_lines(line: str) -> None:
    assert packer.parse_line(line) is None


def test_packer_recorded_build_gives_the_image_artifact() -> None:
    log = packer.parse_output((DATA / "packer-build-docker.txt").read_text().splitlines())
    assert log.artifact_id("docker") == "sha256:b898a0d81d19eeccfa581bbbf8bfa188f85e44f3febca19580e9858add5ed0a9"
    assert log.artifact_id("qemu") is None
    assert any("salt exit codes: first run 0, second run 0" in m for m in log.messages)
    # Salt's log goes to stderr, which Packer reports as ui errors: not a failure by itself.
    assert any("Executing state pkg.installed for [nginx]" in e for e in log.errors)


def test_packer_argv_through_packer_py() -> None:
    argv = packer.build_argv(
        Path("/t/role.json"), variables={"base_image": "sha256:1", "states": "base,app"}, only="docker"
    )
    assert argv[:4] == ["packer", "build", "-machine-readable", "-color=false"]
    assert "-only=docker" in argv and "-on-error=cleanup" in argv
    i = argv.index("base_image=sha256:1")
    assert argv[i - 1] == "-var"
    assert argv[-1] == "/t/role.json"


def load(name: str) -> object:
    return json.loads((DATA / name).read_text())


def test_salt_success_with_changes() -> None:
    run = salt.parse_state_run(load("salt-good.json"))
    assert run.ok
    assert [s.id for s in run.states] == ["first", "second"]
    assert [s.id for s in run.changed()] == ["first"]
    assert run.changed(exempt=["first"]) == []
    assert run.states[0].function == "test.succeed_with_changes"


def test_salt_failed_state_names_id_and_comment() -> None:
    run = salt.parse_state_run(load("salt-bad.json"))
    assert not run.ok
    assert [s.id for s in run.failed] == ["broken-state", "after-broken"]
    text = salt.describe_failure(run)
    assert "broken-state (test.fail_without_changes, sls bad)" in text
    assert "after-broken" in text and "requisite" in text.lower()


def test_salt_missing_sls_is_a_failure() -> None:
    run = salt.parse_state_run(load("salt-missing.json"))
    assert not run.ok and not run.states
    assert "No matching sls found for 'missing'" in salt.describe_failure(run)


def test_salt_render_error_is_a_failure() -> None:
    run = salt.parse_state_run(load("salt-render.json"))
    assert not run.ok
    assert "Rendering SLS 'base:render' failed" in run.errors[0]


@pytest.mark.parametrize("data", [None, {}, {"local": 3}, {"local": {"x": "y"}}, "garbage"])
def test_salt_unexpected_output_is_a_failure(data: object) -> None:
    assert not salt.parse_state_run(data).ok


def test_salt_call_args_pass_the_exit_code_and_json() -> None:
    args = salt.salt_call_args("/b", ["base", "app"])
    assert "--retcode-passthrough" in args and "--out=json" in args and "--local" in args
    assert args[-2:] == ["state.sls", "base,app"]
    assert all(" " not in a for a in args)  # the provision script splits them on spaces


@pytest.mark.parametrize(
    ("output", "summary"),
    [
        ("..\n2 passed in 0.48s", "2 passed in 0.48s"),
        ("F.\nFAILED t.py::x\n1 failed, 1 passed in 3.10s", "1 failed, 1 passed in 3.10s"),
        ("===== 14 passed, 1 warning in 6.21s =====", "14 passed, 1 warning in 6.21s"),
        ("no summary here", ""),
    ],
)
def test_pytest_summary(output: str, summary: str) -> None:
    assert verify.parse_summary(output) == summary
