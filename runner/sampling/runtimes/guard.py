"""The undo guard of a runtime probe: a watchdog process that undoes what the probe enabled
in the server (an open inspector, a JFR recording) if the runner dies before ``close()``.

The guard is ``runner/watchdog.py`` run with the stdlib only (``-S``) in its own session. What
to undo goes on its stdin, never on its command line (process listings are world-readable);
``done`` on stdin means the probe undid it itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ... import watchdog

__all__ = ["start_guard", "release_guard"]

_WATCHDOG_SCRIPT = str(Path(watchdog.__file__).resolve())


def start_guard(mode: str, what: bytes) -> subprocess.Popen[bytes] | None:
    """Start the watchdog in ``mode`` (``--close-inspector``, ``--stop-jfr``) and hand it ``what``.

    None when it cannot run: the probe works on, unguarded.
    """
    try:
        proc = subprocess.Popen(
            [sys.executable, "-S", _WATCHDOG_SCRIPT, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        return None
    try:
        assert proc.stdin is not None
        proc.stdin.write(what.rstrip(b"\n") + b"\n")
        proc.stdin.flush()
    except (OSError, ValueError):
        return None
    return proc


def release_guard(proc: subprocess.Popen[bytes] | None, *, undone: bool, timeout: float = 20.0) -> None:
    """Tell the guard the probe undid it (``done``), or leave the undoing to the guard; then let it go."""
    if proc is None or proc.stdin is None:
        return
    try:
        if undone:
            proc.stdin.write(b"done\n")
        proc.stdin.close()
        proc.wait(timeout=timeout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        proc.kill()
