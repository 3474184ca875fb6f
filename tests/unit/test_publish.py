"""`image.publish`'s root filesystem: its init runs the image's command, no key stays, settings quoted."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.config import small_config
from workbench.build import disks, images
from workbench.cloud import publish
from workbench.core.config import Config
from workbench.core.errors import CloudError, ConfigError

APP = {"Entrypoint": [""], "Cmd": ["/usr/local/sbin/workbench-init"], "WorkingDir": "",
       "Env": ["PATH=/usr/local/sbin:/usr/bin:/bin", "LANG=C.UTF-8"]}


def test_init_runs_the_images_command_after_dhcp_and_settings(tmp_path: Path) -> None:
    (tmp_path / "sbin").mkdir()
    # Debian's init is a symlink into systemd: replaced, never followed.
    (tmp_path / "sbin" / "init").symlink_to("/lib/systemd/systemd")
    publish.install_init(tmp_path, APP)
    init = tmp_path / "sbin" / "init"
    assert not init.is_symlink() and os.access(init, os.X_OK)
    text = init.read_text()
    assert text.startswith(f"#!/{publish.HELPERS}/busybox sh\n")
    # Docker's reset entrypoint ([""]) is no entrypoint: an empty first word would be run as the command.
    assert text.rstrip().endswith("exec /usr/local/sbin/workbench-init")
    assert "export PATH=/usr/local/sbin:/usr/bin:/bin" in text and "cd /\n" in text
    assert text.index("udhcpc") < text.index(". \"$settings\"") < text.index("exec ")
    for helper in ("busybox", "dhcp", "settings"):
        assert (tmp_path / publish.HELPERS / helper).is_file()
    for script in (init, tmp_path / publish.HELPERS / "dhcp"):
        checked = subprocess.run(["/bin/busybox", "sh", "-n", str(script)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
    compiled = subprocess.run(["python3", "-c", "import sys; compile(open(sys.argv[1]).read(), 'settings', 'exec')",
                               str(tmp_path / publish.HELPERS / "settings")], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr


def test_arguments_with_spaces_stay_whole(tmp_path: Path) -> None:
    publish.install_init(tmp_path, {"Entrypoint": ["/bin/run"], "Cmd": ["a b", "it's"], "WorkingDir": "/srv/my app"})
    text = (tmp_path / "sbin" / "init").read_text()
    assert "exec /bin/run 'a b' 'it'\"'\"'s'" in text
    assert "cd '/srv/my app'" in text


def test_an_image_without_a_command_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CloudError, match="no command"):
        publish.install_init(tmp_path, {"Entrypoint": [""], "Cmd": None})


def test_no_key_is_left(tmp_path: Path) -> None:
    for relative in ("root/.ssh/authorized_keys", "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub",
                     "etc/ssh/sshd_config", "home/x/.ssh/known_hosts"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x")
    assert publish.keys_in(tmp_path) == ["etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub",
                                         "root/.ssh"]
    publish.remove_keys(tmp_path)
    assert publish.keys_in(tmp_path) == []
    assert (tmp_path / "etc/ssh/sshd_config").is_file()


def test_settings_are_quoted_for_the_init(tmp_path: Path) -> None:
    text = publish.user_data({"WORKBENCH_RELEASE": "app-3", "GREETING": "it's $HOME"})
    assert text == "GREETING='it'\"'\"'s $HOME'\nWORKBENCH_RELEASE=app-3\n"
    script = tmp_path / "s"
    script.write_text(f"set -a\n{text}set +a\nprintf %s \"$GREETING\"")
    assert subprocess.run(["/bin/busybox", "sh", str(script)], capture_output=True, text=True).stdout == "it's $HOME"
    with pytest.raises(ConfigError, match="MY-VAR"):
        publish.user_data({"MY-VAR": "x"})


def test_kvm_and_qemu_publish_an_accepted_qcow2(tmp_path: Path) -> None:
    config = small_config(tmp_path, cloud={"virt_type": "qemu"}, roles={"app": {"ports": [80]}})
    with pytest.raises(ConfigError, match=r"wbx/app:7\.qcow2: no such accepted qcow2 .*--builder qemu"):
        publish.publish(config, "app", version=7)


class _Image:
    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels


def _disk(config: Config, version: int, definition: str) -> None:
    """An accepted qcow2 record of the app role with that definition."""
    candidate = config.state_dir / f"candidate-{version}"
    candidate.parent.mkdir(parents=True, exist_ok=True)
    candidate.write_bytes(b"disk")
    disks.accept(config, "app", candidate, version, {images.DEFINITION_LABEL: definition})


def test_a_release_on_qemu_boots_the_qcow2_of_its_images_definition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release keeps its container image's tag; the server boots the qcow2 of the same role definition."""
    config = small_config(tmp_path, cloud={"virt_type": "qemu"}, roles={"app": {"ports": [80]}})
    labels = {images.DEFINITION_LABEL: "d1", "workbench.git.commit": "abc123"}
    monkeypatch.setattr(publish.engine, "get_image", lambda image_id: _Image(labels))
    monkeypatch.setattr(publish.images, "tag_of", lambda config, image: "wbx/app:3")
    monkeypatch.setattr(publish.bake, "definition", lambda config, role: "d-checkout")
    baked: list[str] = []
    monkeypatch.setattr(publish.bake, "bake", lambda config, roles, builder_type="": baked.append(builder_type))
    _disk(config, 1, "d1")
    _disk(config, 2, "d1")
    _disk(config, 3, "d2")
    app = config.role("app")
    assert publish._disk_of_image(config, app, "sha256:0123")["version"] == 2
    # None of its definition, and the checkout defines the role otherwise: what to do, not a wrong disk.
    labels[images.DEFINITION_LABEL] = "d9"
    with pytest.raises(ConfigError, match=r"wbx/app:3: a qemu cloud boots .*check out abc123 and `fab image.bake app"):
        publish._disk_of_image(config, app, "sha256:0123")
    assert baked == []
    # The checkout defines it so: baked with the qemu builder, then found.
    monkeypatch.setattr(publish.bake, "definition", lambda config, role: "d9")
    monkeypatch.setattr(publish.bake, "bake",
                        lambda config, roles, builder_type="": (baked.append(builder_type), _disk(config, 4, "d9")))
    assert publish._disk_of_image(config, app, "sha256:0123")["version"] == 4
    assert baked == ["qemu"]
    # Baked before images recorded a definition.
    del labels[images.DEFINITION_LABEL]
    with pytest.raises(ConfigError, match=r"wbx/app:3 was baked before .*image.bake app --force"):
        publish._disk_of_image(config, app, "sha256:0123")


