"""The workbench's tasks. Each parses its arguments, calls `workbench`, prints the result.

`fab -l` lists them; `fab --help <task>` documents one. Fabric 1's form
(`fab image.bake:role=app`) works for every task, see workbench/cli/legacy_args.py.
The `fab` program loads this collection wherever it runs; the checkout's
fabfile.py re-exports it for Fabric's own `fab`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fabric import task
from invoke.collection import Collection
from invoke.exceptions import Exit

from workbench.core import config as wb_config
from workbench.core import progress, runlog
from workbench.core.errors import WorkbenchError

# The exit status of a task interrupted by Ctrl-C (or SIGTERM): 128 + SIGINT, as shells report it.
INTERRUPTED = 130


def _config() -> wb_config.Config:
    """`$WORKBENCH_CONFIG`, or the nearest workbench.toml from the current directory up."""
    return wb_config.load()


def wb(*args: Any, logged: bool = False, **kwargs: Any) -> Callable[..., Any]:
    """@task whose WorkbenchError becomes one `error: …` line and a non-zero exit.

    Its progress is drawn as `--progress` says; with `logged` (bakes, promotes,
    sandboxes, netboot) the whole output goes to a run log, whose path ends the
    output. A task called with `--json` prints JSON on stdout in every case: on
    failure `{"error": …, "exit_code": N}`, and exits N.
    """

    def decorate(body: Callable[..., Any]) -> Any:
        signature = inspect.signature(body)
        run_name = body.__name__.replace("_", ".")

        @functools.wraps(body)
        def guarded(c: Any, *a: Any, **kw: Any) -> Any:
            as_json = bool(signature.bind_partial(c, *a, **kw).arguments.get("json", False))
            log: runlog.RunLog | None = None
            try:
                with _drawn(c, run_name if logged else None) as log:
                    return body(c, *a, **kw)
            except WorkbenchError as exc:
                _report(exc, exc.exit_code, as_json, log)
                raise Exit(f"error: {exc}{_log_hint(log)}", code=exc.exit_code) from None
            except KeyboardInterrupt:
                # Ctrl-C or SIGTERM, once the task has undone what it started: a script reading
                # `--json` still gets its JSON, and the shell its 128 + SIGINT.
                _report(KeyboardInterrupt("interrupted"), INTERRUPTED, as_json, log)
                raise Exit(f"interrupted{_log_hint(log)}", code=INTERRUPTED) from None
            except (BrokenPipeError, Exit):
                raise
            except Exception as exc:
                # A bug of ours: still JSON for a script, and the traceback for us.
                _report(exc, 1, as_json, log)
                raise

        return task(*args, **kwargs)(guarded)

    return decorate


def _options(c: Any) -> tuple[str | None, bool]:
    """`--progress` and `--verbose` (workbench/cli/main.py puts them in the context)."""
    try:
        options = c.config["workbench"]
        return options.get("progress"), bool(options.get("verbose"))
    except (KeyError, AttributeError, TypeError):
        return None, False


@contextlib.contextmanager
def _drawn(c: Any, run_name: str | None) -> Iterator[runlog.RunLog | None]:
    """The task's progress session, and its run log when it keeps one."""
    mode, verbose = _options(c)
    drawing = progress.choose_mode(mode)
    log = None
    if run_name is not None:
        cfg = _config()
        command = " ".join(["fab", *sys.argv[1:]])
        log = runlog.open_log(cfg.state_dir, run_name, command, cfg.workbench.keep_logs)
    code = 1
    try:
        with progress.session(drawing, log=log, verbose=verbose):
            yield log
        code = 0
    except WorkbenchError as exc:
        code = exc.exit_code
        if log is not None:
            # The log is what is left of a run in CI or a terminal long closed: it says why it failed.
            log.write("error", str(exc))
        raise
    except KeyboardInterrupt:
        code = INTERRUPTED
        raise
    finally:
        if log is not None:
            log.finish(code)
            if code == 0:
                # The last run's log is what `fab log` shows.
                sys.stderr.write(f"log: {_shown(log.path)} (fab log)\n")


