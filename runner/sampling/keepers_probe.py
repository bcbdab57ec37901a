"""What keeps the memory: measured inside the target at the GC checkpoints (stdlib only).

memray says where memory was allocated; a leak is memory that something still holds. This
probe looks at the holders a developer would look for, and writes one JSON line per
checkpoint to ``memray/keepers.jsonl``:

- **containers**: the length of every dict, list, set, deque (and subclasses) reachable
  from the globals of the user's modules, through module-level objects' attributes,
  class attributes and small containers (a bounded walk, :data:`MAX_DEPTH` levels,
  :data:`MAX_NODES` objects, :data:`WALK_BUDGET` seconds); library modules (standard
  library, site-packages) contribute only their top-level containers, and only from
  :data:`LIBRARY_MIN_ITEMS` items on.
- **tasks**: live asyncio tasks, grouped by their coroutine (qualname, file:line where it
  is defined), with the line one of them waits at;
- **threads**: live threads, grouped by their target function;
- **census** (at full collections only, when it is exact): tracked objects by type, and
  functions/coroutines by the code that made them (``<lambda> at app.py:53``).

At the end :func:`chain` finds, for the type that grew most, a bounded back-reference path
from a module global to one of its oldest instances (``app.LISTENERS[17] -> <lambda> at
app.py:53 -> ServerConnection``).

This file is loaded by path by :mod:`runner.sampling.memray_launch` (in a started target
and in the ``--pid`` attach payload alike) and must not import the ``runner`` package:
that would load the runner's own dependencies into the heap being measured.
"""

from __future__ import annotations

import collections
import gc
import os
import sys
import sysconfig
import threading
import time
import types
from typing import Any, Iterable

__all__ = ["Probe", "PLUMBING", "MAX_DEPTH", "MAX_NODES", "WALK_BUDGET", "LIBRARY_MIN_ITEMS", "CENSUS_TOP"]

#: Levels below a user module's globals the walk descends (NAME.attr[key].attr = 3).
MAX_DEPTH = 3
#: Most objects one walk visits; past it the walk stops and says it was truncated.
MAX_NODES = 20_000
#: Most CPU seconds one walk takes (the target's own threads wait for the GIL meanwhile).
WALK_BUDGET = 0.05
#: A container with more items than this is measured but not descended into (its items are
#: per-connection objects whose paths change, and walking them is what costs).
DESCEND_MAX_ITEMS = 64
#: Library modules' top-level containers are recorded from this many items on.
LIBRARY_MIN_ITEMS = 16
#: Most containers recorded per checkpoint (the longest first).
MAX_CONTAINERS = 400
#: Types (and code locations) kept per census, the most numerous first.
CENSUS_TOP = 60
#: Chain search: most back-reference levels, most objects per level, most seconds.
CHAIN_DEPTH = 10
CHAIN_WIDTH = 200
CHAIN_BUDGET = 8.0
CHAIN_NODES = 2_000_000

_CONTAINERS = (dict, list, set, frozenset, collections.deque)
_NOT_DESCENDED = (types.ModuleType, type, types.CodeType, threading.Thread)
_CONTAINER_NAMES = {"dict", "list", "set", "frozenset", "deque", "defaultdict", "OrderedDict"}
_SKIP_TYPES = (
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    type,
    types.CodeType,
    types.FrameType,
    property,
    staticmethod,
    classmethod,
    str,
    bytes,
    int,
    float,
    bool,
    type(None),
    complex,
    range,
    memoryview,
    bytearray,
)
#: Builtin types that are the plumbing of any object graph, never what a reader looks for.
PLUMBING = {
    "dict",
    "list",
    "tuple",
    "set",
    "cell",
    "frame",
    "method",
    "builtin_function_or_method",
    "weakref",
    "function",
    "coroutine",
    "getset_descriptor",
    "member_descriptor",
    "wrapper_descriptor",
    "method_descriptor",
    "frozenset",
    "type",
    "module",
    "staticmethod",
    "classmethod",
    "property",
    "collections.deque",
    "weakref.ReferenceType",
    "weakref.ProxyType",
    "_contextvars.Context",
    "managedbuffer",
}


