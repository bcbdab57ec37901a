"""The run folder: what a run records, and how every later command reads it back.

A run folder is the single source of truth; ``soak analyze`` and ``soak report`` work
from it alone, so nothing needs re-running to re-analyse (as in pyperf).

Files (format version :data:`FORMAT_VERSION`):

- ``meta.json``      written at start: resolved profile, environment, target command.
- ``samples.jsonl``  one JSON object per sample, appended and flushed as taken; a run
                     killed with SIGKILL leaves every sample but perhaps a torn last line.
- ``run.json``       written at the end: phase boundaries, target outcome, load statistics.
- ``target.log``     the target's stdout and stderr.
- ``runtime/``       a GC runtime's heap probe: ``checkpoints.jsonl`` (heap, native and
                     live bytes per site after a forced GC), ``finish.json`` (snapshot diff).
- ``summary.json``, ``report.html``, ``junit.xml``   derived by analysis and reporting.

Format history:
    1 - first version.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

from .analysis.runtime import reduce_checkpoints
from .analysis.sites import join_heap, tree_processes
from .errors import RunFolderError
from .profile import Profile

__all__ = [
    "FORMAT_VERSION",
    "SAMPLE_FIELDS",
    "RunFolder",
    "RunRecord",
    "SampleWriter",
    "join_runtime",
    "read_samples",
    "write_json",
]

FORMAT_VERSION = 1

#: The fields of one sample line. Metrics may be ``null`` when unavailable (e.g. ``heap``
#: without memray, or everything after the target died).
SAMPLE_FIELDS = (
    "t",  # seconds since the run started (monotonic)
    "wall",  # Unix time of the sample
    "phase",  # baseline | ramp | steady | drain | cooldown
    "opened",  # connections opened so far (cumulative)
    "closed",  # connections closed so far (cumulative)
    "open",  # connections open at this moment
    "errors",  # failed requests so far (cumulative)
    "rss",  # resident set size of the target's process tree, bytes
    "uss",  # unique set size of the tree, bytes
    "heap",  # live heap after a GC, bytes: Python's by memray, or the runtime's (V8, JVM) by its probe
    "native",  # memory a GC runtime reports outside its heap (Node external/Buffers, JVM direct), bytes
    "fds",  # open file descriptors of the tree
    "threads",  # threads of the tree
    "cpu",  # CPU of the tree since the previous sample, percent of one core
    "procs",  # processes in the tree
)
#: Fields a sample taken through [sampling] sources adds (runner.sampling.sources): ``sources``
#: (metric -> process, metrics_url, prometheus or cgroup), ``series`` (metric -> series name,
#: PromQL query or cgroup file), ``source_errors`` (source -> why it could not be read; its
#: values are then null), and a cgroup's ``cgroup_memory`` and ``cgroup_file`` bytes.


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class SampleWriter:
    """Appends samples to ``samples.jsonl``, one flushed line each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = open(path, "a", encoding="utf-8", buffering=1)
        self.count = 0

    def write(self, sample: dict[str, Any]) -> None:
        if self._fh is None:
            raise ValueError("sample writer is closed")
        self._fh.write(json.dumps(sample, separators=(",", ":")) + "\n")
        self._fh.flush()
        self.count += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "SampleWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_samples(path: Path) -> Iterator[dict[str, Any]]:
    """Samples from a ``samples.jsonl``; a torn or corrupt line (a killed run) is skipped."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                sample = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(sample, dict) and "t" in sample:
                yield sample


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder."""

    path: Path

    @property
    def meta(self) -> Path:
        return self.path / "meta.json"

    @property
    def samples(self) -> Path:
        return self.path / "samples.jsonl"

    @property
    def run(self) -> Path:
        return self.path / "run.json"

    @property
    def target_log(self) -> Path:
        return self.path / "target.log"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def junit(self) -> Path:
        return self.path / "junit.xml"

    @property
    def locust_stats(self) -> Path:
        return self.path / "locust_stats.json"

    def create(self, *, overwrite: bool = False) -> None:
        """Create the folder fresh; refuse a symlink, and a previous run unless ``overwrite``."""
        from .errors import UsageError

        if self.path.is_symlink():
            raise UsageError(f"run folder {str(self.path)!r} is a symbolic link", hint="choose another --out")
        if self.path.exists():
            if not self.path.is_dir():
                raise UsageError(f"--out {str(self.path)!r} exists and is not a folder", hint="choose another --out")
            if any(self.path.iterdir()):
                if not overwrite:
                    raise UsageError(
                        f"run folder {str(self.path)!r} already holds a run",
                        hint="choose another --out, or pass --overwrite",
                    )
                if not self.meta.is_file() or self.meta.is_symlink():
                    raise UsageError(
                        f"--out {str(self.path)!r} is not empty and holds no run (no meta.json), so soak will not "
                        "empty it",
                        hint="choose an empty or new folder",
                    )
                self._empty()
        self.path.mkdir(parents=True, exist_ok=True)

    def _empty(self) -> None:
        """Remove a previous run's files; symbolic links are removed, never followed."""
        import shutil

        for entry in self.path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


