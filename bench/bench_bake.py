"""Bake benchmark: cold bakes, no-op, touch-one-state, --all vs serial, and plain `docker build`.

    .venv/bin/python bench/bench_bake.py [--roles base,app,cache,db] [--prefix NAME]

Runs in a copy of the checkout (it edits a state file there) under its own
prefix and state directory, removed at the end (unless --prefix is given,
which keeps and reuses them). Every figure is measured in this one run:

1. serial bakes of each role with an empty package cache (first fetch),
2. serial bakes again, --force, with the cache warm: "cold bake" (no image to reuse),
3. from the same base, `docker build` of a Dockerfile installing the packages
   each baked role has beyond the base (apt-mark showmanual), through the same
   package cache, without the build cache,
4. `--all` of the roles (parallel), --force, cache warm,
5. no-op bake of all roles, in process and through the real `fab`, and the
   vanilla base found again (the figures the tests no longer time),
6. one state file of one role touched, then `--all`: only that role rebakes,
7. each cold-baked image verified again over testinfra's `docker://` (a
   `docker exec` per command), as bakes did before the channel.

Per role it prints the cold bake against `docker build` with and without the
verification (provision only), and the verification's time and share of the
bake, against the issue's goals.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Issue 17's goals, printed against what this run measured.
GOAL_RATIO = 1.2
GOAL_APP_VERIFY = 5.0

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from tests.support.config import config_data, write_config  # noqa: E402
from workbench.build import aptcache, bake, base, verify  # noqa: E402
from workbench.core import config, engine  # noqa: E402


def copy_checkout(dest: Path) -> None:
    for name in ("salt", "images", "formulas", "tests/roles"):
        if (REPO / name).exists():
            shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))


def timed_bake(cfg: config.Config, roles: list[str], force: bool) -> tuple[float, list[bake.BakeResult]]:
    start = time.monotonic()
    results = bake.bake(cfg, roles, force=force)
    return time.monotonic() - start, results


def manual_packages(image: str) -> set[str]:
    out = engine.client().containers.run(image, ["apt-mark", "showmanual"], entrypoint=[], remove=True)
    return set(out.decode().split())


def docker_build(cfg: config.Config, base_tag: str, packages: list[str], proxy: str) -> tuple[float, int]:
    dockerfile = (
        f"FROM {base_tag}\n"
        "RUN printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d "
        f"&& apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q {' '.join(packages)} "
        "&& rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d && apt-get clean\n"
        f'LABEL "{engine.PREFIX_LABEL}"="{cfg.prefix}"\n'
    )
    start = time.monotonic()
    image, _ = engine.client().images.build(
        fileobj=io.BytesIO(dockerfile.encode()),
        tag=f"{cfg.prefix}/dockerbuild:{secrets.token_hex(3)}",
        nocache=True,
        rm=True,
        pull=False,
        buildargs={"http_proxy": proxy},
    )
    return time.monotonic() - start, int(image.attrs["Size"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roles", default="base,app,cache,db")
    parser.add_argument("--prefix", default="", help="reuse (and keep) this prefix")
    args = parser.parse_args()
    roles = args.roles.split(",")
    prefix = args.prefix or f"wbbench-{secrets.token_hex(3)}"
    state = Path(f"/var/tmp/{prefix}-state")
    state.mkdir(exist_ok=True)
    checkout = Path(tempfile.mkdtemp(prefix="bench-checkout-"))
    copy_checkout(checkout)
    data = config_data(prefix, state)
    data["workbench"]["checkout"] = str(checkout)
    cfg = config.load(write_config(state / "workbench.toml", data))
    figures: dict[str, float] = {}
    rows: list[tuple[str, ...]] = []
    try:
        base_image = base.build_base(cfg)
        # 1. serial, package cache empty (when the state directory is new)
        first: dict[str, float] = {}
        for role in roles:
            first[role], _ = timed_bake(cfg, [role], force=True)
        # 2. serial, cache warm
        serial: dict[str, float] = {}
        results: dict[str, bake.BakeResult] = {}
        for role in roles:
            serial[role], done = timed_bake(cfg, [role], force=True)
            results[role] = done[0]
        # 3. plain docker build of the same packages, through the same cache
        base_packages = manual_packages(base_image.tag)
        builds: dict[str, tuple[float, int]] = {}
        with aptcache.package_cache(cfg) as cache:
            proxy = cache.container_proxy if cache else ""
            for role in roles:
                packages = sorted(manual_packages(results[role].tag) - base_packages) or ["less"]
                builds[role] = docker_build(cfg, base_image.tag, packages, proxy)
        # 4. --all, parallel
        figures["all"], _ = timed_bake(cfg, roles, force=True)
        # 5. no-op
        figures["noop"], noop = timed_bake(cfg, roles, force=False)
        assert all(r.cached for r in noop)
        start = time.monotonic()
        again = base.build_base(cfg)
        figures["base_cached"] = time.monotonic() - start
        assert again.cached and again.id == base_image.id
        start = time.monotonic()
        env = {**os.environ, config.ENV_CONFIG: str(cfg.path)}
        subprocess.run([str(REPO / ".venv/bin/fab"), "image.bake", roles[-1]], env=env, check=True,
                       capture_output=True, cwd=REPO)
        figures["noop_fab"] = time.monotonic() - start
        # 6. touch one state of one role
        touched = roles[-1]
        init = checkout / "salt" / touched / "init.sls"
        init.write_text(init.read_text() + "\n# touched by bench_bake\n")
        figures["touch"], after = timed_bake(cfg, roles, force=False)
        rebaked = [r.role for r in after if not r.cached]
        # 7. the same verification over a docker exec per command
        per_exec = {
            role: verify.verify(cfg, cfg.role(role), results[role].tag, scope=f"bench {role}",
                                on_line=lambda line: None, scheme="docker")
            for role in roles
        }
        for role in roles:
            bake_s, (build_s, build_size) = serial[role], builds[role]
            phases = dict(results[role].phases)
            provision_s, verify_s = phases.get("provision", bake_s), phases.get("verify", 0.0)
            rows.append((role, f"{first[role]:.1f}s", f"{bake_s:.1f}s / {build_s:.1f}s = {bake_s / build_s:.2f}x",
                         f"{provision_s:.1f}s = {provision_s / build_s:.2f}x",
                         f"{verify_s:.1f}s = {verify_s / bake_s:.0%} ({results[role].tests})",
                         f"{per_exec[role].seconds:.1f}s = {verify_s / per_exec[role].seconds:.2f}x",
                         f"{results[role].size / 1e6:.0f} MB / {build_size / 1e6:.0f} MB"))
            figures[f"ratio {role}"] = bake_s / build_s
            figures[f"verify {role}"] = verify_s
    finally:
        shutil.rmtree(checkout, ignore_errors=True)
        if not args.prefix:
            engine.remove_prefix(prefix)
            shutil.rmtree(state, ignore_errors=True)
    total_serial = sum(serial.values())
    print()
    print(f"{'role':<8} {'first bake':>11}  {'cold bake / docker build (warm cache)':<40} "
          f"{'provision only (no verify)':<28} {'verify = share of the cold bake (tests)':<44} "
          f"{'docker:// verify (ratio)':<26} size bake / docker")
    for role, first_s, ratio, provision, verify_s, old_verify, size in rows:
        print(f"{role:<8} {first_s:>11}  {ratio:<40} {provision:<28} {verify_s:<44} {old_verify:<26} {size}")
    print(f"--all of {len(roles)} roles: {figures['all']:.1f}s vs serial {total_serial:.1f}s "
          f"= {figures['all'] / total_serial:.2f}x")
    print(f"no-op bake of {len(roles)} roles: {figures['noop']:.2f}s in process, "
          f"{figures['noop_fab']:.2f}s as `fab image.bake {roles[-1]}`")
    print(f"vanilla base with nothing changed: {figures['base_cached']:.3f}s (reused {base_image.tag})")
    print(f"touch salt/{touched}/init.sls, --all: {figures['touch']:.1f}s, rebaked: {', '.join(rebaked) or 'nothing'}")
    worst = max(roles, key=lambda r: figures[f"ratio {r}"])
    print(f"goal: cold bake <= {GOAL_RATIO}x docker build, verification included: "
          f"{'met' if figures[f'ratio {worst}'] <= GOAL_RATIO else 'not met'} "
          f"(worst {worst} {figures[f'ratio {worst}']:.2f}x)")
    if "app" in roles:
        app_verify = figures["verify app"]
        verdict = "met" if app_verify <= GOAL_APP_VERIFY else "not met"
        print(f"goal: app verification <= {GOAL_APP_VERIFY:.0f}s: {verdict} "
              f"({app_verify:.1f}s, {results['app'].tests})")


if __name__ == "__main__":
    main()
