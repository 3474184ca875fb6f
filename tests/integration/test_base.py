"""The vanilla base, built for real on the local Docker engine."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from tests.support.commands import fab
from workbench.build import base
from workbench.core import engine
from workbench.core.config import Config


def run_in(image: str, *argv: str) -> str:
    output = engine.client().containers.run(image, list(argv), remove=True)
    return output.decode()


def test_base_runs_python3(base_image: Any) -> None:
    assert run_in(base_image.tag, "python3", "-c", "print(6 * 7)").strip() == "42"


def test_base_labels_record_the_inputs(base_image: Any, wb_cfg: Config) -> None:
    labels = engine.get_image(base_image.tag).labels
    assert labels[engine.ROLE_LABEL] == "base"
    assert labels[engine.PREFIX_LABEL] == wb_cfg.prefix
    assert labels[engine.INPUTS_LABEL].startswith(base_image.tag.rsplit(":", 1)[1])
    recorded = json.loads(labels["workbench.base.inputs"])
    assert recorded["suite"] == wb_cfg.base.suite
    assert "python3" in recorded["packages"]
    assert labels["workbench.built"].endswith("+00:00")


def test_base_carries_nothing_of_the_build_host(base_image: Any, wb_cfg: Config) -> None:
    # debootstrap never sees the host's CAs (a bake lends them; tests/e2e/test_bake.py
    # checks that with a CA of its own): no certificate of anyone's under /usr/local.
    custom_cas = run_in(base_image.tag, "find", "/usr/local/share", "-name", "*.crt").split()
    assert custom_cas == [], f"custom CAs in the base: {custom_cas}"
    leftovers = run_in(
        base_image.tag, "find", "/var/cache/apt", "/var/lib/apt/lists", "-type", "f",
        "(", "-name", "*.deb", "-o", "-name", "*_Packages*", "-o", "-name", "*Release*", "-o", "-name", "*.bin", ")",
    )
    assert leftovers.strip() == "", f"package caches left in the base: {leftovers}"
    sources = run_in(base_image.tag, "cat", "/etc/apt/sources.list")
    assert f"deb {wb_cfg.base.mirror} {wb_cfg.base.suite} main" in sources
    assert f"deb {wb_cfg.base.security_mirror} {wb_cfg.base.suite}-security main" in sources


def test_rootfs_tarball_is_kept_for_disk_builders(base_image: Any) -> None:
    assert base_image.rootfs.is_file()
    with tarfile.open(base_image.rootfs) as tar:
        names = set(tar.getnames())
    assert "./usr/bin/python3" in names or "./usr/bin/python3.11" in names
    # The build host's resolver and name stay out; the engine provides both at run time.
    assert "./etc/resolv.conf" not in names
    assert "./etc/hostname" not in names


def test_same_inputs_find_the_same_base(base_image: Any, wb_cfg: Config) -> None:
    # How fast: bench/bench_bake.py prints the cached base's time.
    again = base.build_base(wb_cfg)
    assert again.cached and (again.id, again.tag) == (base_image.id, base_image.tag)


def test_fab_image_base_reports_the_cached_base(base_image: Any, wb_config_path: Path) -> None:
    proc = fab("image.base", config=wb_config_path, check=True)
    assert f"base {base_image.tag} cached" in proc.stdout
