"""The base is built once per inputs, however many builds ask for it at the same moment.

`cloud.up` bakes the controller beside the live image: both need the base. On a
fresh machine both found it missing and debootstrapped into one work directory.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.support.config import small_config
from workbench.build import base


def test_parallel_builds_share_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = small_config(tmp_path)
    built: list[base.BaseImage] = []
    builds: list[str] = []
    image = base.BaseImage("wbx/base:x", "sha256:x", "x", 1, tmp_path / "rootfs.tar", cached=True, seconds=0.0)

    def build(config: object, mirror_via: str | None, start: float) -> base.BaseImage:
        builds.append(threading.current_thread().name)
        threading.Event().wait(0.3)  # long enough for the others to find it missing
        built.append(image)
        return image

    monkeypatch.setattr(base, "_built", lambda config: built[0] if built else None)
    monkeypatch.setattr(base, "_build", build)
    results: list[base.BaseImage] = []
    threads = [threading.Thread(target=lambda: results.append(base.build_base(config))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1
    assert [r.id for r in results] == ["sha256:x"] * 3


def test_force_builds_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = small_config(tmp_path)
    image = base.BaseImage("wbx/base:x", "sha256:x", "x", 1, tmp_path / "rootfs.tar", cached=True, seconds=0.0)
    builds: list[bool] = []
    monkeypatch.setattr(base, "_built", lambda config: image)
    monkeypatch.setattr(base, "_build", lambda config, mirror_via, start: builds.append(True) or image)
    base.build_base(config)
    base.build_base(config, force=True)
    assert builds == [True]
