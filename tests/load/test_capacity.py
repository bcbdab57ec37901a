"""The capacity pre-check: processes and source addresses for the requested users, or a clear refusal."""

from __future__ import annotations

import resource

import pytest

from runner.errors import EXIT_USAGE, UsageError
from runner.load.capacity import FD_RESERVE, is_loopback_host, plan_load, read_port_range
from tests.conftest import soak

LINUX_PORTS = (32768, 60999)  # 28,232 ports


def plan(**kwargs):
    defaults = dict(users=200, workers=0, target_host="127.0.0.1", fd_limit=20000, port_range=LINUX_PORTS)
    return plan_load(**{**defaults, **kwargs})


def test_small_runs_stay_in_process_from_one_address():
    result = plan()
    assert (result.workers, result.source_addresses, result.notes, result.distributed) == (0, (), (), False)
    assert result.per_process == 20000 - FD_RESERVE


def test_users_beyond_one_process_choose_workers_with_a_note():
    result = plan(users=50000)
    assert result.workers == 3 and result.distributed
    assert "50000 users exceed what one process can hold" in result.notes[0]


def test_too_few_explicit_workers_is_refused_with_what_is_needed():
    with pytest.raises(UsageError) as caught:
        plan(users=50000, workers=2)
    assert str(caught.value).startswith("50000 users need at least 3 workers at 20000 fds each")
    assert caught.value.exit_code == EXIT_USAGE


def test_local_workers_are_bounded_by_the_cpus():
    with pytest.raises(UsageError, match="1000000 users need at least 51 workers .*at most 8 local workers"):
        plan(users=1_000_000, cpus=2)
    with pytest.raises(UsageError, match="load.workers = 9 is more local worker processes than 2 CPUs"):
        plan(workers=9, cpus=2)
    assert plan(users=1_000_000, workers=1, remote_workers=50, cpus=2).processes == 51


def test_remote_workers_count_towards_capacity():
    assert plan(users=50000, workers=1, remote_workers=2).processes == 3


def test_loopback_targets_spread_source_addresses_when_ports_run_out():
    result = plan(users=50000)
    assert result.source_addresses == ("127.0.0.2", "127.0.0.3")
    assert any("loopback addresses" in note for note in result.notes)
    assert plan(users=20000, workers=2).source_addresses == ()  # 20000 fits one address's ports


def test_port_shortage_without_spreading_is_refused():
    with pytest.raises(UsageError, match="need 2 source addresses"):
        plan(users=50000, source_addresses="off")
    with pytest.raises(UsageError, match="to reach 10.1.2.3"):
        plan(users=50000, target_host="10.1.2.3")
    with pytest.raises(UsageError, match="lists 1"):
        plan(users=50000, source_addresses=("10.0.0.5",))
    assert plan(users=50000, target_host="10.1.2.3", source_addresses=("10.0.0.5", "10.0.0.6")).source_addresses == ("10.0.0.5", "10.0.0.6")


def test_loopback_hosts():
    assert all(is_loopback_host(h) for h in ("127.0.0.1", "127.9.9.9", "localhost", "::1", "[::1]"))
    assert not any(is_loopback_host(h) for h in ("10.0.0.1", "example.com", ""))


def test_port_range_is_read_or_defaults(tmp_path):
    ranges = tmp_path / "range"
    ranges.write_text("1024\t2047\n")
    assert read_port_range(str(ranges)) == (1024, 2047)
    assert read_port_range(str(tmp_path / "missing")) == LINUX_PORTS


def test_cli_refuses_before_starting_anything(tmp_path):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # 20000 here: "50000 users need at least 3 workers ..."
    users = 2 * (hard - FD_RESERVE) + 1
    out = tmp_path / "run"
    result = soak("run", "--target", "{python} -m runner.targets.echo --port {port}", "--users", str(users),
                  "--workers", "2", "--out", str(out), timeout=120)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert f"{users} users need at least 3 workers at {hard} fds each" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_connections_per_user_count_as_connections():
    """12,500 users with 4 connections each need the fds and ports of 50,000 connections."""
    result = plan(users=12500, connections_per_user=4)
    assert (result.workers, len(result.source_addresses)) == (3, 2)
    assert result.notes[0].startswith("50000 connections (12500 users x 4) exceed what one process can hold")
    with pytest.raises(UsageError, match=r"^50000 connections \(12500 users x 4\) need at least 3 workers"):
        plan(users=12500, connections_per_user=4, workers=2)
    assert plan(users=4000, connections_per_user=4).workers == 0  # 16,000 connections fit one process
