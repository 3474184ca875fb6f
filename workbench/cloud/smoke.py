"""`fab cloud.test`: one server, end to end, on a netbooted hypervisor; then it is deleted.

The server's image is made here from Debian's static busybox (nothing is
downloaded): a small ext4 root filesystem whose init says a marker on the
console, takes its address from Neutron's DHCP and serves the marker over
HTTP. libvirt's LXC driver boots such a root as a container; the `kvm` and
`qemu` virt types need a bootable disk, which this image is not.
Checked: ACTIVE, the marker on the console, a Neutron address, the HTTP
answer from the lab LAN (the node's namespace). The server and its image go
whatever happened.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from workbench.cloud import api, controller, lab
from workbench.cloud import secrets as cloud_secrets
from workbench.cloud.lab import CloudPlan
from workbench.core import progress, run
from workbench.core.config import Config
from workbench.core.errors import CloudError, ConfigError

BUSYBOX = Path("/bin/busybox")
MARKER = "workbench-smoke"
FLAVOR = "lab.tiny"
ACTIVE_TIMEOUT = 600.0
ANSWER_TIMEOUT = 240.0
SCOPE = "cloud test"
T = TypeVar("T")
# A clean-up that fails on these says what is left instead (an API not answering, a deletion timed out).
LEFTOVER_ERRORS: tuple[type[Exception], ...] = (*api.NOT_YET, CloudError)

# PID 1 of the server: busybox's own tools only. udhcpc hands each lease to the script below.
INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /tmp /www /var/run
mount -t proc proc /proc 2>/dev/null
say() {{ echo "{MARKER}: $*"; echo "{MARKER}: $*" > /dev/console 2>/dev/null; }}
say "up"
ip link set lo up
echo "{MARKER}" > /www/index.html
httpd -p 80 -h /www && say "serving http"
# Asked until answered, as cloud images do: the port may still be wired on a slow hypervisor
# when the server starts, and the agent drops its traffic until then.
for dev in $(ls /sys/class/net); do
    [ "$dev" = lo ] && continue
    ip link set "$dev" up
    until udhcpc -i "$dev" -s /etc/udhcpc.script -t 10 -T 3 -n -q; do sleep 2; done
    say "address $(ip -4 -o addr show dev $dev)"
done
while true; do sleep 3600; done
"""

DHCP_SCRIPT = """#!/bin/busybox sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    ;;
esac
exit 0
"""


@dataclass(frozen=True)
class SmokeResult:
    server: str
    hypervisor: str
    address: str
    answer: str
    console_marker: bool
    seconds: float
    phases: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        split = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in self.phases.items())
        return (f"cloud test passed in {self.seconds:.0f}s ({split}): server {self.server} ACTIVE on "
                f"{self.hypervisor}, address {self.address} from Neutron answered {self.answer!r}; deleted")


def image_path(config: Config) -> Path:
    """The smoke image, named by what it is made of (a new busybox or init makes a new one)."""
    if not BUSYBOX.is_file():
        raise CloudError(f"{BUSYBOX} is missing (Debian's busybox-static; `make setup` installs it)")
    digest = hashlib.sha256(BUSYBOX.read_bytes() + INIT.encode() + DHCP_SCRIPT.encode()).hexdigest()[:12]
    return cloud_secrets.cloud_dir(config) / "images" / f"smoke-{digest}.raw"


