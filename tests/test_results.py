from __future__ import annotations

import json

import pytest

from runner.errors import RunFolderError, UsageError
from runner.profile import parse_profile
from runner.results import RunFolder, RunRecord, SampleWriter, read_samples, write_json


def test_samples_stream_and_survive_a_torn_last_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    with SampleWriter(path) as writer:
        for i in range(3):
            writer.write({"t": i, "phase": "steady", "closed": i * 10, "rss": 1000 + i})
        # each line is on disk before the writer is closed
        assert len(path.read_text().splitlines()) == 3
    with open(path, "a") as fh:
        fh.write('{"t": 3, "phase": "ste')  # the runner was killed mid-write
    samples = list(read_samples(path))
    assert [s["t"] for s in samples] == [0, 1, 2]


def test_run_record_loads_a_killed_run(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.create()
    profile = parse_profile({"target": {"command": "x --port {port}"}}, name="k")
    write_json(folder.meta, {"format": 1, "profile": profile.to_dict()})
    with SampleWriter(folder.samples) as writer:
        writer.write({"t": 0.0, "phase": "baseline", "closed": 0})
    record = RunRecord.load(folder.path)
    assert not record.complete
    assert record.profile == profile
    assert len(record.samples) == 1


def test_run_folder_refuses_symlinks_and_previous_runs(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "meta.json").write_text("{}")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(UsageError, match="symbolic link"):
        RunFolder(link).create()
    with pytest.raises(UsageError, match="already holds a run"):
        RunFolder(real).create()
    RunFolder(real).create(overwrite=True)
    assert not (real / "meta.json").exists()


def test_not_a_run_folder(tmp_path):
    with pytest.raises(RunFolderError, match="does not exist"):
        RunRecord.load(tmp_path / "nope")
    with pytest.raises(RunFolderError, match="no meta.json"):
        RunRecord.load(tmp_path)


def test_write_json_is_atomic_and_handles_numpy(tmp_path):
    import numpy as np

    path = tmp_path / "x.json"
    write_json(path, {"a": np.float64(1.5), "b": (1, 2)})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [1, 2]}
    assert not list(tmp_path.glob(".*.tmp"))
