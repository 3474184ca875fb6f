"""`fab status`'s screen, from a report made by hand."""

from __future__ import annotations

import json

from workbench.ops import status as wb_status


def test_status_of_a_release_says_whether_it_answers() -> None:
    report = wb_status.WorkbenchStatus(
        config="/w/workbench.toml", prefix="wb", base=None, roles=(),
        environments=(wb_status.EnvironmentStatus("staging", "http://127.0.0.1:8081", True, (
            wb_status.ReleaseStatus("app", "app-4", "wb/app:2", 3720, 1, True, "GET /health: HTTP 200"),
            wb_status.ReleaseStatus("db", "db-1", "wb/db:1", 60, 0, False, "not running"),
        )),),
        registry=None, cache=None, sandboxes=(), netboot=None, problems=("sandboxes: vagrant is not installed",),
    )
    text = wb_status.render(report)
    assert "frontend http://127.0.0.1:8081 answers" in text
    assert "app-4" in text and "1h ago" in text and "ok (GET /health: HTTP 200)" in text
    assert "db-1" in text and "UNHEALTHY (not running)" in text
    assert "(could not read sandboxes: vagrant is not installed)" in text
    assert json.loads(json.dumps(report.to_dict()))["environments"][0]["releases"][1]["healthy"] is False
