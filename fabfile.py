"""The workbench's tasks. Each parses its arguments, calls `workbench`, prints the result.

`fab -l` lists them; `fab --help <task>` documents one. Fabric 1's form
(`fab image.bake:role=app`) works for every task, see workbench/legacy_args.py.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fabric import task
from invoke.collection import Collection
from invoke.exceptions import Exit

from workbench import config as wb_config
from workbench.errors import WorkbenchError

HERE = Path(__file__).resolve().parent


def _config() -> wb_config.Config:
    if os.environ.get(wb_config.ENV_CONFIG):
        return wb_config.load()
    return wb_config.load(HERE / wb_config.CONFIG_FILE)


def wb(*args: Any, **kwargs: Any) -> Callable[..., Any]:
    """@task whose WorkbenchError becomes one `error: …` line and a non-zero exit."""

    def decorate(body: Callable[..., Any]) -> Any:
        @functools.wraps(body)
        def guarded(c: Any, *a: Any, **kw: Any) -> Any:
            try:
                return body(c, *a, **kw)
            except WorkbenchError as exc:
                raise Exit(f"error: {exc}", code=exc.exit_code) from None

        return task(*args, **kwargs)(guarded)

    return decorate


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


# --- name ----------------------------------------------------------------------


@wb(positional=["host"], help={"host": "a host name, e.g. redis-sessions.production.wpdn", "json": "print JSON"})
def parse(c, host, json=False):
    """Parse a host name into role, variant, environment and domain."""
    from workbench import naming

    name = naming.parse(host, _config())
    if json:
        _print_json(name.to_dict())
        return
    print(f"host        {name.fqdn}")
    print(f"role        {name.role}")
    print(f"variant     {name.variant or '-'}")
    print(f"index       {name.index if name.index is not None else '-'}")
    print(f"environment {name.environment}")
    print(f"domain      {name.domain}")


# --- config --------------------------------------------------------------------


@wb(help={"json": "print the loaded configuration as JSON"})
def check(c, json=False):
    """Validate workbench.toml and summarise it."""
    import dataclasses

    cfg = _config()
    if json:
        _print_json({k: v for k, v in dataclasses.asdict(cfg).items() if k != "path"})
        return
    print(f"{cfg.path}: ok")
    print(f"  roles:        {', '.join(cfg.roles)}")
    print(f"  environments: {', '.join(cfg.environments)}")
    print(f"  state:        {cfg.state_dir}")


@wb()
def reference(c):
    """Print the configuration reference (Markdown), as in the README."""
    print(wb_config.reference_markdown())


# --- image ---------------------------------------------------------------------


@wb(help={"force": "rebuild even if a base with the same inputs exists"})
def base(c, force=False):
    """Build the vanilla base image (debootstrap + import), unless it is up to date."""
    from workbench import base as wb_base
    from workbench.progress import human_size

    image = wb_base.build_base(_config(), force=force)
    state = "cached" if image.cached else "built"
    print(f"base {image.tag} {state}: id {image.id[7:19]}, {human_size(image.size)}, {image.seconds:.2f}s")


# --- watch (operations) ---------------------------------------------------------


@wb(
    name="watch",
    help={
        "once": "look once, process what is new, exit (non-zero if an event failed)",
        "repository": "git repository to watch, a path or URL (default: [watch] repository, else this checkout)",
        "branch": "branch to watch (default: [watch] branch, master)",
        "promote": "environment to promote freshly baked roles to (default: [watch] promote)",
        "interval": "seconds between looks (default: [watch] interval)",
        "hook_port": "loopback port of the HTTP hook, 0 for none (default: [watch] hook_port)",
    },
)
def watch_run(c, once=False, repository="", branch="", promote="", interval=0, hook_port=-1):
    """Bake (and test) the roles each new commit changed; `POST /hook` on loopback fires an event."""
    from workbench import watch as wb_watch

    cfg = _config()
    tgt = wb_watch.target(
        cfg,
        repository=repository,
        branch=branch,
        promote=promote,
        interval=interval or None,
        hook_port=hook_port if hook_port >= 0 else None,
    )
    summary = wb_watch.watch(cfg, tgt, once=once)
    print(f"watched {summary.branch} of {summary.source}: {summary.events} event(s), {summary.failed} failed")
    if summary.failed and once:
        raise Exit(code=1)


@wb(name="log", help={"lines": "how many of the last events (default 20, 0: all)", "json": "JSON lines"})
def watch_log(c, lines=20, json=False):
    """Show the watcher's events: commit, trigger, roles baked, outcome."""
    from workbench import watch as wb_watch

    events = wb_watch.read_log(_config(), limit=lines)
    if json:
        for event in events:
            print(__import__("json").dumps(event.to_dict(), sort_keys=True))
        return
    if not events:
        print("no events yet (fab watch --once processes the branch head)")
    for event in events:
        roles = ", ".join(f"{o.role} {o.status}" for o in event.outcomes) or "nothing to bake"
        print(f"{event.time}  {event.commit[:10]}  {event.trigger:<5}  {event.status:<9}  {roles}  {event.subject}")
        if event.error:
            print(f"    error: {event.error}")
        for outcome in event.outcomes:
            if outcome.status.endswith("failed"):
                print(f"    {outcome.role}: {outcome.detail.splitlines()[0] if outcome.detail else ''}")


