"""psutil sampling of a target's whole process tree: RSS, USS, fds, threads, CPU."""

from __future__ import annotations

import time
from typing import Any

import psutil

__all__ = ["TreeSampler"]


class TreeSampler:
    """Samples a root process and every descendant it has at the moment of the sample.

    USS needs ``/proc/PID/smaps`` and costs far more than the rest on a large process;
    when reading it takes more than ``uss_budget`` of the interval, it is read on every
    n-th sample only (``uss`` is then ``None`` on the others).
    """

    def __init__(self, pid: int, *, uss: bool = True, interval: float = 0.5, uss_budget: float = 0.1) -> None:
        self.root_pid = pid
        self._root = psutil.Process(pid)
        self._procs: dict[int, psutil.Process] = {pid: self._root}
        self._last_cpu: dict[int, float] = {}
        self._last_time: float | None = None
        self._want_uss = uss
        self._uss_every = 1
        self._count = 0
        self._interval = interval
        self._uss_budget = uss_budget
        #: The pids in the tree at the last sample; the runner remembers them, so that none
        #: outlives the run. Only the current tree is kept here (and in ``_procs``): a target
        #: that forks per connection must not make the sampler grow per connection.
        self.seen_pids: set[int] = {pid}

    def alive(self) -> bool:
        try:
            return self._root.is_running() and self._root.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def _tree(self) -> list[psutil.Process]:
        try:
            children = self._root.children(recursive=True)
        except psutil.Error:
            return []
        tree = [self._root]
        for child in children:
            proc = self._procs.get(child.pid)
            if proc is None or proc.create_time() != child.create_time():
                proc = child
                self._procs[child.pid] = proc
            tree.append(proc)
        current = {proc.pid for proc in tree}
        for gone in [pid for pid in self._procs if pid not in current]:
            del self._procs[gone]
            self._last_cpu.pop(gone, None)
        self.seen_pids = current
        return tree

    def sample(self) -> dict[str, Any] | None:
        """One sample of the tree, or ``None`` when the root process is gone."""
        if not self.alive():
            return None
        now = time.monotonic()
        self._count += 1
        read_uss = self._want_uss and self._count % self._uss_every == 0
        rss = uss = fds = threads = 0
        cpu_total = 0.0
        procs = 0
        uss_cost = 0.0
        for proc in self._tree():
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    fds += proc.num_fds()
                    threads += proc.num_threads()
                    times = proc.cpu_times()
                if read_uss:
                    started = time.perf_counter()
                    uss += proc.memory_full_info().uss
                    uss_cost += time.perf_counter() - started
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except psutil.AccessDenied:
                read_uss = False
                continue
            procs += 1
            cpu_now = times.user + times.system
            cpu_total += cpu_now - self._last_cpu.get(proc.pid, cpu_now)
            self._last_cpu[proc.pid] = cpu_now
        if procs == 0:
            return None
        cpu = None
        if self._last_time is not None and now > self._last_time:
            cpu = round(100.0 * cpu_total / (now - self._last_time), 1)
        self._last_time = now
        if read_uss and uss_cost > self._uss_budget * self._interval:
            self._uss_every = min(self._uss_every * 2, 64)
        return {
            "rss": rss,
            "uss": uss if read_uss else None,
            "fds": fds,
            "threads": threads,
            "cpu": cpu,
            "procs": procs,
        }
