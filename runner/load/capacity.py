"""Capacity pre-check: can the requested users fit this machine's fd and port limits?

Pure arithmetic over the settings and the limits the caller read from the machine: no
process, no socket. It decides how many load processes a run needs (one process holds
at most its fd limit in sockets) and how many source addresses (one source address
has only the ephemeral port range per destination). When the users cannot fit, it
raises :class:`~runner.errors.UsageError` *before* anything starts, with a message
that says what is needed ("50000 users need at least 3 workers at 20000 fds each").
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import UsageError

__all__ = ["LoadPlan", "plan_load", "FD_RESERVE", "PORT_HEADROOM", "WORKERS_PER_CPU", "is_loopback_host", "read_port_range"]

#: File descriptors a load process needs besides its connections (interpreter, ZeroMQ
#: to the master, logs, psutil's /proc reads).
FD_RESERVE = 200
#: Most local worker processes per CPU: beyond that the workers starve each other (and a
#: typo such as users = 1000000 must not fork fifty processes).
WORKERS_PER_CPU = 4

#: Share of the ephemeral port range a plan may use per source address: the rest is left
#: for sockets in TIME_WAIT and for everything else on the machine.
PORT_HEADROOM = 0.9


@dataclass(frozen=True)
class LoadPlan:
    """How a run spreads its users: processes and source addresses, and why."""

    users: int
    #: Local Locust worker processes (0: the users run in the runner's own process).
    workers: int
    #: Workers expected to join from other machines with ``soak worker``.
    remote_workers: int = 0
    #: Client source addresses the users rotate through (empty: the kernel chooses).
    source_addresses: tuple[str, ...] = ()
    #: Connections one load process can hold (its fd limit less :data:`FD_RESERVE`).
    per_process: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def distributed(self) -> bool:
        """True when a Locust master drives worker processes."""
        return self.workers + self.remote_workers > 0

    @property
    def processes(self) -> int:
        """Load processes that hold connections."""
        return max(1, self.workers + self.remote_workers)


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and any loopback address (all of 127.0.0.0/8, ``::1``)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_port_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux); the Linux default when it cannot be read."""
    try:
        with open(path, encoding="ascii") as file:
            low, high = (int(part) for part in file.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _auto_addresses(count: int) -> tuple[str, ...]:
    # 127.0.0.2, 127.0.0.3, ...: all of 127/8 is loopback; .1 stays free for everything else.
    return tuple(str(ipaddress.IPv4Address("127.0.0.2") + i) for i in range(count))


def plan_load(
    *,
    users: int,
    workers: int,
    target_host: str,
    fd_limit: int,
    port_range: tuple[int, int],
    remote_workers: int = 0,
    source_addresses: str | Sequence[str] = "auto",
    cpus: int = 2,
    connections_per_user: int = 1,
) -> LoadPlan:
    """Decide processes and source addresses for ``users`` x ``connections_per_user`` connections, or raise UsageError.

    ``workers == 0`` and no remote workers means "choose": one process when the users
    fit its fds, otherwise as many local workers as needed (with a note). An explicit
    worker count that is too small is an error, as is a port shortage that spreading
    source addresses may not fix (non-loopback target without configured addresses).
    """
    notes: list[str] = []
    connections = users * connections_per_user
    # What the messages call the load: "50000 users", or "50000 connections (12500 users x 4)".
    load = f"{users} users" if connections_per_user == 1 else f"{connections} connections ({users} users x {connections_per_user})"
    per_process = max(1, fd_limit - FD_RESERVE)
    most_local = WORKERS_PER_CPU * max(1, cpus)
    if workers > most_local:
        raise UsageError(
            f"load.workers = {workers} is more local worker processes than {cpus} CPUs can drive (at most {most_local})",
            hint="lower load.workers, or run the rest on other machines (load.remote_workers + soak worker --master HOST:PORT)",
        )
    if workers == 0 and remote_workers == 0:
        if connections > per_process:
            workers = math.ceil(connections / per_process)
            if workers > most_local:
                raise UsageError(
                    f"{load} need at least {workers} workers at {fd_limit} fds each, "
                    f"more than {cpus} CPUs can drive here (at most {most_local} local workers)",
                    hint="lower load.users, or add workers on other machines (load.remote_workers + soak worker --master HOST:PORT)",
                )
            notes.append(
                f"{load} exceed what one process can hold ({per_process} connections at {fd_limit} fds); "
                f"running {workers} local Locust workers"
            )
    else:
        needed = math.ceil(connections / per_process)
        if workers + remote_workers < needed:
            given = f"load.workers = {workers}" + (f" and {remote_workers} remote" if remote_workers else "")
            raise UsageError(
                f"{load} need at least {needed} workers at {fd_limit} fds each ({given})",
                hint=f"set load.workers (--workers) to {needed - remote_workers} or more, or lower load.users",
            )

    low, high = port_range
    ports = max(1, high - low + 1)
    usable = max(1, int(ports * PORT_HEADROOM))
    needed_addresses = math.ceil(connections / usable)
    loopback = is_loopback_host(target_host)
    addresses: tuple[str, ...] = ()
    if isinstance(source_addresses, str):
        mode = source_addresses.strip().lower()
        if needed_addresses > 1:
            if mode == "off":
                raise UsageError(
                    f"{load} need {needed_addresses} source addresses: one has only {ports} ports ({low}-{high}) per destination",
                    hint='set load.source_addresses = "auto" (loopback targets) or list the addresses to connect from',
                )
            if not loopback:
                raise UsageError(
                    f"{load} need {needed_addresses} source addresses to reach {target_host}: one has only {ports} ports ({low}-{high})",
                    hint="list addresses of this machine in load.source_addresses (spreading is automatic only for loopback targets)",
                )
            addresses = _auto_addresses(needed_addresses)
            notes.append(
                f"{load} need more than the {ports} ports of one source address; "
                f"connecting from {len(addresses)} loopback addresses ({addresses[0]}-{addresses[-1]})"
            )
    else:
        addresses = tuple(source_addresses)
        if len(addresses) < needed_addresses:
            raise UsageError(
                f"{load} need at least {needed_addresses} source addresses ({ports} ports each), "
                f"load.source_addresses lists {len(addresses)}",
                hint="add addresses, or lower load.users",
            )
    return LoadPlan(
        users=users,
        workers=workers,
        remote_workers=remote_workers,
        source_addresses=addresses,
        per_process=per_process,
        notes=tuple(notes),
    )
