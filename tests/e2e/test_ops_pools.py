"""Pools for real: the app image reaches a real memcached and a real MariaDB through pool-rendered files.

The cache, db and app images are baked by the pipeline from their roles. The
cache and db containers run on a network of the test's own; the pools naming
their addresses exist only in the configuration. The app container is started
the way deploy starts it, with `pools.container_options` (the files mounted at
/run/workbench/pools, the WORKBENCH_POOL_* variables), and a check run inside
it follows those files to memcached (set, then get) and to MariaDB (its
protocol greeting). Adding a member and starting the app again reaches it too.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import config_data, ops_config_data, write_config
from tests.support.net import free_port
from workbench.build.bake import BakeResult
from workbench.core import config as wb_config
from workbench.core import engine, pools

# Run inside the app container with its own python3: only the rendered file says where things are.
CHECK = r"""
import json, socket, sys
doc = json.load(open("/run/workbench/pools/pools.json"))
out = {}
for name, pool in sorted(doc["pools"].items()):
    for member in pool["members"]:
        host, port = member["address"].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            if pool["role"] == "cache":
                key = "wb-" + member["name"]
                s.sendall(b"set " + key.encode() + b" 0 60 2\r\nok\r\nget " + key.encode() + b"\r\n")
                data = b""
                while not data.endswith(b"END\r\n"):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                out[member["name"]] = data.decode()
            else:
                # MariaDB speaks first: length (3), sequence (1), protocol 10, version, NUL.
                head = s.recv(4096)
                out[member["name"]] = {"protocol": head[4], "version": head[5:].split(b"\0")[0].decode()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def images(baked: Callable[[str], BakeResult]) -> dict[str, str]:
    return {role: baked(role).tag for role in ("cache", "db", "app")}


@pytest.fixture(scope="module")
def network(wb_prefix: str, docker_engine: None) -> Iterator[str]:
    net = engine.client().networks.create(
        f"{wb_prefix}-ops-pools", driver="bridge", labels={engine.PREFIX_LABEL: wb_prefix}
    )
    try:
        yield net.name
    finally:
        for container in engine.containers({engine.PREFIX_LABEL: wb_prefix, "workbench.test": "ops-pools"}):
            engine.remove_container(container)
        net.remove()


def start(image: str, name: str, network: str, prefix: str, **options: Any) -> Any:
    return engine.client().containers.run(
        image,
        detach=True,
        name=f"{prefix}-ops-{name}",
        hostname=name,
        network=network,
        labels={engine.PREFIX_LABEL: prefix, "workbench.test": "ops-pools"},
        **options,
    )


def ip(container: Any, network: str) -> str:
    container.reload()
    return str(container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])


Members = list[tuple[str, str]]


def pool_config(prefix: str, state: Path, caches: Members, dbs: Members) -> wb_config.Config:
    data = config_data(
        prefix,
        state,
        pools={
            "cache": {"role": "cache", "used_by": ["app"], "members": [{"name": n, "private": a} for n, a in caches]},
            "db": {
                "role": "db",
                "used_by": ["app"],
                "members": [{"name": n, "private": a} for n, a in dbs],
                "variables": {"database": "app"},
            },
        },
    )
    return wb_config.load(write_config(state / "ops-pools.toml", data))


def grant_app_account(db: Any, timeout: float = 90) -> None:
    sql = (
        "CREATE DATABASE IF NOT EXISTS app; CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'app-secret'; "
        "GRANT ALL ON app.* TO 'app'@'%';"
    )
    deadline = time.monotonic() + timeout
    while True:
        code, out = db.exec_run(["mariadb", "-e", sql])
        if code == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"MariaDB in {db.name} did not take the account: {out.decode(errors='replace')}")
        time.sleep(1)


