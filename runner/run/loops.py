"""The run's two loops: samples streamed to disk at a fixed interval, and the progress panel."""

from __future__ import annotations

import time

import gevent

from ..load.counters import latency_summary
from ..load.distributed import WorkerCounters
from .state import RunState

__all__ = ["Loops"]


class Loops(RunState):
    """The sampling and progress loops of a run (each runs as a greenlet)."""

    def _sample_loop(self) -> None:
        """Sample the target at the profile's interval, with the load counters of that moment, to samples.jsonl."""
        assert self.sampler is not None and self.writer is not None
        interval = self.profile.sampling.interval
        next_tick = time.monotonic()
        while True:
            started = time.monotonic()
            # In a thread: reading /proc for a tree of processes that hold tens of thousands of
            # sockets takes long enough to stall this loop, which answers the workers' heartbeats.
            metrics = gevent.get_hub().threadpool.apply(self.sampler.sample)
            sample_seconds = time.monotonic() - started
            counters = self.driver.counters if self.driver else None
            sample = {
                "t": round(self.now(), 3),
                "wall": round(time.time(), 3),
                "phase": self.state.phase,
                **(counters.snapshot() if counters else {"opened": 0, "closed": 0, "open": 0, "errors": 0}),
                **(metrics or {"rss": None, "uss": None, "fds": None, "threads": None, "cpu": None, "procs": 0}),
                "heap": (metrics or {}).get("heap"),  # a runtime heap from metrics; memray's is joined later
            }
            if counters:
                latencies = latency_summary(counters.take_latencies())
                if latencies:
                    sample["lat"] = latencies
            if self.driver is not None:
                for process, (clock, cpu_seconds) in self.driver.generator_cpu().items():
                    self.saturation.feed(process, clock, cpu_seconds, self.state.phase)
                sample["load_cpu"] = self.saturation.current  # busiest load process, % of one core
            sample["loop_lag"] = self.loop_lag.take()  # longest stall of this loop since the last line (s)
            if isinstance(counters, WorkerCounters):
                # the same in the slowest worker, and how late the master's heartbeats reached a worker
                sample["worker_loop_lag"], sample["heartbeat_lag"] = counters.take_loop_lag()
            sample["sample_s"] = round(sample_seconds, 3)  # what reading the target's processes took
            self.writer.write(sample)
            self.last_sample = sample
            for kind, error in sample.get("source_errors", {}).items():
                if kind not in self._failed_sources:
                    self._failed_sources.add(kind)
                    self._note(
                        f"sampling: {kind} could not be read ({error}); its values are gaps (null) "
                        "while it fails, counted in the summary"
                    )
            self.peak_open = max(self.peak_open, int(sample.get("open") or 0))
            if self.target is not None:
                self.target.remember(self.sampler.seen_pids)
            if metrics is None:
                return  # the target is gone; the main loop notices
            next_tick += interval
            delay = next_tick - time.monotonic()
            if delay < 0:  # fell behind (a slow sample): skip ticks rather than burst
                next_tick = time.monotonic()
                delay = 0
            gevent.sleep(delay)

    def _progress_loop(self) -> None:
        """Once a second: the terminal panel's state, and Locust's per-second counts trimmed."""
        previous = (self.now(), 0)
        while True:
            gevent.sleep(1.0)
            if self.driver is None:
                continue
            counters = self.driver.counters
            self.driver.trim_statistics()
            now = self.now()
            rate = (counters.closed - previous[1]) / max(now - previous[0], 1e-9)
            previous = (now, counters.closed)
            remaining = None
            if self.state.phase == "steady" and self.state.phases:
                remaining = max(0.0, self.profile.load.duration - (now - self.state.phases[-1]["start"]))
            self.progress.update(
                {
                    "phase": self.state.phase,
                    "elapsed": now,
                    "remaining": remaining,
                    "open": counters.open,
                    "closed": counters.closed,
                    "rate": rate,
                    "errors": counters.errors,
                    "rss": self.last_sample.get("rss"),
                }
            )