def _shown(path: Path) -> str:
    """A path as short as it can be said from here."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def _log_hint(log: runlog.RunLog | None) -> str:
    return f"\n  the whole output: {_shown(log.path)} (fab log {log.id})" if log is not None else ""


def _report(exc: BaseException, code: int, as_json: bool, log: runlog.RunLog | None) -> None:
    """On failure, what `--json` promises on stdout."""
    if not as_json:
        return
    data: dict[str, Any] = {"error": str(exc) or type(exc).__name__, "exit_code": code}
    if log is not None:
        data["log"] = str(log.path)
    _print_json(data)


_CLOUD_INVENTORY_HELP = "the lab's inventory (default: [cloud] inventory)"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


# --- name ----------------------------------------------------------------------


@wb(positional=["host"], help={"host": "a host name, e.g. redis-sessions.production.wpdn", "json": "print JSON"})
def parse(c, host, json=False):
    """Parse a host name into role, variant, environment and domain."""
    from workbench.core import naming

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


@wb(logged=True, help={"force": "rebuild even if a base with the same inputs exists"})
def base(c, force=False):
    """Build the vanilla base image (debootstrap + import), unless it is up to date."""
    from workbench.build import base as wb_base
    from workbench.core.progress import human_size

    image = wb_base.build_base(_config(), force=force)
    state = "cached" if image.cached else "built"
    print(f"base {image.tag} {state}: id {image.id[7:19]}, {human_size(image.size)}, {image.seconds:.2f}s")


@wb(
    logged=True,
    name="bake",
    positional=["role"],
    help={
        "role": "the role to bake (a [roles.<name>] of workbench.toml), e.g. app",
        "all": "bake every role, in parallel up to [builder] parallel",
        "force": "bake even if an image with the same inputs exists",
        "keep_failed": "on failure keep the build container and candidate image (named <prefix>-failed-...; "
        "qemu builder: the candidate disk, under .workbench/images/qcow2/<role>/failed/)",
        "builder": "docker or qemu: the builder of this bake, instead of [builder] type "
        "(e.g. fab image.bake app --builder qemu for a qcow2)",
        "json": "print the results as JSON",
    },
)
def image_bake(c, role="", all=False, force=False, keep_failed=False, builder="", json=False):
    """Bake a role image with Packer and masterless Salt, verify it with testinfra, tag it <role>:<N> (or a qcow2)."""
    from workbench.build import bake as wb_bake
    from workbench.core.errors import ConfigError

    cfg = _config()
    if all == bool(role):
        raise ConfigError("give one role (fab image.bake app) or --all, not " + ("both" if all else "neither"))
    results = wb_bake.bake(
        cfg, list(cfg.roles) if all else [role], force=force, keep_failed=keep_failed, builder_type=builder
    )
    if json:
        _print_json([r.to_dict() for r in results])
        return
    for result in results:
        print(result.summary())


@wb(name="list", help={"role": "only this role", "json": "print JSON"})
def image_list(c, role="", json=False):
    """List accepted role images (container images and qcow2 disks): version, inputs hash, age, size, tests."""
    from workbench.build import disks as wb_disks
    from workbench.build import images as wb_images
    from workbench.core.progress import human_size

    cfg = _config()
    found = wb_images.list_images(cfg, role or None) + wb_disks.list_disks(cfg, role or None)
    if json:
        _print_json([i.to_dict() for i in found])
        return
    if not found:
        print("no role images yet (fab image.bake <role>)")
        return
    print(f"{'IMAGE':<28} {'INPUTS':<12} {'AGE':>5} {'SIZE':>9}  TESTS")
    for i in found:
        dirty = " (dirty checkout)" if i.git_dirty else ""
        where = f"  {i.path}" if i.path else ""
        print(f"{i.tag:<28} {i.inputs[:12]:<12} {wb_images.human_age(i.age_seconds):>5} "
              f"{human_size(i.size):>9}  {i.verify}: {i.tests}{dirty}{where}")


@wb(logged=True, name="publish", help={
    "role": "the role whose accepted image to publish, e.g. app",
    "version": "that version (default: the newest verified one)",
    "inventory": _CLOUD_INVENTORY_HELP,
    "json": "print the result as JSON"})
def image_publish(c, role, version=0, inventory="", json=False):
    """Upload a verified role image to the homelab cloud's glance as <prefix>/<role>:<N> (once per image)."""
    from workbench.cloud import publish

    result = publish.publish(_config(), role, version=version or None, inventory=inventory)
    if json:
        _print_json(result.to_dict())
        return
    print(result.summary())


@wb(name="prune", help={"keep": "versions to keep per role (newest)", "role": "only this role"})
def image_prune(c, keep=3, role=""):
    """Remove old role image versions (images and qcow2 disks), never one a release record points at."""
    from workbench.build import disks as wb_disks
    from workbench.build import images as wb_images
    from workbench.release import ledger

    cfg = _config()
    result = wb_images.prune(cfg, int(keep), ledger.referenced_images(cfg), role or None)
    removed_disks = wb_disks.prune(cfg, int(keep), role or None)
    for tag in [*result.removed, *removed_disks]:
        print(f"removed {tag}")
    for tag in result.kept_released:
        print(f"kept {tag}: a release points at it")
    print(f"pruned {len(result.removed) + len(removed_disks)} image(s), kept the newest {keep} per role")


