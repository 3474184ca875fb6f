"""Boot the publishable disk of a role's newest accepted qcow2 as a kvm/qemu cloud would: with a config drive.

    python -m tests.support.boot_published <workbench.toml> <role>

Run by the background qemu job (tests/support/qemu_background.py) after the base role's qcow2
bake; tests/e2e/test_bake_qemu.py checks what it prints (one JSON object on stdout's last line).
The config drive is what nova makes for a server (label `config-2`, `openstack/latest/meta_data.json`
with the keypair's public key, `user_data` with the deploy's settings); the key in it is the
workbench's own, so logging in proves that the published disk took its key from the deploy.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from workbench.build import disks, vm, vmdisk
from workbench.cloud import vmimage
from workbench.core import config as wb_config
from workbench.core import run

SETTINGS = "WORKBENCH_RELEASE='base-7'\nWORKBENCH_ENVIRONMENT='lab'\nWB_GREETING='from the deploy'\n"


def config_drive(work: Path, public_key: str, user_data: str) -> Path:
    """A FAT config drive, as nova writes one with `config_drive_format = vfat`."""
    latest = work / "drive" / "openstack" / "latest"
    latest.mkdir(parents=True)
    meta = {"uuid": "00000000-0000-4000-8000-000000000007", "name": "base-7.lab.wpdn",
            "public_keys": {"workbench": public_key}}
    (latest / "meta_data.json").write_text(json.dumps(meta))
    (latest / "user_data").write_text(user_data)
    image = work / "config-2.img"
    run.capture(["mkfs.vfat", "-n", "config-2", "-C", str(image), "2048"])
    run.capture(["mmd", "-i", str(image), "::/openstack", "::/openstack/latest"])
    run.capture(["mcopy", "-i", str(image), str(latest / "meta_data.json"), str(latest / "user_data"),
                 "::/openstack/latest/"])
    return image


def main(config_path: str, role: str) -> None:
    cfg = wb_config.load(Path(config_path))
    record = disks.records(cfg, role)[0]
    work = Path(tempfile.mkdtemp(prefix="published-", dir=cfg.state_dir))
    published = vmimage.disk_file(cfg.state_dir / "published", Path(record["path"]), record["id"])
    raw = work / "check.raw"
    run.capture(["qemu-img", "convert", "-O", "raw", str(published), str(raw)])
    key = vmdisk.ssh_key(cfg)
    key_body = key.with_suffix(".pub").read_text().split()[1].encode()
    keys_left = vmimage.keys_in(vmimage.filesystem(raw))
    # The key's bytes anywhere in the disk, free blocks included.
    found = subprocess.run(["grep", "-c", "-a", "-F", key_body.decode(), str(raw)], capture_output=True, text=True)
    raw.unlink()
    drive = config_drive(work, key.with_suffix(".pub").read_text().strip(), SETTINGS)
    with vm.booted(cfg, published, key, work / "vm", scope="published", drives=[drive]) as machine:

        def ssh(command: str) -> str:
            return run.capture(machine.ssh_argv(command), timeout=60).stdout

        main_pid = "$(systemctl show -p MainPID --value workbench-image)"
        seen = {
            "settings": ssh("cat /run/workbench/settings"),
            "environ": ssh(f"tr '\\0' '\\n' < /proc/{main_pid}/environ").splitlines(),
            "release": json.loads(ssh("cat /run/workbench/release.json")),
            # The role's own services are not root (the app's gunicorn serves this file's content).
            "release_as_nobody": ssh("runuser -u nobody -- cat /run/workbench/release.json 2>&1 || true"),
            "authorized_keys": ssh("cat /root/.ssh/authorized_keys"),
            "settings_unit": ssh("systemctl is-active workbench-settings").strip(),
            "start_timeout": ssh("systemctl show -p DefaultTimeoutStartUSec --value").strip(),
            "boot_mount": ssh("findmnt -n -o FSTYPE /boot || true").strip(),
        }
        console = [line for line in vm.console_tail(machine.console, 400) if "workbench-settings:" in line]
    print(json.dumps({
        "published": str(published), "source": record["path"], "keys_left": keys_left,
        "key_bytes_found": int(found.stdout.strip() or 0), "key": key.with_suffix(".pub").read_text().strip(),
        "seconds_to_ssh": round(machine.seconds_to_ssh, 1), "console": console, **seen,
    }))
    print(f"booted {shlex.quote(str(published))}", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
