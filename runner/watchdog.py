"""The target's watchdog: kills what the runner started if the runner itself is killed.

A runner stopped by SIGKILL (the OOM killer, a CI job timeout) cannot clean up. So the
runner starts this tiny process (stdlib only, run as a script: no ``runner`` import, no
gevent) next to the target, in a session of its own, and keeps the write end of a pipe to
it. The runner writes every pid it sees in the target's tree (``PID STARTTIME`` lines);
when the pipe closes — the runner finished, or died — the watchdog SIGKILLs the target's
process group and every listed process that is still the same process (same start time,
so a recycled pid is never hit), then exits.
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["start_time", "main", "PRUNE_AT"]

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


def main(argv: list[str]) -> int:
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
