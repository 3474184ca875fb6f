"""A small, bounded load generator for loopback: how many requests failed while something changed.

Used by the release tests and bench/bench_release.py to show that a promote or
a rollback drops no request. Each request opens a new connection (the way most
clients behind a frontend behave) and counts as failed unless it gets a 200.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # the first few failures
    releases: collections.Counter[str] = field(default_factory=collections.Counter)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.ok + self.failed


class Load:
    """GET `url` from one thread until stopped, or `max_requests`, or `max_seconds`."""

    def __init__(self, url: str, *, max_requests: int = 20000, max_seconds: float = 120.0, pause: float = 0.005):
        if not url.startswith(("http://127.", "http://localhost")):
            raise ValueError(f"the load generator only targets loopback, not {url}")
        self.url = url
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.pause = pause
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadgen", daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join()
        return self.result

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set() and self.result.total < self.max_requests:
            if time.monotonic() - start > self.max_seconds:
                break
            self._one()
            time.sleep(self.pause)
        self.result.seconds = time.monotonic() - start

    def _one(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            self._fail(f"HTTP {exc.code}")
            return
        except (urllib.error.URLError, OSError) as exc:
            self._fail(str(getattr(exc, "reason", exc)))
            return
        if status != 200:
            self._fail(f"HTTP {status}")
            return
        self.result.ok += 1
        try:
            self.result.releases[str(json.loads(body).get("release", ""))] += 1
        except (ValueError, AttributeError):
            self.result.releases["?"] += 1

    def _fail(self, why: str) -> None:
        self.result.failed += 1
        if len(self.result.errors) < 10:
            self.result.errors.append(why)


def wait_for_release(url: str, release: str, timeout: float = 30.0, interval: float = 0.01) -> float | None:
    """Seconds until GET `url` answers 200 with JSON whose release is `release` (None on timeout)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200 and json.loads(response.read()).get("release") == release:
                    return time.monotonic() - start
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(interval)
    return None
