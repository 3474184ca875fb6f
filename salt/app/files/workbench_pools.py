"""GET /pools of the workbench app: can this container reach the pools its deploy gave it?

The deploy renders /run/workbench/pools/pools.json (workbench/pools.py) from
the pools the app uses; nothing about them is in the image. For each member:
memcached is asked its version; MariaDB must greet with protocol 10 and, when
the deploy made the app an account (a deployed pool: its password in
secrets.json, copied for webapps by the start hook), accept the app's login to
its database and answer a ping; anything else must accept a TCP connection.
200 when every member answers, 503 otherwise (and 200 with no pools when the
deploy gave none):

    {"status": "ok", "pools": {"db": {"role": "db", "members": [
        {"name": "db1", "address": "db1.staging.wpdn:3306", "ok": true,
         "detail": "logged in as app to MariaDB 10.11.6-MariaDB-0+deb12u1 (database app)"}]}}}
"""

import hashlib
import json
import socket
import struct

POOLS_FILE = "/run/workbench/pools/pools.json"
SECRETS_FILE = "/run/workbench/app/pool-secrets.json"
TIMEOUT = 3.0
# Client capabilities: long password, connect with a database, protocol 4.1,
# secure connection (20-byte scramble), pluggable authentication.
CAPABILITIES = 0x1 | 0x8 | 0x200 | 0x8000 | 0x80000
NATIVE = b"mysql_native_password"


def _read_packet(sock):
    """(sequence number, payload) of one MySQL protocol packet: length (3 bytes), sequence (1), payload."""
    head = _read_exactly(sock, 4)
    length = head[0] | head[1] << 8 | head[2] << 16
    return head[3], _read_exactly(sock, length)


def _read_exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise OSError("the server closed the connection")
        data += chunk
    return data


def _send_packet(sock, sequence, payload):
    sock.sendall(struct.pack("<I", len(payload))[:3] + bytes([sequence & 0xFF]) + payload)


def _native_password(password, scramble):
    """mysql_native_password: SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password)))."""
    first = hashlib.sha1(password.encode()).digest()
    second = hashlib.sha1(scramble + hashlib.sha1(first).digest()).digest()
    return bytes(a ^ b for a, b in zip(first, second))


def _greeting(payload):
    """(server version, 20-byte scramble) from a protocol-10 greeting."""
    version, rest = payload[1:].split(b"\0", 1)
    part1 = rest[4:12]
    # After part 1: filler, capabilities (2), charset, status (2), capabilities (2), length, 10 reserved.
    part2 = rest[12 + 1 + 2 + 1 + 2 + 2 + 1 + 10:][:12]
    return version.decode("ascii", "replace"), part1 + part2


def _error(payload):
    # An error packet: 0xFF, code (2 bytes), '#', SQL state (5), then the message.
    return payload[9:].decode("utf-8", "replace") if payload[3:4] == b"#" else payload[3:].decode("utf-8", "replace")


def login(sock, greeting, user, password, database):
    """Log in with mysql_native_password and ping: (ok, detail)."""
    version, scramble = _greeting(greeting)
    response = (
        struct.pack("<IIB", CAPABILITIES, 1 << 24, 33) + bytes(23) + user.encode() + b"\0"
        + bytes([20]) + _native_password(password, scramble) + database.encode() + b"\0" + NATIVE + b"\0"
    )
    _send_packet(sock, 1, response)
    sequence, reply = _read_packet(sock)
    if reply[:1] == b"\xfe":
        # Switch to the plugin the server names (native again, with a fresh scramble).
        plugin, data = reply[1:].split(b"\0", 1)
        if plugin != NATIVE:
            return False, f"MariaDB wants the {plugin.decode()} plugin for {user}"
        _send_packet(sock, sequence + 1, _native_password(password, data[:20]))
        sequence, reply = _read_packet(sock)
    if reply[:1] == b"\xff":
        return False, f"MariaDB {version} refused {user}: {_error(reply)}"
    if reply[:1] != b"\x00":
        return False, f"MariaDB {version}: unexpected answer to the login {reply[:16]!r}"
    _send_packet(sock, 0, b"\x0e")  # COM_PING
    _, pong = _read_packet(sock)
    if pong[:1] != b"\x00":
        return False, f"MariaDB {version} did not answer a ping after the login"
    return True, f"logged in as {user} to MariaDB {version} (database {database})"


def _probe(role, sock, account=None):
    if role == "cache":
        sock.sendall(b"version\r\n")
        reply = sock.recv(256).decode("ascii", "replace").strip()
        return reply.startswith("VERSION "), f"memcached {reply[8:]}" if reply.startswith("VERSION ") else reply
    if role == "db":
        # The server speaks first: length (3 bytes), sequence (1), protocol 10, version, NUL.
        _, head = _read_packet(sock)
        if head[:1] == b"\xff":
            # An error packet instead, e.g.
            # "Host '172.18.0.4' is not allowed to connect to this MariaDB server".
            return False, "MariaDB refused: " + head[3:].decode("utf-8", "replace")
        if head[:1] != b"\x0a":
            return False, f"not a MariaDB greeting: {head[:32]!r}"
        if account:
            return login(sock, head, account["user"], account["password"], account["database"])
        return True, "MariaDB " + head[1:].split(b"\0")[0].decode("ascii", "replace")
    return True, "accepts connections"


def check_member(role, member, account=None):
    host, _, port = member["address"].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
            sock.settimeout(TIMEOUT)
            ok, detail = _probe(role, sock, account)
    except (OSError, ValueError) as exc:
        ok, detail = False, str(exc)
    return {"name": member["name"], "address": member["address"], "ok": ok, "detail": detail}


def accounts(document):
    """{pool: {user, password, database}} for the pools the deploy made the app an account in."""
    try:
        with open(SECRETS_FILE, encoding="utf-8") as stream:
            passwords = json.load(stream).get("pools", {})
    except (OSError, ValueError):
        return {}
    found = {}
    for name, pool in document.get("pools", {}).items():
        variables = pool.get("variables", {})
        if name in passwords and variables.get("user"):
            found[name] = {"user": variables["user"], "password": passwords[name]["password"],
                           "database": variables.get("database", "")}
    return found


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
    logins = accounts(document)
    for name, pool in sorted(document.get("pools", {}).items()):
        members = [check_member(pool["role"], m, logins.get(name)) for m in pool.get("members", [])]
        pools[name] = {"role": pool["role"], "members": members}
    ok = all(m["ok"] for p in pools.values() for m in p["members"])
    return ("200 OK" if ok else "503 Service Unavailable"), {"status": "ok" if ok else "error", "pools": pools}
