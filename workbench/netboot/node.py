"""The networking node: the lab namespace, HTTP and dnsmasq, composed and torn down together.

`running()` is the context manager the test and `fab netboot.serve` share.
`serve()` runs it in the foreground until SIGTERM or Ctrl-C, leaving a state
file so `stop()` (from another shell) can end it, or clean up after a node that
was killed outright.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from workbench.core import files, progress, run
from workbench.core.config import Config
from workbench.netboot import boot, dnsmasq, httpserve, netns, nfs, uplink
from workbench.netboot.artifacts import LiveImage, require_live
from workbench.netboot.inventory import Inventory


@dataclass(frozen=True)
class Running:
    inventory: Inventory
    live: LiveImage
    lab: netns.Lab
    state: Path
    pids: dict[str, int]
    # The macvlan on the LAN behind a host interface, when serving one (uplink.py).
    lan: uplink.Uplink | None = None


# What each daemon of the record runs: `stop` signals a recorded pid only while that
# process still runs this program on a file of the node's directory (`run.owns`).
PROGRAMS = {"http": "workbench.netboot.httpserve", "nfs": "ganesha.nfsd", "dnsmasq": "dnsmasq"}


def node_dir(config: Config) -> Path:
    return config.state_dir / "netboot" / "node"


def http_root(config: Config) -> Path:
    """What the node's HTTP server serves: boot/ and live/ (rewritten at each start), cloud/."""
    return node_dir(config) / "http"


def cloud_config_dir(config: Config) -> Path:
    """Where the cloud (`fab cloud.up`) leaves each node's configuration, `<name>.json`.

    The node serves `cloud/<name>.json` only to the address the inventory reserves for
    `<name>` (httpserve); a node start rewrites boot/ and live/ but leaves this directory
    and its files alone. The files hold secrets: write them 0600.
    """
    return http_root(config) / httpserve.CLOUD


def names_dir(config: Config) -> Path:
    """Names the node's DNS answers beyond the inventory's: one hosts file per name (`set_name`)."""
    return node_dir(config) / "names"


def set_name(config: Config, name: str, address: str | None) -> None:
    """Have the node's DNS answer `name` with `address` (None: no longer answer it).

    The cloud's servers come and go while the node runs: their names live in
    hosts files that dnsmasq reads again on SIGHUP, which also drops what it
    had cached of a removed one. Nothing to tell when no node runs: it reads
    them at its next start.
    """
    path = names_dir(config) / name
    if address is None:
        if not path.exists():
            return
        path.unlink()
    else:
        names_dir(config).mkdir(parents=True, exist_ok=True)
        files.write_whole(path, f"{address} {name}\n")
    pid = serving(config).get("pids", {}).get("dnsmasq")
    if pid and run.owns(pid, program=PROGRAMS["dnsmasq"], marker=f"{node_dir(config)}/"):
        os.kill(pid, signal.SIGHUP)


def _state_file(config: Config) -> Path:
    return node_dir(config) / "node.json"


def serving(config: Config) -> dict[str, Any]:
    """What the running node recorded: namespace, pids, the host interface it serves ("" for none)."""
    path = _state_file(config)
    return json.loads(path.read_text()) if path.is_file() else {}


def _reset(state: Path) -> None:
    """A new node starts a new timeline: the previous run's logs and reports go."""
    for name in ("dnsmasq.log", "dnsmasq.out", "http.jsonl", "http.out", "leases", "router/router.log"):
        (state / name).unlink(missing_ok=True)
    reports = state / "reports"
    if reports.is_dir():
        for path in reports.glob("*.json"):
            path.unlink()


