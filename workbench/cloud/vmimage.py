"""A role's accepted qcow2 as a `kvm`/`qemu` cloud boots it: no key of the workbench's, the deploy's settings.

The qemu builder's disks let root in with the workbench's own key (how Packer
and the verification reach the VM). A published disk carries no key at all:

- root's `authorized_keys` (and any SSH host key) is overwritten with zeros,
  then removed, so not even its bytes stay in the file's free blocks;
- a oneshot unit, `workbench-settings`, runs before the image's command and
  sshd at each boot. It reads the deploy's settings (the user data: `KEY='value'`
  lines, the same as a container's environment) and the server's SSH keys (a
  nova keypair, `public_keys`) from the config drive (label `config-2`), or
  else from the metadata service, as cloud images do. The settings reach the
  image's command (`workbench-image.service`) through `EnvironmentFile`; the
  keys become root's `authorized_keys`.

The disk is edited without mounting it: a raw copy (qemu-img), its ext4 root
changed by debugfs at the partition's offset, checked by e2fsck, and converted
back to qcow2. The result is made once per accepted disk and recipe.
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.build import vmdisk
from workbench.core import files, progress, run
from workbench.core.errors import CloudError, CommandFailed

# Bump when what a published disk holds changes: disks are made again.
RECIPE = 3
HELPER = "/usr/lib/workbench-cloud/deploy-settings"
SETTINGS_UNIT = "/etc/systemd/system/workbench-settings.service"
IMAGE_DROP_IN = "/etc/systemd/system/workbench-image.service.d/50-deploy-settings.conf"
ENABLED = "/etc/systemd/system/multi-user.target.wants/workbench-settings.service"
# Where keys live in a disk: root's authorized keys, and host keys (each machine makes its own).
KEY_DIRS = {"/root/.ssh": "", "/etc/ssh": "ssh_host_"}

DEPLOY_SETTINGS = """\
#!/usr/bin/python3
# Written by `fab image.publish` (workbench/cloud/vmimage.py): this server's deploy-time settings and
# SSH keys, from its config drive or else the metadata service, at each boot.
import json, os, subprocess, sys, tempfile, time, urllib.error, urllib.request

SETTINGS, KEYS = "/run/workbench/settings", "/root/.ssh/authorized_keys"
# /run/workbench also holds what the role's own users read (release.json, which the app's health
# check serves): made here first, it must let them in; the settings file alone is root's.
RUN_MODE = 0o755
SERVICE = "http://169.254.169.254/openstack/latest/"


def say(text):
    print(f"workbench-settings: {text}", flush=True)


def from_drive():
    found = subprocess.run(["blkid", "-t", "LABEL=config-2", "-o", "device"], capture_output=True, text=True)
    devices = found.stdout.split()
    if not devices:
        return None
    with tempfile.TemporaryDirectory() as mount:
        subprocess.run(["mount", "-o", "ro", devices[0], mount], check=True)
        try:
            latest = os.path.join(mount, "openstack", "latest")
            with open(os.path.join(latest, "meta_data.json"), "rb") as meta:
                metadata = json.load(meta)
            try:
                with open(os.path.join(latest, "user_data"), "rb") as data:
                    user_data = data.read()
            except FileNotFoundError:
                user_data = b""
        finally:
            subprocess.run(["umount", mount], check=False)
    return "the config drive", metadata, user_data


def fetch(name):
    try:
        with urllib.request.urlopen(SERVICE + name, timeout=5) as answer:
            return answer.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # the deploy gave none
            return b""
        raise


def from_service():
    # Minutes, not seconds: under software emulation the network can come up many minutes into the
    # boot, and a role started without its settings would serve as something else.
    deadline, said = time.monotonic() + 900, time.monotonic()
    while time.monotonic() < deadline:
        try:
            return "the metadata service", json.loads(fetch("meta_data.json") or b"{}"), fetch("user_data")
        except (OSError, ValueError) as exc:
            if time.monotonic() - said > 60:
                say(f"still no answer from the metadata service ({exc})")
                said = time.monotonic()
            time.sleep(2)
    return None


def replace(path, data, mode, folder_mode=0o700):
    os.makedirs(os.path.dirname(path), mode=folder_mode, exist_ok=True)
    with open(path + ".partial", "wb") as out:
        out.write(data)
    os.chmod(path + ".partial", mode)
    os.replace(path + ".partial", path)


found = from_drive() or from_service()
if found is None:
    say("no config drive and no answer from the metadata service: no settings, no keys")
    replace(SETTINGS, b"", 0o600, RUN_MODE)
    sys.exit(0)
source, metadata, user_data = found
keys = [key.strip() for key in (metadata.get("public_keys") or {}).values() if key.strip()]
replace(SETTINGS, user_data, 0o600, RUN_MODE)
if keys:
    replace(KEYS, "".join(f"{key}\\n" for key in keys).encode(), 0o600)
names = [line.split("=", 1)[0] for line in user_data.decode().splitlines() if "=" in line]
say(f"from {source}: settings {', '.join(names) or 'none'}; {len(keys)} SSH key(s)")
"""

SETTINGS_UNIT_TEXT = """\
# Written by `fab image.publish`: the deploy's settings and SSH keys, before the role and sshd start.
[Unit]
Description=Deploy-time settings and SSH keys (config drive or metadata service)
Wants=network-online.target
After=network-online.target local-fs.target
Before=workbench-image.service ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/python3 {helper}
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""

