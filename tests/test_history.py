"""Run history: SQLite rows per run, the regression flag, and `soak history`."""

from __future__ import annotations

import json
import sqlite3
import xml.etree.ElementTree as ET

import pytest

from bench.report_bench import synthetic_run
from runner.cli import main
from runner.errors import UsageError
from runner.finish import finish_run
from runner.history import History, entry_from_summary, find_regressions, resolve_path


def soak(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`soak ARGS` in this process (the history command starts nothing, so no subprocess is needed)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _summary(
    profile: str, started: str, verdict: str = "pass", rss: float = 10.0, low: float = 5.0, high: float = 15.0
) -> dict:
    return {
        "profile": profile,
        "started_at": started,
        "verdict": verdict,
        "exit_code": 0,
        "reasons": ["rss stayed flat <b>"],
        "load": {"connections_closed": 1000, "errors": 0, "peak_concurrent": 50, "cycles_per_second": 20.0},
        "metrics": {
            "rss": {
                "slope_per_connection": rss,
                "ci_low": low,
                "ci_high": high,
                "budget_per_connection": 1024.0,
                "verdict": verdict,
            }
        },
    }


def test_rows_are_recorded_once_per_folder_and_read_back_oldest_first(tmp_path):
    with History(tmp_path / "h.sqlite") as db:
        db.record(entry_from_summary(_summary("nightly", "2026-11-02T00:00:00+00:00"), tmp_path / "b", revision="bbb"))
        db.record(entry_from_summary(_summary("nightly", "2026-11-01T00:00:00+00:00"), tmp_path / "a", revision="aaa"))
        db.record(entry_from_summary(_summary("smoke", "2026-11-03T00:00:00+00:00"), tmp_path / "c"))
        # re-analysing folder b updates its row (new verdict) and keeps its revision
        db.record(
            entry_from_summary(
                _summary("nightly", "2026-11-02T00:00:00+00:00", verdict="leak", rss=900.0),
                tmp_path / "b",
                revision="other",
            )
        )
        runs = db.runs("nightly")
        assert [r["revision"] for r in runs] == ["aaa", "bbb"]
        assert runs[1]["verdict"] == "leak" and runs[1]["metrics"]["rss"]["slope_per_connection"] == 900.0
        assert len(db.runs()) == 3 and db.profiles() == ["nightly", "smoke"]
        assert [r["revision"] for r in db.runs("nightly", exclude=tmp_path / "b")] == ["aaa"]
        assert db.get(tmp_path / "c")["profile"] == "smoke" and db.get(tmp_path / "zzz") is None
    # plain SQL works too (the documented schema)
    rows = (
        sqlite3.connect(tmp_path / "h.sqlite")
        .execute(
            "SELECT r.profile, m.metric, m.slope_per_connection FROM runs r JOIN metrics m USING (run_dir) ORDER BY "
            "r.started_at"
        )
        .fetchall()
    )
    assert rows[0] == ("nightly", "rss", 10.0) and len(rows) == 3


def test_a_bad_history_path_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="is a folder"):
        History(tmp_path)
    with pytest.raises(UsageError, match="no run history"):
        History(tmp_path / "missing.sqlite", create=False)
    (tmp_path / "junk.sqlite").write_text("this is not a database, just some text" * 50)
    with pytest.raises(UsageError, match="cannot use run history"):
        History(tmp_path / "junk.sqlite")
    newer = tmp_path / "newer.sqlite"
    sqlite3.connect(newer).execute("PRAGMA user_version = 99")
    with pytest.raises(UsageError, match="newer soak-runner"):
        History(newer)


def test_resolve_path_order(monkeypatch, tmp_path):
    monkeypatch.setenv("SOAK_HISTORY", str(tmp_path / "env.sqlite"))
    assert resolve_path("opt.sqlite", "profile.sqlite").name == "opt.sqlite"
    assert resolve_path(None, "profile.sqlite").name == "profile.sqlite"
    assert resolve_path(None, None).name == "env.sqlite"
    monkeypatch.delenv("SOAK_HISTORY")
    assert str(resolve_path()) == "reports/history.sqlite"


def _past(*slopes: float, verdict: str = "pass", half: float = 5.0) -> list[dict]:
    return [
        {"verdict": verdict, "metrics": {"rss": {"slope_per_connection": s, "ci_low": s - half, "ci_high": s + half}}}
        for s in slopes
    ]


def _now(slope: float, low: float, high: float, budget: float = 1024.0) -> dict:
    return {"rss": {"slope_per_connection": slope, "ci_low": low, "ci_high": high, "budget_per_connection": budget}}