@contextmanager
def running(config: Config, inv: Inventory, live: LiveImage | None = None, interface: str = "") -> Iterator[Running]:
    """The node serving `inv` in namespace `<prefix>-nb` until the block ends.

    With `interface`, also the LAN behind that host interface, through a macvlan
    of it on the node's bridge (uplink.py); without, the namespace stays isolated.
    """
    name = netns.namespace_name(config.prefix)
    # Before anything is touched: a second node must not reset the running one's logs.
    netns.check_free(name)
    if interface:
        uplink.check(interface)
    live = live or require_live(config)
    state = node_dir(config)
    state.mkdir(parents=True, exist_ok=True)
    inv.export.mkdir(parents=True, exist_ok=True)
    _reset(state)
    root = http_root(config)
    boot.write_tree(inv, live, root)
    # The cloud's per-node files: kept from run to run, readable by root only.
    cloud_config_dir(config).mkdir(exist_ok=True)
    cloud_config_dir(config).chmod(0o700)
    # Who may fetch which cloud/<name>.json: each node's reserved address, from the inventory.
    clients = state / "cloud-clients.json"
    clients.write_text(json.dumps({n.name: n.address for n in inv.nodes}, indent=2, sort_keys=True))
    net = inv.network
    with ExitStack() as stack:
        lab = stack.enter_context(netns.lab(name, net.server, net.prefixlen))
        lan: uplink.Uplink | None = None
        if interface:
            stack.callback(uplink.detach, lab)
            lan = uplink.attach(lab, interface)
        http = stack.enter_context(httpserve.serving(root, net.server, net.http_port, state, lab.name, clients=clients))
        share = nfs.Plan(net.server, inv.export, state / "nfs")
        persist = stack.enter_context(nfs.serving(share, net.subnet, lab.name))
        plan = dnsmasq.Plan(lab.bridge, state / "tftp", state / "dnsmasq.log", state / "leases",
                            state / "dnsmasq.conf", lan is not None, names_dir(config))
        dns = stack.enter_context(dnsmasq.serving(inv, plan, lab.name))
        pids = {"http": http.pid, "nfs": persist.pid, "dnsmasq": dns.pid}
        record = {"netns": lab.name, "pids": pids, "serve": os.getpid(), "interface": interface}
        # Whole or not at all: `cloud.up` polls this file while the node starts, and once read it
        # empty (written but not yet filled) and failed on it.
        files.write_whole(_state_file(config), json.dumps(record))
        stack.callback(_state_file(config).unlink, missing_ok=True)
        yield Running(inv, live, lab, state, pids, lan)


def serve(config: Config, inv: Inventory, until: threading.Event | None = None, interface: str | None = None) -> None:
    """Run the node in the foreground until SIGTERM, SIGINT or `until` is set.

    `interface` (default: the inventory's [network] interface) puts it on the LAN behind that host interface.
    """
    stop = until or threading.Event()
    lan = inv.network.interface if interface is None else interface
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    scope = "netboot serve"
    try:
        with running(config, inv, interface=lan) as node:
            net = inv.network
            where = f"namespace {node.lab.name}"
            progress.step(scope, f"{where}: {net.mode} DHCP, TFTP, DNS ({net.domain}) on {net.server}")
            if node.lan is not None:
                up = node.lan
                progress.step(scope, f"on the LAN of {up.interface}: macvlan {up.link} ({up.mac}) on {node.lab.bridge}")
            progress.step(scope, f"HTTP {net.http}/ (live image {node.live.digest}), reports at {net.http}/report")
            progress.step(scope, f"NFSv4 {net.server}:{nfs.PSEUDO} -> {inv.export} (the nodes' persistence)")
            for n in inv.nodes:
                progress.detail(f"{n.mac}  {n.address:<15} {n.name}  role {n.role}")
            progress.step(scope, "serving; `fab netboot.status` shows boots, `fab netboot.stop` or Ctrl-C ends it")
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    progress.step(scope, "stopped: dnsmasq, HTTP and NFS ended, namespace removed")


def stop(config: Config, timeout: float = 20.0) -> list[str]:
    """End a running node (and anything a killed one left); what was done, one line each.

    Nothing is signalled on the record's word alone: a daemon only while `run.owns`
    says it still is one of this node's, the node's own process only while it is
    the parent of one of them (pids are reused; a node killed outright leaves its
    daemons to init, and its pid to whoever comes next).
    """
    done: list[str] = []
    path = _state_file(config)
    data = serving(config)
    marker = f"{node_dir(config)}/"
    daemons = {
        what: (pid, partial(run.owns, program=PROGRAMS.get(what, what), marker=marker))
        for what, pid in data.get("pids", {}).items()
    }
    serve_pid = data.get("serve")

    def holds_daemons(pid: int) -> bool:
        return any(run.parent(daemon) == pid and ours(daemon) for daemon, ours in daemons.values())

    # SIGTERM: the node stops its daemons and removes its namespace itself; SIGKILL
    # after `timeout` if it hangs, and what it left goes below.
    if serve_pid and serve_pid != os.getpid() and run.stop_process(serve_pid, holds_daemons, grace=timeout):
        done.append(f"stopped the node (pid {serve_pid})")
    for what, (pid, ours) in daemons.items():
        if run.stop_process(pid, ours, grace=1.0, first=signal.SIGKILL):
            done.append(f"killed a leftover {what} (pid {pid})")
    # The lab test's stand-in router too; either may still hold a process of a killed run.
    for name in (netns.router_namespace_name(config.prefix), netns.namespace_name(config.prefix)):
        if netns.remove(name):
            done.append(f"removed namespace {name}")
    path.unlink(missing_ok=True)
    return done