def check_from_app(container: Any, timeout: float = 90) -> dict[str, Any]:
    """Run CHECK in the app container until every member answers (the services start under monit)."""
    deadline = time.monotonic() + timeout
    while True:
        code, out = container.exec_run(["python3", "-c", CHECK])
        if code == 0:
            return dict(json.loads(out.decode()))
        if time.monotonic() > deadline:
            raise AssertionError(f"the app did not reach its pools: {out.decode(errors='replace')}")
        time.sleep(1)


def get_pools(app: Any, network: str, want: int, timeout: float = 90) -> dict[str, Any]:
    """GET /pools of the app (nginx, port 80) from here, until it answers `want`."""
    url = f"http://{ip(app, network)}/pools"
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                status, body = reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        except OSError as exc:
            last = exc
            time.sleep(1)
            continue
        last = (status, body)
        if status == want:
            return dict(json.loads(body))
        time.sleep(1)
    raise AssertionError(f"GET {url} did not answer {want} within {timeout:.0f}s (last: {last!r})")


def test_the_app_reaches_cache_and_db_through_its_pools(
    images: dict[str, str], network: str, wb_prefix: str, wb_state: Path
) -> None:
    cache1 = start(images["cache"], "cache1", network, wb_prefix)
    db1 = start(images["db"], "db1", network, wb_prefix)
    cfg = pool_config(wb_prefix, wb_state, [("cache1", ip(cache1, network))], [("db1", ip(db1, network))])

    # Nothing about pools is in the image: it is rendered at deploy time only.
    bare = engine.client().containers.run(
        images["app"], ["sh", "-c", "test -e /run/workbench/pools && echo baked || echo absent"], remove=True
    )
    assert bare.decode().strip() == "absent"
    image_env = engine.client().images.get(images["app"]).attrs["Config"].get("Env") or []
    assert not [v for v in image_env if v.startswith("WORKBENCH_POOL")]

    # The db role makes no account for remote clients; a fresh MariaDB refuses
    # every other host outright. Give the app one, as its provisioning would.
    grant_app_account(db1)

    options = pools.container_options(cfg, "app", "staging")
    app = start(images["app"], "app1", network, wb_prefix, **options)
    env = dict(line.split("=", 1) for line in app.exec_run(["env"]).output.decode().splitlines() if "=" in line)
    assert env["WORKBENCH_POOL_CACHE"] == f"{ip(cache1, network)}:11211"
    assert env["WORKBENCH_POOL_DB"] == f"{ip(db1, network)}:3306"
    assert env["WORKBENCH_POOL_DB_DATABASE"] == "app"

    reached = check_from_app(app)
    assert reached["cache1"] == "STORED\r\nVALUE wb-cache1 0 2\r\nok\r\nEND\r\n"
    assert reached["db1"]["protocol"] == 10 and "MariaDB" in reached["db1"]["version"]
    # The app's own check says the same.
    body = get_pools(app, network, 200)
    assert body["status"] == "ok"
    (db,) = body["pools"]["db"]["members"]
    assert db["ok"] and db["detail"].startswith("MariaDB ") and db["address"] == f"{ip(db1, network)}:3306"
    (cache,) = body["pools"]["cache"]["members"]
    assert cache["ok"] and cache["detail"].startswith("memcached ")

    # A second cache joins the pool; deploying the app again gives it both.
    cache2 = start(images["cache"], "cache2", network, wb_prefix)
    cfg = pool_config(
        wb_prefix,
        wb_state,
        [("cache1", ip(cache1, network)), ("cache2", ip(cache2, network))],
        [("db1", ip(db1, network))],
    )
    engine.remove_container(app)
    app = start(images["app"], "app2", network, wb_prefix, **pools.container_options(cfg, "app", "staging"))
    reached = check_from_app(app)
    assert set(reached) == {"cache1", "cache2", "db1"}
    assert reached["cache2"].startswith("STORED\r\nVALUE wb-cache2")
    members = get_pools(app, network, 200)["pools"]["cache"]["members"]
    assert [(m["name"], m["ok"]) for m in members] == [("cache1", True), ("cache2", True)]

    # A member that is down makes the check fail, naming it.
    cache2.stop(timeout=5)
    members = get_pools(app, network, 503)["pools"]["cache"]["members"]
    assert [(m["name"], m["ok"]) for m in members] == [("cache1", True), ("cache2", False)]


