"""Waiting in tests on a machine that may be busy: wait on the event itself, with generous limits.

A limit only guards against a hang; it is never the thing a test measures. On a loaded machine
(other jobs sharing the cores) everything takes longer but nothing is wrong, so every limit is
multiplied by TRM_TEST_SLOWDOWN (default 3). A wait returns as soon as its event happens, so the
factor costs nothing on an idle machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

SLOWDOWN = float(os.environ.get("TRM_TEST_SLOWDOWN", "3"))


def limit(seconds: float) -> float:
    """The generous version of a time limit (seconds x TRM_TEST_SLOWDOWN)."""
    return seconds * SLOWDOWN


def wait_for(what: str, probe: Callable[[], object], timeout: float = 120, every: float = 0.05) -> object:
    """Poll `probe` until it returns something truthy; fail with `what` after limit(timeout) seconds."""
    end = time.monotonic() + limit(timeout)
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {limit(timeout):.0f} s waiting for {what}")
        time.sleep(every)
