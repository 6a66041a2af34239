"""Crash points for the kill -9 tests: ``CSFS_CRASH_AT=NAME`` makes the process
SIGKILL itself when it reaches the point NAME. Unset (always, outside tests), this
does nothing."""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("CSFS_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
