"""Run history: every finished run in an embedded SQLite database, and the trend it shows.

One row per run folder in ``runs`` (re-analysing a folder updates its row, it does not
add one) and one row per judged metric in ``metrics``, so the database can also be
queried with plain SQL::

    SELECT r.started_at, m.slope_per_connection FROM runs r JOIN metrics m USING (run_dir)
    WHERE r.profile = 'nightly' AND m.metric = 'rss' ORDER BY r.started_at;

Where the database lives (first that applies): ``--history PATH``, the profile's
``history.path``, the ``SOAK_HISTORY`` environment variable, ``reports/history.sqlite``.

Regression flag (:func:`find_regressions`, pure): a metric regressed when its lower
confidence bound now lies above what the previous *passing* runs of the same profile
showed (their median slope plus their spread) and the rise is at least a tenth of
the metric's budget, so a statistically clear but negligible change (0.1 B -> 0.3 B
per connection) is not flagged. It is flagged even when the run is under budget:
that is its point (a leak creeping in before it crosses the line).

Schema history (``PRAGMA user_version``):
    1 - runs, metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import UsageError
from .redact import redact_text

__all__ = [
    "DEFAULT_PATH",
    "ENV_VAR",
    "SCHEMA_VERSION",
    "BASELINE_RUNS",
    "MIN_RISE_FRACTION_OF_BUDGET",
    "History",
    "resolve_path",
    "entry_from_summary",
    "find_regressions",
    "target_revision",
]

DEFAULT_PATH = Path("reports") / "history.sqlite"
ENV_VAR = "SOAK_HISTORY"
SCHEMA_VERSION = 1
#: How many previous passing runs form the baseline of the regression check.
BASELINE_RUNS = 10
#: Smallest rise (as a fraction of the metric's budget) worth flagging as a regression.
MIN_RISE_FRACTION_OF_BUDGET = 0.1
#: Robust standard deviation from the median absolute deviation (normal data).
_MAD_TO_SIGMA = 1.4826

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_dir           TEXT PRIMARY KEY,  -- absolute path of the run folder
    profile           TEXT NOT NULL,
    started_at        TEXT,              -- ISO 8601, UTC
    recorded_at       TEXT NOT NULL,
    revision          TEXT,              -- git revision of the target, when known
    verdict           TEXT NOT NULL,     -- pass | leak | inconclusive | error
    exit_code         INTEGER,
    cycles            INTEGER,           -- connections closed
    errors            INTEGER,
    peak_concurrent   INTEGER,
    cycles_per_second REAL,
    regressions       TEXT NOT NULL DEFAULT '[]',  -- JSON list of flagged metrics
    reason            TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_profile ON runs (profile, started_at);
CREATE TABLE IF NOT EXISTS metrics (
    run_dir               TEXT NOT NULL REFERENCES runs (run_dir) ON DELETE CASCADE,
    metric                TEXT NOT NULL,
    slope_per_connection  REAL,
    ci_low                REAL,
    ci_high               REAL,
    slope_per_hour        REAL,
    budget_per_connection REAL,
    verdict               TEXT,
    PRIMARY KEY (run_dir, metric)
);
"""

_RUN_COLUMNS = (
    "run_dir",
    "profile",
    "started_at",
    "recorded_at",
    "revision",
    "verdict",
    "exit_code",
    "cycles",
    "errors",
    "peak_concurrent",
    "cycles_per_second",
    "regressions",
    "reason",
)
_METRIC_COLUMNS = ("slope_per_connection", "ci_low", "ci_high", "slope_per_hour", "budget_per_connection", "verdict")


def resolve_path(option: str | Path | None = None, profile_path: str | None = None) -> Path:
    """The database path: the command-line option, else the profile key, else $SOAK_HISTORY, else the default."""
    for candidate in (option, profile_path, os.environ.get(ENV_VAR)):
        if candidate not in (None, ""):
            return Path(candidate)
    return DEFAULT_PATH


