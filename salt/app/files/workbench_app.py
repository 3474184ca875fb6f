"""The workbench's sample web app: a plain WSGI application run by gunicorn.

GET /health answers 200 with the release this container runs, read from
/run/workbench/release.json (written by workbench-init at container start):

    {"status": "ok", "role": "app", "release": "app-20260101-1", "version": "3",
     "environment": "staging"}

GET / is a small page saying the same for people.

GET /pools checks the cache and database pools the deploy gave the app
(workbench_pools.py).
"""

import html
import json

from workbench_pools import pools_status

RELEASE_FILE = "/run/workbench/release.json"
FIELDS = ("role", "release", "version", "environment")


def read_release():
    """The release record, or None when it is missing or unreadable."""
    try:
        with open(RELEASE_FILE, encoding="utf-8") as stream:
            record = json.load(stream)
    except (OSError, ValueError):
        return None
    return {field: str(record.get(field, "")) for field in FIELDS}


def health(release):
    if release is None:
        # Without the record the container was not started by workbench-init:
        # a load balancer must not send it traffic.
        body = {"status": "error", "error": f"no release record in {RELEASE_FILE}"}
        return "503 Service Unavailable", body
    return "200 OK", {"status": "ok", **release}


def index(release):
    rows = "".join(
        f"<tr><th>{field}</th><td>{html.escape((release or {}).get(field, '') or '-')}</td></tr>"
        for field in FIELDS
    )
    return (
        "<!doctype html>\n<html><head><title>workbench app</title></head>"
        f"<body><h1>workbench app</h1><table>{rows}</table></body></html>\n"
    )


def respond(start_response, status, content_type, text):
    payload = text.encode("utf-8")
    start_response(
        status,
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [payload]


def application(environ, start_response):
    path = environ.get("PATH_INFO") or "/"
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "HEAD"):
        return respond(start_response, "405 Method Not Allowed", "text/plain; charset=utf-8", "GET only\n")
    release = read_release()
    if path == "/health":
        status, body = health(release)
        return respond(start_response, status, "application/json", json.dumps(body) + "\n")
    if path == "/pools":
        status, body = pools_status()
        return respond(start_response, status, "application/json", json.dumps(body) + "\n")
    if path == "/":
        return respond(start_response, "200 OK", "text/html; charset=utf-8", index(release))
    return respond(start_response, "404 Not Found", "text/plain; charset=utf-8", "not found\n")