def make_image(config: Config) -> Path:
    """An ext4 root filesystem (16 MiB) with busybox and the init above; made once per content."""
    path = image_path(config)
    if path.is_file():
        return path
    work = path.with_suffix(".d")
    shutil.rmtree(work, ignore_errors=True)
    for directory in ("bin", "sbin", "etc", "dev", "proc", "sys", "tmp", "www"):
        (work / directory).mkdir(parents=True)
    shutil.copy2(BUSYBOX, work / "bin" / "busybox")
    (work / "sbin" / "init").write_text(INIT)
    (work / "sbin" / "init").chmod(0o755)
    (work / "etc" / "udhcpc.script").write_text(DHCP_SCRIPT)
    (work / "etc" / "udhcpc.script").chmod(0o755)
    partial = path.with_suffix(".partial")
    try:
        # mke2fs fills the file system from a directory itself: no loop device, no mount.
        run.capture(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "smoke", "-d", str(work), str(partial), "16M"])
        partial.replace(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        partial.unlink(missing_ok=True)
    return path


def run_test(config: Config, plan: CloudPlan, keys: cloud_secrets.CloudSecrets) -> SmokeResult:
    if config.cloud.virt_type != "lxc":
        raise ConfigError(f"{config.path} [cloud] virt_type = {config.cloud.virt_type!r}: `fab cloud.test` boots a "
                          "root-filesystem image, which only the lxc virt type runs; set virt_type = \"lxc\"")
    start = time.monotonic()
    phases: dict[str, float] = {}
    conn = api.connect(plan, keys, member=True, project=config.cloud.project)
    admin = api.connect(plan, keys)
    up = api.services(admin).hypervisors()
    if not up:
        raise CloudError("no hypervisor is registered in nova: boot one (`fab cloud.up --vms 1`, or power on a PC "
                         "of the inventory) and see `fab cloud.status`")
    # A PC powered on by hand registered without `cloud.up` watching: map it into the cell first.
    if not up & controller.map_hosts(config):
        raise CloudError(f"{', '.join(sorted(up))}: compute up but not mapped into nova's cell yet (its compute "
                         "node is not recorded): try again in a minute; `fab cloud.status`")
    token = secrets.token_hex(4)
    name = f"smoke-{token}"
    image = make_image(config)
    mark = time.monotonic()
    image_id = api.upload_image(conn, name, image, {"workbench_smoke": token})
    phases["upload"] = time.monotonic() - mark
    server_id = group_id = ""
    try:
        # The project's default group lets in SSH and ping only: the test's own opens HTTP from the lab LAN.
        group_id = api.open_port(conn, name, 80, plan.inventory.network.subnet)
        mark = time.monotonic()
        server_id = api.boot_server(conn, name, image_id, FLAVOR, api.PROVIDER_NETWORK, ("default", name))
        progress.step(SCOPE, f"server {name} asked for ({FLAVOR}, image {image.name})")
        state = _wait(lambda: _active(conn, server_id), ACTIVE_TIMEOUT, f"server {name} ACTIVE")
        phases["active"] = time.monotonic() - mark
        where = api.server_state(admin, server_id).host
        progress.step(SCOPE, f"{name} ACTIVE on {where}, address {', '.join(state.addresses) or 'none yet'}")
        mark = time.monotonic()
        console = _wait(lambda: _marker(conn, server_id), ANSWER_TIMEOUT, f"the marker on {name}'s console")
        phases["console"] = time.monotonic() - mark
        address = state.addresses[0] if state.addresses else ""
        if not address:
            raise CloudError(f"server {name} is ACTIVE with no address from Neutron; its console:\n{console}")
        mark = time.monotonic()
        try:
            answer = _wait(lambda: _answer(config, address), ANSWER_TIMEOUT, f"{name} answering on http://{address}/")
        except CloudError as exc:
            # What the server said is the first clue (no DHCP answer, no httpd): its console's last lines.
            last = "\n".join(f"    {line}" for line in _console_now(conn, server_id).splitlines()[-8:])
            raise CloudError(f"{exc}; its console ends:\n{last}") from None
        phases["answered"] = time.monotonic() - mark
    except BaseException:
        _clean_up(conn, name, server_id, group_id, image_id, failed=True)
        raise
    mark = time.monotonic()
    _clean_up(conn, name, server_id, group_id, image_id, failed=False)
    phases["deleted"] = time.monotonic() - mark
    return SmokeResult(name, where, address, answer, True, time.monotonic() - start, phases)


def _clean_up(conn: api.Connection, name: str, server_id: str, group_id: str, image_id: str, failed: bool) -> None:
    """The test's server, security group and image go whatever happened; when the test already
    failed, a failed clean-up is said but the test's own error stays the one reported."""
    try:
        if server_id:
            api.delete_server(conn, server_id)
        if group_id:
            api.delete_security_group(conn, group_id)
        api.delete_image(conn, image_id)
    except LEFTOVER_ERRORS as exc:
        leftover = CloudError(f"{SCOPE}: could not delete server {name}, its security group or its image "
                              f"({api.short_error(exc)}): `openstack server delete {name}; openstack security group "
                              f"delete {name}; openstack image delete {name}` once the API answers")
        if not failed:
            raise leftover from None
        progress.detail(str(leftover))


def _active(conn: api.Connection, server_id: str) -> api.ServerState | None:
    state = api.server_state(conn, server_id)
    if state.status == "ERROR":
        raise CloudError(f"server {server_id} went to ERROR: {state.fault or 'no fault recorded'} "
                         "(`fab cloud.status`; nova-compute's log is on the hypervisor)")
    return state if state.status == "ACTIVE" and state.addresses else None


def _marker(conn: api.Connection, server_id: str) -> str | None:
    text = api.console_output(conn, server_id)
    return text if f"{MARKER}: up" in text else None


def _console_now(conn: api.Connection, server_id: str) -> str:
    try:
        return api.console_output(conn, server_id) or "(empty)"
    except api.NOT_YET as exc:
        return f"(not available: {api.short_error(exc)})"


def _answer(config: Config, address: str) -> str | None:
    """The server's page, fetched from the lab LAN: nothing else reaches it."""
    status, body = lab.lab_get(config, f"http://{address}/")
    return body.strip() if status == 200 and MARKER in body else None


def _wait(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `check` until it returns something; an API call that fails or times out on the way
    (a loaded controller's RPC to the hypervisor) is asked again, and named if time runs out."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            found = check()
        except api.NOT_YET as exc:
            found, last = None, f" (last answer: {api.short_error(exc)})"
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise CloudError(f"{SCOPE}: {what}: not within {timeout:.0f}s{last}")
        progress.activity(f"waiting for {what}")
        time.sleep(3.0)
