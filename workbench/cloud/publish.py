"""`fab image.publish`: an accepted role image into the cloud's glance, as a server boots it.

For the `kvm` and `qemu` virt types it is the role's qcow2 (baked with the
qemu builder when the checkout's role has none: reused by inputs hash), with
the workbench's key removed and a unit that reads the deploy's settings and
SSH keys at boot (`workbench.cloud.vmimage`).

For libvirt's `lxc` virt type (the one the lab's tests use) a server's disk is
a root filesystem: the container image, exported, packed into a raw ext4 file
with `mke2fs -d` (no loop device, no mount). Its `/sbin/init` is a small
script of the workbench's: it takes the server's address from Neutron's DHCP,
reads the deploy's settings from the metadata service (the server's user
data: `KEY='value'` lines, the same variables a container gets in its
environment), then runs the image's own command, as the container would.
The settings and any key come from the deploy, never from the image: the
published file carries no SSH key, host key or authorized key (they are
removed, and the file is inspected for them before it is uploaded).

An image is published once per content: glance's image `<prefix>/<role>:<N>`
carries the source image's id, inputs hash and verification, and the sha256
of what was uploaded (the `checksum` of the result). Publishing it again
uploads nothing; an upload interrupted before it was `active` is replaced.
"""

from __future__ import annotations

import math
import shlex
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workbench.build import bake, disks, images
from workbench.cloud import api, controller, vmimage
from workbench.cloud import secrets as cloud_secrets
from workbench.cloud.lab import plan
from workbench.cloud.smoke import BUSYBOX
from workbench.core import engine, files, progress, run
from workbench.core.config import Config, Role
from workbench.core.errors import CloudError, CommandFailed, ConfigError

SCOPE = "publish"
# Bump when what a published file holds changes (its init, what is removed): files are made again.
RECIPE = 5
# Where the workbench's own helpers live inside a published root (nothing of the image's is replaced but init).
HELPERS = "usr/lib/workbench-cloud"
# Keys a published image must not hold: the deploy gives them (a nova keypair, the user data).
KEY_PATHS = ("root/.ssh", "etc/ssh/ssh_host_*")
# Properties the cloud's image carries (glance wants plain strings).
PROPERTY_PREFIX = "workbench_"
# Slack beyond what the files take. The room the services need (logs, pid files, their data) comes
# from the flavor: nova grows a raw root to the flavor's disk and the file system with it (resize2fs).
# Every MiB here is copied over the lab's NFS at each boot, so the file stays close to its contents.
HEADROOM_MIB = 32

# PID 1 of a published server. Only the published helpers (busybox) are used until the image's own
# command takes over: the image may have no DHCP client and no shell tools at all.
INIT = """#!/{helpers}/busybox sh
# Written by `fab image.publish` (workbench/cloud/publish.py): the server's address, the deploy's
# settings, then the image's own command, as a container runs it.
bb=/{helpers}/busybox
say() {{ echo "workbench-init: $*"; }}  # the console: a server's stdout
$bb mkdir -p /proc /sys /run /tmp /run/workbench
$bb grep -q " /proc " /proc/mounts 2>/dev/null || $bb mount -t proc proc /proc
$bb ip link set lo up
for path in /sys/class/net/*; do
    dev=${{path##*/}}
    [ "$dev" = lo ] && continue
    $bb ip link set "$dev" up
    # Asked until answered, as cloud images do: the port may still be wired when the server starts.
    until $bb udhcpc -i "$dev" -s /{helpers}/dhcp -t 10 -T 3 -n -q; do $bb sleep 2; done
    say "address $($bb ip -4 -o addr show dev $dev | $bb awk '{{print $4}}') on $dev"
done
# The deploy's settings: KEY='value' lines in the server's user data (none when it gave none).
# Fetched with the image's python3 (every role has it): busybox's static wget crashes resolving.
settings=/run/workbench/settings
if ! /usr/bin/python3 /{helpers}/settings "$settings"; then
    say "no answer from the metadata service: no deploy-time settings"
    : > "$settings"
fi
{image_env}
set -a
. "$settings"
set +a
[ -n "$WORKBENCH_HOSTNAME" ] && $bb hostname "$WORKBENCH_HOSTNAME"
say "root filesystem $($bb df -m / | $bb awk 'NR == 2 {{print $2 " MiB, " $4 " MiB free"}}')"
say "running {command_text}"
cd {workdir}
exec {command}
"""

