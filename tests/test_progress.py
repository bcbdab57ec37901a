"""Progress: plain periodic lines in CI logs, a rich live panel on a terminal, slope so far."""

from __future__ import annotations

import io

import pytest

from runner import progress as progress_module
from runner.progress import Progress, format_state, slope_so_far


def _state(i: int, phase: str = "steady") -> dict:
    return {
        "phase": phase,
        "elapsed": 60.0 + i,
        "remaining": 600.0 - i,
        "open": 200,
        "closed": 100 * i,
        "rate": 100.0,
        "errors": 0,
        "rss": 50_000_000 + 1536 * 100 * i,
    }


def test_slope_so_far_is_the_growth_per_connection_after_warm_up():
    warm_then_linear = [(x, 1e6 * (x < 100) + 2048.0 * x) for x in range(0, 4000, 10)]  # a step in the first quarter
    assert slope_so_far(warm_then_linear) == pytest.approx(2048.0)
    assert slope_so_far([(1, 1.0)] * 3) is None  # too few points
    assert slope_so_far([(5.0, float(i)) for i in range(50)]) is None  # no connections closed: no slope
    many = [(float(x), 100.0 * x) for x in range(100_000)]  # thinned, so a long run stays cheap
    assert slope_so_far(many) == pytest.approx(100.0)


def test_plain_lines_for_ci_logs(monkeypatch):
    monkeypatch.setattr(progress_module, "SLOPE_EVERY", 0.0)
    out = io.StringIO()
    shown = Progress(out, interactive=False, every=0.0)
    shown.note("phase steady (t=60s)")
    shown.update(_state(0, phase="ramp"))
    for i in range(1, 30):
        shown.update(_state(i))
    shown.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "phase steady (t=60s)"
    assert lines[1].startswith("[    ramp] 1:00") and "slope so far" not in lines[1]
    assert "open    200" in lines[-1] and "100.0 cycles/s" in lines[-1] and "left 9:31" in lines[-1]
    assert lines[-1].endswith("slope so far 1.5 KB/conn")


def test_lines_are_rate_limited_and_quiet_is_silent():
    out = io.StringIO()
    limited = Progress(out, interactive=False, every=3600.0)
    for i in range(20):
        limited.update(_state(i))
    assert len(out.getvalue().splitlines()) == 1
    silent = io.StringIO()
    quiet = Progress(silent, interactive=False, quiet=True)
    quiet.note("x")
    quiet.update(_state(1))
    assert silent.getvalue() == ""


def test_live_panel_on_a_terminal(monkeypatch):
    monkeypatch.setattr(progress_module, "SLOPE_EVERY", 0.0)
    out = io.StringIO()
    live = Progress(out, interactive=True)
    for i in range(1, 20):
        live.update(_state(i))
    live.note("phase drain (t=80s)")
    live.close()
    live.close()  # idempotent
    text = out.getvalue()
    assert "phase drain (t=80s)" in text and "slope so far" in text and "cycles/s" in text


def test_format_state_without_optional_parts():
    line = format_state(
        {"phase": "baseline", "elapsed": 3725.0, "open": 0, "closed": 0, "rate": 0.0, "errors": 0, "rss": None}
    )
    assert line.startswith("[baseline] 1:02:05") and "rss -" in line and "left" not in line
