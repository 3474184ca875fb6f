"""Benchmark of the db role's releases: how long MariaDB is unavailable, the workbench's way vs by hand.

    .venv/bin/python bench/bench_db.py [--config workbench.toml] [--rounds 3] [--megabytes 100]

On the configuration's engine and registry, in an environment of its own (`dbbench`,
added to a copy of the configuration, taken down with its data at the end), with a
table of `--megabytes` of rows:
  - promote and rollback of the db role (the safe switch: monit stops MariaDB, the new
    release starts on the same volume): wall time, and the phases stop / start / healthy;
  - by hand: `docker stop` the serving container and `docker run` the same image on the
    same volume (MariaDB is killed with the container and recovers its data at start);
  - for each, the downtime a client sees: a prober container on the environment's network
    writes a row over TCP to `db.dbbench.<domain>` every 20 ms, and the downtime is
    the gap between its last answer before the switch and its first answer after;
  - `fab db.backup` and `fab db.restore`: time, backup size, downtime of the restore.
It needs a verified db image (baked if missing); a second version is a label-only copy.
Figures go to stdout and to <state_dir>/bench/db.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workbench.build import bake, images  # noqa: E402
from workbench.core import config as wb_config  # noqa: E402
from workbench.core import engine  # noqa: E402
from workbench.release import docker as docker_target  # noqa: E402
from workbench.release import registry  # noqa: E402
from workbench.release import releases as release  # noqa: E402
from workbench.release.target import ENV_LABEL  # noqa: E402

ENV = "dbbench"
PROBE_USER = "bench"
# The prober: one write per attempt (a database with writes in flight, as in use), one line
# each, "ok <epoch>" or "no <epoch>".
PROBE = (
    'while :; do if mariadb -h "$DB" -u bench -pbench -N -e "INSERT INTO bench.ticks () VALUES ()" >/dev/null 2>&1; '
    'then echo "ok $(date +%s.%N)"; else echo "no $(date +%s.%N)"; fi; sleep 0.02; done'
)


class TimedTarget(docker_target.DockerTarget):
    """The Docker target, timing the phases of each switch."""

    phases: dict[str, float]

    def _timed(self, name: str, call: Any, *args: Any) -> Any:
        start = time.monotonic()
        try:
            return call(*args)
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.monotonic() - start

    def pause(self, environment: Any, tag: str) -> None:
        self._timed("stop", super().pause, environment, tag)

    def start(self, plan: Any) -> Any:
        return self._timed("start", super().start, plan)

    def wait_healthy(self, plan: Any, instances: Any) -> None:
        self._timed("healthy", super().wait_healthy, plan, instances)


def bench_config(base: wb_config.Config) -> wb_config.Config:
    """The given configuration plus the environment `dbbench`, in its state directory."""
    import tomllib

    from tests.support.config import write_config  # the tests' TOML writer: the same subset

    data = tomllib.loads(base.path.read_text())
    data.setdefault("workbench", {}).update(
        {"state_dir": str(base.state_dir), "checkout": str(base.root), "prefix": base.prefix}
    )
    data.setdefault("environments", {})[ENV] = {}
    out = base.state_dir / "bench" / "db-bench.toml"
    out.parent.mkdir(parents=True, exist_ok=True)
    return wb_config.load(write_config(out, data))


def two_versions(config: wb_config.Config) -> tuple[int, int]:
    baked = bake.bake_role(config, "db")  # a cache hit when the role's inputs did not change
    newest = engine.client().images.get(baked.id)
    labels = dict(newest.labels or {})
    with images.VersionCounter(config, "db") as counter:
        copy = counter.next()
        labels.update({images.VERSION_LABEL: str(copy), engine.INPUTS_LABEL: labels[engine.INPUTS_LABEL] + "-bench"})
        dockerfile = "\n".join([f"FROM {newest.id}", *images.label_changes(labels), ""])
        engine.client().images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{config.prefix}/db:{copy}",
                                     rm=True, pull=False)
        counter.commit(copy)
    return baked.version, copy


def serving(config: wb_config.Config) -> Any:
    target = docker_target.DockerTarget(config)
    [first, *_] = target.instances(config.environment(ENV), "db")
    return engine.client().containers.get(first.name)


def sql(container: Any, statement: str) -> str:
    deadline = time.monotonic() + 120
    while True:
        code, out = container.exec_run(["mariadb", "-N", "-D", "mysql", "-e", statement])
        if code == 0:
            return str(out.decode().strip())
        if time.monotonic() > deadline:
            raise SystemExit(f"SQL failed in {container.name}: {out.decode()}")
        time.sleep(0.5)


class Prober:
    """A container on the environment's network writing a row to the db every 20 ms."""

    def __init__(self, config: wb_config.Config, image: str) -> None:
        self.config = config
        network = docker_target.DockerTarget(config).network_name(config.environment(ENV))
        db = f"db.{ENV}.{config.workbench.domain}"
        self.container = engine.client().containers.run(
            image, ["sh", "-c", PROBE], detach=True, network=network, environment={"DB": db},
            name=f"{config.prefix}-{ENV}-prober", labels={engine.PREFIX_LABEL: config.prefix, ENV_LABEL: ENV},
        )

    def mark(self) -> float:
        return time.time()

    def downtime(self, since: float, until: float = 0.0) -> float:
        """The longest stretch without an answer between `since` and `until`, bounded by answers on both sides."""
        lines = self.container.logs(since=int(since) - 1).decode().split("\n")
        samples = [(w, float(t)) for w, t in (line.split() for line in lines if line.count(" ") == 1)]
        samples = [(w, t) for w, t in samples if t >= since and (not until or t <= until)]
        longest, last_ok = 0.0, None
        for what, when in samples:
            if what == "ok":
                if last_ok is not None:
                    longest = max(longest, when - last_ok)
                last_ok = when
        return longest

    def first_ok_after(self, moment: float, timeout: float = 120) -> float:
        """The time of the prober's first answer after `moment` (waiting for one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.container.logs(since=int(moment) - 1).decode().split("\n"):
                what, _, when = line.partition(" ")
                if what == "ok" and float(when) > moment:
                    return float(when)
            time.sleep(0.05)
        raise SystemExit("the prober got no answer from the db after the switch")

    def wait_answering(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tail = self.container.logs(tail=1).decode().strip()
            if tail.startswith("ok "):
                return
            time.sleep(0.1)
        raise SystemExit("the prober never got an answer from the db")

    def remove(self) -> None:
        engine.remove_container(self.container)


def switch(config: wb_config.Config, prober: Prober, how: str, **kwargs: Any) -> dict[str, float]:
    target = TimedTarget(config)
    target.phases = {}
    prober.wait_answering()
    since = prober.mark()
    start = time.monotonic()
    if how == "promote":
        release.promote(config, "db", ENV, target=target, **kwargs)
    else:
        release.rollback(config, target=target, **kwargs)
    wall = time.monotonic() - start
    back = prober.first_ok_after(time.time())
    return {"wall": wall, **target.phases, "downtime": prober.downtime(since, back + 0.001)}


def by_hand(config: wb_config.Config, prober: Prober) -> dict[str, float]:
    """`docker stop` the serving container, `docker run` the same image on the same volume."""
    old = serving(config)
    image = old.attrs["Image"]
    volume = docker_target.DockerTarget(config).data_volume_name(config.environment(ENV), "db", "/var/lib/mysql")
    network = docker_target.DockerTarget(config).network_name(config.environment(ENV))
    prober.wait_answering()
    since = prober.mark()
    start = time.monotonic()
    old.stop()
    stopped = time.monotonic()
    client = engine.client()
    new = client.containers.run(
        image, detach=True, name=f"{config.prefix}-{ENV}-by-hand-{int(start)}", network=network,
        networking_config={network: client.api.create_endpoint_config(aliases=[f"db.{ENV}.{config.workbench.domain}"])},
        volumes={volume: {"bind": "/var/lib/mysql", "mode": "rw"}},
        labels={engine.PREFIX_LABEL: config.prefix, ENV_LABEL: ENV, "workbench.bench": "by-hand"},
    )
    started = time.monotonic()
    started_at = time.time()
    back = prober.first_ok_after(started_at)
    healthy = started + (back - started_at)
    downtime = prober.downtime(since, back + 0.001)
    log = new.exec_run(["cat", "/var/lib/mysql/mariadb.err"]).output.decode(errors="replace")
    recovered = log.count("Starting crash recovery")
    # Put the workbench's container back for the next round (stopped cleanly this time).
    docker_target._stop_services(new)
    new.stop()
    engine.remove_container(new)
    old.start()
    docker_target._start_services(old)
    prober.first_ok_after(time.time())
    return {"wall": healthy - start, "stop": stopped - start, "start": started - stopped, "healthy": healthy - started,
            "downtime": downtime, "crash_recoveries_in_log": recovered}


def fill(config: wb_config.Config, megabytes: int) -> None:
    db = serving(config)
    rows = megabytes * 1000
    sql(db, f"CREATE USER IF NOT EXISTS '{PROBE_USER}'@'%' IDENTIFIED BY 'bench'; CREATE DATABASE IF NOT EXISTS bench; "
        "CREATE TABLE IF NOT EXISTS bench.rows (id INT PRIMARY KEY, payload VARCHAR(1000)) ENGINE=InnoDB; "
        "CREATE TABLE IF NOT EXISTS bench.ticks (id INT AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB; "
        f"GRANT SELECT, INSERT ON bench.* TO '{PROBE_USER}'@'%'; "
        # Hex of hashes: rows that compress about as much as real data (2:1), not a repeated pattern.
        "INSERT IGNORE INTO bench.rows SELECT seq, LEFT(CONCAT(SHA2(seq, 512), SHA2(seq + 1e9, 512), "
        "SHA2(seq + 2e9, 512), SHA2(seq + 3e9, 512), SHA2(seq + 4e9, 512), SHA2(seq + 5e9, 512), "
        f"SHA2(seq + 6e9, 512), SHA2(seq + 7e9, 512)), 1000) FROM seq_1_to_{rows}")


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r.get(key, 0.0) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config", default=os.environ.get(wb_config.ENV_CONFIG, str(REPO / "workbench.toml")))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    config = bench_config(wb_config.load(Path(args.config)))
    first, second = two_versions(config)
    results: dict[str, Any] = {"megabytes": args.megabytes}
    prober = None
    try:
        release.promote(config, "db", ENV, version=first, message="bench: first")
        fill(config, args.megabytes)
        prober = Prober(config, str(serving(config).attrs["Image"]))
        runs: dict[str, list[dict[str, float]]] = {"promote": [], "rollback": [], "by hand": []}
        for _ in range(args.rounds):
            runs["promote"].append(switch(config, prober, "promote", version=second))
            runs["rollback"].append(switch(config, prober, "rollback", env=ENV, role="db"))
            runs["by hand"].append(by_hand(config, prober))
        results["switches"] = runs
        results.update(backup_figures(config, prober))
    finally:
        if prober is not None:
            prober.remove()
        release.down(config, ENV, purge_data=True)
        for container in engine.containers({engine.PREFIX_LABEL: config.prefix, ENV_LABEL: ENV}):
            engine.remove_container(container)
        engine.remove_image(f"{config.prefix}/db:{second}")
        registry.down(config)
    report(results, args.rounds)
    out = config.state_dir / "bench" / "db.json"
    out.write_text(json.dumps(results, indent=2, default=_plain) + "\n")
    print(f"(figures in {out})")


def backup_figures(config: wb_config.Config, prober: Prober) -> dict[str, Any]:
    """Time and size of a backup, time and downtime of restoring it (filled in by workbench.release.backup)."""
    try:
        from workbench.release import backup
    except ImportError:
        return {}
    start = time.monotonic()
    made = backup.backup(config, ENV)
    backup_seconds = time.monotonic() - start
    prober.wait_answering()
    since = prober.mark()
    start = time.monotonic()
    restored = backup.restore(config, ENV, made.name)
    restore_seconds = time.monotonic() - start
    back = prober.first_ok_after(time.time())
    return {"backup": {"seconds": backup_seconds, "size": made.size, "name": made.name},
            "restore": {"seconds": restore_seconds, "downtime": prober.downtime(since, back + 0.001),
                        "switch": restored.downtime}}


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else str(value)


def report(results: dict[str, Any], rounds: int) -> None:
    runs = results["switches"]
    print(f"\ndb role, {results['megabytes']} MB of rows, median of {rounds} round(s), seconds:")
    print(f"{'':<32} {'wall':>7} {'stop':>7} {'start':>7} {'healthy':>8} {'downtime':>9}  crash recovery")
    for name, label in (("promote", "release.promote (safe switch)"), ("rollback", "release.rollback (safe switch)"),
                        ("by hand", "docker stop && docker run")):
        rec = "yes" if name == "by hand" and median(runs[name], "crash_recoveries_in_log") else "no"
        print(f"{label:<32} {median(runs[name], 'wall'):>7.2f} {median(runs[name], 'stop'):>7.2f} "
              f"{median(runs[name], 'start'):>7.2f} {median(runs[name], 'healthy'):>8.2f} "
              f"{median(runs[name], 'downtime'):>9.2f}  {rec}")
    if "backup" in results:
        b, r = results["backup"], results["restore"]
        print(f"db.backup:  {b['seconds']:.2f}s, {b['size'] / 1e6:.1f} MB compressed ({b['name']})")
        print(f"db.restore: {r['seconds']:.2f}s in all (loading aside while serving), the database unavailable "
              f"{r['downtime']:.2f}s (pause, copy aside, copy in, resume: {r['switch']:.2f}s)")


if __name__ == "__main__":
    main()