IMAGE_DROP_IN_TEXT = """\
# Written by `fab image.publish`: the image's command gets the deploy's settings, as a container does.
[Unit]
Wants=workbench-settings.service
After=workbench-settings.service

[Service]
EnvironmentFile=-/run/workbench/settings
# The console says when the role's command starts, as the lxc image's init does (a release
# of a role without a health check waits for it), and shows what the command prints.
ExecStartPre=/bin/echo "workbench-init: running the image's command"
StandardOutput=journal+console
"""


def disk_file(store: Path, source: Path, source_id: str) -> Path:
    """The publishable qcow2 of the accepted disk `source` (id `source_id`), made once into `store`."""

    def make(work: Path, partial: Path) -> None:
        raw = work / "disk.raw"
        progress.step("publish", f"removing the workbench's key from {source.name}, adding the deploy's settings")
        run.capture(["qemu-img", "convert", "-O", "raw", str(source), str(raw)])
        root = filesystem(raw)
        _remove_keys(root)
        _install(root, work)
        left = keys_in(root)
        if left:
            raise CloudError(f"{', '.join(left)} still in {source.name} after removing keys: not published")
        run.capture(["e2fsck", "-f", "-n", root])
        run.capture(["qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(partial)])

    try:
        return files.made_once(store / f"{source_id.split(':')[-1][:16]}-v{RECIPE}.qcow2", make)
    except (CommandFailed, ValueError) as exc:
        raise CloudError(f"making the publishable disk of {source} failed: {exc}") from None


def virtual_size(path: Path) -> int:
    """The size of the disk a qcow2 file holds, in bytes (what a server's flavor must give at least)."""
    info = json.loads(run.capture(["qemu-img", "info", "--output=json", str(path)]).stdout)
    return int(info["virtual-size"])


def filesystem(raw: Path) -> str:
    """The root file system of a raw disk as e2fsprogs name it: the file, at the partition's offset."""
    return f"{raw}?offset={vmdisk.root_offset(raw)}"


def keys_in(root: str) -> list[str]:
    """Keys the file system `root` holds: root's authorized keys, SSH host keys."""
    return [path for path, _ in _keys(root)]


def _keys(root: str) -> list[tuple[str, int]]:
    """(path, size) of each key in `root`."""
    return [(f"{directory}/{name}", size) for directory, prefix in KEY_DIRS.items()
            for name, size in _listing(root, directory) if name.startswith(prefix)]


def read(root: str, path: str) -> str:
    """A file of the file system `root` ('' when it has none)."""
    done = run.capture(["debugfs", "-R", f"cat {path}", root], check=False)
    return done.stdout if done.returncode == 0 else ""


def _listing(root: str, directory: str) -> list[tuple[str, int]]:
    """(name, size) of the files in `directory` (none when it is missing); `ls -p` prints
    `/inode/mode/uid/gid/name/size/` per entry."""
    out = _debugfs(root, [f"ls -p {directory}"], writable=False)
    entries = []
    for line in out.splitlines():
        fields = line.strip().split("/")
        if len(fields) == 8 and fields[5] not in (".", "..") and fields[2].startswith("10"):
            entries.append((fields[5], int(fields[6] or 0)))
    return entries


def _remove_keys(root: str) -> None:
    block = _block_size(root)
    commands = []
    for path, size in _keys(root):
        # Zeros first: `rm` only frees the blocks, whose bytes would stay in the file.
        commands += [f"zap_block -f {path} -p 0 {n}" for n in range(-(-size // block))]
        commands.append(f"rm {path}")
    if commands:
        _debugfs(root, commands)


def _install(root: str, work: Path) -> None:
    texts = {
        HELPER: (DEPLOY_SETTINGS, "0100755"),
        SETTINGS_UNIT: (SETTINGS_UNIT_TEXT.format(helper=HELPER), "0100644"),
        IMAGE_DROP_IN: (IMAGE_DROP_IN_TEXT, "0100644"),
    }
    commands = [f"mkdir {d}" for d in (str(Path(HELPER).parent), str(Path(IMAGE_DROP_IN).parent))]
    for index, (target, (text, mode)) in enumerate(texts.items()):
        local = work / f"file{index}"
        local.write_text(text)
        commands += [f"rm {target}", f"write {local} {target}", f"sif {target} mode {mode}"]
    commands += [f"rm {ENABLED}", f"symlink {ENABLED} {SETTINGS_UNIT}"]
    _debugfs(root, commands)
    for target, (text, _) in texts.items():
        if read(root, target) != text:
            raise CloudError(f"{target} was not written into the disk (debugfs)")


def _block_size(root: str) -> int:
    for line in _debugfs(root, ["stats"], writable=False).splitlines():
        if line.startswith("Block size:"):
            return int(line.split(":")[1])
    raise ValueError(f"{root}: debugfs names no block size")


def _debugfs(root: str, commands: list[str], *, writable: bool = True) -> str:
    """debugfs's output of `commands` on the file system `root` (it reads them from stdin, one a line).

    debugfs exits 0 whatever a command said: callers check what they changed by reading it back.
    """
    argv = ["debugfs", *(["-w"] if writable else []), "-f", "-", root]
    return run.capture(argv, input="\n".join(commands) + "\n").stdout