def _library_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    prefixes = {os.path.realpath(paths[key]) for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    prefixes.add(os.path.dirname(os.path.realpath(__file__)))  # the runner's own in-target code
    return tuple(sorted(p + os.sep for p in prefixes))


def _type_name(kind: type) -> str:
    module = getattr(kind, "__module__", "builtins")
    name = getattr(kind, "__qualname__", kind.__name__)
    return name if module == "builtins" else f"{module}.{name}"


def _is_container(value: Any) -> bool:
    return isinstance(value, _CONTAINERS) and not isinstance(value, (str, bytes))


def _code_label(code: types.CodeType, cwd: str) -> str:
    name = code.co_qualname if hasattr(code, "co_qualname") else code.co_name
    return f"{name} at {_short(code.co_filename, cwd)}:{code.co_firstlineno}"


def _short(path: str, cwd: str) -> str:
    if path.startswith(cwd + os.sep):
        return path[len(cwd) + 1 :]
    return path


def _key_text(key: Any) -> str | None:
    if isinstance(key, (str, int, float, bool, bytes)) or key is None:
        text = repr(key)
        return text if len(text) <= 40 else text[:37] + "..."
    return None


class Probe:
    """The in-target measurements; one instance per tracking session."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh = open(path, "a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()
        self._library = _library_prefixes()
        self._cwd = os.getcwd()
        self._user_files: dict[str, bool] = {}
        #: user modules seen so far, kept: a script's ``__main__`` leaves sys.modules when it returns,
        #: and the last checkpoint (and the chain) still need to see what its globals hold.
        self._seen: dict[str, tuple[str, types.ModuleType, str]] = {}
        self._library_cache: dict[str, tuple[int, types.ModuleType, list[tuple[str, Any]]]] = {}
        self.closed = False
        #: what the last chain search tried, for the log when it found nothing
        self.tried: list[str] = []

    # --- module classification -------------------------------------------------------

    def _is_user_file(self, file: str) -> bool:
        if file.startswith("<"):
            return file == "<string>"  # code run with -c is the user's; <frozen ...> is not
        known = self._user_files.get(file)
        if known is None:
            real = os.path.realpath(file)
            known = self._user_files[file] = not real.startswith(self._library)
        return known

    def _modules(self) -> tuple[list[tuple[str, types.ModuleType, str]], list[tuple[str, types.ModuleType]]]:
        """(user modules with their display name and file, library modules), ``__main__`` first."""
        library: list[tuple[str, types.ModuleType]] = []
        for name, module in sorted(list(sys.modules.items()), key=lambda item: (item[0] != "__main__", item[0])):
            if not isinstance(module, types.ModuleType):
                continue
            file = getattr(module, "__file__", None)
            if not isinstance(file, str):
                continue  # builtin and namespace modules hold nothing of the user's
            if name.startswith("_soak_runner"):
                continue
            if self._is_user_file(file):
                display = os.path.splitext(os.path.basename(file))[0] if name == "__main__" else name
                self._seen[display] = (display, module, _short(file, self._cwd))
            else:
                library.append((name, module))
        return list(self._seen.values()), library

    # --- containers --------------------------------------------------------------------

    def containers(self) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """``{path: [type, length, module file]}`` and the walk's own figures (visited, truncated, ms)."""
        began = time.thread_time()
        found: dict[str, list[Any]] = {}
        seen: set[int] = set()
        visited = 0
        truncated = False
        user, library = self._modules()
        queue: collections.deque[tuple[str, Any, int, str]] = collections.deque()
        for display, module, file in user:
            for name, value in self._items(vars(module)):
                if name.startswith("__") and name.endswith("__"):
                    continue
                if isinstance(value, type) and getattr(value, "__module__", None) == module.__name__:
                    for attr, inner in self._items(vars(value)):
                        if not (attr.startswith("__") and attr.endswith("__")):
                            queue.append((f"{display}.{name}.{attr}", inner, 1, file))
                    continue
                queue.append((f"{display}.{name}", value, 0, file))
        while queue:
            path, value, depth, file = queue.popleft()
            if id(value) in seen:
                continue
            visited += 1
            if visited > MAX_NODES or time.thread_time() - began > WALK_BUDGET:
                truncated = True
                break
            seen.add(id(value))
            if _is_container(value):
                try:
                    length = len(value)
                except Exception:  # noqa: BLE001 - a container subclass with a broken __len__
                    continue
                found[path] = [_type_name(type(value)), length, file]
                if depth >= MAX_DEPTH or length > DESCEND_MAX_ITEMS or isinstance(value, (set, frozenset)):
                    continue
                if isinstance(value, dict):
                    for key, inner in self._items(value):
                        text = _key_text(key)
                        if text is not None:
                            queue.append((f"{path}[{text}]", inner, depth + 1, file))
                else:
                    for index, inner in enumerate(self._values(value)):
                        queue.append((f"{path}[{index}]", inner, depth + 1, file))
                continue
            if isinstance(value, _SKIP_TYPES) or depth >= MAX_DEPTH:
                continue
            for attr, inner in self._attributes(value):
                queue.append((f"{path}.{attr}", inner, depth + 1, file))
        for name, module in library:
            for attr, value in self._library_containers(name, module):
                if id(value) in seen:
                    continue
                seen.add(id(value))
                try:
                    length = len(value)
                except Exception:  # noqa: BLE001
                    continue
                if length >= LIBRARY_MIN_ITEMS:
                    found[f"{name}.{attr}"] = [_type_name(type(value)), length, None]
        if len(found) > MAX_CONTAINERS:
            keep = sorted(found, key=lambda p: found[p][1], reverse=True)[:MAX_CONTAINERS]
            found = {p: found[p] for p in keep}
        walk_ms = round((time.thread_time() - began) * 1000, 2)
        return found, {"visited": visited, "truncated": truncated, "walk_ms": walk_ms}

    def _library_containers(self, name: str, module: types.ModuleType) -> list[tuple[str, Any]]:
        """A library module's top-level containers, looked up again only when its globals change in number."""
        namespace = vars(module)
        cached = self._library_cache.get(name)
        if cached is None or cached[0] != len(namespace) or cached[1] is not module:
            containers = [
                (attr, value)
                for attr, value in self._items(namespace)
                if isinstance(attr, str) and _is_container(value) and type(value).__module__ != "weakref"
            ]
            cached = self._library_cache[name] = (len(namespace), module, containers)
        return cached[2]

    @staticmethod
    def _items(mapping: Any) -> list[tuple[Any, Any]]:
        """A snapshot of a mapping's items; another thread may change it while we look."""
        for _ in range(5):
            try:
                return list(mapping.items())
            except RuntimeError:
                continue
            except Exception:  # noqa: BLE001 - a mapping subclass with an odd items()
                return []
        return []

    @staticmethod
    def _values(sequence: Any) -> list[Any]:
        for _ in range(5):
            try:
                return list(sequence)
            except RuntimeError:
                continue
            except Exception:  # noqa: BLE001
                return []
        return []

    def _attributes(self, value: Any) -> Iterable[tuple[str, Any]]:
        """Instance attributes (``__dict__`` and ``__slots__``), read without running properties."""
        try:
            namespace = object.__getattribute__(value, "__dict__")
        except (AttributeError, TypeError):
            namespace = None
        if isinstance(namespace, dict):
            yield from ((k, v) for k, v in self._items(namespace) if isinstance(k, str))
        for kind in type(value).__mro__:
            slots = kind.__dict__.get("__slots__", ())
            for slot in (slots,) if isinstance(slots, str) else slots:
                if slot in ("__dict__", "__weakref__"):
                    continue
                try:
                    yield slot, object.__getattribute__(value, slot)
                except (AttributeError, TypeError):
                    continue

    # --- tasks and threads ---------------------------------------------------------------

    def tasks(self) -> dict[str, list[Any]]:
        """``{coroutine label: [pending tasks, the line one of them waits at]}``."""
        asyncio = sys.modules.get("asyncio")
        registry = getattr(getattr(asyncio, "tasks", None), "_all_tasks", None)
        if registry is None:
            return {}
        # The WeakSet's own set of references, copied in one C call: iterating the WeakSet runs Python
        # code, and the event loop adds and drops tasks meanwhile (tens of thousands of them in a leak).
        refs = self._values(getattr(registry, "data", registry))
        tasks = [ref() if callable(ref) else ref for ref in refs]
        groups: dict[str, list[Any]] = {}
        for task in tasks:
            if task is None:
                continue
            try:
                if task.done():
                    continue
                coro = task.get_coro()
            except Exception:  # noqa: BLE001 - a foreign task class
                continue
            code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
            label = _code_label(code, self._cwd) if code is not None else _type_name(type(coro))
            group = groups.get(label)
            if group is None:
                groups[label] = [1, self._waiting_at(coro)]
            else:
                group[0] += 1
        return groups

    def _waiting_at(self, coro: Any) -> str | None:
        """The innermost line a coroutine is suspended at (following ``await`` into user code)."""
        where = None
        for _ in range(20):
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is None:
                break
            if self._is_user_file(frame.f_code.co_filename):
                where = f"{_short(frame.f_code.co_filename, self._cwd)}:{frame.f_lineno}"
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
            if coro is None:
                break
        return where

    def threads(self) -> dict[str, int]:
        """``{thread target label: live threads}`` (the probe's own thread left out)."""
        groups: dict[str, int] = {}
        for thread in threading.enumerate():
            if thread.name.startswith("soak-memray"):
                continue
            target = getattr(thread, "_target", None)
            code = getattr(target, "__code__", None)
            label = _code_label(code, self._cwd) if code is not None else _type_name(type(thread))
            groups[label] = groups.get(label, 0) + 1
        return groups

    # --- census and chain ------------------------------------------------------------------

    def census(self) -> dict[str, int]:
        """Tracked objects by type, functions and coroutines by their code (after a full collection)."""
        counts: collections.Counter[Any] = collections.Counter()
        codes: collections.Counter[Any] = collections.Counter()
        objects = gc.get_objects()
        try:
            for obj in objects:
                kind = type(obj)
                counts[kind] += 1
                if kind is types.FunctionType:
                    codes[obj.__code__] += 1
        finally:
            del objects
        out: dict[str, int] = {}
        for kind, n in counts.most_common(CENSUS_TOP):
            out[_type_name(kind)] = n
        for code, n in codes.most_common(CENSUS_TOP // 3):
            if self._is_user_file(code.co_filename):
                out["function " + _code_label(code, self._cwd)] = n
        return out

    def chain(self, first: dict[str, int], last: dict[str, int]) -> dict[str, Any] | None:
        """A back-reference path from a module global to an old instance of a type that grew.

        Of the types that grew at least a fifth as much as the one that grew most, the richest
        (a user's class first, then the most attributes: the connection, not its futures)
        is traced, from its oldest instance created after the first census (the oldest is
        the one most surely kept). A path that starts at a user module's global wins.
        """
        grown = {k: last[k] - first.get(k, 0) for k in last if not k.startswith("function ") and k not in PLUMBING}
        grown = {k: g for k, g in grown.items() if g > 0}
        if not grown:
            return None
        top = max(grown.values())
        began = time.perf_counter()
        names = [n for n in sorted(grown, key=grown.__getitem__, reverse=True)[:CENSUS_TOP] if grown[n] >= top / 5]
        typical = self._typical(set(names))
        samples = []
        for name in names:
            sample = typical.get(name)
            if sample is None:
                continue
            kind = type(sample)
            user = self._is_user_file(getattr(sys.modules.get(kind.__module__), "__file__", None) or "<builtin>")
            samples.append(((user, len(list(self._attributes(sample)))), name, sample))
        typical.clear()
        samples.sort(key=lambda item: item[0], reverse=True)
        ranked = [name for _, name, _ in samples]
        forward = self._path_from_globals(ranked[:5], began)
        if forward is not None:
            found_type, route = forward
            return {"type": found_type, "grew": grown[found_type], "path": route, "candidates": ranked[:5]}
        mine = {id(samples), *(id(item) for item in samples)}  # our own references are not the target's
        best: dict[str, Any] | None = None
        self.tried = []
        for _, name, sample in samples[:5]:  # the richest first: the first path from a user global wins
            path: list[str] | None = self._path_to_root(sample, began, mine)
            self.tried.append(f"{name}: {'found' if path else 'no path'} at {time.perf_counter() - began:.1f} s")
            if path is not None:
                found = {"type": name, "grew": grown[name], "path": path}
                if path[0].split(".")[0] in self._seen:
                    return found
                best = best or found
            if time.perf_counter() - began > CHAIN_BUDGET:
                break
        return best

    @staticmethod
    def _typical(names: set[str]) -> dict[str, Any]:
        """For each type named, an instance from the middle of the collector's list (most are the kept ones)."""
        found: dict[str, list[Any]] = {name: [] for name in names}
        for obj in gc.get_objects():
            bucket = found.get(_type_name(type(obj)))
            if bucket is not None:
                bucket.append(obj)
        return {name: items[len(items) // 2] for name, items in found.items() if items}

    def _path_from_globals(self, names: list[str], began: float) -> tuple[str, list[str]] | None:
        """Breadth-first from the user modules' globals to the nearest instance of one of ``names``.

        The shortest path from a global a developer can find in the code to a kept object;
        bounded by :data:`CHAIN_NODES` objects and :data:`CHAIN_BUDGET` seconds.
        """
        if not names:
            return None
        rank = {name: i for i, name in enumerate(names)}
        # module namespaces are not descended into: a function's globals lead into every library
        namespaces = {id(vars(module)) for module in list(sys.modules.values()) if isinstance(module, types.ModuleType)}
        namespaces.add(id(self.__dict__))
        parents: dict[int, tuple[int | None, Any, str | None]] = {}  # id -> (parent id, object, root label)
        level: list[Any] = []
        for display, module, _ in list(self._seen.values()):
            for key, value in self._items(vars(module)):
                if isinstance(value, (types.ModuleType, type)) or id(value) in parents or not isinstance(key, str):
                    continue
                code = getattr(value, "__code__", None)
                if code is not None and not self._is_user_file(code.co_filename):
                    continue  # a library function imported by name
                parents[id(value)] = (None, value, f"{display}.{key}")
                level.append(value)
        hits: list[tuple[int, Any]] = []
        while level and not hits and len(parents) < CHAIN_NODES and time.perf_counter() - began < CHAIN_BUDGET:
            following: list[Any] = []
            for obj in level:
                name = _type_name(type(obj))
                if name in rank:
                    hits.append((rank[name], obj))
                    continue
                if isinstance(obj, (types.ModuleType, type, types.FrameType)):
                    continue
                for inner in gc.get_referents(obj):
                    if id(inner) in parents or id(inner) in namespaces or isinstance(inner, _NOT_DESCENDED):
                        continue
                    parents[id(inner)] = (id(obj), inner, None)
                    following.append(inner)
            level = following
        if not hits:
            return None
        _, target = min(hits, key=lambda hit: hit[0])
        chain_objects = [target]
        parent = parents[id(target)][0]
        while parent is not None:
            chain_objects.append(parents[parent][1])
            parent = parents[parent][0]
        chain_objects.reverse()  # root first
        root = parents[id(chain_objects[0])][2] or "?"
        hops: list[list[str]] = [[self._name(chain_objects[-1]), ""]]
        for holder, held in zip(reversed(chain_objects[:-1]), reversed(chain_objects[1:]), strict=True):
            hop = self._hop(holder, held)
            if hop is None:
                continue
            if hop[1] and hops[0][0] in _CONTAINER_NAMES:
                hops = [[hop[0] + hop[1], hops[0][1]]] + hops[1:]
            else:
                hops = [hop] + hops
        head = hops[0]
        if len(chain_objects) == 1:
            return _type_name(type(target)), [f"{root} ({head[0]})"]
        first = chain_objects[0]
        if head[0] in _CONTAINER_NAMES or isinstance(first, (list, dict, set, frozenset, collections.deque)):
            hops[0] = [root, head[1]] if head[0] in _CONTAINER_NAMES else hops[0]
            if head[0] not in _CONTAINER_NAMES:
                hops = [[root, ""]] + hops
        else:
            hops = [[root, ""]] + hops
        return _type_name(type(target)), self._render(hops)

    def _path_to_root(self, target: Any, began: float, mine: set[int]) -> list[str] | None:
        """Breadth-first through ``gc.get_referrers`` until a module's globals or a live asyncio task."""
        module_dicts = {}
        for name, module in list(sys.modules.items()):
            namespace = getattr(module, "__dict__", None)
            if isinstance(namespace, dict) and not name.startswith("_soak_runner"):
                file = getattr(module, "__file__", None)
                script = name == "__main__" and isinstance(file, str)
                display = os.path.splitext(os.path.basename(str(file)))[0] if script else name
                module_dicts[id(namespace)] = display
        for display, module, _ in self._seen.values():
            module_dicts[id(vars(module))] = display
        ours: set[int] = set(mine)
        frame: Any = sys._getframe()
        while frame is not None:
            ours.add(id(frame))
            frame = frame.f_back
        asyncio = sys.modules.get("asyncio")
        task_type = getattr(asyncio, "Task", None) if asyncio else None
        # the frontier as parallel lists (no tuples of ours that would refer to the objects); a hop is [name, accessor]
        objects: list[Any] = [target]
        paths: list[list[list[str]]] = [[[self._name(target), ""]]]
        visited = {id(target)}
        ours.update({id(objects), id(paths)})
        for _ in range(CHAIN_DEPTH):
            if time.perf_counter() - began > CHAIN_BUDGET or not objects:
                return None
            index = {id(obj): i for i, obj in enumerate(objects)}
            referrers = gc.get_referrers(*objects)
            ours.add(id(referrers))
            next_objects: list[Any] = []
            next_paths: list[list[list[str]]] = []
            ours.update({id(next_objects), id(next_paths)})
            for ref in referrers:
                if id(ref) in ours or id(ref) in visited:
                    continue
                if type(ref) is tuple and len(ref) == len(objects):
                    if all(a is b for a, b in zip(ref, objects, strict=True)):
                        continue  # the argument tuple of get_referrers itself
                at = next((index[id(inner)] for inner in gc.get_referents(ref) if id(inner) in index), None)
                if at is None:
                    continue
                obj, hops = objects[at], paths[at]
                visited.add(id(ref))
                if id(ref) in module_dicts:
                    key = next((k for k, v in self._items(ref) if v is obj), "?")
                    root = f"{module_dicts[id(ref)]}.{key}"
                    head = hops[0]
                    named = root if head[0] in _CONTAINER_NAMES else f"{root} ({head[0]})"
                    return self._render([[named, head[1]]] + hops[1:])
                hop = self._hop(ref, obj)
                if hop is None:  # a cell, tuple or bound method: transparent
                    merged = hops
                elif hop[1] and hops[0][0] in _CONTAINER_NAMES:
                    merged = [[hop[0] + hop[1], hops[0][1]]] + hops[1:]
                else:
                    merged = [hop] + hops
                if task_type is not None and isinstance(ref, task_type):
                    if len(merged) > 1 and merged[1][0].startswith("coroutine "):  # the task's own coroutine: one hop
                        merged = [merged[0]] + merged[2:]
                    return self._render(merged)
                next_objects.append(ref)
                next_paths.append(merged)
                if len(next_objects) >= CHAIN_WIDTH:
                    break
            del referrers, index
            objects, paths = next_objects, next_paths
            ours.update({id(objects), id(paths)})
        return None

    @staticmethod
    def _render(hops: list[list[str]]) -> list[str]:
        return [name + accessor for name, accessor in hops]

    def _name(self, obj: Any) -> str:
        if isinstance(obj, types.FunctionType):
            code = obj.__code__
            name = code.co_name if code.co_name.startswith("<") else f"{code.co_qualname}()"
            return f"{name} at {_short(code.co_filename, self._cwd)}:{code.co_firstlineno}"
        if isinstance(obj, types.CoroutineType):
            return f"coroutine {_code_label(obj.cr_code, self._cwd)}"
        asyncio = sys.modules.get("asyncio")
        if asyncio is not None and isinstance(obj, asyncio.Task):
            task_code: types.CodeType | None = getattr(obj.get_coro(), "cr_code", None)
            return f"asyncio task {_code_label(task_code, self._cwd)}" if task_code is not None else "asyncio task"
        return type(obj).__name__

    def _hop(self, obj: Any, child: Any) -> list[str] | None:
        """How ``obj`` holds ``child``: [its name, the accessor] (``["list", "[17]"]``), None when transparent."""
        if type(obj).__name__ in ("cell", "tuple", "method"):
            return None
        name = self._name(obj)
        if isinstance(obj, list):
            index = next((i for i, v in enumerate(self._values(obj)) if v is child), None)
            return [name, f"[{index}]" if index is not None else ""]
        if isinstance(obj, dict):
            key = next((k for k, v in self._items(obj) if v is child), None)
            text = _key_text(key) if key is not None else None
            return [name, f"[{text}]" if text else ""]
        if isinstance(obj, (set, frozenset, collections.deque)):
            return [name, "[...]"]
        if not isinstance(obj, (types.FunctionType, types.CoroutineType)):
            for attr, value in self._attributes(obj):
                if value is child:
                    return [name, f".{attr}"]
        return [name, ""]

    # --- the log ---------------------------------------------------------------------------

    def write(self, **entry: Any) -> None:
        import json

        with self._lock:
            if not self._fh.closed:
                self._fh.write(json.dumps(entry, separators=(",", ":"), default=str) + "\n")

    def measure(self, wall: float, *, full: bool) -> None:
        """One checkpoint's line: containers, tasks, threads (the census when ``full``)."""
        containers, walk = self.containers()
        entry: dict[str, Any] = {
            "wall": wall,
            "full": full,
            "containers": containers,
            "tasks": self.tasks(),
            "threads": self.threads(),
            **walk,
        }
        self.write(**entry)

    def close(self) -> None:
        with self._lock:
            self._fh.close()
        self.closed = True
