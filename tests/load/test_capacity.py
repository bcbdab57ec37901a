"""The capacity pre-check: processes and source addresses for the requested users, or a clear refusal."""

from __future__ import annotations

import json
import resource

import pytest

from runner.errors import EXIT_USAGE, UsageError
from runner.load.capacity import FD_RESERVE, cpu_check, is_loopback_host, plan_load, read_port_range
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
    assert plan(users=50000, target_host="10.1.2.3", source_addresses=("10.0.0.5", "10.0.0.6")).source_addresses == (
        "10.0.0.5",
        "10.0.0.6",
    )


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
    result = soak(
        "run",
        "--target",
        "{python} -m runner.targets.echo --port {port}",
        "--users",
        str(users),
        "--workers",
        "2",
        "--out",
        str(out),
        timeout=120,
    )
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


# --- the CPU pre-check ----------------------------------------------------------------


def cpu(users=50000, workers=3, **kwargs):
    settings = dict(
        connections_per_user=1, spawn_rate=1000, hold=100.0, think=0.0, duration=300.0, cpus=2, load_average=0.0
    )
    return cpu_check(plan(users=users, workers=workers), **{**settings, **kwargs})


def test_the_incident_load_fits_two_idle_cores():
    """50K users at 1,000/s held 100 s with default pings: ~0.8 cores to ramp, ~1.2 to hold and churn."""
    assert cpu() == []


def test_a_hold_too_short_for_the_cores_says_how_many_can_be_open_and_what_to_change():
    """Every 50K connection reopened every 10 s: 5,000 cycles/s is more than 2 cores do (~1,400/s here)."""
    notes = cpu(hold=10.0)
    assert len(notes) == 1
    assert "holding 50000 connections for 10s each means 5000 cycles/s and 2500 pings/s" in notes[0]
    assert "can be open at once - raise load.hold (or load.think) to" in notes[0]
    held = int(notes[0].split("about ")[-1].split(" can be open")[0])
    assert 10000 < held < 30000


def test_cores_taken_by_other_work_slow_the_ramp_and_the_hold():
    assert cpu(load_average=1.0) == []  # one process's worth of other work: still fits
    notes = cpu(load_average=10.0)  # ten: our 4 busy processes get about 4/14 of the 2 cores
    assert "the ramp will run at about" in notes[0] and "load average 10.0" in notes[0]
    assert "lower load.spawn_rate" in notes[0] and "remote workers" in notes[0]
    assert any("can be open at once" in n for n in notes[1:])


def test_one_process_cannot_ramp_faster_than_its_core():
    notes = cpu(users=15000, workers=0, spawn_rate=3000, cpus=8)
    assert "1.4 cores per load process" in notes[0] and "about 1957/s" in notes[0]


def test_memory_per_held_connection_is_checked_and_shared_greenlets_suggested():
    notes = cpu(available_memory=500_000_000)
    assert any("need about 0.8 GB" in n and "connections_per_user = 4" in n for n in notes)
    shared = cpu(available_memory=500_000_000, users=12500, connections_per_user=4, spawn_rate=250)  # 7.5 KB each
    assert not any("GB" in n for n in shared)


def test_the_pre_check_speaks_before_anything_starts(tmp_path):
    """One process asked to open 5,000 connections/s is told so before the target even starts."""
    profile = tmp_path / "fast.toml"
    profile.write_text(
        '[target]\ncommand = "{python} -c \'import sys; sys.exit(1)\'"\nurl = "ws://127.0.0.1:9/"\nmemray = false\n'
        '[load]\nusers = 30\nspawn_rate = 5000\nduration = "4s"\n'
    )
    result = soak("run", str(profile), "--out", str(tmp_path / "run"), timeout=120)
    said = result.stdout + result.stderr
    assert "pre-check: opening 5000 connections/s needs 2.3 cores per load process" in said
    assert "lower load.spawn_rate" in said
    assert said.index("pre-check:") < said.index("target started")


def test_a_run_that_never_had_its_connections_open_at_once_is_marked(tmp_path):
    """The server ends each connection 0.5 s into a 2 s hold: about a quarter of the 30 asked are ever open."""
    profile = tmp_path / "behind.toml"
    profile.write_text(
        '[target]\ncommand = "{python} -m runner.targets.echo --port {port} --idle-timeout 0.5"\nmemray = false\n'
        '[load]\nusers = 30\nspawn_rate = 15\nduration = "4s"\nmessages = 1\nhold = "2s"\n'
        '[phases]\nbaseline = "0s"\ndrain = "10s"\ncooldown = "0.5s"\n[sampling]\ninterval = "0.25s"\nuss = false\n'
    )
    out = tmp_path / "run"
    result = soak("run", str(profile), "--out", str(out), "--quiet", timeout=240)
    assert result.returncode in (0, 4), result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    ramp = summary["load"]["ramp"]
    assert ramp["behind"] and ramp["asked_connections"] == 30 and ramp["peak_open"] < 0.95 * 30, ramp
    assert any(n.startswith("the ramp fell behind: at most") for n in summary["notes"])