def test_the_pool_files_are_read_only_in_the_container(
    images: dict[str, str], network: str, wb_prefix: str, wb_state: Path
) -> None:
    cfg = pool_config(wb_prefix, wb_state, [("cache9", "10.255.0.9")], [("db9", "10.255.0.10")])
    app = start(images["app"], "app-ro", network, wb_prefix, **pools.container_options(cfg, "app", "staging"))
    code, out = app.exec_run(["sh", "-c", "echo x > /run/workbench/pools/pools.json"])
    assert code != 0 and b"Read-only file system" in out
    document = json.loads(app.exec_run(["cat", "/run/workbench/pools/pools.json"]).output)
    assert document["pools"]["cache"]["members"][0]["address"] == "10.255.0.9:11211"


def test_promote_renders_the_pools_and_a_new_member_reaches_the_next_release(
    images: dict[str, str], wb_prefix: str, wb_state: Path
) -> None:
    """Through the real deploy (`release.promote`): pools are rendered when a release starts."""
    from workbench.release import registry, target
    from workbench.release import releases as release

    env_name = "opspools"
    state = wb_state / "ops-pools-release"
    state.mkdir(exist_ok=True)
    network = f"{wb_prefix}-{env_name}"
    labels = {engine.PREFIX_LABEL: wb_prefix, target.ENV_LABEL: env_name}
    engine.client().networks.create(network, driver="bridge", labels=labels)
    registry_port = free_port()

    def config_with(caches: Members, dbs: Members) -> wb_config.Config:
        data = ops_config_data(
            wb_prefix,
            state,
            registry={"port": registry_port},
            environments={env_name: {"frontend_port": 0}},
            pools={
                "cache": {"role": "cache", "used_by": ["app"], "members": [member(n, a) for n, a in caches]},
                "db": {"role": "db", "used_by": ["app"], "members": [member(n, a) for n, a in dbs]},
            },
        )
        return wb_config.load(write_config(state / "workbench.toml", data))

    cfg: wb_config.Config | None = None
    try:
        cache1 = start(images["cache"], "rel-cache1", network, wb_prefix)
        db1 = start(images["db"], "rel-db1", network, wb_prefix)
        grant_app_account(db1)
        cfg = config_with([("cache1", ip(cache1, network))], [("db1", ip(db1, network))])
        first = release.promote(cfg, "app", env_name)
        app = engine.client().containers.get(f"{network}-{first.tag}")
        body = get_pools(app, network, 200)
        assert [m["name"] for m in body["pools"]["cache"]["members"]] == ["cache1"]
        assert body["pools"]["db"]["members"][0]["detail"].startswith("MariaDB ")

        cache2 = start(images["cache"], "rel-cache2", network, wb_prefix)
        caches = [("cache1", ip(cache1, network)), ("cache2", ip(cache2, network))]
        cfg = config_with(caches, [("db1", ip(db1, network))])
        # The same image again: only the configuration changed, and the new release has it.
        second = release.promote(cfg, "app", env_name, version=first.version)
        app = engine.client().containers.get(f"{network}-{second.tag}")
        members = get_pools(app, network, 200)["pools"]["cache"]["members"]
        assert [(m["name"], m["ok"]) for m in members] == [("cache1", True), ("cache2", True)]
    finally:
        for container in engine.containers(labels):
            engine.remove_container(container)
        for container in engine.containers({engine.PREFIX_LABEL: wb_prefix, "workbench.test": "ops-pools"}):
            if container.name.startswith(f"{wb_prefix}-ops-rel-"):
                engine.remove_container(container)
        for net in engine.client().networks.list(names=[network]):
            net.remove()
        if cfg is not None:
            registry.down(cfg)



def member(name: str, address: str) -> dict[str, str]:
    return {"name": name, "private": address}
