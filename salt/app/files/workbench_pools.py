"""GET /pools of the workbench app: can this container reach the pools its deploy gave it?

The deploy renders /run/workbench/pools/pools.json (workbench/pools.py) from
the pools the app uses; nothing about them is in the image. For each member:
memcached is asked its version, MariaDB is expected to greet with protocol 10,
anything else must accept a TCP connection. 200 when every member answers,
503 otherwise (and 200 with no pools when the deploy gave none):

    {"status": "ok", "pools": {"db": {"role": "db", "members": [
        {"name": "db1", "address": "10.0.0.5:3306", "ok": true, "detail": "MariaDB 10.11.6-MariaDB-0+deb12u1"}]}}}
"""

import json
import socket

POOLS_FILE = "/run/workbench/pools/pools.json"
TIMEOUT = 3.0


def _probe(role, sock):
    if role == "cache":
        sock.sendall(b"version\r\n")
        reply = sock.recv(256).decode("ascii", "replace").strip()
        return reply.startswith("VERSION "), f"memcached {reply[8:]}" if reply.startswith("VERSION ") else reply
    if role == "db":
        # The server speaks first: length (3 bytes), sequence (1), protocol 10, version, NUL.
        head = sock.recv(256)
        if len(head) > 5 and head[4] == 10:
            return True, "MariaDB " + head[5:].split(b"\0")[0].decode("ascii", "replace")
        if len(head) > 7 and head[4] == 0xFF:
            # An error packet instead: code (2 bytes), then the message, e.g.
            # "Host '172.18.0.4' is not allowed to connect to this MariaDB server".
            return False, "MariaDB refused: " + head[7:].decode("utf-8", "replace")
        return False, f"not a MariaDB greeting: {head[:32]!r}"
    return True, "accepts connections"


def check_member(role, member):
    host, _, port = member["address"].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
            sock.settimeout(TIMEOUT)
            ok, detail = _probe(role, sock)
    except (OSError, ValueError) as exc:
        ok, detail = False, str(exc)
    return {"name": member["name"], "address": member["address"], "ok": ok, "detail": detail}


def pools_status():
    """(HTTP status line, body) for GET /pools."""
    try:
        with open(POOLS_FILE, encoding="utf-8") as stream:
            document = json.load(stream)
    except FileNotFoundError:
        return "200 OK", {"status": "ok", "pools": {}, "detail": f"no {POOLS_FILE}: this deploy uses no pools"}
    except (OSError, ValueError) as exc:
        return "503 Service Unavailable", {"status": "error", "error": f"cannot read {POOLS_FILE}: {exc}"}
    pools = {}
    for name, pool in sorted(document.get("pools", {}).items()):
        members = [check_member(pool["role"], m) for m in pool.get("members", [])]
        pools[name] = {"role": pool["role"], "members": members}
    ok = all(m["ok"] for p in pools.values() for m in p["members"])
    return ("200 OK" if ok else "503 Service Unavailable"), {"status": "ok" if ok else "error", "pools": pools}