# --- watch (operations) ---------------------------------------------------------


@wb(
    logged=True,
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
    from workbench.ops import watch as wb_watch

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
    from workbench.ops import watch as wb_watch

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
                # The first lines say what failed; `--json` has all of it.
                for line in outcome.detail.splitlines()[:4]:
                    print(f"    {line}")


@wb(name="unit", help={"write": "write the unit to this path instead of printing it"})
def watch_unit(c, write=""):
    """Print (or write) a systemd unit running `fab watch` as a service."""
    from workbench.ops import watch as wb_watch

    text = wb_watch.systemd_unit(_config(), Path(sys.argv[0]).resolve())
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


@wb(name="show", positional=["pool"], help={"pool": "only this pool (default: every pool)", "json": "print JSON"})
def pools_show(c, pool="", json=False):
    """Show each pool: its role, port, members (private/public) and the roles that use it."""
    import dataclasses

    from workbench.core import pools as wb_pools

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
    from workbench.core import pools as wb_pools

    document = wb_pools.render(_config(), role, environment)
    if env:
        for key, value in sorted(wb_pools.environment_variables(document).items()):
            print(f"{key}={value}")
        return
    _print_json(document)


pools_ns = Collection("pools")
pools_ns.add_task(pools_show)
pools_ns.add_task(pools_render)


# --- ssh (operations) --------------------------------------------------------------


@wb(
    name="config",
    help={
        "host": "only this host (and its jump box); an error if the inventory lacks it",
        "user": "user on every host (default: ops, the jumpbox role's account)",
        "identity_file": "private key to offer (IdentityFile, IdentitiesOnly)",
        "known_hosts": "keep host keys in this file, accepting new hosts (sandboxes)",
        "output": "write the configuration here (mode 0600) instead of printing it",
        "no_releases": "leave out the releases serving now (pools only)",
    },
)
def ssh_config(c, host="", user="ops", identity_file="", known_hosts="", output="", no_releases=False):
    """Print an OpenSSH client config: every internal host (pools, releases) through the jump box (ProxyJump)."""
    from workbench.ops import sshconfig

    cfg = _config()
    inventory = sshconfig.inventory(cfg, releases=not no_releases)
    text = sshconfig.render(
        cfg, inventory, user=user, identity_file=identity_file, known_hosts=known_hosts, only=host
    )
    if output:
        sshconfig.write(Path(output), text)
        print(f"wrote {output}: ssh -F {output} <host> ({len(inventory.names())} hosts)")
        return
    print(text, end="")


ssh_ns = Collection("ssh")
ssh_ns.add_task(ssh_config)


# --- netboot -------------------------------------------------------------------

_INVENTORY_HELP = "inventory file (default: netboot/inventory.toml)"


def _inventory(cfg: Any, inventory: str) -> Any:
    from workbench.netboot import inventory as wb_inventory

    return wb_inventory.load(cfg, inventory or None)


@wb(logged=True, name="build",
    help={"force": "rebuild the live image even if it is up to date", "inventory": _INVENTORY_HELP})
def netboot_build(c, force=False, inventory=""):
    """Build the live hypervisor image (kernel, initrd, squashfs) and the iPXE scripts."""
    from workbench.netboot import artifacts, boot, node

    cfg = _config()
    inv = _inventory(cfg, inventory)
    live = artifacts.build_live(cfg, force=force)
    scripts = boot.write_tree(inv, live, node.node_dir(cfg) / "http")
    state = "cached" if live.cached else f"built in {live.seconds:.0f}s"
    sizes = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in live.sizes.items())
    print(f"live image {live.digest} {state}: {sizes}; {len(scripts)} iPXE scripts in {scripts[0].parent}")


@wb(
    logged=True,
    name="serve",
    help={
        "inventory": _INVENTORY_HELP,
        "interface": "also serve the LAN behind this host interface, through a macvlan of it "
        "(default: the inventory's [network] interface)",
    },
)
def netboot_serve(c, inventory="", interface=""):
    """Run the networking node (DHCP, TFTP, DNS, HTTP) in its namespace until Ctrl-C or netboot.stop."""
    from workbench.netboot import node

    cfg = _config()
    node.serve(cfg, _inventory(cfg, inventory), interface=interface or None)


