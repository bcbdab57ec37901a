"""Run a Python target under a memray tracker, from inside the target's own process.

Why not ``memray run``: on a ``websockets`` asyncio server, ``memray run`` recorded
almost every allocation of the connection handler with an empty Python stack (memray
1.20, Python 3.11: ~98% of them had no file and no line). Starting ``memray.Tracker`` in
the target process and then running the target with :mod:`runpy` keeps the stacks, so a
leak can be named by file and line.

The runner starts ``python /path/to/memray_launch.py OPTIONS -- PYTHON-ARGS`` where
PYTHON-ARGS is what followed ``{python}`` in the target command (``-m pkg.mod ...``,
``script.py ...`` or ``-c CODE ...``). This file is run by path, not as
``runner.sampling.memray_launch``: importing the ``runner`` package would load
matplotlib, Jinja and friends into the heap being measured.

What the launcher adds to the target, and why:

- **A clean stop.** A SIGTERM handler that raises ``SystemExit`` (unless the target
  installs its own), so the tracker is closed and the capture finalised; a target that
  ignores SIGTERM is SIGKILLed by the runner and leaves a readable, unfinalised capture.
- **Checkpoints.** Every ``--checkpoint-interval`` seconds a thread runs a full
  ``gc.collect()`` and writes its wall time to ``--checkpoints`` (JSON lines). Objects
  that only wait for the cyclic collector (zlib streams of permessage-deflate, frames
  of finished coroutines) otherwise pile up in the oldest generation and look exactly
  like a leak; the heap and every allocation site are read at the memray snapshot
  just after each checkpoint, when that garbage is gone.
- **A frozen start-up heap.** A full collection walks every tracked object: about
  0.2 s for the 100K objects of a server that imported numpy, which would cost the
  target a fifth of a core at one checkpoint a second. When the runner writes ``freeze``
  into ``--control`` (it does so once the target accepts its first handshake, before any
  load), the launcher collects once and calls ``gc.freeze()``: the start-up objects move
  to the permanent generation and later collections walk only what the run created.
- **Checkpoints that do not stretch as a leak grows.** After that, each checkpoint
  collects and freezes again, so the next one walks only what was allocated since (a few
  ms of CPU, where a full collection of a leaked graph took 1.4 s); a full collection
  (unfreeze, collect, count objects by type, freeze) runs when it costs at most
  :data:`GC_BUDGET` of the checkpoint thread's CPU time, and at least every
  :data:`FULL_MIN_INTERVAL` seconds. Checkpoints are paced on CPU time, not wall time:
  the wall time also counts the slices the target's own threads ran meanwhile.
- **What keeps the memory.** At every checkpoint ``keepers_probe.py`` (loaded by path)
  writes the lengths of the containers reachable from module globals, the live asyncio
  tasks and the threads to ``memray/keepers.jsonl``; when the runner writes ``chain``
  (the drain starts) it traces a back-reference chain for the type that grew.
- **A size cap.** When the capture file passes ``--max-bytes`` the tracker is stopped
  (the capture stays valid) and an event says when, so a nightly run cannot fill the
  disk; the psutil metrics go on.

The last checkpoint line is ``{"event": "end", ...}`` when tracking ended cleanly; its
absence means the target was killed and the capture is unfinalised.
"""

from __future__ import annotations

import argparse
import builtins
import gc
import importlib.util
import json
import os
import runpy
import signal
import sys
import threading
import time
import types
from typing import Any, Sequence, TextIO

__all__ = ["launcher_argv", "split_python_args", "main", "UnsupportedCommand"]

#: Interpreter options that the launcher can honour (they take no argument and either
#: only affect start-up, or are applied by the launcher itself).
_FLAG_OPTIONS = {"-u", "-B", "-s", "-E", "-q"}
#: Largest share of the target's time the checkpoint collections may take.
GC_BUDGET = 0.05
#: How often the checkpoint thread looks at the control file between checkpoints.
_CONTROL_POLL = 0.2
#: Fewest seconds between two full collections once the start-up heap is frozen.
FULL_MIN_INTERVAL = 5.0