def test_releases_on_kvm_and_qemu_clouds_are_allowed(tmp_path: Path) -> None:
    lab = {"target": "openstack", "lab_address": "10.77.0.3", "flavor": "lab.medium"}
    for virt_type in ("kvm", "qemu", "lxc"):
        config = small_config(tmp_path, cloud={"virt_type": virt_type}, environments={"lab": lab}, roles={"app": {}})
        assert config.environments["lab"].target == "openstack"


def test_the_files_docker_writes_at_start_are_there(tmp_path: Path) -> None:
    """A container gets /etc/hosts and resolv.conf from Docker; a server from the image and its lease."""
    publish.install_init(tmp_path, APP)
    assert "127.0.0.1\tlocalhost" in (tmp_path / "etc" / "hosts").read_text()
    lease = tmp_path / "lease"
    resolv = tmp_path / "resolv.conf"
    script = (tmp_path / publish.HELPERS / "dhcp").read_text().replace(f"/{publish.HELPERS}/busybox", "/bin/busybox")
    # Only the resolv.conf lines: the address and route commands need the server's interface.
    lines = [line for line in script.splitlines() if "dns" in line or "resolv" in line]
    lease.write_text("\n".join(lines).replace("/etc/resolv.conf", str(resolv)) + "\n")
    env = {"dns": "10.77.0.1 10.77.0.3", "domain": "lab.wpdn", "PATH": "/usr/bin:/bin"}
    subprocess.run(["/bin/busybox", "sh", str(lease)], env=env, check=True)
    assert resolv.read_text() == "search lab.wpdn\nnameserver 10.77.0.1\nnameserver 10.77.0.3\n"
