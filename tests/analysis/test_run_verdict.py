"""runner.analysis.run_verdict: what happened to the run overrules what the analysis may claim."""

from __future__ import annotations

from runner.analysis import Analysis, Verdict
from runner.analysis.run_verdict import MATERIAL_RISE_BYTES, memory_evidence, run_verdict

PASSED = Analysis(verdict=Verdict.PASS, reasons=["no metric grew"], metrics={})
LEAKED = Analysis(verdict=Verdict.LEAK, reasons=["heap grew 2 KB per connection"], metrics={})


def _rising_rss(n: int = 40, step: float = 2 * MATERIAL_RISE_BYTES / 40) -> list[dict]:
    return [{"t": float(i), "phase": "steady", "rss": 100e6 + i * step, "closed": i * 10} for i in range(n)]


def test_a_dead_target_is_an_error_with_the_memory_evidence_and_its_last_words():
    run = {
        "error": {"kind": "target_died", "message": "the target died during the steady phase"},
        "target": {"crashed": True, "signal": "SIGKILL", "log_tail": ["serving", "MemoryError"]},
    }
    verdict, reasons = run_verdict(run, _rising_rss(), PASSED, complete=True)
    assert verdict is Verdict.ERROR
    assert reasons[0] == "the target died during the steady phase (killed by SIGKILL)"
    assert any("its RSS was rising before it died" in r for r in reasons)
    assert "its log reports running out of memory" in reasons
    assert reasons[-1] == "the last line of its log: MemoryError"


def test_flat_memory_is_no_evidence_of_exhaustion():
    flat = [{"t": float(i), "phase": "steady", "rss": 100e6, "closed": i} for i in range(40)]
    assert memory_evidence(flat, PASSED, {"signal": "SIGKILL"}) == []


def test_an_interrupted_run_keeps_a_leak_but_cannot_pass():
    assert run_verdict({"interrupted": True}, [], LEAKED, complete=True)[0] is Verdict.LEAK
    verdict, reasons = run_verdict({"interrupted": True}, [], PASSED, complete=True)
    assert verdict is Verdict.INCONCLUSIVE and reasons[0] == "the run was interrupted before its planned end"


def test_a_runner_that_died_leaves_an_inconclusive_unless_it_had_seen_a_leak():
    verdict, reasons = run_verdict({}, [{"t": 0}] * 3, PASSED, complete=False)
    assert verdict is Verdict.INCONCLUSIVE and "3 samples were analysed" in reasons[0]
    assert run_verdict({}, [], LEAKED, complete=False)[0] is Verdict.LEAK


def test_a_lost_worker_marks_the_verdict():
    run = {"load_generator": {"lost_workers": [{"worker": 2}]}}
    verdict, reasons = run_verdict(run, [], PASSED, complete=True)
    assert verdict is Verdict.PASS and "marked: 1 load worker(s) died during the run (worker 2)" in reasons[-1]