SETTINGS = """\
import os, sys, time, urllib.error, urllib.request
# Written by `fab image.publish`: the server's user data into the file named, whole, or exit 1.
URL = "http://169.254.169.254/openstack/latest/user_data"
for attempt in range(15):
    try:
        with urllib.request.urlopen(URL, timeout=5) as answer:
            data = answer.read()
        break
    except urllib.error.HTTPError as exc:
        data = b"" if exc.code == 404 else None  # 404: the deploy gave no user data
        if data is not None:
            break
    except OSError:
        pass
    time.sleep(2)
else:
    sys.exit(1)
with open(sys.argv[1] + ".partial", "wb") as out:
    out.write(data)
os.replace(sys.argv[1] + ".partial", sys.argv[1])
"""

HOSTS = """\
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
"""

DHCP = """#!/{helpers}/busybox sh
bb=/{helpers}/busybox
case "$1" in
  bound|renew)
    $bb ip addr flush dev "$interface"
    $bb ip addr add "$ip/${{mask:-24}}" dev "$interface"
    [ -n "$router" ] && $bb ip route replace default via "${{router%% *}}" dev "$interface"
    # Neutron's metadata proxy answers at the DHCP server's namespace (isolated networks).
    [ -n "$serverid" ] && $bb ip route replace 169.254.169.254 via "$serverid" dev "$interface"
    [ -n "$hostname" ] && $bb hostname "$hostname"
    # Docker writes resolv.conf into a container at its start: a server's comes from its lease.
    [ -n "$dns" ] && {{ [ -n "$domain" ] && echo "search $domain"; for s in $dns; do echo "nameserver $s"; done; }} \
        > /etc/resolv.conf
    ;;
esac
exit 0
"""


@dataclass(frozen=True)
class Published:
    role: str
    version: int
    name: str  # the image's name in glance: <prefix>/<role>:<N>
    glance_id: str
    source: str  # the accepted container image's id, or the accepted qcow2's
    inputs: str
    checksum: str  # sha256 of the file uploaded
    size: int
    uploaded: bool  # False: glance had it already
    seconds: float
    disk_format: str = "raw"  # raw: a root file system (lxc); qcow2: a whole disk (kvm, qemu)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        if not self.uploaded:
            return f"{self.name} is in glance already ({self.glance_id}, sha256 {self.checksum[:12]}): nothing uploaded"
        what = "raw root filesystem" if self.disk_format == "raw" else "qcow2 disk"
        return (f"published {self.name} in {self.seconds:.0f}s: glance image {self.glance_id}, "
                f"{self.size / 2**20:.0f} MiB {what}, sha256 {self.checksum[:12]}")


def glance_name(config: Config, role: str, version: int) -> str:
    return f"{images.repository(config, role)}:{version}"


def publish(config: Config, role_name: str, version: int | None = None, inventory: str = "",
            image_id: str = "") -> Published:
    """Publish the role's newest accepted image (or `version` of it, or the engine's `image_id`)."""
    try:
        return _publish(config, role_name, version, inventory, image_id)
    except api.NOT_YET as exc:
        raise CloudError(f"publish: the cloud's API failed: {api.short_error(exc)} (`fab cloud.status`; the "
                         f"services' logs: {controller.log_dir(config)})") from None


@dataclass(frozen=True)
class _Source:
    """An accepted image as publishing sees it: a container image (lxc) or a qcow2 (kvm, qemu)."""

    role: str
    version: int
    id: str
    labels: dict[str, str]
    disk_format: str
    recipe: str  # what made the published file from it: a file made otherwise is made again


