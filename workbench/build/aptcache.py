"""The local package cache: Debian's apt-cacher-ng, started by the workbench for its builds.

It runs as our own foreground child with its own configuration directory and
its data under the state directory, listening on loopback (for debootstrap on
the host) and on the Docker bridge gateway (for build containers, which use it
as their HTTP proxy). Debian's default backend (`ftp.debian.org`) is not
reachable here, so the configuration names the configured mirror.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from workbench.core import engine, ports, progress, run
from workbench.core.config import Config
from workbench.core.errors import WorkbenchError

READY_TIMEOUT = 15.0
SUPPORT_DIR = "/usr/lib/apt-cacher-ng"


@dataclass(frozen=True)
class PackageCache:
    """A running cache: how the host and containers reach it."""

    port: int
    gateway: str

    @property
    def container_proxy(self) -> str:
        """apt's `Acquire::http::Proxy` inside a build container."""
        return f"http://{self.gateway}:{self.port}"

    def mirror_via(self, mirror: str) -> str:
        """A mirror URL through the cache, for debootstrap on the host:
        `http://deb.debian.org/debian` -> `http://127.0.0.1:3142/deb.debian.org/debian`."""
        return f"http://127.0.0.1:{self.port}/{mirror.split('://', 1)[-1]}"


def upstream(config: Config) -> str:
    return (config.cache.upstream or config.base.mirror).rstrip("/") + "/"


def mirror_reachable(config: Config, timeout: float = 5.0) -> bool:
    """Whether the mirror answers for the suite's Release file (one small HTTP request)."""
    url = f"{upstream(config)}dists/{config.base.suite}/Release"
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bool(response.status < 400)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def render_config(config: Config, port: int, gateway: str, offline: bool = False) -> dict[str, str]:
    """The files of the cache's configuration directory, by name."""
    cache_dir = config.state_dir / "aptcache"
    security = config.base.security_mirror.rstrip("/") + "/"
    acng = "\n".join(
        [
            f"CacheDir: {cache_dir / 'data'}",
            f"LogDir: {cache_dir / 'log'}",
            f"SupportDir: {SUPPORT_DIR}",
            f"SocketPath: {cache_dir / 'socket'}",
            f"PidFile: {cache_dir / 'pid'}",
            f"Port: {port}",
            f"BindAddress: 127.0.0.1 {gateway}",
            "ForeGround: 1",
            # Any Debian mirror name a client asks for is served from our backend.
            "Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian",
            "Remap-secdeb: security.debian.org security.debian.org/debian-security "
            "deb.debian.org/debian-security /debian-security ; file:backends_debian_security",
            # Never contact the mirror: everything comes from the cache (a mirror outage).
            f"Offlinemode: {1 if offline else 0}",
            "ExThreshold: 4",
            "",
        ]
    )
    return {"acng.conf": acng, "backends_debian": upstream(config) + "\n", "backends_debian_security": security + "\n"}


# Bakes of one process (`--all`) share one running cache.
_shared: dict[Path, tuple[PackageCache, int]] = {}
_shared_lock = threading.Lock()


@contextlib.contextmanager
def package_cache(config: Config) -> Iterator[PackageCache | None]:
    """The running cache for the `with` block (None when `[cache] enabled = false`)."""
    if not config.cache.enabled:
        yield None
        return
    key = config.state_dir
    with _shared_lock:
        if key in _shared:
            cache, users = _shared[key]
            _shared[key] = (cache, users + 1)
            owner = False
        else:
            owner = True
    if not owner:
        try:
            yield cache
        finally:
            with _shared_lock:
                cache, users = _shared[key]
                _shared[key] = (cache, users - 1)
        return
    with _running(config) as cache:
        with _shared_lock:
            _shared[key] = (cache, 1)
        try:
            yield cache
        finally:
            with _shared_lock:
                del _shared[key]


def directory(config: Config) -> Path:
    return config.state_dir / "aptcache"


def _pid_file(config: Config) -> run.PidFile:
    return run.PidFile(directory(config) / "daemon.pid", "apt-cacher-ng", str(directory(config) / "conf"))


def running_pid(config: Config) -> int | None:
    """The cache's pid while a bake runs it (it runs for bakes only), else None."""
    return _pid_file(config).running()


@contextlib.contextmanager
def _running(config: Config) -> Iterator[PackageCache]:
    base = directory(config)
    conf_dir = base / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    (base / "data").mkdir(exist_ok=True)
    (base / "log").mkdir(exist_ok=True)
    # One cache per state directory at a time: its data directory is not shared.
    with open(base / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.detail(f"waiting for another bake's package cache ({base}) to stop")
            fcntl.flock(lock, fcntl.LOCK_EX)
        pid_file = _pid_file(config)
        _stop_orphan(pid_file)
        gateway = engine.bridge_gateway()
        port = _pick_port(config.cache.port, gateway)
        offline = config.cache.offline or not mirror_reachable(config)
        if offline and not config.cache.offline:
            # apt-cacher-ng would answer 503 for every index it cannot revalidate;
            # offline, it serves what it holds (a warm cache bakes without the mirror).
            progress.detail(f"package cache: the mirror {upstream(config)} does not answer: cache only")
        for name, text in render_config(config, port, gateway, offline).items():
            (conf_dir / name).write_text(text)
        argv = [run.which("apt-cacher-ng"), "-c", str(conf_dir)]
        daemon = run.spawn(argv, log=base / "log" / "foreground.log")
        pid_file.write(daemon.pid)
        try:
            run.wait_until(
                lambda: _listens(port),
                timeout=READY_TIMEOUT,
                what=f"the package cache (apt-cacher-ng on port {port})",
                daemon=daemon,
            )
            progress.detail(f"package cache: apt-cacher-ng on 127.0.0.1:{port} and {gateway}:{port}")
            yield PackageCache(port=port, gateway=gateway)
        finally:
            daemon.stop()
            pid_file.clear()


# The highest port apt-cacher-ng can listen on (it keeps the port in a signed short).
MAX_PORT = 32767


def _stop_orphan(pid_file: run.PidFile) -> None:
    """Stop a cache left running by a bake that was killed outright (we hold the lock now)."""
    pid = pid_file.running()
    if pid is not None:
        progress.detail(f"package cache: stopping the one a killed bake left running (pid {pid})")
    pid_file.stop(grace=5.0)


def _pick_port(preferred: int, gateway: str) -> int:
    """The configured port, or a free one if another program holds it (said so)."""
    if _bindable(preferred, gateway):
        return preferred
    # Not an ephemeral port from the kernel: apt-cacher-ng 3.7 cannot bind a
    # port above 32767 ("Error resolving address for binding").
    for port in range(preferred + 1, MAX_PORT + 1):
        if _bindable(port, gateway):
            progress.detail(f"package cache: port {preferred} is in use, using {port} for this run")
            return port
    raise WorkbenchError(f"no free port for the package cache between {preferred} and {MAX_PORT}")


def _bindable(port: int, gateway: str) -> bool:
    return all(ports.bindable(port, address) for address in ("127.0.0.1", gateway))


def _listens(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0
