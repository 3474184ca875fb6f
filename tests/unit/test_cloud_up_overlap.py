"""cloud.up bakes the controller while the live image builds: the overlap's edges."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from workbench.cloud import cloud
from workbench.core import run


def test_the_bake_result_comes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cloud.bake, "bake_role", lambda config, role: f"baked {role}")
    with cloud._baking_controller(object()) as baking:  # type: ignore[arg-type]
        assert baking.result(timeout=5) == "baked controller"


def test_a_failed_bake_fails_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(config: Any, role: str) -> str:
        raise RuntimeError("packer said no")

    monkeypatch.setattr(cloud.bake, "bake_role", fail)
    with (pytest.raises(RuntimeError, match="packer said no"),
          cloud._baking_controller(object()) as baking):  # type: ignore[arg-type]
        baking.result(timeout=5)


def test_a_failure_beside_it_interrupts_the_bake_and_waits_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    interrupted = threading.Event()
    finished = threading.Event()

    def slow_bake(config: Any, role: str) -> str:
        # Stands in for Packer: it ends once interrupted (its clean-up done), not before.
        assert interrupted.wait(timeout=10), "the bake was never interrupted"
        finished.set()
        raise KeyboardInterrupt

    monkeypatch.setattr(cloud.bake, "bake_role", slow_bake)
    monkeypatch.setattr(run, "interrupt_streams", interrupted.set)
    with (pytest.raises(ValueError, match="node failed"),
          cloud._baking_controller(object())):  # type: ignore[arg-type]
        raise ValueError("node failed")
    # The block's error is the one reported, and the bake had ended before it was.
    assert finished.is_set()


def test_an_undo_powers_off_only_the_vms_it_was_given(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed `cloud.up` on a running cloud undoes what it powered on, never the hypervisors already up."""
    from workbench.cloud import hypervisors

    stopped: list[str] = []

    class Pids:
        def __init__(self, directory: Any) -> None:
            self.directory = directory

        def stop(self, grace: float) -> int:
            stopped.append(self.directory.name)
            return 4242

    monkeypatch.setattr(hypervisors, "cloud_dir", lambda config: tmp_path)
    monkeypatch.setattr(hypervisors, "_pidfile", Pids)
    for name in ("hv1", "hv2"):
        (tmp_path / "vms" / name).mkdir(parents=True)
        (tmp_path / "vms" / name / "disk.qcow2").write_text("disk")
    assert hypervisors.stop(object(), ["hv2"]) == ["powered off hypervisor VM hv2 (pid 4242)"]  # type: ignore[arg-type]
    assert stopped == ["hv2"] and (tmp_path / "vms" / "hv1" / "disk.qcow2").exists()
    assert not (tmp_path / "vms" / "hv2" / "disk.qcow2").exists()
    hypervisors.stop_all(object())  # type: ignore[arg-type]
    assert stopped == ["hv2", "hv1", "hv2"]
