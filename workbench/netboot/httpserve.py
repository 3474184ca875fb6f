"""The node's HTTP server: boot scripts and live artifacts, request log, report-back.

Run as its own process (`python -m workbench.netboot.httpserve ...`) so it can
live inside the lab's network namespace. Every request becomes one JSON line in
the request log (start, end, client, path, status, bytes) for the boot timeline;
`POST /report` stores what a booted node says about itself (a second report of
the same boot, e.g. the cloud's progress, updates it and keeps its first time).

`GET /cloud/<name>.json` (a node's cloud configuration, with secrets) is served
only to the address the inventory reserves for `<name>` (`--clients`, a JSON
file name -> address): any other client gets 403, a name the inventory does not
know 404, and nothing under cloud/ is ever listed.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from workbench.core import files, run
from workbench.core.errors import NetbootError

READY = "httpserve: serving"
PORT_IN_USE = "httpserve: address in use"
# The per-node cloud configurations, under the HTTP root (node.cloud_config_dir).
CLOUD = "cloud"


class _Handler(SimpleHTTPRequestHandler):
    log_path: Path
    reports: Path
    # name -> the one client address that may fetch cloud/<name>.json
    clients: dict[str, str] = {}
    lock = threading.Lock()

    def _record(self, start: float, status: int, size: int) -> None:
        entry = {
            "start": start,
            "end": time.time(),
            "client": self.client_address[0],
            "method": self.command,
            "path": self.path,
            "status": status,
            "bytes": size,
        }
        with self.lock, open(self.log_path, "a") as log:
            log.write(json.dumps(entry, sort_keys=True) + "\n")

    def do_GET(self) -> None:
        start = time.time()
        self._status = 0
        self._size = 0
        super().do_GET()
        self._record(start, self._status, self._size)

    def send_head(self) -> Any:
        # GET and HEAD both come here; the check is on the file the path resolves to, so
        # no spelling of the path (`/live/../cloud/x.json`, %2e%2e, a symlink) gets around it.
        refused = self._cloud_refusal(Path(self.translate_path(self.path)))
        if refused:
            self.send_error(*refused)
            return None
        return super().send_head()

    def _cloud_refusal(self, target: Path) -> tuple[int, str] | None:
        cloud = (Path(self.directory) / CLOUD).resolve()
        resolved = target.resolve()
        if resolved != cloud and cloud not in resolved.parents:
            return None
        name = resolved.name.removesuffix(".json")
        if resolved.parent != cloud or not resolved.name.endswith(".json") or name not in self.clients:
            return (404, "no cloud configuration for that name")
        if self.client_address[0] != self.clients[name]:
            return (403, f"cloud configuration of {name} is for {self.clients[name]} only")
        return None

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def copyfile(self, source: Any, outputfile: Any) -> None:
        # Counting as we copy: a transfer cut short shows as fewer bytes.
        while chunk := source.read(1 << 20):
            outputfile.write(chunk)
            self._size += len(chunk)

    def do_POST(self) -> None:
        start = time.time()
        if self.path != "/report":
            self.send_error(404)
            self._record(start, 404, 0)
            return
        length = int(self.headers.get("Content-Length", "0"))
        try:
            report = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self.send_error(400, "report must be JSON")
            self._record(start, 400, 0)
            return
        now = time.time()
        path = self.reports / f"{self.client_address[0]}.json"
        with self.lock:
            earlier = _read_report(path)
            # The same boot (same boot id) reporting again: an update, its first report's time stays.
            if report.get("boot") and earlier.get("boot") == report.get("boot"):
                report = {**earlier, **report, "received": earlier["received"], "updated": now}
            else:
                report["received"] = now
            report["client"] = self.client_address[0]
            self.reports.mkdir(parents=True, exist_ok=True)
            # Whole, or `netboot.test` polling the folder may read an empty file.
            files.write_whole(path, json.dumps(report, sort_keys=True))
        self.send_response(204)
        self.end_headers()
        self._record(start, 204, length)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the JSON request log replaces the default stderr lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--reports", type=Path, required=True)
    parser.add_argument(
        "--clients", type=Path, help="JSON name -> address: who may fetch cloud/<name>.json (default: nobody)"
    )
    args = parser.parse_args(argv)
    clients = json.loads(args.clients.read_text()) if args.clients else {}
    handler = type("Handler", (_Handler,), {"log_path": args.log, "reports": args.reports, "clients": clients})
    try:
        server = ThreadingHTTPServer((args.bind, args.port), partial(handler, directory=str(args.root)))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"{PORT_IN_USE}: {args.bind}:{args.port}", flush=True)
            return 2
        print(f"httpserve: cannot listen on {args.bind}:{args.port}: {exc.strerror}", flush=True)
        return 1
    print(f"{READY} {args.root} on {args.bind}:{args.port}", flush=True)
    server.serve_forever()
    return 0


@contextmanager
def serving(
    root: Path,
    bind: str,
    port: int,
    state: Path,
    netns: str | None = None,
    timeout: float = 15.0,
    clients: Path | None = None,
) -> Iterator[run.Daemon]:
    """The HTTP server as a daemon (inside `netns`), ready when this yields, stopped after.

    `clients`: the JSON file (name -> address) of who may fetch which cloud/<name>.json.
    """
    prefix = ["ip", "netns", "exec", netns] if netns else []
    argv = [
        *prefix,
        sys.executable,
        "-m",
        "workbench.netboot.httpserve",
        f"--root={root}",
        f"--bind={bind}",
        f"--port={port}",
        f"--log={state / 'http.jsonl'}",
        f"--reports={state / 'reports'}",
        *([f"--clients={clients}"] if clients else []),
    ]
    out = state / "http.out"
    out.unlink(missing_ok=True)
    in_use = (
        f"the HTTP port {bind}:{port} is already in use: stop what holds it "
        "(`fab netboot.stop` if it is an earlier node) or set [network] http_port in the inventory"
    )

    def ready(daemon: run.Daemon) -> None:
        run.wait_until(
            lambda: READY in "\n".join(daemon.tail()),
            timeout=timeout,
            what="the HTTP server",
            daemon=daemon,
            error=NetbootError,
            hints={PORT_IN_USE: in_use},
        )

    with run.serving(argv, log=out, cwd=state, ready=ready) as daemon:
        yield daemon


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for _, line in files.appended_lines(path)]


def _read_report(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and "received" in data else {}


def read_reports(state: Path) -> dict[str, dict[str, Any]]:
    """Reports by client address."""
    folder = state / "reports"
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


if __name__ == "__main__":
    sys.exit(main())
