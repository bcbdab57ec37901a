"""The servers people deploy: Starlette under multi-worker uvicorn (every worker sampled) and a Node.js server."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import ROOT, soak

SHORT = ("--users", "20", "--spawn-rate", "20", "--duration", "6s", "--quiet")


def _samples(out):
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.mark.slow  # the default suite covers this path elsewhere; make test-slow runs it
def test_multi_worker_uvicorn_samples_every_worker(tmp_path):
    out = tmp_path / "asgi"
    result = soak("run", str(ROOT / "profiles" / "asgi-workers.toml"), *SHORT, "--no-memray", "--out", str(out))
    assert result.returncode != 3, result.stdout + result.stderr
    samples = _samples(out)
    steady = [s for s in samples if s["phase"] == "steady"]
    # uvicorn's supervisor plus its two workers (multiprocessing may add a resource tracker)
    assert steady and min(s["procs"] for s in steady) >= 3, [s["procs"] for s in steady]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["load"]["connections_closed"] > 100 and summary["load"]["errors"] == 0
    # the connections were served by the workers, whose fds are summed into the tree's
    assert max(s["fds"] for s in steady) > min(s["fds"] for s in samples if s["phase"] == "baseline")


@pytest.mark.slow  # the default suite covers this path elsewhere; make test-slow runs it
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: the Node.js example target cannot run")
def test_node_target_keeping_buffers_is_a_native_leak_and_memray_is_skipped(tmp_path):
    out = tmp_path / "node"
    # a Buffer per connection: invisible to V8's heap, reported by the runtime as external memory
    command = "node examples/node/echo.js --port {port} --leak-bytes 16384"
    result = soak(
        "run", str(ROOT / "profiles" / "node-echo.toml"), "--target", command, *SHORT, "--memray", "--out", str(out)
    )
    summary = json.loads((out / "summary.json").read_text())
    assert result.returncode == 1, result.stdout + result.stderr
    # in a 6 s run the paced heap checkpoints are too few to judge; RSS (and, longer, native) catch it
    assert summary["verdict"] == "leak" and summary["metrics"]["native"]["verdict"] in ("leak", "inconclusive"), (
        summary["reasons"]
    )
    assert {"heap", "native", "rss", "fds", "threads"} <= set(summary["metrics"])
    assert any("memray skipped" in note for note in summary["notes"]), summary["notes"]
    assert summary["load"]["errors"] == 0
    assert "listening on ws://127.0.0.1:" in (out / "target.log").read_text()