def target_revision(cwd: str | Path | None = None) -> str | None:
    """The target's git revision: $SOAK_TARGET_REVISION, else ``git rev-parse HEAD`` of ``cwd`` (None if not a repo)."""
    given = os.environ.get("SOAK_TARGET_REVISION")
    if given:
        return redact_text(given.strip())[:64]
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(
            [git, "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    revision = done.stdout.strip()
    return revision if done.returncode == 0 and revision else None


def entry_from_summary(
    summary: Mapping[str, Any], run_dir: str | Path, *, revision: str | None = None, recorded_at: str | None = None
) -> dict[str, Any]:
    """The history row of one run (pure): plain data, outside strings redacted."""
    load = summary.get("load") or {}
    reasons = summary.get("reasons") or [""]
    metrics = {}
    for name, figures in (summary.get("metrics") or {}).items():
        metrics[name] = {key: figures.get(key) for key in _METRIC_COLUMNS}
        if metrics[name]["budget_per_connection"] is None:
            metrics[name]["budget_per_connection"] = figures.get("budget")
    return {
        "run_dir": str(Path(run_dir).resolve()),
        "profile": str(summary.get("profile") or "run"),
        "started_at": summary.get("started_at"),
        "recorded_at": recorded_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "revision": revision,
        "verdict": str(summary.get("verdict")),
        "exit_code": summary.get("exit_code"),
        "cycles": load.get("connections_closed"),
        "errors": load.get("errors"),
        "peak_concurrent": load.get("peak_concurrent"),
        "cycles_per_second": load.get("cycles_per_second"),
        "regressions": [r.get("metric") for r in (summary.get("trend") or {}).get("regressions", [])],
        "reason": redact_text(str(reasons[0])) if reasons else "",
        "metrics": metrics,
    }


def _spread(values: Sequence[float], half_widths: Sequence[float]) -> float:
    """How far a run of the baseline may stray from its median: the larger of the runs' own
    CI half-width (median) and the scatter between runs (MAD as a standard deviation)."""
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values) * _MAD_TO_SIGMA
    return max(statistics.median(half_widths) if half_widths else 0.0, mad)


def find_regressions(
    current: Mapping[str, Mapping[str, Any]],
    previous: Sequence[Mapping[str, Any]],
    *,
    baseline_runs: int = BASELINE_RUNS,
    min_rise_fraction: float = MIN_RISE_FRACTION_OF_BUDGET,
) -> list[dict[str, Any]]:
    """Metrics whose per-connection slope rose significantly against the previous passing runs (pure).

    ``current`` is the summary's ``metrics``; ``previous`` are history rows of the same
    profile, oldest first, without the current run. Returns one dict per regressed metric:
    ``metric``, ``slope_per_connection``, ``ci_low``, ``baseline``, ``baseline_spread``,
    ``baseline_runs``, ``budget_per_connection``, ``message``.
    """
    passing = [run for run in previous if run.get("verdict") == "pass"]
    found = []
    for name, figures in current.items():
        slope, low = figures.get("slope_per_connection"), figures.get("ci_low")
        if slope is None or low is None:
            continue
        history = []
        for run in passing:
            past = (run.get("metrics") or {}).get(name) or {}
            if past.get("slope_per_connection") is not None:
                history.append(past)
        history = history[-baseline_runs:]
        if not history:
            continue
        slopes = [float(p["slope_per_connection"]) for p in history]
        halves = [
            (float(p["ci_high"]) - float(p["ci_low"])) / 2
            for p in history
            if p.get("ci_low") is not None and p.get("ci_high") is not None
        ]
        level = statistics.median(slopes)
        spread = _spread(slopes, halves)
        budget = figures.get("budget_per_connection")
        rise = float(slope) - level
        if float(low) <= level + spread:
            continue
        if budget is not None and rise < min_rise_fraction * float(budget):
            continue
        found.append(
            {
                "metric": name,
                "slope_per_connection": float(slope),
                "ci_low": float(low),
                "baseline": level,
                "baseline_spread": spread,
                "baseline_runs": len(history),
                "budget_per_connection": budget,
                "message": _regression_message(name, figures, level, len(history)),
            }
        )
    return found


def _regression_message(name: str, figures: Mapping[str, Any], level: float, runs: int) -> str:
    from .units import format_bytes

    unit = (lambda v: format_bytes(v)) if name in ("rss", "uss", "heap") else (lambda v: f"{v:.3g}")
    text = (
        f"{name} per connection rose to {unit(figures['slope_per_connection'])} "
        f"(CI {unit(figures['ci_low'])} to {unit(figures.get('ci_high', figures['ci_low']))}) "
        f"from {unit(level)} in the previous {runs} passing run{'s' if runs != 1 else ''}"
    )
    budget = figures.get("budget_per_connection")
    if budget is not None and float(figures["slope_per_connection"]) <= float(budget):
        text += f"; still under its budget of {unit(budget)}"
    return text


class History:
    """The SQLite run history. Use as a context manager; every write is one transaction."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise UsageError(
                f"no run history at {str(self.path)!r}", hint="run `soak run` first, or pass --history PATH"
            )
        if self.path.exists() and self.path.is_dir():
            raise UsageError(
                f"history path {str(self.path)!r} is a folder", hint="give a file path such as reports/history.sqlite"
            )
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA foreign_keys = ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise UsageError(
                    f"history {str(self.path)!r} was written by a newer soak-runner (schema {version})",
                    hint="upgrade soak-runner or use another --history",
                )
            with self._db:
                self._db.executescript(_SCHEMA)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise UsageError(
                f"cannot use run history {str(self.path)!r}: {exc}", hint="pass another --history PATH"
            ) from None
        except OSError as exc:
            raise UsageError(
                f"cannot create run history {str(self.path)!r}: {exc.strerror or exc}",
                hint="pass another --history PATH",
            ) from None

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def record(self, entry: Mapping[str, Any]) -> None:
        """Insert or update the row of one run (see :func:`entry_from_summary`); a known revision is kept."""
        values = {column: entry.get(column) for column in _RUN_COLUMNS}
        values["regressions"] = json.dumps(list(entry.get("regressions") or []))
        columns = ", ".join(_RUN_COLUMNS)
        marks = ", ".join(f":{c}" for c in _RUN_COLUMNS)
        updates = ", ".join(
            f"{c} = COALESCE(runs.{c}, excluded.{c})" if c == "revision" else f"{c} = excluded.{c}"
            for c in _RUN_COLUMNS[1:]
        )
        with self._db:
            self._db.execute(
                f"INSERT INTO runs ({columns}) VALUES ({marks}) ON CONFLICT (run_dir) DO UPDATE SET {updates}", values
            )
            self._db.execute("DELETE FROM metrics WHERE run_dir = ?", (values["run_dir"],))
            self._db.executemany(
                f"INSERT INTO metrics (run_dir, metric, {', '.join(_METRIC_COLUMNS)}) "
                f"VALUES (?, ?, {', '.join('?' * len(_METRIC_COLUMNS))})",
                [
                    (values["run_dir"], name, *(figures.get(c) for c in _METRIC_COLUMNS))
                    for name, figures in (entry.get("metrics") or {}).items()
                ],
            )

    def runs(
        self,
        profile: str | None = None,
        *,
        limit: int | None = 20,
        exclude: str | Path | None = None,
        before: str | None = None,
    ) -> list[dict[str, Any]]:
        """The latest ``limit`` runs (of ``profile`` if given), oldest first, each with its ``metrics``."""
        where: list[str] = []
        params: list[Any] = []
        if profile is not None:
            where.append("profile = ?")
            params.append(profile)
        if exclude is not None:
            where.append("run_dir != ?")
            params.append(str(Path(exclude).resolve()))
        if before is not None:
            where.append("(started_at IS NULL OR started_at <= ?)")
            params.append(before)
        sql = (
            "SELECT * FROM runs"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY started_at DESC, recorded_at DESC"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = [self._with_metrics(dict(row)) for row in self._db.execute(sql, params).fetchall()]
        rows.reverse()
        return rows

    def get(self, run_dir: str | Path) -> dict[str, Any] | None:
        """The row of one run folder, with its ``metrics``, or ``None``."""
        key = str(Path(run_dir).resolve())
        row = self._db.execute("SELECT * FROM runs WHERE run_dir = ?", (key,)).fetchone()
        return None if row is None else self._with_metrics(dict(row))

    def _with_metrics(self, row: dict[str, Any]) -> dict[str, Any]:
        row["regressions"] = json.loads(row.get("regressions") or "[]")
        row["metrics"] = {
            m["metric"]: {c: m[c] for c in _METRIC_COLUMNS}
            for m in self._db.execute("SELECT * FROM metrics WHERE run_dir = ? ORDER BY metric", (row["run_dir"],))
        }
        return row

    def profiles(self) -> list[str]:
        """Profile names with at least one recorded run."""
        return [row[0] for row in self._db.execute("SELECT DISTINCT profile FROM runs ORDER BY profile")]