def _publish(config: Config, role_name: str, version: int | None, inventory: str, image_id: str) -> Published:
    start = time.monotonic()
    role = config.role(role_name)
    disk, image = None, None
    if config.cloud.virt_type == "lxc":
        image = engine.get_image(image_id or images.newest_verified(config, role.name, version))
        if image is None:  # removed between the look-up and now
            raise CloudError(f"the image of {role.name} disappeared from the engine while publishing it")
        source = _Source(role.name, images.version_of(image), str(image.id), dict(image.labels or {}), "raw",
                         str(RECIPE))
    else:
        disk = _disk_of_image(config, role, image_id) if image_id else _accepted_disk(config, role, version)
        source = _Source(role.name, int(disk["version"]), str(disk["id"]), dict(disk["labels"]), "qcow2",
                         f"vm{vmimage.RECIPE}")
    # A qcow2 keeps its own tag (`app:3.qcow2`): its versions are not its container image's.
    name = glance_name(config, role.name, source.version) if disk is None else disks.tag(config, role.name,
                                                                                          source.version)
    keys = cloud_secrets.load(config)
    if keys is None or controller.state(config) is None:
        raise CloudError("no cloud is up: run `fab cloud.up` first, then publish")
    conn = api.connect(plan(config, inventory), keys, member=True, project=config.cloud.project)
    inputs = source.labels.get(engine.INPUTS_LABEL, "")
    found = _in_glance(conn, name, source)
    if found is not None:
        progress.step(SCOPE, f"{name} is in glance already: nothing to upload")
        return Published(role.name, source.version, name, found["id"], source.id, inputs, found["sha256"],
                         found["size"], False, time.monotonic() - start, source.disk_format)
    if disk is None:
        path = root_file(config, image)
        # A raw root: nova grows it to the flavor's disk.
        min_disk = math.ceil(path.stat().st_size / 2**30)
    else:
        path = vmimage.disk_file(cloud_secrets.cloud_dir(config) / "published", Path(disk["path"]), source.id)
        min_disk = math.ceil(vmimage.virtual_size(path) / 2**30)
    size = path.stat().st_size
    # Ours, and the one glance computes (os_hash_value), in one read.
    checksum, sha512 = files.digests(path, "sha256", "sha512")
    properties = {
        f"{PROPERTY_PREFIX}role": role.name,
        f"{PROPERTY_PREFIX}version": str(source.version),
        f"{PROPERTY_PREFIX}source": source.id,
        f"{PROPERTY_PREFIX}inputs": inputs,
        f"{PROPERTY_PREFIX}verify": source.labels.get(images.VERIFY_LABEL, ""),
        f"{PROPERTY_PREFIX}git_commit": source.labels.get("workbench.git.commit", ""),
        f"{PROPERTY_PREFIX}sha256": checksum,
        f"{PROPERTY_PREFIX}recipe": source.recipe,
    }
    progress.step(SCOPE, f"uploading {name} ({size / 2**20:.0f} MiB {source.disk_format}) to glance")
    glance_id = api.upload_image(conn, name, path, properties, min_disk=min_disk, disk_format=source.disk_format)
    uploaded = api.image_record(conn, glance_id)
    if uploaded.get("os_hash_algo") == "sha512" and uploaded.get("os_hash_value") != sha512:
        api.delete_image(conn, glance_id)
        raise CloudError(f"glance's checksum of {name} is not the file's: the upload was damaged; publish again")
    return Published(role.name, source.version, name, glance_id, source.id, inputs, checksum, size, True,
                     time.monotonic() - start, source.disk_format)


def _disk_of_image(config: Config, role: Role, image_id: str) -> dict[str, Any]:
    """The accepted qcow2 a release of the container image `image_id` boots on a kvm/qemu cloud: the
    newest of the same role definition, baked with the qemu builder when the checkout defines the
    role as the image does. The release keeps the container image's tag; the server is the same role."""
    image = engine.get_image(image_id)
    if image is None:
        raise CloudError(f"image {image_id[:19]} of {role.name} disappeared from the engine while publishing it")
    tag = images.tag_of(config, image)
    wanted = (image.labels or {}).get(images.DEFINITION_LABEL, "")
    if not wanted:
        raise ConfigError(f"{tag} was baked before images recorded their role definition, so no qcow2 can be "
                          f"matched to it: bake the role again (`fab image.bake {role.name} --force`) and promote that")
    found = disks.newest_labelled(config, role.name, images.DEFINITION_LABEL, wanted)
    if found is None and wanted == bake.definition(config, role):
        progress.step(SCOPE, f"{tag}: no qcow2 of its role definition yet: baking one with the qemu builder")
        bake.bake(config, [role.name], builder_type="qemu")
        found = disks.newest_labelled(config, role.name, images.DEFINITION_LABEL, wanted)
    if found is None:
        commit = (image.labels or {}).get("workbench.git.commit", "unknown")
        raise ConfigError(f"{tag}: a {config.cloud.virt_type} cloud boots the role's qcow2, and there is none of "
                          f"{tag}'s role definition while the checkout's {role.name} differs from it: check out "
                          f"{commit} and `fab image.bake {role.name} --builder qemu`, or promote a newer image")
    return found


def _accepted_disk(config: Config, role: Role, version: int | None) -> dict[str, Any]:
    """The role's accepted qcow2: `version`, or the one of the checkout's role files (baked when missing)."""
    if version is None:
        # Reused when a disk of the same inputs is there: only a change of the role is baked.
        baked = bake.bake(config, [role.name], builder_type="qemu")[0]
        version = baked.version
    for record in disks.records(config, role.name):
        if int(record["version"]) == version:
            return record
    raise ConfigError(f"{disks.tag(config, role.name, version)}: no such accepted qcow2 (`fab image.list "
                      f"{role.name}` lists them; `fab image.bake {role.name} --builder qemu` bakes one)")


