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

__all__ = [
    "LoadPlan",
    "plan_load",
    "FD_RESERVE",
    "PORT_HEADROOM",
    "WORKERS_PER_CPU",
    "is_loopback_host",
    "read_port_range",
    "CpuCosts",
    "cpu_check",
]

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
    load = (
        f"{users} users"
        if connections_per_user == 1
        else f"{connections} connections ({users} users x {connections_per_user})"
    )
    per_process = max(1, fd_limit - FD_RESERVE)
    most_local = WORKERS_PER_CPU * max(1, cpus)
    if workers > most_local:
        raise UsageError(
            f"load.workers = {workers} is more local worker processes than {cpus} CPUs can drive (at most "
            f"{most_local})",
            hint="lower load.workers, or run the rest on other machines (load.remote_workers + soak worker --master "
            "HOST:PORT)",
        )
    if workers == 0 and remote_workers == 0:
        if connections > per_process:
            workers = math.ceil(connections / per_process)
            if workers > most_local:
                raise UsageError(
                    f"{load} need at least {workers} workers at {fd_limit} fds each, "
                    f"more than {cpus} CPUs can drive here (at most {most_local} local workers)",
                    hint="lower load.users, or add workers on other machines (load.remote_workers + soak worker "
                    "--master HOST:PORT)",
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
                    f"{load} need {needed_addresses} source addresses: one has only {ports} ports ({low}-{high}) "
                    "per destination",
                    hint='set load.source_addresses = "auto" (loopback targets) or list the addresses to connect from',
                )
            if not loopback:
                raise UsageError(
                    f"{load} need {needed_addresses} source addresses to reach {target_host}: one has only {ports} "
                    f"ports ({low}-{high})",
                    hint="list addresses of this machine in load.source_addresses (spreading is automatic only for "
                    "loopback targets)",
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


# --- CPU: can the cores there are ramp and hold what is asked? --------------------------


@dataclass(frozen=True)
class CpuCosts:
    """CPU milliseconds per event, measured on the 2-core development machine (docs/scale.md).

    Client figures are the Locust path of ``soak run``; server figures are the bundled
    Python ``websockets`` targets (another server costs more or less, but it shares the
    cores when it runs on this machine).
    """

    #: One connect + echo + close cycle of a user (make bench-load: 0.79 ms).
    cycle_ms: float = 0.8
    #: One connect (handshake) + echo, in the generator and in the server (6,000 connections at 300/s).
    connect_ms: float = 0.46
    server_connect_ms: float = 0.37
    #: One keepalive ping answered, in the generator and in the server (6,000 held, 20 s pings).
    pong_ms: float = 0.08
    server_ping_ms: float = 0.12
    #: Client memory per held connection: one greenlet per user, or shared by 4 connections.
    held_kb: float = 15.6
    held_kb_shared: float = 7.5
    #: Share of a core a load process can use before it is saturated (cpu.SATURATED_PERCENT).
    usable_share: float = 0.9


def cpu_check(
    plan: LoadPlan,
    *,
    connections_per_user: int,
    spawn_rate: float,
    hold: float,
    think: float,
    duration: float,
    cpus: int,
    load_average: float | None = None,
    target_local: bool = True,
    ping_interval: float | None = 20.0,
    available_memory: int | None = None,
    costs: CpuCosts = CpuCosts(),
) -> list[str]:
    """Sentences saying what the cores cannot do of the asked load, and what to change (empty: it fits).

    Pure arithmetic over the plan, the settings and what the caller read from the machine
    (CPU count, 1-minute load average, free memory). The figures are estimates from measured
    per-connection costs, so the result is a warning before the run, not a refusal:

    - **ramp**: connections opened per second (``spawn_rate x connections_per_user``) times the
      connect cost, in each load process (one core each at most) and on the machine (the
      target too, when it is local);
    - **hold**: every connection is closed and reopened once per ``hold + think`` and answers
      keepalive pings meanwhile; when the cores cannot keep up, the open count stops short of
      the asked connections (at cycles per second x (hold + think)), however long the ramp;
    - **memory**: client memory per held connection.
    """
    connections = plan.users * connections_per_user
    if connections <= 0:
        return []
    notes: list[str] = []
    local = plan.workers if plan.distributed else 1  # load processes on this machine
    remote = plan.remote_workers
    processes = max(1, local + remote)
    local_share = local / processes  # of the connections, held by processes on this machine
    # Other work on the machine (the 1-minute load average) shares the cores: the kernel gives
    # our busy processes (load processes, the target) about their share of the runnable ones.
    ours = max(1, local) + (1 if target_local else 0)
    free_cores = cpus * ours / (ours + max(0.0, load_average or 0.0))
    hint_workers = "add remote workers (load.remote_workers + soak worker --master HOST:PORT)"

    # ramp: new connections per second, in each load process and on the machine
    connect_rate = spawn_rate * connections_per_user
    per_process = connect_rate / processes * costs.connect_ms / 1000.0
    machine = connect_rate * local_share * costs.connect_ms / 1000.0
    if target_local:
        machine += connect_rate * costs.server_connect_ms / 1000.0
    fastest = connect_rate
    limits = []
    if per_process > costs.usable_share:
        fastest = min(fastest, costs.usable_share / (costs.connect_ms / 1000.0) * processes)
        limits.append(f"{per_process:.1f} cores per load process (at most {costs.usable_share:g} each)")
    if machine > free_cores * costs.usable_share:
        fastest = min(fastest, connect_rate * free_cores * costs.usable_share / machine)
        limits.append(
            f"{machine:.1f} cores on this machine{' with the target' if target_local else ''} "
            f"({cpus} CPUs{f', load average {load_average:.1f}' if load_average else ''})"
        )
    if limits:
        notes.append(
            f"pre-check: opening {connect_rate:.0f} connections/s needs {' and '.join(limits)}: "
            f"the ramp will run at about {fastest:.0f}/s, not {connect_rate:.0f}/s - "
            f"lower load.spawn_rate, {hint_workers}, or run the target on another machine"
        )
    ramp_seconds = connections / fastest
    if ramp_seconds > duration + 60:
        notes.append(
            f"pre-check: the ramp of {connections} connections takes about {ramp_seconds:.0f}s, "
            f"longer than the {duration:g}s steady phase - raise load.spawn_rate or load.duration"
        )

    # holding: each connection is reopened every hold + think seconds, and answers keepalive pings;
    # once the cores cannot reopen them that fast, the open count stops at cycles/s x (hold + think)
    pings = connections / ping_interval if ping_interval else 0.0
    cycle_seconds = hold + think + costs.cycle_ms / 1000.0
    churn = connections / cycle_seconds
    client_ms = churn * costs.cycle_ms + pings * costs.pong_ms  # per second, all load processes
    server_ms = (churn * (costs.server_connect_ms * 1.5) + pings * costs.server_ping_ms) if target_local else 0.0
    steady_process = client_ms / processes / 1000.0
    steady_machine = (client_ms * local_share + server_ms) / 1000.0
    capacity = min(
        costs.usable_share / steady_process if steady_process else float("inf"),
        free_cores * costs.usable_share / steady_machine if steady_machine else float("inf"),
    )
    if hold > 0 and capacity < 1.0:  # without a hold, churning as fast as the cores allow is the point
        held = int(connections * capacity)
        notes.append(
            f"pre-check: holding {connections} connections for {hold + think:g}s each means {churn:.0f} cycles/s"
            + (f" and {pings:.0f} pings/s" if pings else "")
            + f", about {steady_process:.1f} cores per load process and {steady_machine:.1f} on this machine"
            + f" ({cpus} CPUs{f', load average {load_average:.1f}' if load_average else ''}): "
            f"about {held} can be open at once - raise load.hold (or load.think) to "
            f"{(hold + think) / capacity * 1.2:.0f}s, or {hint_workers}"
        )

    # memory
    if available_memory is not None:
        kb = costs.held_kb_shared if connections_per_user >= 4 else costs.held_kb
        needed = connections * local_share * kb * 1024
        if needed > 0.8 * available_memory:
            notes.append(
                f"pre-check: {int(connections * local_share)} held connections need about {needed / 1e9:.1f} GB in the "
                f"load processes ({kb:g} KB each), {available_memory / 1e9:.1f} GB is free - "
                f"set load.connections_per_user = 4 (one greenlet per 4 connections) or {hint_workers}"
            )
    return notes
