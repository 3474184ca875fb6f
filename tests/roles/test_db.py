"""The db role: MariaDB on port 3306 of every interface, under monit.

The role also uses an external formula (formulas/timezone-formula) with its
pillar in salt/pillar/timezone.sls: the time zone checks show both applied.
"""

from __future__ import annotations

from typing import Any

import pytest
from basesystem import *  # noqa: F403 -- every role image carries the basesystem

pytestmark = pytest.mark.usefixtures("monit_ready")


def sql(host: Any, statement: str) -> str:
    """Run SQL as root through the socket (unix_socket authentication)."""
    return host.check_output(f'mariadb --batch --skip-column-names -e "{statement}"')


def test_mariadb_installed(host: Any) -> None:
    assert host.package("mariadb-server").is_installed


def test_listens_on_every_interface(host: Any) -> None:
    assert host.socket("tcp://0.0.0.0:3306").is_listening


def test_bind_address_configured(host: Any) -> None:
    assert host.file("/etc/mysql/mariadb.conf.d/60-workbench.cnf").contains("^bind-address = 0.0.0.0$")
    assert sql(host, "SELECT @@bind_address") == "0.0.0.0"
    assert sql(host, "SELECT @@innodb_log_file_size") == str(16 * 1024 * 1024)
    assert host.file("/var/lib/mysql/ib_logfile0").size == 16 * 1024 * 1024


def test_server_answers(host: Any, wait: Any) -> None:
    wait(lambda: sql(host, "SELECT 1") == "1", "mariadb answers SELECT 1")
    databases = sql(host, "SHOW DATABASES").split()
    assert "mysql" in databases


def test_data_directory_initialised_at_bake(host: Any) -> None:
    datadir = host.file("/var/lib/mysql/mysql")
    assert datadir.is_directory
    assert datadir.user == "mysql"


def test_server_runs_as_mysql(host: Any) -> None:
    servers = host.process.filter(comm="mariadbd")
    assert len(servers) == 1
    assert servers[0].user == "mysql"


def test_monit_supervises_mariadb(monit_ready: dict[str, tuple[str, str]]) -> None:
    assert monit_ready["mariadb"] == ("OK", "Process")


def test_timezone_from_the_formula_and_pillar(host: Any) -> None:
    # The formula's default is Europe/Berlin; the pillar says Etc/UTC.
    assert host.file("/etc/timezone").content_string.strip() == "Etc/UTC"
    localtime = host.file("/etc/localtime")
    assert localtime.is_symlink
    assert localtime.linked_to == "/usr/share/zoneinfo/Etc/UTC"
    assert sql(host, "SELECT @@system_time_zone") == "UTC"


def test_error_log_and_binary_log_live_with_the_data(host: Any) -> None:
    # In the data volume of a release, so every release's start and shutdown is kept.
    assert sql(host, "SELECT @@log_error") == "/var/lib/mysql/mariadb.err"
    assert host.file("/var/lib/mysql/mariadb.err").contains("ready for connections")
    assert sql(host, "SELECT @@log_bin, @@binlog_format") == "1\tROW"


def test_deploy_settings_rendered_at_start(host: Any) -> None:
    # No deploy settings in a test container: server id 1, writable, no TLS.
    deploy = host.file("/etc/mysql/mariadb.conf.d/70-workbench-deploy.cnf")
    assert deploy.contains("^server_id = 1$")
    assert not deploy.contains("read_only")
    assert sql(host, "SELECT @@server_id, @@read_only, @@have_ssl") == "1\t0\tDISABLED"


def test_monit_restarts_killed_mariadb(host: Any, wait: Any, kill_and_wait_restart: Any) -> None:
    # Last in the file: it kills what the checks above use.
    kill_and_wait_restart("mariadb", "/run/mysqld/mysqld.pid")
    wait(lambda: sql(host, "SELECT 1") == "1", "mariadb answers again")
