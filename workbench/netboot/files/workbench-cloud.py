#!/usr/bin/python3
"""Make this live node an OpenStack compute node, if the networking node has a cloud for it.

Runs after workbench-report (which mounts the persistence and leaves what it
reported in /run/workbench/report.json). Asks `wb.cloud=URL` for `<name>.json`:
404 means no cloud for this node, and nothing starts. Otherwise it renders nova's
and the linuxbridge agent's configuration, marks them in place (the services'
drop-ins start nothing without the mark), starts libvirtd, the agent and
nova-compute, and says how far it got on the console and in updates of its report.
Nothing of the cloud is in the image: every address and secret comes from here.
"""

import configparser
import io
import json
import os
import pwd
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

REPORT = "/run/workbench/report.json"
PERSIST = "/run/workbench/persist"
# The services' drop-ins (salt/hypervisor) have ConditionPathExists on this mark.
CONFIGURED = "/run/workbench/cloud/configured"
SERVICES = ("libvirtd.service", "neutron-linuxbridge-agent.service", "nova-compute.service")
REQUIRED = ("host", "controller", "region", "virt_type", "passwords")
PASSWORDS = ("rabbitmq", "nova", "neutron", "placement")
VIRT_TYPES = ("kvm", "qemu", "lxc")
# The first report once the services got past their configuration (python services take
# minutes to start under software emulation); the last once all are active.
FIRST_REPORT = 300
START_TIMEOUT = 300


def read(path):
    with open(path) as f:
        return f.read()


def say(message):
    line = f"workbench-cloud: {message}"
    print(line, flush=True)
    try:
        with open("/dev/console", "w") as console:
            console.write(line + "\n")
    except OSError:
        pass