@wb(name="status", help={"inventory": _INVENTORY_HELP, "json": "print JSON"})
def netboot_status(c, inventory="", json=False):
    """Show each node's boot timeline: DHCP, iPXE, kernel, initrd, root image, report."""
    from workbench.netboot import netns, node, timeline

    cfg = _config()
    lines = timeline.build(_inventory(cfg, inventory), node.node_dir(cfg))
    running = netns.exists(netns.namespace_name(cfg.prefix))
    interface = node.serving(cfg).get("interface", "") if running else ""
    if json:
        _print_json({"running": running, "interface": interface, "nodes": [t.to_dict() for t in lines]})
        return
    where = f", on the LAN of {interface}" if interface else ""
    print(f"node: {'running' if running else 'not running'} (namespace {netns.namespace_name(cfg.prefix)}{where})")
    print(timeline.render(lines))


@wb(name="stop")
def netboot_stop(c):
    """Stop the networking node and remove its namespace (also after a crash)."""
    from workbench.netboot import node

    done = node.stop(_config())
    print("\n".join(done) if done else "netboot: nothing was running")


@wb(
    logged=True,
    name="test",
    help={
        "node": "MAC or name of the node to boot (default: the first)",
        "inventory": _INVENTORY_HELP,
        "firmware": "bios (qemu's iPXE ROM) or uefi (OVMF's PXE fetches ipxe.efi over TFTP)",
        "dhcp_mode": "full or proxy (a stand-in home router lends the address): overrides the inventory's mode",
        "json": "print the result as JSON",
    },
)
def netboot_test(c, node="", inventory="", firmware="bios", dhcp_mode="", json=False):
    """Prove the boot end to end: a qemu VM PXE-boots the live system in a namespace and reports back."""
    from workbench.netboot import labtest

    cfg = _config()
    result = labtest.run_test(cfg, _inventory(cfg, inventory), node or None, firmware, dhcp_mode or None)
    if json:
        _print_json(result.to_dict())
        return
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in result.phases.items())
    print(
        f"netboot test passed ({result.dhcp_mode} DHCP): {result.reported_name} reported role "
        f"{result.reported_role} from {result.address} {result.boot_seconds:.1f}s after power-on ({phases}); "
        "local disk unchanged"
    )


netboot_ns = Collection("netboot", netboot_build, netboot_serve, netboot_status, netboot_stop, netboot_test)


# --- cloud ----------------------------------------------------------------------



@wb(logged=True, name="up", help={
    "inventory": _CLOUD_INVENTORY_HELP,
    "vms": "also boot the first N hypervisors of the inventory as qemu VMs on this machine (default: 0, real PCs)",
    "json": "print the result as JSON",
})
def cloud_up(c, inventory="", vms=0, json=False):
    """Bring up the homelab OpenStack: the networking node, the controller (baked if needed), the hypervisors."""
    from workbench.cloud import cloud

    result = cloud.up(_config(), inventory, vms=int(vms))
    if json:
        _print_json(result.to_dict())
        return
    print(result.summary())


@wb(name="status", help={"inventory": _CLOUD_INVENTORY_HELP, "json": "print JSON"})
def cloud_status(c, inventory="", json=False):
    """Show the node, the controller and each of its services, the hypervisors and their free capacity."""
    from workbench.cloud import cloud

    found = cloud.status(_config(), inventory)
    if json:
        _print_json(found.to_dict())
        return
    print(found.render())


@wb(name="openrc", help={"member": "as the lab project's member user instead of the admin",
                         "inventory": _CLOUD_INVENTORY_HELP})
def cloud_openrc(c, member=False, inventory=""):
    """Print the variables `openstack` needs: eval "$(fab cloud.openrc)" && openstack server list."""
    import shlex

    from workbench.cloud import cloud

    for name, value in cloud.openrc(_config(), member=member, inventory=inventory).items():
        print(f"export {name}={shlex.quote(value)}")


@wb(name="down", help={
    "purge": "also delete the cloud's databases, images, keys and passwords (the hypervisors' files too)",
    "json": "print JSON"})
def cloud_down(c, purge=False, json=False):
    """Stop the controller and the networking node; the cloud's data stays unless --purge."""
    from workbench.cloud import cloud

    result = cloud.down(_config(), purge=purge)
    if json:
        _print_json(result.to_dict())
        return
    print("\n".join(result.done) if result.done else "cloud: nothing was running")
    for item in result.purged:
        print(f"deleted {item}")


