"""The target's watchdog: kills what the runner started if the runner itself is killed.

A runner stopped by SIGKILL (the OOM killer, a CI job timeout) cannot clean up. So the
runner starts this tiny process (stdlib only, run as a script: no ``runner`` import, no
gevent) next to the target, in a session of its own, and keeps the write end of a pipe to
it. The runner writes every pid it sees in the target's tree (``PID STARTTIME`` lines);
when the pipe closes — the runner finished, or died — the watchdog SIGKILLs the target's
process group and every listed process that is still the same process (same start time,
so a recycled pid is never hit), then exits.

``watchdog.py --close-inspector`` guards a runtime inspector the runner opened in a server
it did not start (``--pid``): it reads the inspector's WebSocket URL from its first stdin
line (not argv: process listings are world-readable) and, unless the runner writes
``done`` before the pipe closes, sends that inspector the expression that closes it, so a
killed runner does not leave a remote shell listening in the server.

``watchdog.py --stop-jfr`` does the same for a JFR recording the runner started in a JVM
it did not start: its first stdin line is ``{"socket": ..., "recording": ...}`` (the JVM's
attach socket and the recording's name); without ``done`` it sends ``JFR.stop`` there.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sys
from urllib.parse import urlsplit

__all__ = ["start_time", "main", "close_inspector", "stop_jfr", "PRUNE_AT", "CLOSE_INSPECTOR"]

#: Listed pids are checked for life (and the dead forgotten) past this many.
PRUNE_AT = 4096


def start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        return data[data.rindex(b")") + 2 :].split()[19].decode()
    except (OSError, ValueError, IndexError):
        return None


#: What closes a Node inspector from inside one of its sessions (require needs the command-line API).
CLOSE_INSPECTOR = "(typeof require === 'function' ? require('inspector').close() : process._debugEnd())"


def close_inspector(url: str, timeout: float = 5.0) -> None:
    """Send ``Runtime.evaluate`` of :data:`CLOSE_INSPECTOR` to a CDP WebSocket URL (stdlib only; errors ignored)."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        return
    message = json.dumps(
        {
            "id": 1,
            "method": "Runtime.evaluate",
            "params": {"expression": CLOSE_INSPECTOR, "includeCommandLineAPI": True},
        }
    ).encode()
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    mask = os.urandom(4)
    length = len(message)
    size = bytes([0x80 | length]) if length < 126 else bytes([0x80 | 126]) + length.to_bytes(2, "big")
    header = bytes([0x81]) + size
    frame = header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(message))
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as sock:
            sock.sendall(request.encode())
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                reply += chunk
            if b" 101 " not in reply.split(b"\r\n", 1)[0]:
                return
            sock.sendall(frame)
            while sock.recv(4096):  # the inspector drops the session as it closes
                pass
    except OSError:
        pass


def _guard_inspector() -> int:
    url = sys.stdin.readline().strip()
    done = False
    for line in sys.stdin:  # ends at EOF: the runner closed the pipe, or died
        done = done or line.strip() == "done"
    if url and not done:
        close_inspector(url)
    return 0


def stop_jfr(socket_path: str, recording: str, timeout: float = 10.0) -> None:
    """``JFR.stop name=<recording>`` over a HotSpot attach socket (stdlib only; errors ignored)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(b"1\0jcmd\0JFR.stop name=" + recording.encode() + b"\0\0\0")
            while sock.recv(4096):
                pass
    except OSError:
        pass


def _guard_jfr() -> int:
    try:
        job = json.loads(sys.stdin.readline())
    except ValueError:
        job = None
    done = False
    for line in sys.stdin:  # ends at EOF: the runner closed the pipe, or died
        done = done or line.strip() == "done"
    if isinstance(job, dict) and job.get("socket") and job.get("recording") and not done:
        stop_jfr(str(job["socket"]), str(job["recording"]))
    return 0


def main(argv: list[str]) -> int:
    if argv[1:2] == ["--close-inspector"]:
        return _guard_inspector()
    if argv[1:2] == ["--stop-jfr"]:
        return _guard_jfr()
    group = int(argv[1])
    known: dict[int, str] = {}
    for line in sys.stdin.buffer:  # ends at EOF: the runner closed the pipe, or died
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            known[int(parts[0])] = parts[1].decode()
            if len(known) > PRUNE_AT:  # a target that forks per connection: forget the dead
                known = {pid: started for pid, started in known.items() if start_time(pid) == started}
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
    for pid, started in known.items():
        if start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
