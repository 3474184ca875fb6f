"""The watcher's HTTP hook on loopback: anything that can make an HTTP request fires an event.

    curl -X POST http://127.0.0.1:8765/hook     -> 202, the watcher looks at the branch now
    curl http://127.0.0.1:8765/status           -> 200, the watcher's state (last commit, baked roles)
"""

from __future__ import annotations

import contextlib
import errno
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from workbench.core.errors import WorkbenchError

HOST = "127.0.0.1"


def _handler(wake: threading.Event, state_path: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "workbench-hook"

        def _reply(self, code: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode() + b"\n"
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                # The body (a forge's push payload, say) is read and ignored:
                # the watcher asks git what changed rather than trusting it.
                self.rfile.read(min(length, 1 << 20))
            if self.path.split("?")[0] != "/hook":
                self._reply(404, {"error": f"no such hook {self.path}: POST /hook"})
                return
            wake.set()
            self._reply(202, {"accepted": True, "status": "/status"})

        def do_GET(self) -> None:  # noqa: N802
            if self.path.split("?")[0] != "/status":
                self._reply(404, {"error": "GET /status, or POST /hook"})
                return
            try:
                state = json.loads(state_path.read_text()) if state_path.is_file() else {}
            except ValueError:
                state = {}
            self._reply(200, state)

        def log_message(self, format: str, *args: object) -> None:
            return  # the watcher logs events, not requests

    return Handler


@contextlib.contextmanager
def serving(port: int, wake: threading.Event, state_path: Path) -> Iterator[str]:
    """Serve the hook on 127.0.0.1:`port` (0: any free port) for the `with` block; yields host:port."""
    try:
        server = ThreadingHTTPServer((HOST, port), _handler(wake, state_path))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise WorkbenchError(
                f"watch: port {port} on {HOST} is in use: set [watch] hook_port or pass --hook-port (0: no hook)"
            ) from None
        raise
    thread = threading.Thread(target=server.serve_forever, name="watch-hook", daemon=True)
    thread.start()
    try:
        yield f"{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
