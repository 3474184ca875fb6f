"""`fab` turns SIGTERM into the interrupt Ctrl-C makes, so a killed task still cleans up."""

from __future__ import annotations

import os
import signal
import time

import pytest

from workbench.cli import main


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
