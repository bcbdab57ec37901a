"""The runner's own memory: nothing it keeps grows per sample or per connection.

Samples stream to disk (checked by every run test); here the bookkeeping of process trees
is checked against a real target that forks a short-lived child over and over (as inetd-style
and prefork servers with a request limit do): the sampler, the target's list of pids to clean
up, and the watchdog keep the current tree, not every pid ever seen.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from runner.sampling.process import TreeSampler
from runner.target import StartedTarget
from runner.watchdog import PRUNE_AT

pytestmark = pytest.mark.faults

FORK_PER_REQUEST = textwrap.dedent(
    """
    import subprocess, sys, time
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        subprocess.run([sys.executable, "-S", "-c", "import time; time.sleep(0.05)"])
    """
)


def test_sampler_keeps_only_the_current_tree_of_a_forking_target():
    parent = subprocess.Popen([sys.executable, "-c", FORK_PER_REQUEST])
    try:
        sampler = TreeSampler(parent.pid, uss=False, interval=0.05)
        seen = set()
        for _ in range(40):
            sample = sampler.sample()
            assert sample is not None
            seen |= sampler.seen_pids
            assert len(sampler._procs) <= 3 and len(sampler._last_cpu) <= 3  # parent + at most a child or two
            assert parent.pid in sampler.seen_pids and len(sampler.seen_pids) <= 3
            time.sleep(0.05)
        assert len(seen) >= 5  # children really came and went while it sampled
    finally:
        parent.kill()
        parent.wait()


def test_started_target_forgets_dead_pids_past_its_limit(tmp_path):
    target = StartedTarget([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "t.log")
    try:
        finished = []
        for _ in range(3):  # real pids of processes that have exited
            proc = subprocess.Popen([sys.executable, "-S", "-c", "pass"])
            proc.wait()
            finished.append(proc.pid)
        never = set(range(2**22 + 1, 2**22 + 1 + PRUNE_AT + 10))  # above Linux's PID_MAX_LIMIT: never alive
        target.remember(set(finished) | never)
        assert target._known_pids == {target.pid}
    finally:
        target.stop(grace=1)
    assert target.poll() is not None