@wb(logged=True, name="test", help={"inventory": _CLOUD_INVENTORY_HELP, "json": "print the result as JSON"})
def cloud_test(c, inventory="", json=False):
    """Boot a server from an image made here on a netbooted hypervisor, check it answers, delete it."""
    from workbench.cloud import cloud

    result = cloud.smoke_test(_config(), inventory)
    if json:
        _print_json(result.to_dict())
        return
    print(result.summary())


cloud_ns = Collection("cloud", cloud_up, cloud_status, cloud_openrc, cloud_test, cloud_down)


# --- sandbox --------------------------------------------------------------------

_SANDBOX_HELP = {"role": "a role or a sandbox name, e.g. app or app.sandbox.wpdn (default: [workbench] default_role)"}
_SANDBOX_JSON = {**_SANDBOX_HELP, "json": "print JSON"}


@wb(logged=True, name="up", help={**_SANDBOX_JSON, "provider": "docker (default), libvirt or virtualbox"})
def sandbox_up(c, role="", provider="", json=False):
    """Bring up a role's sandbox (<role>.sandbox.<domain>) and apply its states: `fab sandbox.up app`."""
    from workbench.sandbox import sandboxes as sandbox

    result = sandbox.up(_config(), role or None, provider or None)
    if json:
        _print_json(result.to_dict())
        return
    done = result.provisioned
    print(
        f"sandbox {done.sandbox} up ({result.provider}, {done.address or 'no address'}): "
        f"{done.applied} states, {len(done.changed)} changed, {result.seconds}s"
    )


@wb(logged=True, name="provision", help=_SANDBOX_JSON)
def sandbox_provision(c, role="", json=False):
    """Re-apply the role's states from the live salt/ tree in its running sandbox."""
    from workbench.sandbox import sandboxes as sandbox

    result = sandbox.provision(_config(), role or None)
    if json:
        _print_json(result.to_dict())
        return
    changed = ", ".join(result.changed) or "nothing"
    print(f"sandbox {result.sandbox} provisioned: {result.applied} states, changed {changed}, {result.seconds}s")


@wb(logged=True, name="test", help=_SANDBOX_HELP)
def sandbox_test(c, role=""):
    """Run the role's testinfra tests against its sandbox, over SSH."""
    from workbench.sandbox import sandboxes as sandbox

    result = sandbox.test(_config(), role or None)
    print(f"sandbox {result.sandbox}: {result.tests} {result.summary or 'passed'}, {result.seconds}s")


@wb(name="ssh", help={**_SANDBOX_HELP, "command": "run this command (vagrant ssh -c) and exit"})
def sandbox_ssh(c, role="", command=""):
    """Log into a sandbox (vagrant ssh), or run one command there with -c."""
    from workbench.sandbox import sandboxes as sandbox

    code = sandbox.ssh(_config(), role or None, command or None)
    if code != 0:
        raise Exit(code=code)


@wb(name="status", help={"json": "print JSON"})
def sandbox_status(c, json=False):
    """List the sandboxes: name, role, Vagrant state, provider, address on the sandbox network."""
    from workbench.sandbox import sandboxes as sandbox

    rows = sandbox.status(_config())
    if json:
        _print_json([r.to_dict() for r in rows])
        return
    for r in rows:
        print(f"{r.name:<32} {r.role:<12} {r.state:<12} {r.provider or '-':<10} {r.address or '-'}")


@wb(logged=True, name="halt", help=_SANDBOX_HELP)
def sandbox_halt(c, role=""):
    """Stop a sandbox, keeping it (vagrant halt); `sandbox.up` starts it again."""
    from workbench.sandbox import sandboxes as sandbox

    sandbox.halt(_config(), role or None)
    print("halted")


@wb(logged=True, name="destroy", help={**_SANDBOX_HELP, "all": "destroy every sandbox"})
def sandbox_destroy(c, role="", all=False):
    """Remove a sandbox and everything it left (also after a failed up)."""
    from workbench.sandbox import sandboxes as sandbox

    removed = sandbox.destroy(_config(), role or None, all=all)
    print(f"destroyed: {', '.join(removed)}" if removed else "no sandbox to destroy")


sandbox_ns = Collection(
    "sandbox", sandbox_up, sandbox_provision, sandbox_test, sandbox_ssh, sandbox_status, sandbox_halt, sandbox_destroy
)


# --- release -------------------------------------------------------------------

_JSON = "print JSON"