def _load_probe() -> types.ModuleType:
    """keepers_probe.py, next to this file, loaded by path (never through the ``runner`` package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keepers_probe.py")
    spec = importlib.util.spec_from_file_location("_soak_runner_keepers_probe", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class UnsupportedCommand(ValueError):
    """The Python command line uses something the launcher cannot reproduce."""


def split_python_args(args: Sequence[str]) -> tuple[list[str], str, str, list[str]]:
    """Split ``python`` arguments into (flags, kind, what, argv rest).

    ``kind`` is ``"module"`` (``-m NAME``), ``"code"`` (``-c CODE``) or ``"path"``
    (a script or a folder/zip with ``__main__``). Raises :class:`UnsupportedCommand`
    for options the launcher cannot honour (``-O``, ``-X``, ``-W``, ``-I`` ...).
    """
    flags: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in ("-m", "-c"):
            if index + 1 >= len(args):
                raise UnsupportedCommand(f"{arg} needs an argument")
            return flags, "module" if arg == "-m" else "code", args[index + 1], list(args[index + 2 :])
        if arg.startswith("-m") and len(arg) > 2:
            return flags, "module", arg[2:], list(args[index + 1 :])
        if arg == "-":
            raise UnsupportedCommand("a program read from standard input cannot be tracked")
        if not arg.startswith("-"):
            return flags, "path", arg, list(args[index + 1 :])
        if arg in _FLAG_OPTIONS:
            flags.append(arg)
            index += 1
            continue
        raise UnsupportedCommand(f"the interpreter option {arg} is not supported under memray")
    raise UnsupportedCommand("no module, script or -c code to run")


def launcher_argv(
    python: str,
    python_args: Sequence[str],
    *,
    capture: str,
    checkpoints: str,
    control: str,
    checkpoint_interval: float,
    memory_interval_ms: int,
    max_bytes: int | None,
    python_allocators: bool = False,
) -> list[str]:
    """The command that runs ``python PYTHON_ARGS`` under the launcher (validated first)."""
    split_python_args(python_args)  # refuse early, in the runner, what the launcher cannot run
    argv = [
        python,
        os.path.abspath(__file__),
        "--capture",
        capture,
        "--checkpoints",
        checkpoints,
        "--control",
        control,
        "--checkpoint-interval",
        f"{checkpoint_interval:g}",
        "--memory-interval-ms",
        str(memory_interval_ms),
    ]
    if max_bytes is not None:
        argv += ["--max-bytes", str(max_bytes)]
    if python_allocators:
        argv.append("--python-allocators")
    return argv + ["--", *python_args]


class _Checkpoints:
    """The checkpoint log: one flushed JSON line per event, safe to call from any thread."""

    def __init__(self, path: str) -> None:
        self._fh: TextIO = open(path, "a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def write(self, **event: Any) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.write(json.dumps(event, separators=(",", ":")) + "\n")
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


class _Session:
    """One tracking session: the tracker, the checkpoint thread, the size cap."""

    def __init__(self, args: argparse.Namespace) -> None:
        import memray

        self.args = args
        self.log = _Checkpoints(args.checkpoints)
        self.tracker = memray.Tracker(
            destination=memray.FileDestination(args.capture, overwrite=True),
            memory_interval_ms=args.memory_interval_ms,
            trace_python_allocators=args.python_allocators,
            file_format=memray.FileFormat.ALL_ALLOCATIONS,
        )
        self._lock = threading.Lock()
        self._tracking = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._checkpoint_loop, name="soak-memray-checkpoints", daemon=True)
        self._gc_seconds = 0.0
        self._full_seconds = 0.0
        self._next_full = 0.0
        self._frozen = False
        self._chained = False
        keepers = getattr(args, "keepers", None) or os.path.join(os.path.dirname(args.checkpoints), "keepers.jsonl")
        self.probe = _load_probe().Probe(keepers)
        self.censuses: list[dict[str, int]] = []

    def start(self) -> None:
        self.tracker.__enter__()
        self._tracking = True
        self.log.write(
            event="start",
            wall=time.time(),
            pid=os.getpid(),
            memory_interval_ms=self.args.memory_interval_ms,
            python_allocators=self.args.python_allocators,
            max_bytes=self.args.max_bytes,
        )
        self._thread.start()

    def stop(self, reason: str) -> None:
        """Close the tracker once (finalises the capture) and log why."""
        with self._lock:
            if not self._tracking:
                return
            self._tracking = False
            # A last collected point, close to the end: incremental (a full collection of a large leaked
            # graph takes seconds, and the runner SIGKILLs a target that does not exit in time).
            self._checkpoint(full=not self._frozen)
            if not self._chained:
                self._write_chain()
            self.tracker.__exit__(None, None, None)
        self.log.write(event="end", wall=time.time(), reason=reason)
        self.probe.close()

    def _checkpoint(self, *, full: bool = False) -> None:
        """Measure who keeps what, collect, log the wall time the heap is read at.

        Before the start-up freeze every checkpoint is a full collection. After it, the
        graph a collection has seen is frozen again at each checkpoint, so the next one walks
        only what was allocated since (milliseconds, however much a leak has piled up); a
        full collection (unfreeze, collect, census, freeze) runs when :data:`GC_BUDGET`
        allows, at least every :data:`FULL_MIN_INTERVAL` seconds. Objects that were alive
        at a freeze and became cyclic garbage after it wait for that full collection.
        """
        began, cpu = time.perf_counter(), time.thread_time()
        containers, walk = self.probe.containers()
        tasks, threads = self.probe.tasks(), self.probe.threads()
        full = full or not self._frozen or time.monotonic() >= self._next_full
        if self._frozen and full:
            gc.unfreeze()
        collected = gc.collect()
        census = self.probe.census() if full and self._frozen else None
        if self._frozen:
            gc.freeze()
        # Paced by this thread's CPU time: what the target lost to us while we held the GIL. The
        # wall time also counts the slices the target's own threads ran meanwhile.
        seconds = time.thread_time() - cpu
        wall_seconds = time.perf_counter() - began
        if full:
            self._full_seconds = seconds
            self._next_full = time.monotonic() + max(FULL_MIN_INTERVAL, seconds / GC_BUDGET)
            if census is not None:
                self.censuses.append(census)
        if not full or not self._frozen:
            self._gc_seconds = seconds  # what the next checkpoint will cost: paces them
        wall = time.time()
        self.log.write(
            wall=wall, gc=collected, gc_ms=round(wall_seconds * 1000, 2), cpu_ms=round(seconds * 1000, 2), full=full
        )
        self.probe.write(
            wall=wall, full=full, containers=containers, tasks=tasks, threads=threads, census=census, **walk
        )

    def _write_chain(self) -> None:
        """For the type that grew most between the first and last census, a path from a module global."""
        self._chained = True
        if len(self.censuses) < 2:
            return
        began = time.perf_counter()
        gc.unfreeze()  # the oldest instances sit in the frozen generation
        try:
            found = self.probe.chain(self.censuses[0], self.censuses[-1])
        except Exception as exc:  # noqa: BLE001 - a diagnosis must never break the target's exit
            self.probe.write(event="chain", error=f"{type(exc).__name__}: {exc}")
            return
        finally:
            gc.freeze()
        self.probe.write(
            event="chain",
            wall=time.time(),
            chain=found,
            tried=self.probe.tried,
            ms=round((time.perf_counter() - began) * 1000, 1),
        )

    def _requested(self, word: str) -> bool:
        """Whether the runner wrote ``word`` (a line: ``freeze``, ``chain``) into the control file."""
        try:
            with open(self.args.control, encoding="utf-8") as fh:
                return word in fh.read().split()
        except OSError:
            return False

    def _control(self) -> None:
        """Act on the runner's requests: freeze the start-up heap; find the chain while the leak is in place."""
        if not self._frozen and self._requested("freeze"):
            with self._lock:
                if self._tracking:
                    self._freeze()
        if self._frozen and not self._chained and self._requested("chain"):
            with self._lock:
                if self._tracking:
                    self._checkpoint(full=True)
                    self._write_chain()

    def _freeze(self) -> None:
        gc.collect()
        self.censuses.append(self.probe.census())  # the start-up objects: the census baseline
        gc.freeze()
        self._frozen = True
        self._next_full = time.monotonic() + FULL_MIN_INTERVAL
        self.log.write(event="frozen", wall=time.time(), objects=gc.get_freeze_count())

    def _wait_next(self) -> bool:
        """Sleep until the next checkpoint (freezing on request meanwhile); False when stopping."""
        deadline = time.monotonic() + max(self.args.checkpoint_interval, self._gc_seconds / GC_BUDGET)
        while True:
            self._control()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            if self._stop.wait(min(_CONTROL_POLL, remaining)):
                return False

    def _checkpoint_loop(self) -> None:
        while self._wait_next():
            with self._lock:
                if not self._tracking:
                    return
                self._checkpoint()
            if self.args.max_bytes is not None:
                try:
                    size = os.path.getsize(self.args.capture)
                except OSError:
                    continue
                if size > self.args.max_bytes:
                    self.log.write(event="capped", wall=time.time(), bytes=size)
                    self.stop("capped")
                    return


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    if "--" not in argv:
        raise SystemExit("memray_launch: expected OPTIONS -- PYTHON-ARGS")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="memray_launch", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--capture", required=True)
    parser.add_argument("--checkpoints", required=True)
    parser.add_argument("--control", required=True)
    parser.add_argument("--checkpoint-interval", type=float, default=1.0)
    parser.add_argument("--memory-interval-ms", type=int, default=100)
    parser.add_argument("--max-bytes", type=int, default=None)
    parser.add_argument("--python-allocators", action="store_true")
    parser.add_argument("--keepers", default=None)
    return parser.parse_args(argv[:split]), argv[split + 1 :]


