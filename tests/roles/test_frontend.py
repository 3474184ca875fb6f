"""The frontend role: nginx on port 80, proxying to the upstream the deploy writes."""

from __future__ import annotations

from typing import Any

import pytest
from basesystem import *  # noqa: F403 -- every role image carries the basesystem

pytestmark = pytest.mark.usefixtures("monit_ready")

UPSTREAM = "/etc/nginx/workbench/upstream.conf"


def test_nginx_installed(host: Any) -> None:
    assert host.package("nginx").is_installed


def test_nginx_listens_on_port_80(host: Any) -> None:
    assert host.socket("tcp://0.0.0.0:80").is_listening


def test_site_includes_the_upstream_the_deploy_rewrites(host: Any) -> None:
    site = host.file("/etc/nginx/sites-enabled/workbench-frontend")
    assert site.is_symlink
    assert f"include {UPSTREAM};" in site.content_string
    assert "proxy_pass http://workbench_frontend;" in site.content_string
    assert "X-Workbench-Upstream" in site.content_string
    assert not host.file("/etc/nginx/sites-enabled/default").exists


def test_initial_upstream_refuses_until_the_first_switch(host: Any) -> None:
    assert "upstream workbench_frontend" in host.file(UPSTREAM).content_string
    out = host.check_output("curl -sS -o /dev/null -D - --max-time 5 http://127.0.0.1/")
    assert out.splitlines()[0].split()[1] == "502"
    assert "x-workbench-upstream: 127.0.0.1:1" in out.lower()


def test_reload_with_a_new_upstream_is_accepted(host: Any) -> None:
    # What the deploy does at each switch, against the image's own config.
    assert host.run("nginx -t -q").rc == 0
    assert host.run("nginx -s reload").rc == 0


def test_monit_watches_nginx(host: Any) -> None:
    assert host.file("/etc/monit/conf.d/nginx").exists
    assert "nginx" in host.check_output("monit -B summary")


def test_monit_restarts_killed_nginx(host: Any, wait: Any, kill_and_wait_restart: Any) -> None:
    # Last in the file: it kills what the checks above use. nginx's pid file is
    # Debian's (`pid /run/nginx.pid;` in nginx.conf), the one salt/frontend's monit check names.
    kill_and_wait_restart("nginx", "/run/nginx.pid")
    wait(lambda: host.socket("tcp://0.0.0.0:80").is_listening, "nginx listens on port 80 again")
    status = host.check_output("curl -sS -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1/")
    assert status == "502", "the restarted nginx serves the site (502 until the first switch)"
