"""Benchmark: a role in a sandbox, against the same role baked into an image.

    .venv/bin/python bench/bench_sandbox.py [--role app] [--prefix NAME] [--keep]

On a temporary copy of the checkout (salt/, tests/, formulas/, images/, Vagrantfile; the
repository's own tree is never edited), under its own prefix and state directory:

1. `fab sandbox.up` from no sandbox (the base image is built first and timed
   apart), then `fab sandbox.test` until it passes; later the same again, with
   the sandbox image made and the package cache warm, as a user meets it;
2. the round trip of a one-line state change (a header added to the app's
   nginx site): edit, `fab sandbox.provision`, check the change is served,
   `fab sandbox.test`;
3. the same role by `fab image.bake` (Packer + Salt + its testinfra verify)
   plus a container of the image answering its health check; then the same
   one-line change through a second bake and a new container.

Prints one line per measure and the ratios; everything is removed at the end
unless --keep.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.config import write_config  # noqa: E402
from workbench.core import config as wb_config  # noqa: E402
from workbench.core import engine, run  # noqa: E402

SITE = "salt/app/files/nginx-site"
GOAL_SECONDS = 30.0  # issue 17: sandbox.up + sandbox.test of the app role
MARK = "        proxy_read_timeout 30s;\n"
HEADER = '        add_header X-Workbench-Bench "{value}";\n'


def fab(config: Path, *args: str) -> tuple[float, str]:
    start = time.monotonic()
    result = run.capture([str(REPO / ".venv/bin/fab"), *args], env={wb_config.ENV_CONFIG: str(config)}, cwd=REPO)
    return time.monotonic() - start, result.stdout


def last_json(out: str) -> object:
    """The JSON document `fab ... --json` prints after its progress lines."""
    lines = out.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i] in ("{", "["):
            return json.loads("\n".join(lines[i:]))
    raise SystemExit(f"no JSON in the output:\n{out[-2000:]}")


def header(address: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{address}:{port}/health", timeout=5) as response:  # noqa: S310
        return str(response.headers.get("X-Workbench-Bench", ""))


def edit(checkout: Path, value: str) -> None:
    site = checkout / SITE
    text = site.read_text()
    lines = [line for line in text.splitlines(keepends=True) if "X-Workbench-Bench" not in line]
    text = "".join(lines)
    assert MARK in text, f"{SITE} changed: the benchmark's edit no longer applies"
    site.write_text(text.replace(MARK, MARK + HEADER.format(value=value)))


def run_baked(tag: str, port: int, health: str, prefix: str) -> float:
    """Seconds from `docker run` of a baked image to its health check answering 200."""
    start = time.monotonic()
    container = engine.client().containers.run(tag, detach=True, labels={engine.PREFIX_LABEL: prefix})
    try:
        container.reload()
        address = container.attrs["NetworkSettings"]["IPAddress"]
        deadline = start + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{address}:{port}{health}", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"the baked {tag} did not answer {health} within 120 s")
    finally:
        engine.remove_container(container)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", default="app", help="the role (its nginx site takes the one-line change)")
    parser.add_argument("--prefix", default=f"wbbench-{secrets.token_hex(3)}")
    parser.add_argument("--keep", action="store_true", help="keep the prefix's images, containers and state")
    args = parser.parse_args()

    state = Path("/var/tmp") / f"{args.prefix}-state"
    checkout = state / "checkout"
    checkout.mkdir(parents=True, exist_ok=True)
    for part in ("salt", "tests", "formulas", "images"):
        shutil.rmtree(checkout / part, ignore_errors=True)
        shutil.copytree(REPO / part, checkout / part)
    shutil.copy2(REPO / "Vagrantfile", checkout / "Vagrantfile")  # sandboxes use the checkout's own
    data = tomllib.loads((REPO / "workbench.toml").read_text())
    data["workbench"].update(prefix=args.prefix, state_dir=str(state), checkout=str(checkout), default_role=args.role)
    config = write_config(checkout / "workbench.toml", data)
    role = wb_config.load(config).role(args.role)
    port, health = role.ports[0], role.health or "/"
    figures: dict[str, float] = {}
    try:
        figures["base image (debootstrap, once per machine)"], _ = fab(config, "image.base")

        figures["sandbox: fab sandbox.up"], out = fab(config, "sandbox.up", "--json")
        address = last_json(out)["address"]  # type: ignore[index]
        figures["sandbox: fab sandbox.test"], _ = fab(config, "sandbox.test")

        edit(checkout, "one")
        start = time.monotonic()
        figures["sandbox round trip: fab sandbox.provision"], _ = fab(config, "sandbox.provision")
        assert header(address, port) == "one", "the provisioned change is not served"
        figures["sandbox round trip: then fab sandbox.test"], _ = fab(config, "sandbox.test")
        figures["sandbox round trip: edit to tests passing"] = time.monotonic() - start
        fab(config, "sandbox.destroy", "--all")
        # What a user sees from then on: the sandbox image made, the package cache holding the packages.
        figures["sandbox again: fab sandbox.up"], _ = fab(config, "sandbox.up")
        figures["sandbox again: fab sandbox.test"], _ = fab(config, "sandbox.test")
        fab(config, "sandbox.destroy", "--all")

        figures["bake: fab image.bake (Packer + Salt + verify)"], out = fab(config, "image.bake", args.role, "--json")
        tag = last_json(out)[0]["tag"]  # type: ignore[index]
        figures["bake: docker run until healthy"] = run_baked(tag, port, health, args.prefix)

        edit(checkout, "two")
        figures["bake round trip: fab image.bake"], out = fab(config, "image.bake", args.role, "--json")
        tag = last_json(out)[0]["tag"]  # type: ignore[index]
        figures["bake round trip: docker run until healthy"] = run_baked(tag, port, health, args.prefix)
    finally:
        if not args.keep:
            fab(config, "sandbox.destroy", "--all")
            engine.remove_prefix(args.prefix)
            shutil.rmtree(state, ignore_errors=True)

    for name, seconds in figures.items():
        print(f"{name:<50} {seconds:7.1f} s")
    sandbox_first = figures["sandbox: fab sandbox.up"] + figures["sandbox: fab sandbox.test"]
    bake_first = figures["bake: fab image.bake (Packer + Salt + verify)"] + figures["bake: docker run until healthy"]
    sandbox_trip = figures["sandbox round trip: edit to tests passing"]
    bake_trip = figures["bake round trip: fab image.bake"] + figures["bake round trip: docker run until healthy"]
    print(f"{'first time to a tested role: sandbox / bake':<50} {sandbox_first:7.1f} s / {bake_first:.1f} s"
          f" = {sandbox_first / bake_first:.2f}")
    print(f"{'one-line change to tested role: sandbox / bake':<50} {sandbox_trip:7.1f} s / {bake_trip:.1f} s"
          f" = {sandbox_trip / bake_trip:.2f} ({bake_trip / sandbox_trip:.1f}x faster in the sandbox)")
    again = figures["sandbox again: fab sandbox.up"] + figures["sandbox again: fab sandbox.test"]
    print(f"goal: sandbox.up + sandbox.test < {GOAL_SECONDS:.0f} s with the base image present: "
          f"{sandbox_first:.1f} s the first time (empty package cache, sandbox image made), {again:.1f} s again "
          f"({'met' if again < GOAL_SECONDS else 'not met'})")


if __name__ == "__main__":
    main()
