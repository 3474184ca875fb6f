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