@wb(name="unit", help={"write": "write the unit to this path instead of printing it"})
def watch_unit(c, write=""):
    """Print (or write) a systemd unit running `fab watch` as a service."""
    from workbench import watch as wb_watch

    text = wb_watch.systemd_unit(_config(), HERE / ".venv/bin/fab")
    if write:
        Path(write).write_text(text)
        print(f"wrote {write}: systemctl enable --now {Path(write).name}")
        return
    print(text, end="")


watch_ns = Collection("watch")
watch_ns.add_task(watch_run, default=True)
watch_ns.add_task(watch_log)
watch_ns.add_task(watch_unit)


# --- pools (operations) -----------------------------------------------------------


@wb(name="show", help={"pool": "only this pool (default: every pool)", "json": "print JSON"})
def pools_show(c, pool="", json=False):
    """Show each pool: its role, port, members (private/public) and the roles that use it."""
    import dataclasses

    from workbench import pools as wb_pools

    cfg = _config()
    views = wb_pools.show(cfg, pool or "")
    if json:
        _print_json([dataclasses.asdict(v) for v in views])
        return
    if not views:
        print(f"no pools in {cfg.path} (declare one as [pools.<name>])")
    for view in views:
        print(f"{view.name}  role {view.role}, port {view.port or '-'}, environments {', '.join(view.environments)}")
        print(f"    used by: {', '.join(view.used_by) or 'nobody'}")
        for m in view.members:
            print(f"    {m.name:<16} private {m.private:<16} public {m.public or '-'}")
        if not view.members:
            print("    (no members)")
    uses = wb_pools.users(cfg)
    if uses:
        print("roles: " + "; ".join(f"{role} uses {', '.join(names)}" for role, names in sorted(uses.items())))


@wb(
    name="render",
    positional=["role"],
    help={"role": "the role being deployed", "environment": "environment (default: staging)", "env": "as variables"},
)
def pools_render(c, role, environment="staging", env=False):
    """Print what a role is given about its pools at deploy time (pools.json, or its variables)."""
    from workbench import pools as wb_pools

    document = wb_pools.render(_config(), role, environment)
    if env:
        for key, value in sorted(wb_pools.environment_variables(document).items()):
            print(f"{key}={value}")
        return
    _print_json(document)


pools_ns = Collection("pools")
pools_ns.add_task(pools_show)
pools_ns.add_task(pools_render)


name_ns = Collection("name", parse)
config_ns = Collection("config", check, reference)
image_ns = Collection("image", base)

ns = Collection(name_ns, config_ns, image_ns, watch_ns, pools_ns)