def test_regression_needs_a_significant_and_material_rise_over_passing_runs():
    past = _past(10, 12, 8, 11, 9)
    found = find_regressions(_now(300, 280, 320), past)
    assert [r["metric"] for r in found] == ["rss"] and found[0]["baseline"] == 10
    assert "still under its budget of 1.0 KB" in found[0]["message"]
    assert find_regressions(_now(14, 12, 16), past) == []  # inside the baseline's spread
    assert find_regressions(_now(60, 55, 65), past) == []  # clear, but less than a tenth of the budget
    assert find_regressions(_now(60, 55, 65, budget=100), past)  # ... which is material against a 100 B budget
    assert (
        find_regressions(_now(300, 280, 320), _past(10, 12, verdict="leak")) == []
    )  # only passing runs form the baseline
    assert find_regressions(_now(300, 280, 320), []) == []  # nothing to compare with
    scattered = _past(10, 100, 20, 150, 60, half=1.0)  # runs disagree more than their own CIs say:
    assert find_regressions(_now(130, 110, 150, budget=400), scattered) == []  # their scatter (MAD) widens the spread
    assert find_regressions(
        _now(130, 110, 150, budget=400), _past(58, 60, 62, half=1.0)
    )  # the same run against a steady baseline


def test_finish_records_runs_and_flags_a_regression_under_budget(tmp_path, capsys):
    db = tmp_path / "history.sqlite"
    for index in range(2):  # two clean nights
        folder = synthetic_run(
            tmp_path / f"night{index}",
            samples=400,
            leak_bytes=0,
            heap=False,
            profile_name="nightly",
            started_at=f"2026-11-2{index}T00:00:00+00:00",
            seed=index,
        )
        assert finish_run(folder, history=db)["verdict"] == "pass"
    creeping = synthetic_run(
        tmp_path / "night3",
        samples=400,
        leak_bytes=300,
        heap=False,
        profile_name="nightly",
        started_at="2026-11-23T00:00:00+00:00",
        seed=3,
    )
    summary = finish_run(creeping, history=db)
    assert summary["verdict"] == "pass" and summary["exit_code"] == 0  # under budget, so not a failure...
    assert summary["trend"]["previous_runs"] == 2
    assert {r["metric"] for r in summary["trend"]["regressions"]} >= {"rss"}  # ...but flagged
    assert any(n.startswith("regression: rss per connection rose to") for n in summary["notes"])
    html = (creeping / "report.html").read_text()
    assert 'id="regression"' in html and 'id="trend-' in html  # the flag and the trend chart
    junit = ET.parse(creeping / "junit.xml").getroot()
    assert junit.find("testsuite/testcase[@name='rss trend']/system-err") is not None
    with History(db) as history:
        assert [r["verdict"] for r in history.runs("nightly")] == ["pass"] * 3
        assert "rss" in history.runs("nightly")[-1]["regressions"]
    # the same run with history.fail_on_regression set fails (exit 1)
    meta = json.loads((creeping / "meta.json").read_text())
    meta["profile"]["history"] = {"fail_on_regression": True}
    (creeping / "meta.json").write_text(json.dumps(meta))
    failed = finish_run(creeping, history=db)
    assert failed["verdict"] == "leak" and failed["exit_code"] == 1 and failed["reasons"][0].startswith("regression: ")
    # `soak history` shows the four nights and the flag
    code, out, err = soak("history", "--history", str(db), "--profile", "nightly", capsys=capsys)
    assert code == 0, err
    assert out.count("PASS") == 2 and "LEAK" in out and "rss regressed" in out
    rows = json.loads(soak("history", "--history", str(db), "--json", "--limit", "2", capsys=capsys)[1])
    assert [r["started_at"][:10] for r in rows] == ["2026-11-21", "2026-11-23"]


def test_history_off_and_unusable_history(tmp_path):
    folder = synthetic_run(tmp_path / "run", samples=300, leak_bytes=0, heap=False)
    meta = json.loads((folder / "meta.json").read_text())
    meta["profile"]["history"] = {"record": False}
    (folder / "meta.json").write_text(json.dumps(meta))
    summary = finish_run(folder)
    assert "trend" not in summary  # history off: nothing recorded, nothing compared
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    summary = finish_run(folder, history=blocked)  # a folder, not a database: a note, not a failed run
    assert "error" in summary["trend"] and any("run history not updated" in n for n in summary["notes"])


def test_soak_history_errors_and_empty(tmp_path, capsys):
    code, _, err = soak("history", "--history", str(tmp_path / "none.sqlite"), capsys=capsys)
    assert code == 2 and err.startswith("soak: error: no run history") and len(err.strip().splitlines()) == 1
    History(tmp_path / "empty.sqlite").close()
    code, out, _ = soak("history", "--history", str(tmp_path / "empty.sqlite"), "--profile", "x", capsys=capsys)
    assert code == 0 and "no runs of profile 'x'" in out
    code, _, err = soak("history", "--history", str(tmp_path / "empty.sqlite"), "--limit", "0", capsys=capsys)
    assert code == 2 and "--limit: must be at least 1" in err
