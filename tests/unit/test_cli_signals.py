"""`fab` turns SIGTERM into the interrupt Ctrl-C makes, so a killed task still cleans up, and says so."""

from __future__ import annotations

import json as json_module
import os
import signal
import time
from typing import Any

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

from workbench.cli import main, tasks


def test_sigterm_interrupts_once_and_the_clean_up_is_not_cut_short() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    try:
        main.interrupt_on_sigterm()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        # During the clean-up a second SIGTERM changes nothing, and no program it runs ignores it.
        os.kill(os.getpid(), signal.SIGTERM)
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler) and handler is not signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_interrupted_task_still_prints_its_json_and_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    @tasks.wb(help={"json": "print JSON"})
    def stopped(c: Any, json: bool = False) -> None:
        raise KeyboardInterrupt

    with pytest.raises(Exit) as exited:
        stopped(Context(), json=True)
    assert exited.value.code == tasks.INTERRUPTED == 130
    assert "interrupted" in str(exited.value.message)
    assert json_module.loads(capsys.readouterr().out) == {"error": "interrupted", "exit_code": 130}
