"""Progress as a person sees it: plain lines, the live display, the run logs, the readers of tools' output."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pyte
import pytest

from workbench.build import packer, streams
from workbench.core import progress, runlog
from workbench.core.errors import ConfigError

DATA = Path(__file__).parent / "data"


def bake_like(role: str, *, fail: bool = False) -> None:
    with progress.job(f"bake {role}"):
        progress.step(f"bake {role}", "provision: base, app with Salt")
        progress.activity("state 3: pkg.installed nginx")
        progress.output("[INFO    ] Running state [nginx] at time 07:38:52.1234")
        progress.detail("package cache: apt-cacher-ng on 127.0.0.1:3142")
        progress.step(f"bake {role}", "verify: tests/roles/test_app.py")
        if fail:
            raise RuntimeError("the candidate failed its tests")
        progress.step(f"bake {role}", "tag: workbench/app:4")


def test_plain_is_one_line_per_event_and_no_tool_output() -> None:
    out = io.StringIO()
    with progress.session("plain", stream=out):
        progress.step("bake", "base: workbench/base:fb525f854c00")
        bake_like("app")
    lines = out.getvalue().splitlines()
    assert lines[:4] == [
        "==> [bake] base: workbench/base:fb525f854c00",
        "==> [bake app] provision: base, app with Salt",
        "    package cache: apt-cacher-ng on 127.0.0.1:3142",
        "==> [bake app] verify: tests/roles/test_app.py",
    ]
    assert lines[5].startswith("==> [bake app] done in ") and "(provision " in lines[5] and ", verify " in lines[5]
    # Neither Salt's log nor the activity reach the terminal in plain mode.
    assert "Running state" not in out.getvalue() and "pkg.installed" not in out.getvalue()


def test_plain_verbose_streams_the_tools_output() -> None:
    out = io.StringIO()
    with progress.session("plain", stream=out, verbose=True):
        bake_like("app")
    assert "    [INFO    ] Running state [nginx] at time 07:38:52.1234" in out.getvalue().splitlines()


def test_plain_prefixes_details_with_their_job_when_jobs_run_at_once() -> None:
    out = io.StringIO()
    both = threading.Barrier(2)

    def bake(role: str) -> None:
        with progress.job(f"bake {role}"):
            progress.step(f"bake {role}", "provision")
            both.wait()
            progress.detail(f"{role} says hello")
            both.wait()

    with progress.session("plain", stream=out):
        workers = [threading.Thread(target=bake, args=(r,)) for r in ("app", "frontend")]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    text = out.getvalue()
    assert "    [bake app] app says hello" in text and "    [bake frontend] frontend says hello" in text


def test_a_failed_job_says_so() -> None:
    out = io.StringIO()
    with pytest.raises(RuntimeError), progress.session("plain", stream=out):
        bake_like("app", fail=True)
    assert "==> [bake app] failed after " in out.getvalue()


def test_steps_outside_a_job_end_at_the_next_and_with_the_job_around_them(tmp_path: Path) -> None:
    log = runlog.open_log(tmp_path, "demo", "fab demo", keep=5)
    with progress.session("plain", stream=io.StringIO(), log=log) as session, progress.job("demo"):
        progress.step("demo", "2/5 promote app:1 to staging")
        progress.step("promote app-1", "pushing 127.0.0.1:5000/workbench/app:app-1")
        progress.step("promote app-1", "switching the staging frontend")
        running = [(s.scope, s.message) for s in session.running()]
        assert running == [("demo", "2/5 promote app:1 to staging"),
                           ("promote app-1", "switching the staging frontend")]
        progress.step("demo", "3/5 bake again")
        assert [s.scope for s in session.running()] == ["demo"]
    log.finish(0)
    text = log.path.read_text()
    assert "[promote app-1] <== pushing 127.0.0.1:5000/workbench/app:app-1 (took " in text
    assert "[demo] <== 2/5 promote app:1 to staging (took " in text


def test_the_run_log_holds_everything_with_its_job(tmp_path: Path) -> None:
    log = runlog.open_log(tmp_path, "image.bake", "fab image.bake app", keep=5)
    with progress.session("plain", stream=io.StringIO(), log=log):
        bake_like("app")
    log.finish(0)
    lines = log.path.read_text().splitlines()
    assert lines[0] == f"# workbench run {log.id}"
    assert lines[1] == "# command: fab image.bake app"
    body = "\n".join(lines)
    assert "[bake app] ==> provision: base, app with Salt" in body
    assert "[bake app] | [INFO    ] Running state [nginx] at time 07:38:52.1234" in body
    assert "[bake app]     package cache: apt-cacher-ng on 127.0.0.1:3142" in body
    assert "[bake app] <== done in " in body
    assert lines[-1].startswith("# finished: exit 0 after ")
    found = runlog.info(log.path)
    assert (found.id, found.command, found.exit_code) == (log.id, "fab image.bake app", 0)


def test_old_run_logs_are_pruned_and_found_by_id(tmp_path: Path) -> None:
    ids = []
    for n in range(4):
        log = runlog.open_log(tmp_path, f"task{n}", f"fab task{n}", keep=3)
        log.finish(n)
        ids.append(log.id)
    kept = runlog.runs(tmp_path)
    assert [r.id for r in kept] == ids[1:], "the oldest went, the newest three stay"
    assert [r.exit_code for r in kept] == [1, 2, 3]
    assert runlog.find(tmp_path) == Path(kept[-1].path), "no id: the last run"
    assert runlog.find(tmp_path, "task2") == Path(kept[1].path), "a unique part of an id will do"
    with pytest.raises(ConfigError, match="names 3 runs"):
        runlog.find(tmp_path, "task")
    with pytest.raises(ConfigError, match="no run 'nothing'"):
        runlog.find(tmp_path, "nothing")
    with pytest.raises(ConfigError, match="no run logs yet"):
        runlog.find(tmp_path / "elsewhere")


def test_a_killed_run_has_no_exit_code(tmp_path: Path) -> None:
    log = runlog.open_log(tmp_path, "image.bake", "fab image.bake app", keep=5)
    log.write("bake app", "==> provision")
    assert runlog.info(log.path).exit_code is None


def test_mode_from_option_environment_or_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    assert progress.choose_mode(None, io.StringIO()) == "plain", "not a terminal"
    assert progress.choose_mode("tty", io.StringIO()) == "tty"
    monkeypatch.setenv(progress.MODE_ENV, "tty")
    assert progress.choose_mode(None, io.StringIO()) == "tty"
    assert progress.choose_mode("plain", io.StringIO()) == "plain", "the option wins"
    with pytest.raises(ConfigError, match="must be one of auto, tty, plain"):
        progress.choose_mode("fancy")


def screen(raw: str, columns: int = 100, lines: int = 40) -> list[str]:
    """What a terminal shows after `raw` (a transcript with its escape sequences)."""
    shown = pyte.Screen(columns, lines)
    pyte.Stream(shown).feed(raw.replace("\n", "\r\n"))
    return [line.rstrip() for line in shown.display if line.strip()]


def test_live_display_leaves_one_line_per_finished_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    with progress.session("tty", stream=out):
        bake_like("app")
    shown = screen(out.getvalue())
    assert len(shown) == 4, shown
    assert shown[0].startswith("✔ bake app") and "provision: base, app with Salt" in shown[0]
    assert "package cache: apt-cacher-ng" in shown[1], "a step's remarks come under its line"
    assert "verify: tests/roles/test_app.py" in shown[2] and shown[2].endswith("s")
    assert "tag: workbench/app:4" in shown[3]
    assert "\x1b[3" not in out.getvalue(), "NO_COLOR: no colours"
    assert "Running state" not in out.getvalue()


def test_live_display_marks_the_failed_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    out = io.StringIO()
    with pytest.raises(RuntimeError), progress.session("tty", stream=out):
        bake_like("app", fail=True)
    shown = screen(out.getvalue())
    assert shown[-1].startswith("✘ bake app") and "verify: tests/roles/test_app.py" in shown[-1]


def test_live_display_shows_each_running_job_with_its_activity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    out = io.StringIO()
    with progress.session("tty", stream=out) as session, progress.job("bake app"):
        progress.step("bake app", "provision: base, app")
        progress.activity("state 7: pkg.installed nginx")
        renderer = session.renderer
        assert isinstance(renderer, progress.LiveRenderer)
        renderer.console.print(renderer._running())
        shown = screen(out.getvalue(), columns=120)
    row = next(line for line in shown if "provision: base, app" in line)
    assert "bake app" in row and "state 7: pkg.installed nginx" in row and "s " in row


# --- reading tools' output -----------------------------------------------------


def test_salt_progress_names_the_state_being_applied() -> None:
    texts = []
    for line in (DATA / "packer-build-docker.txt").read_text().splitlines():
        event = packer.parse_line(line)
        if event is not None and event.type == "ui" and len(event.data) >= 2:
            texts.append(event.data[1])
    reader = streams.SaltProgress()
    seen = [a for a in (reader.read(t) for t in texts) if a]
    assert "Starting docker container..." in seen
    assert "applying states base,app" in seen
    assert "state 1: webapps" in seen and "state 1: user.present webapps" in seen
    assert not [a for a in seen if "Calling roots find_file" in a]


def test_pytest_progress_counts_tests_and_keeps_the_failures() -> None:
    reader = streams.PytestProgress()
    seen = [reader.read(line) for line in (DATA / "pytest-verbose-failed.txt").read_text().splitlines()]
    assert "3 tests collected" in seen
    assert "test_content failed (1/3)" in seen and "test_runs passed (2/3)" in seen
    assert reader.failed == ["test_content", "test_mode"]
    described = reader.describe_failures()
    assert "  - test_content: AssertionError: assert 'real' == 'expected'" in described
    assert "      E         + real" in described
    assert "  - test_mode: AssertionError: mode of /etc/flunk.txt" in described
    assert "      E       assert '0o644' == '0o600'" in described


def test_pytest_progress_drops_testinfras_host_from_test_names() -> None:
    reader = streams.PytestProgress()
    line = "tests/roles/test_app.py::test_nginx_serves[docker-channel://4f2a9c] PASSED          [ 12%]"
    assert reader.read(line) == "test_nginx_serves passed (1)"


def test_docker_push_events_become_bytes_pushed() -> None:
    from workbench.core import engine

    meter = engine.PushProgress()
    meter.feed({"status": "Preparing", "id": "aaa"})
    meter.feed({"status": "Pushing", "id": "aaa", "progressDetail": {"current": 1_500_000, "total": 3_000_000}})
    said = meter.feed({"status": "Layer already exists", "id": "bbb"})
    assert said == "pushed 1.5 MB of 3.0 MB, 1 of 2 layers done"


def test_pytest_progress_reads_a_long_testinfra_failure() -> None:
    reader = streams.PytestProgress()
    for line in (DATA / "pytest-testinfra-failed.txt").read_text().splitlines():
        reader.read(line)
    assert reader.failed == ["test_content"]
    assert "      E       AssertionError: assert 'real\\n' == 'expected'" in reader.describe_failures()


def test_an_outline_job_shows_headings_and_one_line_per_job_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    out = io.StringIO()
    with progress.session("tty", stream=out):
        with progress.job("demo", outline=True):
            progress.step("demo", "1/2 bake app")
            progress.step("base", "workbench/base:fb525f854c00 is up to date")
            bake_like("app")
            progress.step("demo", "2/2 promote workbench/app:4 to staging")
            progress.step("promote app-5", "pushing 127.0.0.1:5000/workbench/app:app-5")
            progress.detail("starting the staging frontend on 127.0.0.1:8081")
            progress.step("promote app-5", "app-5 serves app in staging")
        print("demo done")
    shown = screen(out.getvalue())
    assert shown[0] == "demo 1/2 bake app"
    assert shown[1].startswith("✔ base") and "is up to date" in shown[1]
    assert shown[2].startswith("✔ bake app") and "tag: workbench/app:4" in shown[2]
    assert shown[3] == "demo 2/2 promote workbench/app:4 to staging"
    assert shown[4].startswith("✔ promote app-5") and "app-5 serves app in staging" in shown[4]
    assert "pushing" not in shown[4], "the steps of a release are not named: no split"
    # The remarks of the work inside are in the log, not on the outline.
    assert len(shown) == 5, shown


def test_the_display_gives_the_terminal_to_an_interactive_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    out = io.StringIO()
    with progress.session("tty", stream=out) as session, progress.job("sandbox app.sandbox.wpdn"):
        progress.step("sandbox app.sandbox.wpdn", "vagrant up app")
        renderer = session.renderer
        assert isinstance(renderer, progress.LiveRenderer) and renderer._live is not None
        progress.hand_over_terminal()
        assert renderer._live is None, "nothing redraws over an SSH session"
        progress.step("sandbox app.sandbox.wpdn", "provision")
        assert renderer._live is not None, "the next event draws again"
