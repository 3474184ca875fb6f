#!/usr/bin/python3
"""Tell the networking node this live system is up: host name, role, uptime.

What it reports is also left in /run/workbench/report.json (workbench-cloud reads the
name, address, interface and the persistence mount from there, and reports again).
"""

import glob
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request


def read(path):
    with open(path) as f:
        return f.read()


def dhcp_name():
    values = net_conf()
    host, domain = values.get("HOSTNAME", ""), values.get("DNSDOMAIN", "")
    if host and domain and "." not in host:
        return f"{host}.{domain}"
    return host


def node_name(args):
    """The name the node's iPXE script gave (wb.name=), else the one DHCP gave."""
    return args.get("wb.name") or dhcp_name()


def net_conf():
    values = {}
    for path in sorted(glob.glob("/run/net-*.conf")):
        for line in read(path).splitlines():
            key, _, value = line.strip().partition("=")
            values.setdefault(key, (shlex.split(value) or [""])[0])
    return values


def own_mac():
    """The MAC of the interface the initramfs configured (DEVICE= in /run/net-*.conf)."""
    try:
        return read(f"/sys/class/net/{net_conf().get('DEVICE', '')}/address").strip()
    except OSError:
        return ""


def persist(source, name, report):
    """Mount the node's NFS export (wb.persist=SERVER:/persist) and leave a file on it."""
    target = "/run/workbench/persist"
    os.makedirs(target, exist_ok=True)
    server = source.split(":", 1)[0]
    # No mount.nfs helper in the image: the kernel takes the options as text itself.
    own = net_conf().get("IPV4ADDR", "0.0.0.0")
    # hard: a hypervisor's instances live here (their disks are loop devices on these files), and a
    # soft mount turns a slow answer from the node into I/O errors inside a running server (seen
    # with timeo=100 on a loaded host: the server's file system aborted its journal). A node that
    # goes away stalls what writes here until it is back, as any NFS-backed VM storage does.
    options = f"vers=4.1,proto=tcp,hard,timeo=600,addr={server},clientaddr={own}"
    try:
        done = subprocess.run(
            ["mount", "-t", "nfs4", "-o", options, source, target], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return "mount failed: no answer from the NFS server in 60s"
    if done.returncode != 0:
        return "mount failed: " + (done.stderr or done.stdout).strip()
    folder = os.path.join(target, name or "unknown")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "last-boot.json"), "w") as file:
        json.dump(report, file, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())
    return os.path.join(name or "unknown", "last-boot.json")


def main():
    args = dict(a.split("=", 1) for a in read("/proc/cmdline").split() if "=" in a)
    name = node_name(args)
    if name:
        socket.sethostname(name.split(".")[0])
    conf = net_conf()
    report = {
        "name": name,
        # This boot: a later report with the same id (workbench-cloud's) updates this one.
        "boot": read("/proc/sys/kernel/random/boot_id").strip(),
        "mac": own_mac(),
        "interface": conf.get("DEVICE", ""),
        "address": conf.get("IPV4ADDR", ""),
        "role": args.get("wb.role", ""),
        "image_role": read("/etc/workbench/role").strip(),
        "uptime": float(read("/proc/uptime").split()[0]),
    }
    if args.get("wb.persist"):
        report["persisted"] = persist(args["wb.persist"], name, dict(report))
    os.makedirs("/run/workbench", exist_ok=True)
    with open("/run/workbench/report.json", "w") as saved:
        json.dump(report, saved, sort_keys=True)
    line = "workbench-report: " + json.dumps(report, sort_keys=True)
    with open("/dev/console", "w") as console:
        console.write(line + "\n")
    url = args.get("wb.report")
    if not url:
        return 0
    body = json.dumps(report).encode()
    for _ in range(30):
        try:
            request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=5).read()
            return 0
        except OSError as exc:
            print(f"report to {url} failed: {exc}; retrying", file=sys.stderr)
            time.sleep(2)
    return 1


sys.exit(main())
