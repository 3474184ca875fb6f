"""The package cache's configuration and its orphan check (the daemon itself runs in the e2e tests)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.support.config import small_config
from workbench.build import aptcache, ca
from workbench.core import run


def test_backend_is_the_configured_mirror_not_ftp_debian_org(tmp_path: Path) -> None:
    files = aptcache.render_config(small_config(tmp_path, "unit"), 3142, "172.17.0.1")
    assert files["backends_debian"] == "http://deb.debian.org/debian/\n"
    assert files["backends_debian_security"] == "http://deb.debian.org/debian-security/\n"
    conf = files["acng.conf"]
    assert "BindAddress: 127.0.0.1 172.17.0.1" in conf
    assert "Port: 3142" in conf
    assert f"CacheDir: {tmp_path / 'state' / 'aptcache' / 'data'}" in conf
    assert "Offlinemode: 0" in conf
    assert "ftp.debian.org" not in conf


def test_upstream_and_offline_settings(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, "unit", cache={"upstream": "http://127.0.0.1:9/debian", "offline": True})
    files = aptcache.render_config(cfg, 4000, "10.0.0.1", offline=True)
    assert files["backends_debian"] == "http://127.0.0.1:9/debian/\n"
    assert "Offlinemode: 1" in files["acng.conf"]
    assert not aptcache.mirror_reachable(cfg, timeout=2)


def test_urls_for_containers_and_debootstrap() -> None:
    cache = aptcache.PackageCache(port=3142, gateway="172.17.0.1")
    assert cache.container_proxy == "http://172.17.0.1:3142"
    assert cache.mirror_via("http://deb.debian.org/debian") == "http://127.0.0.1:3142/deb.debian.org/debian"


def test_host_cas_are_copied_flat(tmp_path: Path) -> None:
    src = tmp_path / "cas"
    (src / "corp").mkdir(parents=True)
    (src / "corp" / "proxy.crt").write_text("cert")
    (src / "README").write_text("not a cert")
    names = ca.copy_into(tmp_path / "out", src)
    assert names == ["corp-proxy.crt"]
    assert (tmp_path / "out" / "corp-proxy.crt").read_text() == "cert"


def test_the_host_ca_directory_can_be_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ca.ENV_HOST_CA_DIR, raising=False)
    assert ca.host_ca_dir() == ca.HOST_CA_DIR
    (tmp_path / "lent.crt").write_text("cert")
    monkeypatch.setenv(ca.ENV_HOST_CA_DIR, str(tmp_path))
    assert ca.host_cas() == [tmp_path / "lent.crt"]
    assert ca.copy_into(tmp_path / "out") == ["lent.crt"]


def test_an_orphan_pid_file_naming_another_process_signals_nothing(tmp_path: Path) -> None:
    # The killed bake's cache is long gone; its pid now runs someone else's program.
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        base = tmp_path / "state" / "aptcache"
        pid_file = run.PidFile(base / "daemon.pid", "apt-cacher-ng", str(base / "conf"))
        pid_file.write(stranger.pid)
        aptcache._stop_orphan(pid_file)
        time.sleep(0.2)
        assert stranger.poll() is None and not pid_file.path.exists()
    finally:
        stranger.kill()
        stranger.wait()
