"""Helpers for the release tests: images made by hand, clean-up of an environment, a load's verdict.

The images here exist only to exercise the release mechanics (ledger,
registry, deploy, frontend switching) on the real engine: an "app" that is a
few lines of Python answering /health from its environment variables, and a
frontend with Debian's nginx and the frontend role's own config files. The
end-to-end tests use really baked images instead.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
from typing import Any

from tests.support.config import REPO
from workbench.build import images
from workbench.core import engine
from workbench.core.config import Config
from workbench.release import loadgen, registry
from workbench.release.target import ENV_LABEL

FAKE_APP = '''\
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        code = int(os.environ.get("FAKEAPP_STATUS", "200"))
        body = json.dumps({
            "status": "ok" if code == 200 else "error",
            "release": os.environ.get("WORKBENCH_RELEASE", ""),
            "version": os.environ.get("WORKBENCH_VERSION", ""),
            "role": os.environ.get("WORKBENCH_ROLE", ""),
            "environment": os.environ.get("WORKBENCH_ENVIRONMENT", ""),
            "greeting": os.environ.get("GREETING", ""),
        }).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("", 80), Handler).serve_forever()
'''


# A stateful stand-in: answers /health, keeps rows in /srv/data (its data path), and
# notes in /srv/data/starts which release started on that data, and when.
FAKE_STORE = '''\
import json, os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DATA = "/srv/data"
RELEASE = os.environ.get("WORKBENCH_RELEASE", "")
with open(os.path.join(DATA, "starts"), "a") as log:
    log.write(f"{RELEASE} {time.time()}\\n")

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            code = int(os.environ.get("FAKEAPP_STATUS", "200"))
            self.reply(code, {"release": RELEASE})
            return
        with open(os.path.join(DATA, "rows")) as rows:
            self.reply(200, {"release": RELEASE, "rows": rows.read().split()})

    def do_POST(self):
        with open(os.path.join(DATA, "rows"), "a") as rows:
            rows.write(self.path.strip("/") + "\\n")
        self.reply(200, {"release": RELEASE})

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("", 80), Handler).serve_forever()
'''


def _tar(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _labels(config: Config, role: str, version: int, verify: str) -> dict[str, str]:
    return {
        engine.PREFIX_LABEL: config.prefix,
        engine.ROLE_LABEL: role,
        images.VERSION_LABEL: str(version),
        images.VERIFY_LABEL: verify,
        images.CANDIDATE_LABEL: "false",
        engine.INPUTS_LABEL: f"{role}-{version}-test-inputs",
        "workbench.git.commit": "unknown",
    }


def make_image(
    config: Config,
    base: str,
    role: str,
    version: int,
    *,
    files: dict[str, str],
    command: list[str],
    verify: str = "passed",
    env: dict[str, str] | None = None,
    script: str = "",
) -> str:
    """Commit `<prefix>/<role>:<version>` from the base with `files` added and `script` run."""
    client = engine.client()
    container = client.containers.run(
        base, ["sh", "-c", script or "true"], detach=True, labels={engine.PREFIX_LABEL: config.prefix}
    )
    try:
        result = container.wait(timeout=600)
        if result["StatusCode"] != 0:
            raise RuntimeError(container.logs(tail=30).decode(errors="replace"))
        container.put_archive("/", _tar(files))
        changes = images.label_changes(_labels(config, role, version, verify))
        changes.append("CMD " + __import__("json").dumps(command))
        for key, value in (env or {}).items():
            changes.append(f"ENV {key}={value}")
        image = container.commit(f"{config.prefix}/{role}", str(version), changes=changes)
    finally:
        engine.remove_container(container)
    return str(image.id)


def make_app(config: Config, base: str, version: int, **kwargs: Any) -> str:
    files = {"/usr/local/bin/fakeapp.py": FAKE_APP, "/etc/fakeapp-version": f"{version}\n"}
    return make_image(config, base, "app", version, files=files, command=["python3", "/usr/local/bin/fakeapp.py"],
                      **kwargs)


def make_store(config: Config, base: str, version: int, **kwargs: Any) -> str:
    """`<prefix>/store:<version>`: the stateful stand-in, its data path holding one row baked in."""
    files = {"/usr/local/bin/fakestore.py": FAKE_STORE, "/srv/data/rows": "from-the-image\n",
             "/srv/data/starts": ""}
    return make_image(config, base, "store", version, files=files, command=["python3", "/usr/local/bin/fakestore.py"],
                      **kwargs)


def make_frontend(config: Config, base: str) -> str:
    site = (REPO / "salt/frontend/files/nginx-site").read_text()
    upstream = (REPO / "salt/frontend/files/upstream.conf").read_text()
    script = (
        "set -e; apt-get update -q >/dev/null; "
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx >/dev/null; "
        "rm -f /etc/nginx/sites-enabled/default; rm -rf /var/lib/apt/lists/*"
    )
    files = {"/etc/nginx/sites-enabled/workbench-frontend": site, "/etc/nginx/workbench/upstream.conf": upstream}
    return make_image(config, base, "frontend", 1, files=files, command=["nginx", "-g", "daemon off;"],
                      script=script)


def clean_environments(config: Config) -> None:
    """Every release container and network of the prefix, and the background registry."""
    for container in engine.containers({engine.PREFIX_LABEL: config.prefix}):
        if ENV_LABEL in container.labels:
            engine.remove_container(container)
    for network in engine.client().networks.list(filters={"label": f"{engine.PREFIX_LABEL}={config.prefix}"}):
        with contextlib.suppress(Exception):
            network.remove()
    registry.down(config)


def assert_served(result: loadgen.LoadResult, at_least: int = 1) -> None:
    """No request under load failed, and at least `at_least` were answered.

    "Nothing failed" alone also holds when nothing was asked (the load never
    reached the frontend, or stopped at once).
    """
    assert result.failed == 0, f"{result.failed} of {result.total} request(s) failed: {result.errors}"
    assert result.ok >= at_least, f"only {result.ok} request(s) answered in {result.seconds:.1f}s (want {at_least})"