def _release_line(r: Any) -> str:
    what = f"{r.action} of {r.rollback_of}" if r.rollback_of else r.action
    status = "" if r.status == "released" else f"  [{r.status}]"
    return (f"{r.tag:<10} {r.environment:<11} {r.image:<22} {r.digest[7:19] or '-':<12} "
            f"{r.at:<25} {r.who:<8} {what}: {r.message or '-'}{status}")


@wb(
    logged=True,
    name="promote",
    positional=["role"],
    help={
        "role": "the role to promote, e.g. app",
        "env": "the environment to promote into, e.g. staging",
        "version": "the image version (app:7); default: the newest verified image",
        "message": "why (kept in the ledger)",
        "json": "print the release record as JSON",
    },
)
def release_promote(c, role, env="", version=0, message="", json=False):
    """Promote the role's newest verified image (or --version) into an environment; prints the release tag."""
    from workbench.release import releases as release

    if not env:
        raise WorkbenchError("release.promote needs --env (e.g. --env staging)")
    done = release.promote(_config(), role, env, version=version or None, message=message)
    if json:
        _print_json(done.to_dict())
        return
    print(f"{done.tag} serves {done.role} in {done.environment}: {done.image} {_booted(done)}")


def _booted(r: Any) -> str:
    """What the release's instances run: the registry digest, or on a cloud the glance image too."""
    return f"{r.digest} (glance image {r.boot_image})" if r.boot_image else r.digest


@wb(
    logged=True,
    name="rollback",
    positional=["tag"],
    help={
        "tag": "the release to put back, e.g. app-12 (or none, with --env and --role: back one release)",
        "env": "the environment (with --role, instead of a tag)",
        "role": "the role (with --env, instead of a tag)",
        "message": "why (kept in the ledger)",
        "json": "print the release record as JSON",
    },
)
def release_rollback(c, tag="", env="", role="", message="", json=False):
    """Put an earlier release's exact digest back into its environment, recorded as a new release."""
    from workbench.release import releases as release

    done = release.rollback(_config(), tag or None, env or None, role or None, message=message)
    if json:
        _print_json(done.to_dict())
        return
    print(f"{done.tag} serves {done.role} in {done.environment}: rollback to {done.rollback_of}, {_booted(done)}")


@wb(name="list", help={"json": _JSON})
def release_list(c, json=False):
    """The release serving each role in each environment."""
    from workbench.release import releases as release

    cfg = _config()
    serving = release.current(cfg)
    standbys = release.standbys(cfg)
    if json:
        rows = []
        for r in serving:
            standby = standbys.get((r.environment, r.role))
            until = _iso(standby[1]) if standby else None
            rows.append({**r.to_dict(), "standby": {"tag": standby[0], "until": until} if standby else None})
        _print_json(rows)
        return
    if not serving:
        print("nothing released yet (fab release.promote <role> --env <environment>)")
    for r in serving:
        print(_release_line(r))
        standby = standbys.get((r.environment, r.role))
        if standby:
            print(f"{'':<10} {'':<11} warm standby: {standby[0]} until {_iso(standby[1])} (a rollback to it is a "
                  "frontend switch)")


def _iso(epoch: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="seconds")


@wb(name="history", help={"env": "only this environment", "role": "only this role", "json": _JSON})
def release_history(c, env="", role="", json=False):
    """Every promotion and rollback, oldest first (failed and aborted attempts included)."""
    from workbench.release import releases as release

    records = release.history(_config(), env or None, role or None)
    if json:
        _print_json([r.to_dict() for r in records])
        return
    if not records:
        print("no releases")
    for r in records:
        print(_release_line(r))


@wb(name="show", positional=["tag"], help={"tag": "a release tag, e.g. app-12", "json": _JSON})
def release_show(c, tag, json=False):
    """One release record in full."""
    from workbench.release import releases as release

    record, pinned = release.show(_config(), tag)
    data = {**record.to_dict(), "pinned": pinned}
    if json:
        _print_json(data)
        return
    for key, value in data.items():
        print(f"{key:<12} {value if value not in (None, '') else '-'}")


@wb(name="diff", positional=["tag_a", "tag_b"], help={"tag_a": "older release", "tag_b": "newer release",
                                                         "json": _JSON})
def release_diff(c, tag_a, tag_b, json=False):
    """Packages added, removed, upgraded between two releases' images, and their state-tree changes."""
    from workbench.release import diff as rdiff

    result = rdiff.diff(_config(), tag_a, tag_b)
    if json:
        _print_json(result.to_dict())
        return
    print(rdiff.render(result))


