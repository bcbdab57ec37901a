"""The detection benchmark's corpus: one WebSocket echo server per known truth.

    python bench/targets/corpus.py --port P --kind KIND [--bytes N] [--every K] [--entries N] [--heap-log FILE]

Leaks (the truth is LEAK):
    leak-py       keeps ``--bytes`` of Python objects per connection (a dict of bytearrays)
    leak-native   mallocs ``--bytes`` per connection through ctypes, touches and never frees them
    leak-sparse   keeps ``--bytes * --every`` bytes once in every ``--every`` connections
    leak-fd       opens /dev/null once in every ``--every`` connections and never closes it
    leak-thread   starts a thread that never ends once in every ``--every`` connections
Benign decoys (the truth is PASS):
    clean         nothing outlives its connection
    warmup        a one-time pool: 8 KB per connection for the first ``--entries`` connections, then nothing
    cache         an LRU cache of ``--bytes`` entries, unbounded for the first ``--fill-seconds`` after the
                  first connection, then capped at the size it reached: fills, then plateaus (by time, so
                  "full at 25% of the run" holds whatever churn rate this machine manages)
    gc            cyclic garbage per connection, the cyclic GC run only every ``--every`` connections (sawtooth)
    frag          odd-sized buffers kept in a bounded ring of ``--entries``: fragmentation that levels off

``--heap-log FILE`` writes one JSON line every 0.5 s with the server's own closed-connection
count and its traced Python heap (tracemalloc) just after a full collection: the real heap series the replay benchmark
adds synthetic leaks to. tracemalloc does not see ctypes malloc, just as memray's Python
view would not without native tracking.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from runner.targets._serve import Handler, main  # noqa: E402

__all__ = ["KINDS", "Corpus", "make_handler"]

KINDS = ("clean", "leak-py", "leak-native", "leak-sparse", "leak-fd", "leak-thread", "warmup", "cache", "gc", "frag")


class _Cycle:
    """Two objects that point at each other: only the cyclic GC frees them."""

    def __init__(self, size: int) -> None:
        self.payload = bytearray(size)
        self.other: Any = None


class Corpus:
    """The state one kind keeps; ``on_close`` runs once per finished connection."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.kind = args.kind
        self.bytes = args.bytes
        self.every = max(args.every, 1)
        self.entries = args.entries
        self.fill_seconds = args.fill_seconds
        self.first_close: float | None = None
        self.capacity: int | None = None
        self.closed = 0
        self.kept: dict[int, Any] = {}
        self.cache: collections.OrderedDict[int, bytearray] = collections.OrderedDict()
        self.ring: collections.deque[bytearray] = collections.deque(maxlen=max(self.entries, 1))
        self.stop_threads = threading.Event()
        self.libc = ctypes.CDLL(None) if self.kind == "leak-native" else None
        if self.libc is not None:
            self.libc.malloc.restype = ctypes.c_void_p
            self.libc.malloc.argtypes = [ctypes.c_size_t]
        if self.kind == "gc":
            gc.disable()

    def on_close(self) -> None:
        n = self.closed = self.closed + 1
        kind = self.kind
        if kind == "leak-py":
            self.kept[n] = bytearray(self.bytes)
        elif kind == "leak-native" and self.libc is not None:
            pointer = self.libc.malloc(self.bytes)
            ctypes.memset(pointer, 1, self.bytes)  # resident, not just reserved
        elif kind == "leak-sparse" and n % self.every == 0:
            self.kept[n] = bytearray(self.bytes * self.every)
        elif kind == "leak-fd" and n % self.every == 0:
            self.kept[n] = open(os.devnull, "rb")  # noqa: SIM115 - the leak under test
        elif kind == "leak-thread" and n % self.every == 0:
            thread = threading.Thread(target=self.stop_threads.wait, daemon=True)
            thread.start()
            self.kept[n] = thread
        elif kind == "warmup" and n <= self.entries:
            self.kept[n] = bytearray(8192)
        elif kind == "cache":
            now = time.monotonic()
            self.first_close = self.first_close or now
            if self.capacity is None and now - self.first_close >= self.fill_seconds:
                self.capacity = len(self.cache)  # full: from now on every insert evicts
            self.cache[n] = bytearray(self.bytes)
            if self.capacity is not None and len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        elif kind == "gc":
            a, b = _Cycle(self.bytes), _Cycle(self.bytes)
            a.other, b.other = b, a
            if n % self.every == 0:
                gc.collect()
        elif kind == "frag":
            self.ring.append(bytearray(97 + (n * 7919) % 4000))


def make_handler(args: argparse.Namespace) -> Handler:
    corpus = Corpus(args)
    if args.heap_log:
        tracemalloc.start()
        _start_heap_log(corpus, Path(args.heap_log))

    async def handler(websocket: ServerConnection) -> None:
        try:
            async for message in websocket:
                await websocket.send(message)
        finally:
            corpus.on_close()

    return handler


def _start_heap_log(corpus: Corpus, path: Path) -> None:
    """A daemon thread appending (t, closed, heap) every 0.5 s; it ends with the process.

    Like soak-runner's memray checkpoints, each reading follows a full ``gc.collect()``:
    garbage that only waits for the cyclic collector is not counted as live heap.
    """
    start = time.monotonic()

    def loop() -> None:
        with open(path, "a", encoding="utf-8", buffering=1) as fh:
            while True:
                gc.collect()
                current, _ = tracemalloc.get_traced_memory()
                fh.write(
                    json.dumps({"t": round(time.monotonic() - start, 3), "closed": corpus.closed, "heap": current})
                    + "\n"
                )
                time.sleep(0.5)

    threading.Thread(target=loop, daemon=True, name="heap-log").start()


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=KINDS, default="clean", help="which truth this server embodies")
    p.add_argument("--bytes", type=int, default=1024, help="bytes per leak or cache entry (default 1024)")
    p.add_argument("--every", type=int, default=100, help="one event in every N connections (default 100)")
    p.add_argument(
        "--entries", type=int, default=5000, help="cache / warm-up / ring size in connections (default 5000)"
    )
    p.add_argument("--fill-seconds", type=float, default=30.0, help="cache: seconds until it is full (default 30)")
    p.add_argument(
        "--heap-log", default=None, help="append the traced heap (after a full GC) every 0.5 s to this JSON-lines file"
    )


if __name__ == "__main__":
    main(make_handler, __doc__ or "", configure=_options)
