"""Runs Locust headless in library mode and exposes what the orchestrator needs of it."""

from __future__ import annotations

import locust  # noqa: F401  (monkey-patches the standard library for gevent first)
from typing import Any
import gevent
from locust.env import Environment
from locust.stats import StatsEntry

from ..errors import LoadError
from ..profile import LoadSettings
from .counters import LoadCounters
from .user import make_user_class

__all__ = ["LoadDriver", "stats_to_dict"]


class LoadDriver:
    """Locust users churning WebSocket connections against one URL, in this process."""

    def __init__(self, url: str, settings: LoadSettings, *, stop_timeout: float, scenario: Any = None) -> None:
        self.url = url
        self.settings = settings
        self.counters = LoadCounters()
        # scenario: runner.load.scenario.ScenarioPlan (steps, identity, TLS) or None for the echo loop
        user_class = make_user_class(url, settings, self.counters, scenario=scenario)
        self.environment = Environment(user_classes=[user_class], stop_timeout=stop_timeout, catch_exceptions=True)
        self.runner = self.environment.create_local_runner()
        self._started = False

    def start(self) -> None:
        """Start spawning users at the profile's spawn rate (returns at once)."""
        self.runner.start(self.settings.users, spawn_rate=self.settings.spawn_rate)
        self._started = True

    @property
    def users_running(self) -> int:
        return self.runner.user_count

    @property
    def ramped(self) -> bool:
        return self.runner.user_count >= self.settings.users

    def stop_users(self) -> gevent.Greenlet:
        """Ask every user to finish its current cycle and stop; returns the stopping greenlet."""
        return gevent.spawn(self.runner.stop)

    def check(self) -> None:
        """Raise :class:`LoadError` when the users crash on something other than the network."""
        exceptions = self.runner.exceptions
        if exceptions:
            first = next(iter(exceptions.values()))
            raise LoadError(f"the load generator failed: {first['msg']}", hint="see locust_stats.json for the traceback")

    def quit(self) -> None:
        try:
            self.runner.quit()
        except Exception:  # noqa: BLE001 - quitting must not mask the run's outcome
            pass

    def stats(self) -> dict:
        return stats_to_dict(self.environment)


def _entry(entry: StatsEntry) -> dict:
    return {
        "name": entry.name,
        "method": entry.method,
        "requests": entry.num_requests,
        "failures": entry.num_failures,
        "avg_ms": round(entry.avg_response_time, 3),
        "min_ms": round(entry.min_response_time or 0, 3),
        "max_ms": round(entry.max_response_time, 3),
        "p50_ms": entry.get_response_time_percentile(0.5),
        "p95_ms": entry.get_response_time_percentile(0.95),
        "p99_ms": entry.get_response_time_percentile(0.99),
    }


def stats_to_dict(environment: Environment) -> dict:
    """Locust's final statistics as plain data (its CSV files are not final at exit)."""
    stats = environment.stats
    runner = environment.runner
    return {
        "requests": [_entry(e) for e in sorted(stats.entries.values(), key=lambda e: (e.method or "", e.name))],
        "total": _entry(stats.total),
        "errors": [
            {"method": e.method, "name": e.name, "error": str(e.error), "occurrences": e.occurrences}
            for e in stats.errors.values()
        ],
        "exceptions": [
            {"count": e["count"], "msg": e["msg"], "traceback": e["traceback"]}
            for e in (runner.exceptions.values() if runner else [])
        ],
    }
