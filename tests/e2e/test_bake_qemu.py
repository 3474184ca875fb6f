"""The qemu builder for real: vanilla disk, Packer's qemu builder under TCG, Salt, testinfra over SSH.

Software emulation is slow, so CI bakes one role, the base, and one failure
that stops early (a state that fails, with no common states). Both bakes run
in the background from the start of the session, under a prefix and state of
their own (tests/support/qemu_background.py); these tests check their results.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.commands import fab
from tests.support.qemu_background import QemuBakes
from workbench.build import disks
from workbench.core import config, run


@pytest.fixture(scope="module")
def qemu_config_path(qemu_bakes: QemuBakes) -> Path:
    return qemu_bakes.config_path


@pytest.fixture(scope="module")
def baked(qemu_bakes: QemuBakes) -> dict[str, Any]:
    proc = qemu_bakes.result("base")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (result,) = _last_json(proc.stdout)
    return {"result": result, "output": proc.stdout + proc.stderr}


def _last_json(stdout: str) -> Any:
    """The JSON `--json` prints last (progress lines come before it on stdout)."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line in ("[", "{"))
    return json.loads("\n".join(lines[start:]))


def _qemu_processes(state: Path) -> list[str]:
    listing = run.capture(["ps", "-eo", "args="]).stdout
    return [line for line in listing.splitlines() if line.startswith("qemu-system") and str(state) in line]


def test_base_role_baked_as_a_verified_qcow2(baked: dict[str, Any], qemu_config_path: Path) -> None:
    result = baked["result"]
    cfg = config.load(qemu_config_path)
    assert result["tag"] == f"{cfg.prefix}/base:{result['version']}.qcow2"
    assert result["cached"] is False
    assert re.match(r"^\d+ passed", result["tests"]), result["tests"]
    path = disks.disk_path(cfg, "base", result["version"])
    assert path.is_file() and path.stat().st_mode & 0o222 == 0, "accepted disks are read-only"
    info = json.loads(run.capture(["qemu-img", "info", "--output=json", str(path)]).stdout)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == cfg.builder.disk_size * 1024 * 1024
    assert disks.file_id(path) == result["id"]
    # The steps, one line each, and the VM verification's own boot.
    output = baked["output"]
    for step in ("[vm disk]", "provision: base", "verify: tests/roles/test_base.py against a fresh boot", "tag: "):
        assert step in output, step


def test_nothing_of_the_bake_is_left_running_or_lying_around(baked: dict[str, Any], qemu_bakes: QemuBakes) -> None:
    qemu_bakes.result("broken")  # the background job's last bake: after it, nothing of either may run
    assert _qemu_processes(qemu_bakes.state) == []
    assert not list((qemu_bakes.state / "bakes").glob("base-*")), "the bake's work directory is removed"
    assert not list(Path("/tmp").glob("wb-ssh-*")), "the SSH master connection is closed"


def test_listed_and_reused_when_nothing_changed(baked: dict[str, Any], qemu_config_path: Path) -> None:
    listed = json.loads(fab("image.list", "--json", config=qemu_config_path, check=True).stdout)
    mine = [i for i in listed if i["tag"] == baked["result"]["tag"]]
    assert mine and mine[0]["path"].endswith(f"/qcow2/base/{baked['result']['version']}.qcow2")
    again = fab("image.bake", "base", "--builder", "qemu", "--json", config=qemu_config_path, check=True)
    (result,) = _last_json(again.stdout)
    # Nothing rebuilt: the same disk file (how fast: bench/bench_qemu.py prints it).
    assert result["cached"] is True
    assert (result["tag"], result["id"]) == (baked["result"]["tag"], baked["result"]["id"])
    unknown = fab("image.bake", "base", "--builder", "vmware", config=qemu_config_path)
    assert unknown.returncode != 0 and unknown.stdout == ""
    assert "--builder 'vmware': choose one of docker, qemu" in unknown.stderr, unknown.stderr


def test_failed_provisioning_leaves_no_disk_and_no_vm(qemu_bakes: QemuBakes) -> None:
    """`broken`: a role whose only state fails (tests/support/qemu_background.py makes its checkout)."""
    proc = qemu_bakes.result("broken")
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "broken: Salt 1 state(s) failed" in proc.stderr, proc.stderr[-2000:]
    assert "broken (test.fail_without_changes, sls broken)" in proc.stderr
    cfg = config.load(qemu_bakes.broken_config_path)
    assert not disks.store(cfg, "broken").exists() or not list(disks.store(cfg, "broken").rglob("*.qcow2"))
    assert _qemu_processes(qemu_bakes.state) == []


def test_published_disk_takes_key_and_settings_from_the_deploy(baked: dict[str, Any], qemu_bakes: QemuBakes) -> None:
    """The base disk made publishable (`image.publish` for kvm/qemu), booted with a config drive as nova
    gives one (tests/support/boot_published.py): no key of the workbench's left in the file, root logs
    in with the key of the drive's metadata, the image's command runs with the user data's settings."""
    proc = qemu_bakes.result("published")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen["keys_left"] == [] and seen["key_bytes_found"] == 0, "the published file carries no key"
    assert seen["authorized_keys"].strip() == seen["key"], "root's key came from the config drive"
    assert seen["settings_unit"] == "active"
    # Systemd waits as long as an emulated boot needs (vmdisk's slow-machines drop-in), and /boot is there.
    assert (seen["start_timeout"], seen["boot_mount"]) == ("15min", "vfat")
    assert "WB_GREETING='from the deploy'" in seen["settings"]
    assert "WB_GREETING=from the deploy" in seen["environ"], "the image's command got the settings"
    assert (seen["release"]["release"], seen["release"]["environment"]) == ("base-7", "lab")
    assert seen["release_as_nobody"].startswith("{"), "a role's unprivileged services read the release record"
    assert any("from the config drive: settings WORKBENCH_RELEASE, WORKBENCH_ENVIRONMENT, WB_GREETING; 1 SSH key"
               in line for line in seen["console"]), seen["console"]
    # The accepted disk itself is untouched: a publish makes a copy.
    source = Path(seen["source"])
    assert disks.file_id(source) == baked["result"]["id"]