@wb(name="pin", positional=["tag"], help={"tag": "the release to keep forever, e.g. app-12"})
def release_pin(c, tag):
    """Keep a release rollback-able forever (retention never prunes it)."""
    from workbench.release import releases as release

    fresh = release.pin(_config(), tag)
    print(f"{tag} pinned" if fresh else f"{tag} was already pinned")


@wb(name="prune", help={"dry_run": "only say what would be removed"})
def release_prune(c, dry_run=False):
    """Remove local images of releases outside every retention window and not pinned (the registry keeps all)."""
    from workbench.release import releases as release

    removed = release.prune(_config(), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for line in removed:
        print(f"{verb} {line}")
    print(f"{len(removed)} image(s) {verb}")


@wb(
    logged=True,
    name="down",
    help={
        "env": "the environment to take down",
        "role": "only this role's release",
        "purge_data": "also delete the data volumes of stateful roles (a database is gone for good)",
        "json": _JSON,
    },
)
def release_down(c, env="", role="", purge_data=False, json=False):
    """Stop what an environment runs (frontend included) through its deploy target; data volumes stay."""
    from workbench.core.errors import ConfigError
    from workbench.core.progress import human_size
    from workbench.release import releases as release

    if not env:
        raise ConfigError("release.down needs --env (e.g. fab release.down --env staging)")
    result = release.down(_config(), env, role or None, purge_data=purge_data)
    if json:
        _print_json(dataclasses.asdict(result))
        return
    for name in result.stopped:
        print(f"stopped {name}")
    what = f"{role} in {env}" if role else env
    marked = ", ".join(result.roles) or "nothing was serving"
    print(f"{what} is down ({marked}); the ledger keeps every record, the next promote brings it back")
    for volume in result.kept:
        size = f", {human_size(volume.size)}" if volume.size >= 0 else ""
        print(f"kept {volume.name} ({volume.path} of {volume.role}{size}): --purge-data deletes it")
    for volume in result.purged:
        print(f"deleted {volume.name} ({volume.path} of {volume.role} in {env})")


release_ns = Collection(
    "release", release_promote, release_rollback, release_list, release_history, release_show, release_diff,
    release_pin, release_prune, release_down,
)


# --- db (backups of database roles) -----------------------------------------------

_DB_ROLE = "the database role (default: the one role with [roles.<r>] dbms)"


@wb(name="backup", help={"env": "the environment whose database to back up", "role": _DB_ROLE, "json": _JSON})
def db_backup(c, env="", role="", json=False):
    """Back up the database serving in an environment (mariadb-dump, gzip, sha256) under the state directory."""
    from workbench.core.errors import ConfigError
    from workbench.core.progress import human_size
    from workbench.release import backup

    if not env:
        raise ConfigError("db.backup needs --env (e.g. fab db.backup --env staging)")
    cfg = _config()
    made = backup.backup(cfg, env, role or None)
    if json:
        _print_json(made.to_dict())
        return
    where = backup.directory(cfg, made.environment, made.role) / made.name
    print(f"{where}: {human_size(made.size)}, sha256 {made.sha256}, from {made.release}, {made.seconds:.1f}s")


@wb(name="backups", help={"env": "only this environment", "role": "only this role", "json": _JSON})
def db_backups(c, env="", role="", json=False):
    """List the backups: name, environment, when, size, release, sha256."""
    from workbench.core.progress import human_size
    from workbench.release import backup

    found = backup.backups(_config(), env or None, role or None)
    if json:
        _print_json([b.to_dict() for b in found])
        return
    if not found:
        print("no backups yet (fab db.backup --env <environment>)")
    for b in found:
        print(f"{b.name:<42} {b.environment:<11} {b.created:<25} {human_size(b.size):>9} {b.release:<8} "
              f"{b.sha256[:16]}")


@wb(
    name="restore",
    positional=["backup"],
    help={"backup": "a backup's name as db.backups lists it (or its path)", "env": "the environment to restore into",
          "role": _DB_ROLE, "json": _JSON},
)
def db_restore(c, backup="", env="", role="", json=False):
    """Restore a backup into an environment's database: checked, loaded aside, then switched in (paused, resumed)."""
    from workbench.core.errors import ConfigError
    from workbench.release import backup as wb_backup

    if not backup or not env:
        raise ConfigError("db.restore needs a backup and --env (e.g. fab db.restore db-staging-....sql.gz --env "
                          "staging; fab db.backups lists them)")
    done = wb_backup.restore(_config(), env, backup, role or None)
    if json:
        _print_json(dataclasses.asdict(done))
        return
    print(f"{done.backup} restored into {done.environment}: {done.release} serves it (unavailable "
          f"{done.downtime:.1f}s of {done.seconds:.1f}s); the data before is kept in {done.before}")


db_ns = Collection("db", db_backup, db_backups, db_restore)


# --- registry --------------------------------------------------------------------


@wb(name="up")
def registry_up(c):
    """Start the local registry on loopback in the background (data under the state directory)."""
    from workbench.release import registry

    cfg = _config()
    reg, started = registry.up(cfg)
    print(f"registry {'started' if started else 'already running'} on {reg.address} (pid {reg.pid})")


@wb(name="down")
def registry_down(c):
    """Stop the background registry (its data stays)."""
    from workbench.release import registry

    print("registry stopped" if registry.down(_config()) else "registry was not running")


@wb(name="status", help={"json": _JSON})
def registry_status(c, json=False):
    """Whether the background registry runs, and where."""
    from workbench.release import registry

    cfg = _config()
    reg = registry.status(cfg)
    data = {"running": reg is not None, "address": f"{cfg.registry.host}:{cfg.registry.port}",
            "pid": reg.pid if reg else None, "data": str(registry.directory(cfg) / "data")}
    if json:
        _print_json(data)
        return
    print(f"registry {'running' if reg else 'stopped'} on {data['address']} (data {data['data']})")


registry_ns = Collection("registry", registry_up, registry_down, registry_status)


@wb(logged=True, help={"env": "environment to promote to and roll back in (default staging)"})
def demo(c, env="staging"):
    """The main job from nothing: base, bake, promote, change, promote, roll back by tag, history."""
    from workbench.cli import demo as wb_demo

    result = wb_demo.run(_config(), env)
    labels = ("after the first promote", "after the second promote", f"after rollback to {result.first.tag}")
    print(f"\ndemo done: {result.url} answered")
    for label, seen in zip(labels, result.observed, strict=True):
        page = "changed page" if seen.changed_page else "original page"
        print(f"  {label:<28} release {seen.release:<10} {page}")
    print(f"history of app in {env} (fab release.history):")
    for r in result.history:
        what = f"{r.action} of {r.rollback_of}" if r.rollback_of else r.action
        print(f"  {r.tag:<8} {r.image:<20} {r.digest[7:19]}  {what}: {r.message}")
    print(f"\nopen {result.url}/ ({env}'s frontend: {result.rollback.tag} serves the original page)")
    print("try next:")
    print(f"  fab release.history --env {env} --role app")
    print(f"  fab release.rollback {result.second.tag}    # the changed page back, by its tag")
    print("  fab status                      # the whole workbench on one screen")
    print(f"  fab release.down --env {env}    # stop what the demo runs")


@wb(help={"json": _JSON})
def status(c, json=False):
    """The whole workbench on one screen: base, images, releases and health, daemons, sandboxes, netboot."""
    from workbench.ops import status as wb_status

    report = wb_status.status(_config())
    if json:
        _print_json(report.to_dict())
        return
    print(wb_status.render(report))


@wb(
    name="log",
    positional=["run"],
    help={
        "run": "a run id, or a unique part of it (default: the last run)",
        "list": "list the kept runs instead: id, exit code, time, command",
        "path": "print the log's path only",
        "json": "with --list: print JSON",
    },
)
def run_log(c, run="", list=False, path=False, json=False):
    """Show the whole output of the last run (a bake, promote, sandbox or netboot run), or of another."""
    cfg = _config()
    if list:
        kept = runlog.runs(cfg.state_dir)
        if json:
            _print_json([dataclasses.asdict(r) for r in kept])
            return
        for r in kept:
            how = "running or killed" if r.exit_code is None else f"exit {r.exit_code} after {r.seconds:.0f}s"
            print(f"{r.id:<44} {how:<22} {r.command}")
        if not kept:
            print(f"no run logs yet in {runlog.log_dir(cfg.state_dir)}")
        return
    found = runlog.find(cfg.state_dir, run)
    if path:
        print(found)
        return
    with open(found, encoding="utf-8", errors="replace") as text:
        for line in text:
            sys.stdout.write(line)


name_ns = Collection("name", parse)
config_ns = Collection("config", check, reference)
image_ns = Collection("image", base, image_bake, image_list, image_publish, image_prune)

ns = Collection(name_ns, config_ns, image_ns, watch_ns, pools_ns, ssh_ns, release_ns, registry_ns, db_ns)
ns.add_collection(netboot_ns)
ns.add_collection(cloud_ns)
ns.add_collection(sandbox_ns)
ns.add_task(demo)
ns.add_task(status)
ns.add_task(run_log)