def _raise_system_exit(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _run_target(kind: str, what: str, rest: list[str]) -> None:
    """Run the target as ``python`` would, with ``sys.argv`` and ``sys.path[0]`` as it sets them."""
    if kind == "module":
        sys.argv = [what, *rest]  # runpy replaces argv[0] with the module's file
        sys.path[0] = os.getcwd()
        runpy.run_module(what, run_name="__main__", alter_sys=True)
    elif kind == "code":
        sys.argv = ["-c", *rest]
        sys.path[0] = ""
        code = compile(what, "<string>", "exec")
        main_module = types.ModuleType("__main__")  # a fresh one: this launcher is the current __main__
        main_module.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = main_module
        exec(code, main_module.__dict__)
    else:
        sys.argv = [what, *rest]
        sys.path[0] = os.path.dirname(os.path.abspath(what)) if os.path.isfile(what) else os.path.abspath(what)
        runpy.run_path(what, run_name="__main__")


def main(argv: Sequence[str] | None = None) -> None:
    """Track the target named after ``--`` until it ends, then close the capture; its exit code is kept."""
    options, python_args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        flags, kind, what, rest = split_python_args(python_args)
    except UnsupportedCommand as exc:
        raise SystemExit(f"memray_launch: {exc}") from None
    if "-u" in flags:  # -s, -E, -q only matter at interpreter start-up, which has happened
        os.environ["PYTHONUNBUFFERED"] = "1"
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(write_through=True)
    if "-B" in flags:
        sys.dont_write_bytecode = True
    # Installed before the target runs, so a target with its own handler replaces it. A handler
    # found here comes from a site hook (coverage's re-kills the process), which would leave the
    # capture unfinalised; SystemExit runs atexit hooks anyway, so theirs still get to run.
    signal.signal(signal.SIGTERM, _raise_system_exit)
    session = _Session(options)
    session.start()
    reason = "exit"
    try:
        _run_target(kind, what, rest)
    except SystemExit as exc:
        reason = "exit" if exc.code in (None, 0) else f"exit {exc.code}"
        raise
    except KeyboardInterrupt:
        reason = "interrupt"
        raise
    except BaseException as exc:
        reason = f"exception {type(exc).__name__}"
        raise
    finally:
        session.stop(reason)
        session.log.close()


if __name__ == "__main__":
    main()
