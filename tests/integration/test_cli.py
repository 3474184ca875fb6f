"""The real `fab` command: task listing, both argument forms, errors and exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import fab


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