def memory():
    """MiB of memory in all, and still available: what the services (and the image in RAM) left."""
    info = {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in read("/proc/meminfo").splitlines())}
    return {"total_mib": info["MemTotal"] // 1024, "available_mib": info["MemAvailable"] // 1024}


def uptime():
    return round(float(read("/proc/uptime").split()[0]), 1)


def fetch(url, attempts=30):
    """(status, body) of a GET; connection errors are retried (the node may still be coming up)."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError as exc:
            if attempt == attempts - 1:
                return 0, str(exc).encode()
            time.sleep(2)
    return 0, b""


def check(cloud):
    problems = [f"no {key!r}" for key in REQUIRED if key not in cloud]
    passwords = cloud.get("passwords", {})
    problems += [f"no password {key!r}" for key in PASSWORDS if not passwords.get(key)]
    if cloud.get("virt_type", "kvm") not in VIRT_TYPES:
        problems.append(f"virt_type {cloud['virt_type']!r} is not one of {', '.join(VIRT_TYPES)}")
    return problems


def oslo(value):
    # oslo.config substitutes $name in values: a literal dollar is written $$.
    return str(value).replace("$", "$$")


def ini(sections):
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    for section, values in sections.items():
        if section != "DEFAULT":
            parser.add_section(section)
        for key, value in values.items():
            parser.set(section, key, oslo(value))
    out = io.StringIO()
    out.write("# Written at boot by workbench-cloud from the networking node's configuration.\n")
    parser.write(out)
    return out.getvalue()


def service_user(cloud, user):
    """A [section] that authenticates as service user `user` in project service, domain Default."""
    return {
        "auth_url": f"http://{cloud['controller']}:5000/v3",
        "auth_type": "password",
        "project_domain_name": "Default",
        "user_domain_name": "Default",
        "project_name": "service",
        "username": user,
        "password": cloud["passwords"][user],
        "region_name": cloud["region"],
    }


def transport_url(cloud):
    password = urllib.parse.quote(cloud["passwords"]["rabbitmq"], safe="")
    return f"rabbit://openstack:{password}@{cloud['controller']}:5672/"


def libvirt(cloud):
    """nova's [libvirt]: an lxc guest's root is its disk mounted on the host, a raw file on a loop
    device; qcow2 would need nbd, which the live image does not load."""
    if cloud["virt_type"] == "lxc":
        return {"virt_type": "lxc", "images_type": "raw"}
    return {"virt_type": cloud["virt_type"]}


def render(cloud, node):
    """Path -> (text, group that reads it) of every file the compute node needs."""
    controller = cloud["controller"]
    nova = {
        "DEFAULT": {
            # The name nova and placement register this hypervisor under.
            "host": cloud["host"],
            "my_ip": node["address"],
            "transport_url": transport_url(cloud),
            "state_path": "/var/lib/nova",
            "instances_path": node["instances"],
            "compute_driver": "libvirt.LibvirtDriver",
        },
        "api": {"auth_strategy": "keystone"},
        "keystone_authtoken": {
            "www_authenticate_uri": f"http://{controller}:5000/",
            **service_user(cloud, "nova"),
        },
        "service_user": {"send_service_user_token": "true", **service_user(cloud, "nova")},
        "placement": service_user(cloud, "placement"),
        "neutron": service_user(cloud, "neutron"),
        "glance": {"api_servers": f"http://{controller}:9292"},
        "libvirt": libvirt(cloud),
        "vnc": {"enabled": "false"},
        "oslo_concurrency": {"lock_path": "/var/lib/nova/tmp"},
    }
    # Debian's nova-compute-kvm passes this file after nova.conf (virt_type=kvm there would win).
    compute = {"DEFAULT": {"compute_driver": "libvirt.LibvirtDriver"}, "libvirt": libvirt(cloud)}
    neutron = {
        "DEFAULT": {"host": cloud["host"], "transport_url": transport_url(cloud), "auth_strategy": "keystone"},
        "agent": {
            "root_helper": "sudo /usr/bin/neutron-rootwrap /etc/neutron/rootwrap.conf",
            # One root helper for the agent's life instead of a sudo + Python start per command:
            # under software emulation each such start costs seconds of a CPU.
            "root_helper_daemon": "sudo /usr/bin/neutron-rootwrap-daemon /etc/neutron/rootwrap.conf",
        },
        # Zed runs the linuxbridge agent only when asked to.
        "experimental": {"linuxbridge": "true"},
        "oslo_concurrency": {"lock_path": "/var/lib/neutron/tmp"},
    }
    ml2 = {"ml2": {"mechanism_drivers": "linuxbridge"}, "ml2_type_flat": {"flat_networks": "provider"}}
    agent = {
        "linux_bridge": {"physical_interface_mappings": f"provider:{node['provider_interface']}"},
        "vxlan": {"enable_vxlan": "false"},
        "securitygroup": {
            "enable_security_group": "true",
            "firewall_driver": "neutron.agent.linux.iptables_firewall.IptablesFirewallDriver",
        },
    }
    return {
        "/etc/nova/nova.conf": (ini(nova), "nova"),
        "/etc/nova/nova-compute.conf": (ini(compute), "nova"),
        "/etc/neutron/neutron.conf": (ini(neutron), "neutron"),
        "/etc/neutron/plugins/ml2/ml2_conf.ini": (ini(ml2), "neutron"),
        "/etc/neutron/plugins/ml2/linuxbridge_agent.ini": (ini(agent), "neutron"),
    }


def replace_whole(path, data, group=None):
    """`data` (bytes) as `path`, replaced in one step (a reader never sees half of it); with
    `group`, owned root:group and mode 0640 before it is in place (the services' secrets)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")
    with open(partial, "wb") as out:
        out.write(data)
    if group is not None:
        os.chown(partial, 0, pwd.getpwnam(group).pw_gid)
        os.chmod(partial, 0o640)
    os.replace(partial, path)


def instances_dir(name):
    """The instances' directory on the node's NFS export: a rebooted PC finds its instances."""
    if not os.path.ismount(PERSIST):
        raise RuntimeError(f"{PERSIST} is not mounted (see workbench-report): instances would not survive a reboot")
    path = os.path.join(PERSIST, name, "instances")
    os.makedirs(path, exist_ok=True)
    nova = pwd.getpwnam("nova")
    os.chown(path, nova.pw_uid, nova.pw_gid)
    return path


# The node's one interface carries its own address (NFS, the message queue) and the guests'
# traffic. Given that interface, the agent moves the address onto the network's bridge when
# the first guest is plugged; on a hypervisor here that left the address on a bridge without
# the interface in it, and the node cut off (its NFS mount hung). So the node moves its
# address once, at boot, onto a bridge of its own with the interface in it, and the agent
# gets one end of a veth pair whose other end is in that bridge: it has no address to move.
UPLINK_BRIDGE = "brlab"
UPLINK_VETH = ("vlab0", "vlab1")  # vlab0 in brlab; vlab1 is the agent's provider interface


def ip_json(*args):
    done = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout or "[]")


def no_ipv6(devices):
    """No addresses at all on the veth: the agent moves any address of its provider interface onto
    the network's bridge, where IPv6 is off (os-vif turns it off), and an IPv6 address the LAN's
    router advertisements gave it failed that move ("Permission denied"), the port never up."""
    for device in devices:
        with open(f"/proc/sys/net/ipv6/conf/{device}/disable_ipv6", "w") as knob:
            knob.write("1\n")


def uplink(interface):
    """The agent's provider interface: the veth end, after the node's address has moved onto
    UPLINK_BRIDGE with `interface` in it (kept if already done: a restart of this service)."""
    if os.path.exists(f"/sys/class/net/{UPLINK_BRIDGE}"):
        no_ipv6(UPLINK_VETH)
        return UPLINK_VETH[1]
    mac = read(f"/sys/class/net/{interface}/address").strip()
    addresses = [f"{a['local']}/{a['prefixlen']}" for entry in ip_json("-4", "addr", "show", "dev", interface)
                 for a in entry.get("addr_info", []) if a.get("family") == "inet"]
    gateways = [r["gateway"] for r in ip_json("-4", "route", "show", "default", "dev", interface) if r.get("gateway")]
    outer, inner = UPLINK_VETH
    batch = [
        # The interface's MAC, given at creation: the LAN's neighbour caches and the node's reservation
        # stay right, and udev leaves a MAC set this way alone (set afterwards, its own won the race).
        f"link add {UPLINK_BRIDGE} address {mac} type bridge forward_delay 0 stp_state 0",
        f"link add {outer} type veth peer name {inner}",
        f"link set {outer} master {UPLINK_BRIDGE}",
        f"link set {UPLINK_BRIDGE} up",
        f"link set {outer} up",
        f"link set {inner} up",
        f"link set {interface} master {UPLINK_BRIDGE}",
        *[f"addr del {a} dev {interface}" for a in addresses],
        *[f"addr add {a} dev {UPLINK_BRIDGE}" for a in addresses],
        *[f"route replace default via {g} dev {UPLINK_BRIDGE}" for g in gateways[:1]],
    ]
    done = subprocess.run(["ip", "-batch", "-"], input="\n".join(batch) + "\n", capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"moving {interface}'s address onto {UPLINK_BRIDGE} failed: {done.stderr.strip()}")
    no_ipv6(UPLINK_VETH)
    say(f"{', '.join(addresses)} moved from {interface} onto {UPLINK_BRIDGE} (with {interface} and {outer} in it); "
        f"the agent's provider interface is {inner}")
    return inner


def prepare_kernel():
    """What the agent's iptables firewall needs on bridges (its own check refuses otherwise)."""
    subprocess.run(["modprobe", "br_netfilter"], check=False)
    for key in ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"):
        subprocess.run(["sysctl", "-q", "-w", f"{key}=1"], check=False)


def states():
    """Each service's state as systemd says it: "active", "activating/start", "failed", ..."""
    out = {}
    for unit in SERVICES:
        done = subprocess.run(
            ["systemctl", "show", "-p", "ActiveState,SubState,NRestarts", unit], capture_output=True, text=True
        )
        props = dict(line.partition("=")[::2] for line in done.stdout.splitlines())
        state = props.get("ActiveState", "unknown")
        if state != "active" and props.get("SubState") and props["SubState"] != state:
            state += "/" + props["SubState"]
        if props.get("NRestarts", "0") not in ("", "0"):
            state += f" ({props['NRestarts']} restarts)"
        out[unit] = state
    return out


# A line in a service's log that says it got past its configuration: the agent has set up
# its interface mappings; nova-compute is at the message queue (oslo.messaging says
# "Connection failed: ..." while the broker is unreachable, "AMQP server on ..." on errors
# and reconnections; once connected nova-compute soon becomes active).
MILESTONES = {
    "neutron-linuxbridge-agent.service": (
        "/var/log/neutron/neutron-linuxbridge-agent.log",
        ("Agent initialized successfully",),
    ),
    "nova-compute.service": ("/var/log/nova/nova-compute.log", ("AMQP server on", "Connection failed:")),
}


def log_tail(unit):
    """(the newest line of `unit`'s log that shows its milestone or "", its last line)."""
    path, needles = MILESTONES[unit]
    try:
        with open(path, "rb") as log:
            log.seek(max(0, os.path.getsize(path) - 65536))
            lines = log.read().decode(errors="replace").splitlines()
    except OSError:
        return "", ""
    found = [line for line in lines if any(needle in line for needle in needles)]
    return (found[-1][-300:] if found else ""), (lines[-1][-300:] if lines else "")


def broken(state):
    return "failed" in state or "restarts" in state


# Type=notify services: "active" means ready. The agent (Type=simple) is active from its
# first instruction: only its log says when it got past its configuration.
READY_WHEN_ACTIVE = ("libvirtd.service", "nova-compute.service")


def arrived(unit, state, seen, milestones):
    """With `milestones`, a service is there once it is ready (active, for a notify one), or
    its log shows its milestone while it runs (nova-compute stays "activating" until it
    reaches the controller); without, once active."""
    if milestones and unit in MILESTONES:
        ready = state == "active" and unit in READY_WHEN_ACTIVE
        return ready or (bool(seen.get(unit)) and state in ("active", "activating/start"))
    return state == "active"


def wait(seconds, milestones):
    """Until every service has arrived, one failed or restarts, or `seconds` have passed.
    Returns the services' states and, per service with a log, its milestone line (or, not
    there yet, its last line: "last: ...")."""
    deadline = time.monotonic() + seconds
    while True:
        current = states()
        tails = {unit: log_tail(unit) for unit in MILESTONES}
        seen = {unit: found for unit, (found, _) in tails.items()}
        if all(arrived(u, current[u], seen, milestones) for u in SERVICES):
            break
        if any(broken(s) for s in current.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    logs = {unit: found or (f"last: {last}" if last else "no log yet") for unit, (found, last) in tails.items()}
    return current, logs


def outcome(services):
    if all(s == "active" for s in services.values()):
        return "started"
    return "failed" if any(broken(s) for s in services.values()) else "starting"


def start(args, node, progress):
    """Start the services in order without blocking on any: nova-compute is ready only once it
    has reached the controller. Reports once each has got past its configuration (its log says
    so), again when all are active (or after START_TIMEOUT)."""
    for unit in SERVICES:
        subprocess.run(["systemctl", "start", "--no-block", unit], check=True)
    services, logs = wait(FIRST_REPORT, milestones=True)
    progress.update(state=outcome(services), services=services, logs=logs, started=uptime(), memory=memory())
    report(args, node, progress)
    if progress["state"] == "starting":
        services, logs = wait(START_TIMEOUT, milestones=False)
        progress.update(state=outcome(services), services=services, logs=logs, done=uptime(), memory=memory())
        report(args, node, progress)
    return progress["state"]


HEARTBEAT_EVERY = 30
BUSIEST = 5
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks():
    """pid -> (program, CPU ticks used so far), from /proc: what the beat compares with the last one."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = read(f"/proc/{pid}/stat")
            argv = read(f"/proc/{pid}/cmdline").split("\0")
        except OSError:  # gone meanwhile
            continue
        comm, _, rest = stat.partition(" (")[2].rpartition(")")
        fields = rest.split()
        # A Python service is named by its script (/usr/bin/python3 /usr/bin/nova-compute); one that
        # set its title by its first word ("neutron-linuxbridge-agent (/usr/bin/python3 ...)"); a
        # kernel thread, which has no command line, as ps shows it ([loop0], [kworker/1:2]).
        program = argv[1] if len(argv) > 1 and "python" in argv[0] and argv[1].startswith("/") else argv[0]
        words = program.split()
        name = os.path.basename(words[0]) if words else f"[{comm}]"
        found[pid] = (name, int(fields[11]) + int(fields[12]))
    return found


def busiest(before, now, seconds):
    """The programs that used the most CPU between two `cpu_ticks` readings, as % of one CPU."""
    used = {}
    for pid, (program, ticks) in now.items():
        spent = ticks - before.get(pid, (program, 0))[1]
        used[program] = used.get(program, 0) + spent
    top = sorted(used.items(), key=lambda item: -item[1])[:BUSIEST]
    return [[program, round(100 * ticks / TICKS / seconds)] for program, ticks in top if ticks]


def heartbeat_line():
    """Load, memory, the services, and where this node's IPv4 addresses and default route are:
    the console is the one place that still shows them if the network cut the node off."""
    addresses = subprocess.run(["ip", "-4", "-br", "addr"], capture_output=True, text=True).stdout.split()
    route = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True).stdout.strip()
    load = read("/proc/loadavg").split()[:3]
    states_now = {unit.split(".")[0]: state for unit, state in states().items()}
    return {"uptime": uptime(), "load": load, **memory(), "services": states_now,
            "addresses": " ".join(addresses), "default": route}


# Where the node's and its servers' traffic goes: on the console when the default route moves
# (and a beat later), and on the persistence (`log/network.txt`) at every beat.
# The firewalls' counters show which rule took a server's frames (the agent's MAC and ARP chains,
# its security groups on bridged IPv4).
NETWORK_DUMP = (["ip", "-br", "link"], ["bridge", "-d", "link"], ["ip", "-4", "route"], ["ip", "-s", "link"],
                ["ebtables-legacy", "-t", "nat", "-L", "--Lc"], ["ebtables-legacy", "-t", "filter", "-L", "--Lc"],
                ["iptables-save", "-c"])


def network_text():
    parts = []
    for argv in NETWORK_DUMP:
        done = subprocess.run(argv, capture_output=True, text=True)
        parts.append(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}")
    return "\n".join(parts)


# The services' logs live in the live system's RAM: their tails are copied to this node's
# directory on the persistence, where the networking node's host can read them.
LOGS = ("/var/log/nova/nova-compute.log", "/var/log/neutron/neutron-linuxbridge-agent.log")
LOG_TAIL = 512 * 1024


def save(name, filename, data):
    """`data` (bytes) as `filename` in this node's log directory on the persistence."""
    target = os.path.join(PERSIST, name, "log", filename)
    try:
        replace_whole(target, data)
    except OSError as exc:
        print(f"cannot write {target}: {exc}", file=sys.stderr)


def copy_logs(name):
    for path in LOGS:
        try:
            with open(path, "rb") as log:
                log.seek(max(0, os.path.getsize(path) - LOG_TAIL))
                data = log.read()
        except OSError as exc:
            print(f"cannot read {path}: {exc}", file=sys.stderr)
            continue
        save(name, os.path.basename(path), data)


def heartbeat():
    """Runs as its own transient unit (see main): a line on the console, the logs' tails and the
    network's state on the persistence every HEARTBEAT_EVERY s."""
    name = json.loads(read(REPORT)).get("name", "")
    route, dumps = "", 0
    ticks, then = cpu_ticks(), time.monotonic()
    while True:
        line = heartbeat_line()
        # Which programs keep the node's CPUs busy (under software emulation, every one counts).
        now_ticks, now = cpu_ticks(), time.monotonic()
        line["busiest_pct"] = busiest(ticks, now_ticks, max(now - then, 1.0))
        ticks, then = now_ticks, now
        say("heartbeat " + json.dumps(line))
        network = network_text()
        if name:
            copy_logs(name)
            save(name, "network.txt", network.encode())
        now = line["default"]
        if now != route:
            route, dumps = now, 2 if route else 0
        if dumps:
            for text in network.splitlines():
                say(f"net {text}")
            dumps -= 1
        time.sleep(HEARTBEAT_EVERY)


def post(url, body):
    for _ in range(15):
        try:
            request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=5).read()
            return True
        except OSError as exc:
            print(f"report to {url} failed: {exc}; retrying", file=sys.stderr)
            time.sleep(2)
    return False


def report(args, node, cloud):
    """The boot's report again, with a `cloud` field: the node keeps the first report's time."""
    say(f"{cloud['state']}: " + json.dumps(cloud, sort_keys=True))
    if args.get("wb.report"):
        post(args["wb.report"], {**node, "cloud": cloud})


def main():
    if sys.argv[1:] == ["--heartbeat"]:
        heartbeat()
    args = dict(a.split("=", 1) for a in read("/proc/cmdline").split() if "=" in a)
    base = args.get("wb.cloud")
    if not base:
        say("no wb.cloud= on the kernel command line: no cloud, nothing started")
        return 0
    try:
        node = json.loads(read(REPORT))
    except (OSError, ValueError) as exc:
        say(f"no report of this boot in {REPORT} ({exc}): cannot tell which node this is")
        return 1
    name = node.get("name", "")
    url = f"{base.rstrip('/')}/{name}.json"
    status, body = fetch(url)
    if status == 404:
        say(f"no cloud configuration for {name} ({url}: 404): nothing started")
        return 0
    if status != 200:
        # 403: the node serves this file only to the address the inventory reserves for the name.
        detail = body.decode(errors="replace").strip().splitlines()[-1:] or [""]
        say(f"cannot fetch {url}: {status or 'no answer'} {detail[0][:200]}: nothing started")
        return 1
    progress = {"state": "configuring", "fetched": uptime()}
    try:
        cloud = json.loads(body)
        problems = check(cloud) if isinstance(cloud, dict) else ["not a JSON object"]
        if problems:
            raise RuntimeError(f"{url}: {'; '.join(problems)}")
        if not node.get("address") or not node.get("interface"):
            raise RuntimeError("the report names no address or interface (no /run/net-*.conf from the initramfs)")
        say(f"{name}: host {cloud['host']}, controller {cloud['controller']}, virt_type {cloud['virt_type']}")
        prepare_kernel()
        node_facts = {**node, "instances": instances_dir(name), "provider_interface": uplink(node["interface"])}
        for path, (text, group) in render(cloud, node_facts).items():
            replace_whole(path, text.encode(), group)
        # libvirt names the hypervisor by the host name (placement's resource provider): the full name.
        socket.sethostname(cloud["host"])
        os.makedirs(os.path.dirname(CONFIGURED), exist_ok=True)
        with open(CONFIGURED, "w") as mark:
            mark.write(cloud["host"] + "\n")
        progress.update(
            host=cloud["host"],
            controller=cloud["controller"],
            virt_type=cloud["virt_type"],
            instances=node_facts["instances"],
            configured=uptime(),
        )
        say(f"configuration written (instances on {node_facts['instances']}); starting {', '.join(SERVICES)}")
        state = start(args, node, progress)
        # A transient unit, so that this one ends (it is a oneshot other units order after).
        subprocess.run(["systemd-run", "--unit", "workbench-cloud-heartbeat", "--collect",
                        "/usr/local/sbin/workbench-cloud", "--heartbeat"], check=False)
    except (RuntimeError, OSError, ValueError, KeyError, subprocess.CalledProcessError) as exc:
        progress.update(state="failed", error=str(exc))
        report(args, node, progress)
        return 1
    return 0 if state != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