def _in_glance(conn: api.Connection, name: str, source: _Source) -> dict[str, Any] | None:
    """The glance image already published for `source`, or None; a half-uploaded one is deleted."""
    for image in api.images_named(conn, name):
        made_by = (image.get(f"{PROPERTY_PREFIX}source"), image.get(f"{PROPERTY_PREFIX}recipe"))
        current = made_by == (source.id, source.recipe)
        if image.get("status") != "active" or not current:
            why = "made by an older workbench" if image.get("status") == "active" else f"left {image.get('status')}"
            progress.detail(f"deleting {name} ({image['id']}): {why} by an earlier publish")
            api.delete_image(conn, str(image["id"]))
            continue
        return {"id": str(image["id"]), "sha256": str(image.get(f"{PROPERTY_PREFIX}sha256", "")),
                "size": int(image.get("size") or 0)}
    return None


def root_file(config: Config, source: Any) -> Path:
    """The raw ext4 file for the container image `source`, made once per image and recipe."""
    path = cloud_secrets.cloud_dir(config) / "published" / f"{str(source.id).split(':')[-1][:16]}-r{RECIPE}.raw"

    def make(work: Path, partial: Path) -> None:
        progress.step(SCOPE, f"exporting {images.tag_of(config, source)} into a root filesystem")
        root = work / "root"
        _export(source, root)
        remove_keys(root)
        install_init(root, source.attrs.get("Config") or {})
        found = keys_in(root)
        if found:
            raise CloudError(f"{', '.join(found)} still in the root filesystem after removing keys: not published")
        size = _size_mib(root) + HEADROOM_MIB
        run.capture(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "root", "-d", str(root), str(partial), f"{size}M"])

    try:
        return files.made_once(path, make)
    except CommandFailed as exc:
        raise CloudError(f"making the root filesystem of {images.tag_of(config, source)} failed: {exc}") from None


def _export(source: Any, root: Path) -> None:
    """The image's file system (a container made from it, never started, exported, removed)."""
    root.mkdir(parents=True)
    container = engine.client().containers.create(source.id, command=["/bin/true"])
    tarball = root.with_name("fs.tar")
    try:
        run.capture(["docker", "export", "-o", str(tarball), container.id])
        run.capture(["tar", "-C", str(root), "--numeric-owner", "--xattrs", "-xf", str(tarball)])
    finally:
        container.remove(force=True)
        tarball.unlink(missing_ok=True)


def remove_keys(root: Path) -> None:
    for pattern in KEY_PATHS:
        for found in root.glob(pattern):
            if found.is_dir() and not found.is_symlink():
                shutil.rmtree(found)
            else:
                found.unlink()


def keys_in(root: Path) -> list[str]:
    """Keys a published root must not hold (what `remove_keys` removes, looked for again)."""
    return sorted(str(p.relative_to(root)) for pattern in KEY_PATHS for p in root.glob(pattern))


def install_init(root: Path, image_config: dict[str, Any]) -> None:
    helpers = root / HELPERS
    helpers.mkdir(parents=True, exist_ok=True)
    if not BUSYBOX.is_file():
        raise CloudError(f"{BUSYBOX} is missing (Debian's busybox-static; `make setup` installs it)")
    shutil.copy2(BUSYBOX, helpers / "busybox")
    # Docker's reset entrypoint is [""]: no entrypoint at all.
    entrypoint = [part for part in image_config.get("Entrypoint") or [] if part]
    command = [*entrypoint, *(image_config.get("Cmd") or [])]
    if not command:
        raise CloudError("the image has no command (Entrypoint or Cmd): a server would have nothing to run")
    env = "\n".join(f"export {shlex.quote(item)}" for item in image_config.get("Env") or [] if "=" in item)
    text = INIT.format(helpers=HELPERS, image_env=env, command=shlex.join(command),
                       command_text=" ".join(command).replace('"', "'"),
                       workdir=shlex.quote(image_config.get("WorkingDir") or "/"))
    files = {"sbin/init": text, f"{HELPERS}/dhcp": DHCP.format(helpers=HELPERS), f"{HELPERS}/settings": SETTINGS}
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)  # a symlink (systemd's /sbin/init) is replaced, not followed
        target.write_text(content)
        target.chmod(0o755)
    # Docker also writes /etc/hosts at a container's start (the image's is empty): services look
    # up localhost (monit's `allow localhost`).
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "hosts").write_text(HOSTS)


def _size_mib(root: Path) -> int:
    used = run.capture(["du", "-sm", "--apparent-size", str(root)]).stdout.split()[0]
    # ext4's own metadata and inode tables: a quarter more than the files' size is plenty.
    return int(int(used) * 1.25) + 16


def user_data(variables: dict[str, str]) -> str:
    """The user data a published image's init reads: one shell-quoted assignment per line."""
    bad = [key for key in variables if not key.isidentifier()]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: not usable as environment variable names in a server's settings")
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in sorted(variables.items()))
