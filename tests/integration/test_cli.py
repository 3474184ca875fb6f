"""The real `fab` command: task listing, both argument forms, errors and exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.support.commands import fab
from tests.support.config import REPO
from workbench.core import config as wb_config
from workbench.core import runlog


def test_every_task_is_listed_with_a_description(wb_config_path: Path) -> None:
    proc = fab("-l", config=wb_config_path, check=True)
    # "  image.base         Build the vanilla base image ..." (wrapped lines are indented further)
    rows = [re.match(r"^  (\S+)\s*(.*)$", line) for line in proc.stdout.splitlines()]
    tasks = {m[1]: m[2] for m in rows if m}
    assert {"name.parse", "image.base", "config.check"} <= set(tasks)
    undocumented = [name for name, description in tasks.items() if not description]
    assert not undocumented, f"tasks without a description: {undocumented}"


def test_name_parse_human_and_json(wb_config_path: Path) -> None:
    human = fab("name.parse", "redis-sessions.production.wpdn", config=wb_config_path)
    # The repository defines no redis role: the name is well formed, the role unknown.
    assert human.returncode == 2
    assert "unknown role 'redis'" in human.stderr
    proc = fab("name.parse", "--json", "app-blue.staging.wpdn", config=wb_config_path, check=True)
    assert json.loads(proc.stdout)["variant"] == "blue"


def test_fabric1_form_works_verbatim(wb_config_path: Path) -> None:
    proc = fab("name.parse:app1.production.wpdn,json=yes", config=wb_config_path, check=True)
    data = json.loads(proc.stdout)
    assert (data["role"], data["index"], data["environment"]) == ("app", 1, "production")
    bad = fab("name.parse:app.production.wpdn,colour=red", config=wb_config_path)
    assert bad.returncode == 2
    assert "has no argument 'colour'" in bad.stderr


def test_malformed_name_is_one_clear_error(wb_config_path: Path) -> None:
    proc = fab("name.parse", "app.nowhere", config=wb_config_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: host name 'app.nowhere'")
    assert "Traceback" not in proc.stderr


def test_bad_configuration_stops_before_anything_runs(tmp_path: Path) -> None:
    bad = tmp_path / "workbench.toml"
    bad.write_text('[base]\nsuite = 12\n[roles.app]\nports = "80"\n')
    proc = fab("image.base", config=bad)
    assert proc.returncode == 2
    assert f"error: {bad}: 3 problem(s)" in proc.stderr or f"error: {bad}: 2 problem(s)" in proc.stderr
    assert "[base] suite = 12: expected a string" in proc.stderr
    assert "[roles.app] ports = '80': expected a list" in proc.stderr
    assert "==>" not in proc.stdout


def test_task_help_documents_options(wb_config_path: Path) -> None:
    proc = fab("--help", "image.base", config=wb_config_path, check=True)
    assert "--force" in proc.stdout and "rebuild even if" in proc.stdout


def test_json_failure_is_json_on_stdout_with_the_exit_code(wb_config_path: Path, tmp_path: Path) -> None:
    proc = fab("release.show", "app-999", "--json", config=wb_config_path)
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert set(data) == {"error", "exit_code"} and data["exit_code"] == 1
    assert "no release 'app-999'" in data["error"]
    assert proc.stderr.startswith("error: no release 'app-999'")
    # A configuration that does not load: exit 2, and still JSON.
    bad = tmp_path / "workbench.toml"
    bad.write_text("[base]\nsuite = 12\n")
    proc = fab("image.list", "--json", config=bad)
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["exit_code"] == 2 and "expected a string" in json.loads(proc.stdout)["error"]


def test_a_closed_pipe_ends_quietly(wb_config_path: Path, wb_cfg: Any) -> None:
    # A run log far larger than a pipe's buffer, read by a reader that stops after one line.
    log = runlog.open_log(wb_cfg.state_dir, "big", "fab big", keep=50)
    for n in range(20000):
        log.write("bake app", f"line {n} of a long output")
    log.finish(0)
    env = {**os.environ, wb_config.ENV_CONFIG: str(wb_config_path)}
    proc = subprocess.Popen([str(REPO / ".venv/bin/fab"), "log", log.id], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"# workbench run ")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == "", err


def test_global_options_work_after_the_task(wb_config_path: Path) -> None:
    proc = fab("image.list", "--progress", "plain", "--verbose", config=wb_config_path, check=True)
    assert "IMAGE" in proc.stdout or "no role images yet" in proc.stdout
    proc = fab("image.list", "--progress", "sparkly", config=wb_config_path)
    assert proc.returncode == 2 and "must be one of auto, tty, plain" in proc.stderr


def test_fab_log_shows_the_last_run_and_lists_runs(wb_config_path: Path, wb_cfg: Any) -> None:
    log = runlog.open_log(wb_cfg.state_dir, "image.bake", "fab image.bake app", keep=50)
    log.write("bake app", "==> provision: base, app")
    log.finish(3)
    shown = fab("log", config=wb_config_path, check=True).stdout
    assert shown.startswith(f"# workbench run {log.id}\n") and "[bake app] ==> provision: base, app" in shown
    assert fab("log", "--path", log.id[-6:], config=wb_config_path, check=True).stdout.strip() == str(log.path)
    listed = json.loads(fab("log", "--list", "--json", config=wb_config_path, check=True).stdout)
    assert {"id": log.id, "exit_code": 3, "command": "fab image.bake app"}.items() <= listed[-1].items()
    missing = fab("log", "no-such-run", config=wb_config_path)
    assert missing.returncode == 2 and "no run 'no-such-run'" in missing.stderr