@dataclass
class RunRecord:
    """Everything a run recorded, read back from its folder (plain data, no I/O after loading)."""

    folder: Path
    profile: Profile
    meta: dict[str, Any]
    samples: list[dict[str, Any]]
    run: dict[str, Any] = field(default_factory=dict)
    locust_stats: dict[str, Any] = field(default_factory=dict)
    #: ``memray/reduced.json`` (heap at GC checkpoints, per-site live bytes), or None
    #: when the target did not run under memray. Its heap is already joined into ``samples``.
    memray: dict[str, Any] | None = None
    #: ``runtime/checkpoints.jsonl`` reduced (:func:`runner.analysis.runtime.reduce_checkpoints`),
    #: or None when no runtime heap probe ran. Its heap and native are joined into ``samples``.
    runtime: dict[str, Any] | None = None
    #: ``runtime/finish.json``: the probe's end-of-steady extras (a heap-snapshot diff, notes).
    runtime_finish: dict[str, Any] = field(default_factory=dict)

    @property
    def runtime_name(self) -> str | None:
        """The GC runtime whose own heap figures the samples carry (``"node"``, ``"jvm"``), or None."""
        return (self.runtime or {}).get("runtime") if self.runtime and self.runtime.get("heap") else None

    @property
    def complete(self) -> bool:
        """False when the runner died before writing ``run.json``."""
        return bool(self.run)

    @classmethod
    def load(cls, path: str | Path) -> "RunRecord":
        folder = RunFolder(Path(path))
        if not folder.path.is_dir():
            raise RunFolderError(
                f"run folder {str(folder.path)!r} does not exist", hint="pass a folder made by `soak run`"
            )
        if not folder.meta.exists():
            raise RunFolderError(
                f"{str(folder.path)!r} is not a run folder (no meta.json)", hint="pass a folder made by `soak run`"
            )
        try:
            meta = json.loads(folder.meta.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RunFolderError(f"cannot read {folder.meta}: {exc}") from None
        samples = list(read_samples(folder.samples)) if folder.samples.exists() else []
        run = _read_optional_json(folder.run)
        stats = _read_optional_json(folder.locust_stats)
        profile = Profile.from_dict(meta.get("profile", {}))
        memray = _read_optional_json(folder.path / "memray" / "reduced.json") or None
        if memray and memray.get("heap"):
            processes = tree_processes(samples)
            if processes > 1:
                memray["notes"] = list(memray.get("notes", [])) + [
                    f"memray: the target ran {processes} processes and memray tracks only the first, "
                    "so its heap is left out of the verdict (psutil covers the whole tree)"
                ]
            else:
                samples = join_heap(samples, memray["heap"])
        runtime, runtime_finish = None, _read_optional_json(folder.path / "runtime" / "finish.json")
        if not (memray and memray.get("heap")):
            samples, runtime = join_runtime(folder, samples, (run.get("runtime") or {}).get("runtime"))
        return cls(
            folder=folder.path,
            profile=profile,
            meta=meta,
            samples=samples,
            run=run,
            locust_stats=stats,
            memray=memray,
            runtime=runtime,
            runtime_finish=runtime_finish,
        )


def join_runtime(
    folder: RunFolder, samples: list[dict[str, Any]], runtime: str | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The samples with a runtime probe's ``heap`` (and ``native``) joined from its checkpoints so far,
    and the reduced checkpoints (None when no runtime probe ran). Used by the final analysis and the looks."""
    checkpoints = folder.path / "runtime" / "checkpoints.jsonl"
    if not checkpoints.exists():
        return samples, None
    reduced = reduce_checkpoints(_read_jsonl(checkpoints), runtime)
    samples = join_heap(samples, reduced["heap"])
    if reduced["native"]:
        samples = join_heap(samples, reduced["native"], field="native")
    return samples, reduced


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file; a torn or corrupt line (a killed run) is skipped."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                yield value


def _read_optional_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
