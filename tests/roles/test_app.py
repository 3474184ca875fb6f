"""The app role: nginx on port 80 in front of the WSGI app gunicorn runs as webapps."""

from __future__ import annotations

import json
from typing import Any

import pytest
from basesystem import *  # noqa: F403 -- every role image carries the basesystem

pytestmark = pytest.mark.usefixtures("monit_ready")


def http_get(host: Any, url: str) -> tuple[int, str]:
    """GET `url` from inside the container: (status, body)."""
    out = host.check_output(f"curl -sS --max-time 5 -w '\\n%{{http_code}}' {url}")
    body, _, status = out.rpartition("\n")
    return int(status), body


def http_ok(host: Any, url: str) -> tuple[int, str] | None:
    """(200, body) once `url` answers 200, else None (for `wait`)."""
    status, body = http_get(host, url)
    return (status, body) if status == 200 else None


def test_packages_installed(host: Any) -> None:
    assert host.package("nginx").is_installed
    assert host.package("gunicorn").is_installed


def test_nginx_serves_port_80_on_every_interface(host: Any) -> None:
    assert host.socket("tcp://0.0.0.0:80").is_listening


def test_gunicorn_listens_on_loopback_only(host: Any) -> None:
    assert host.socket("tcp://127.0.0.1:8000").is_listening
    assert not host.socket("tcp://0.0.0.0:8000").is_listening


def test_gunicorn_runs_as_webapps(host: Any) -> None:
    lines = host.check_output("ps -eo user:20,args").splitlines()
    gunicorn = [line.split()[0] for line in lines if "gunicorn" in line and "workbench_app" in line]
    assert len(gunicorn) >= 3, f"a master and two workers: {lines}"
    assert set(gunicorn) == {"webapps"}


def test_nginx_workers_unprivileged(host: Any, wait: Any) -> None:
    def find_masters() -> list[Any]:
        # The master is the nginx whose parent is not an nginx: PID 1 in a container, where the
        # daemon is reparented to the image's command, systemd or monit in a VM.
        nginx = host.process.filter(comm="nginx")
        return [p for p in nginx if p.ppid not in {n.pid for n in nginx}]

    masters = wait(find_masters, "an nginx master")
    assert len(masters) == 1
    workers = host.process.filter(comm="nginx", ppid=masters[0].pid)
    assert workers and {w.user for w in workers} == {"www-data"}


def test_nginx_site(host: Any) -> None:
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    enabled = host.file("/etc/nginx/sites-enabled/workbench-app")
    assert enabled.is_symlink
    assert enabled.linked_to == "/etc/nginx/sites-available/workbench-app"
    assert enabled.contains("proxy_pass http://workbench_app;")
    assert host.run("nginx -t").rc == 0


def test_app_code_owned_by_webapps(host: Any) -> None:
    code = host.file("/srv/apps/app/workbench_app.py")
    assert code.is_file
    assert (code.user, code.group) == ("webapps", "webapps")


def test_health_reports_the_release(host: Any, wait: Any) -> None:
    status, body = wait(lambda: http_ok(host, "http://127.0.0.1/health"), "GET /health through nginx")
    assert status == 200, body
    record = json.loads(host.file("/run/workbench/release.json").content_string)
    assert json.loads(body) == {"status": "ok", **record}
    assert record["role"] == "app"


def test_health_from_another_address(host: Any, wait: Any, own_address: str) -> None:
    # Not only loopback: what a load balancer or another container would see.
    status, body = wait(lambda: http_ok(host, f"http://{own_address}/health"), f"GET /health on {own_address}")
    assert status == 200
    assert json.loads(body)["status"] == "ok"


def test_gunicorn_answers_directly(host: Any) -> None:
    status, body = http_get(host, "http://127.0.0.1:8000/health")
    assert status == 200
    assert json.loads(body)["role"] == "app"


def test_home_page(host: Any) -> None:
    status, body = http_get(host, "http://127.0.0.1/")
    assert status == 200
    assert "<h1>workbench app</h1>" in body


def test_unknown_path_is_404(host: Any) -> None:
    status, _ = http_get(host, "http://127.0.0.1/no-such-page")
    assert status == 404


def test_monit_supervises_nginx_and_gunicorn(monit_ready: dict[str, tuple[str, str]]) -> None:
    assert monit_ready["nginx"] == ("OK", "Process")
    assert monit_ready["gunicorn"] == ("OK", "Process")


def test_monit_restarts_killed_services(host: Any, wait: Any, kill_and_wait_restart: Any) -> None:
    # Last in the file: it kills what the checks above use.
    kill_and_wait_restart("gunicorn", "/run/gunicorn/workbench-app.pid")
    kill_and_wait_restart("nginx", "/run/nginx.pid")
    status, body = wait(lambda: http_ok(host, "http://127.0.0.1/health"), "GET /health after the restarts")
    assert json.loads(body)["status"] == "ok"
