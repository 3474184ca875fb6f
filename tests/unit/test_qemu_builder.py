"""The qemu builder's parts that need no VM: disk layout, Packer block, qemu and ssh settings, disk records."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tests.support.config import REPO, small_config
from workbench.build import builders, disks, images, vm, vmdisk
from workbench.build.aptcache import PackageCache
from workbench.core import config


def qemu_config(tmp_path: Path, **builder: object) -> config.Config:
    return small_config(tmp_path, "unit", workbench={"default_role": "base"}, builder={"type": "qemu", **builder},
                        roles={"base": {}})


def test_mbr_has_boot_code_two_lba_partitions_and_the_signature() -> None:
    code = b"\xeb" * 440
    sector = vmdisk.mbr(code, [(2048, 262144, 0x0C, True), (264192, 1000, 0x83, False)])
    assert len(sector) == 512 and sector[:440] == code and sector[510:] == b"\x55\xaa"
    first = struct.unpack("<B3sB3sII", sector[446:462])
    second = struct.unpack("<B3sB3sII", sector[462:478])
    assert (first[0], first[2], first[4], first[5]) == (0x80, 0x0C, 2048, 262144)
    assert (second[0], second[2], second[4], second[5]) == (0, 0x83, 264192, 1000)
    assert sector[478:510] == b"\0" * 32, "the other two entries are empty"


def test_mbr_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError):
        vmdisk.mbr(b"x" * 441, [])
    with pytest.raises(ValueError):
        vmdisk.mbr(b"", [(1, 1, 0x83, False)] * 5)


def test_syslinux_boots_the_labelled_root_with_a_serial_console() -> None:
    cfg = vmdisk.syslinux_cfg("vmlinuz-6.1.0-1-amd64", "initrd.img-6.1.0-1-amd64")
    assert "KERNEL /vmlinuz-6.1.0-1-amd64" in cfg and "INITRD /initrd.img-6.1.0-1-amd64" in cfg
    assert "root=LABEL=wb-root" in cfg and "console=ttyS0,115200" in cfg
    assert "LABEL=wb-root / ext4" in vmdisk.FILES["etc/fstab"]


def test_qemu_block_takes_the_builder_settings(tmp_path: Path) -> None:
    cfg = qemu_config(tmp_path, memory=2048, cpus=1, disk_size=3072)
    template = json.loads((REPO / "images/role.json").read_text())
    request = builders.BuildRequest(cfg, cfg.role("base"), "bid", "abc", {}, "unit-build", tmp_path / "work")
    rendered = builders.QemuBuilder().configure(template, request)
    (block,) = rendered["builders"]
    assert block["type"] == "qemu" and block["disk_image"] is True
    assert block["accelerator"] == "tcg" and block["disk_size"] == "3072M"
    assert ["-m", "2048M"] in block["qemuargs"] and ["-smp", "1"] in block["qemuargs"]
    assert ["-serial", f"file:{tmp_path / 'work' / 'console.log'}"] in block["qemuargs"]
    assert block["ssh_username"] == "root" and block["headless"] is True
    assert rendered["provisioners"] == template["provisioners"], "the same provisioners as the docker builder"


def test_guest_reaches_the_package_cache_through_user_networking() -> None:
    cache = PackageCache(port=3142, gateway="172.17.0.1")
    assert builders.QemuBuilder().apt_proxy(cache) == "http://10.0.2.2:3142"
    assert builders.QemuBuilder().apt_proxy(None) == ""
    assert builders.QemuBuilder().on_error(keep_failed=True) == "cleanup"


def test_the_tested_vm_is_a_snapshot_reached_on_loopback_only(tmp_path: Path) -> None:
    cfg = qemu_config(tmp_path)
    argv = vm.qemu_argv(cfg, Path("/d/role.qcow2"), 2222, Path("/c.log"))
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert "file=/d/role.qcow2,if=virtio,format=qcow2,snapshot=on" in argv
    assert "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22" in argv
    text = vm.ssh_config_text(2222, Path("/k/id"), Path("/tmp/ctl"))
    assert "Port 2222" in text and "IdentityFile /k/id" in text and "ControlPath /tmp/ctl" in text


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        ({"memory": 100}, "[builder] memory = 100"),
        ({"cpus": 0}, "[builder] cpus = 0"),
        ({"disk_size": 512}, "[builder] disk_size = 512"),
        ({"accelerator": "hax"}, "must be one of tcg, kvm"),
    ],
)
def test_bad_vm_settings_are_config_errors(tmp_path: Path, builder: dict[str, object], message: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        qemu_config(tmp_path, **builder)
    assert message in str(err.value)


def test_builder_chosen_per_bake(tmp_path: Path) -> None:
    docker_config = small_config(tmp_path, "unit", roles={"app": {}})
    qemu = docker_config.with_builder("qemu")
    assert isinstance(builders.builder_for(qemu), builders.QemuBuilder)
    assert docker_config.builder.type == "docker", "the loaded configuration is left as it was"
    assert qemu.builder.cpus == docker_config.builder.cpus, "the other [builder] settings are kept"


def test_an_unknown_builder_is_refused_before_anything_is_baked(tmp_path: Path) -> None:
    from workbench.build import bake

    cfg = small_config(tmp_path, "unit", roles={"app": {}})
    with pytest.raises(config.ConfigError) as err:
        bake.bake(cfg, ["app"], builder_type="vmware")
    assert "--builder 'vmware': choose one of docker, qemu" in str(err.value)
    assert not (cfg.state_dir / "bakes").exists()


def _candidate(tmp_path: Path, body: bytes) -> Path:
    path = tmp_path / "work" / f"{body.decode()}.qcow2"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


def test_accepted_disks_are_versioned_read_only_and_found_by_inputs(tmp_path: Path) -> None:
    cfg = qemu_config(tmp_path)
    labels = {"workbench.inputs": "in1", "workbench.tests": "3 passed", images.VERIFY_LABEL: "passed"}
    first = disks.accept(cfg, "base", _candidate(tmp_path, b"one"), 1, labels)
    disks.accept(cfg, "base", _candidate(tmp_path, b"two"), 2, {**labels, "workbench.inputs": "in2"})
    assert first["tag"] == "unit/base:1.qcow2" and Path(first["path"]).read_bytes() == b"one"
    assert Path(first["path"]).stat().st_mode & 0o777 == 0o444
    assert [r["version"] for r in disks.records(cfg, "base")] == [2, 1]
    assert disks.find(cfg, "base", "in1")["version"] == 1  # type: ignore[index]
    assert disks.find(cfg, "base", "nope") is None
    newest = disks.list_disks(cfg)[0]
    assert (newest.tag, newest.tests, newest.path.endswith("/base/2.qcow2")) == ("unit/base:2.qcow2", "3 passed", True)


def test_a_disk_without_its_record_is_not_accepted_but_its_version_is_taken(tmp_path: Path) -> None:
    cfg = qemu_config(tmp_path)
    store = disks.store(cfg, "base")
    store.mkdir(parents=True)
    (store / "4.qcow2").write_bytes(b"interrupted accept")
    assert disks.records(cfg, "base") == []
    with images.VersionCounter(cfg, "base.qcow2", lambda: disks.versions(cfg, "base")) as counter:
        assert counter.next() == 5


def test_prune_keeps_the_newest_and_removes_record_then_file(tmp_path: Path) -> None:
    cfg = qemu_config(tmp_path)
    for version in (1, 2, 3):
        disks.accept(cfg, "base", _candidate(tmp_path, str(version).encode()), version, {})
    assert disks.prune(cfg, 1) == ["unit/base:2.qcow2", "unit/base:1.qcow2"]
    assert sorted(p.name for p in disks.store(cfg, "base").iterdir()) == ["3.json", "3.qcow2"]


def _request(cfg: config.Config, work: Path) -> builders.BuildRequest:
    return builders.BuildRequest(
        config=cfg, role=cfg.roles["base"], bake_id="b1", base_ref="ref", labels={images.BAKE_LABEL: "b1"},
        container_name="unit-build", work=work,
    )  # fmt: skip


VERDICT = {images.VERIFY_LABEL: "passed", "workbench.tests": "3 passed", images.CANDIDATE_LABEL: "false"}


def test_an_accepted_disk_records_its_version_among_its_labels(tmp_path: Path) -> None:
    cfg = qemu_config(tmp_path)
    accepted = builders.QemuBuilder().accept(str(_candidate(tmp_path, b"disk")), _request(cfg, tmp_path), VERDICT)
    record = disks.records(cfg, "base")[0]
    assert (accepted.version, record["labels"][images.VERSION_LABEL]) == (1, "1")
    assert record["labels"][images.VERIFY_LABEL] == "passed"


def test_an_accepted_image_carries_its_version_label(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Releases find images by `workbench.version`: the docker accept must write it (a regression once)."""
    cfg = qemu_config(tmp_path)
    built: dict[str, object] = {}

    class FakeImage:
        id, attrs = "sha256:accepted", {"Size": 7}

    class FakeImages:
        def build(self, fileobj: object, tag: str, **_: object) -> tuple[FakeImage, list[object]]:
            built.update(dockerfile=fileobj.read().decode(), tag=tag)  # type: ignore[attr-defined]
            return FakeImage(), []

    class FakeClient:
        images = FakeImages()

    monkeypatch.setattr(builders.engine, "client", lambda: FakeClient())
    monkeypatch.setattr(builders.engine, "images", lambda labels: [])
    monkeypatch.setattr(builders.engine, "remove_image", lambda ref: None)
    accepted = builders.DockerBuilder().accept("sha256:candidate", _request(cfg, tmp_path), VERDICT)
    assert (accepted.tag, accepted.version) == ("unit/base:1", 1)
    assert 'LABEL "workbench.version"="1"' in str(built["dockerfile"])
    assert 'LABEL "workbench.verify"="passed"' in str(built["dockerfile"])
