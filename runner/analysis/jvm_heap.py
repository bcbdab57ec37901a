"""The JVM's own account of its heap, as plain data (pure functions, no process, no clock).

Two texts come out of a HotSpot JVM (see :mod:`runner.sampling.runtimes.jvm`):

- ``GC.class_histogram``: live instances and shallow bytes per class right after the full
  collection the command runs first. Its ``Total`` line is the live heap after GC.
- JFR's ``jdk.OldObjectSample`` events (``jfr print --json``): a few sampled allocations that
  were still alive when the recording was dumped, each with its allocation stack and, with
  ``path-to-gc-roots=true``, the chain of references from a GC root down to the object.

Histogram bytes are shallow: a leaked ``ConnState`` shows its own 32 bytes, while the
``byte[]`` it holds shows under ``[B`` among every other byte array. The old-object
samples say which growing objects are reached through which class, so
:func:`retained_per_connection` can credit a class with the growth it keeps alive
(``Server$ConnState`` with the ``[B`` of its buffer), and the allocating line and root of
that class come from the same samples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "HistogramEntry",
    "ClassHistogram",
    "OldObject",
    "parse_class_histogram",
    "parse_old_objects",
    "is_user_class",
    "java_location",
    "class_provenance",
    "retained_per_connection",
    "jvm_sites",
]

_ROW = re.compile(r"^\s*\d+:\s+(\d+)\s+(\d+)\s+(\S+)(?:\s+\((.*)\))?\s*$")
_TOTAL = re.compile(r"^\s*Total\s+(\d+)\s+(\d+)\s*$")
#: Packages of the JDK itself: frames and classes there are not the server's code.
_JDK_PREFIXES = ("java.", "javax.", "jdk.", "sun.", "com.sun.", "[")
_PRIMITIVES = {
    "B": "byte",
    "C": "char",
    "I": "int",
    "J": "long",
    "S": "short",
    "Z": "boolean",
    "F": "float",
    "D": "double",
}


@dataclass(frozen=True)
class HistogramEntry:
    """One row of ``GC.class_histogram``: a class, its live instances and their shallow bytes."""

    name: str  # Java binary name, e.g. ``Server$ConnState`` or ``[B``
    instances: int
    bytes: int
    module: str | None = None  # e.g. ``java.base@17.0.15``


@dataclass(frozen=True)
class ClassHistogram:
    entries: tuple[HistogramEntry, ...]
    total_instances: int
    total_bytes: int  # live heap after the collection the histogram runs first

    def by_name(self) -> dict[str, HistogramEntry]:
        return {e.name: e for e in self.entries}


@dataclass(frozen=True)
class OldObject:
    """One ``jdk.OldObjectSample``: a sampled allocation still alive at the dump."""

    type: str  # Java binary name of the sampled object's class
    frames: tuple[tuple[str, str, int], ...]  # (class, method, line), innermost first
    path: tuple[str, ...]  # classes from the object up to the root's holder, object first
    root: str | None  # e.g. "static field Server.STATES", or the root system JFR names
    fields: tuple[str, ...] = field(default=())  # field names along ``path`` ("" for array slots)


def parse_class_histogram(text: str) -> ClassHistogram:
    """Parse ``GC.class_histogram`` output; ValueError when it has no ``Total`` line."""
    entries = []
    total: tuple[int, int] | None = None
    for line in text.splitlines():
        row = _ROW.match(line)
        if row:
            entries.append(HistogramEntry(row.group(3), int(row.group(1)), int(row.group(2)), row.group(4)))
            continue
        tot = _TOTAL.match(line)
        if tot:
            total = (int(tot.group(1)), int(tot.group(2)))
    if total is None:
        raise ValueError("not a class histogram (no Total line): " + (text.strip().splitlines() or [""])[0][:120])
    return ClassHistogram(tuple(entries), total[0], total[1])


def _class_name(type_: Any) -> str:
    """JFR's internal class name (``java/lang/String``) as a Java binary name."""
    name = type_.get("name") if isinstance(type_, Mapping) else type_
    return str(name or "?").replace("/", ".")


def parse_old_objects(recording: Mapping[str, Any]) -> list[OldObject]:
    """The ``jdk.OldObjectSample`` events of ``jfr print --json`` output, slimmed."""
    events = (recording.get("recording") or {}).get("events") or []
    out = []
    for event in events:
        if event.get("type") not in (None, "jdk.OldObjectSample"):
            continue
        values = event.get("values") or {}
        obj = values.get("object") or {}
        frames = []
        for frame in (values.get("stackTrace") or {}).get("frames") or []:
            method = frame.get("method") or {}
            line = int(frame.get("lineNumber") or -1)
            frames.append((_class_name(method.get("type")), str(method.get("name") or "?"), line))
        path: list[str] = [_class_name(obj.get("type"))]
        names: list[str] = []
        holder = obj
        root_field: str | None = None
        for _ in range(1000):  # a chain is finite; bound the walk anyway
            ref = holder.get("referrer") if isinstance(holder, Mapping) else None
            if not ref:
                break
            fld = (ref.get("field") or {}).get("name") if ref.get("field") else None
            names.append(str(fld) if fld else "")
            holder = ref.get("object") or {}
            desc = str(holder.get("description") or "")
            if _class_name(holder.get("type")) == "java.lang.Class" and desc.startswith("Class Name: "):
                path.append(desc[len("Class Name: ") :])
                root_field = fld
                break
            path.append(_class_name(holder.get("type")))
        root = values.get("root") or {}
        if root_field and len(path) > 1:
            root_text: str | None = f"static field {path[-1]}.{root_field}"
        else:
            root_text = root.get("description") or root.get("system")
        out.append(OldObject(path[0], tuple(frames), tuple(path), root_text, tuple(names)))
    return out


def is_user_class(name: str) -> bool:
    """True for the server's own classes (not the JDK's, not arrays)."""
    return not name.startswith(_JDK_PREFIXES)


def java_location(class_name: str, line: int) -> str:
    """``Server.java:44`` for a frame of ``Server$ConnState``: javac names the file after the top-level class.

    JFR frames carry the class, not the source file; for other JVM languages (Kotlin's
    ``FooKt``) the inferred name is a guess, which is why the frame's method is kept too.
    """
    top = class_name.rsplit(".", 1)[-1].split("$", 1)[0]
    return f"{top}.java:{line}" if line > 0 else f"{top}.java"


def _user_frames(sample: OldObject) -> list[tuple[str, str, int]]:
    """The server's frames; hidden classes (lambdas, which JFR names by a number) are left out."""
    return [
        f
        for f in sample.frames
        if is_user_class(f[0]) and "$$Lambda" not in f[0] and not f[0].rsplit(".", 1)[-1].isdigit()
    ]


def class_provenance(name: str, samples: Sequence[OldObject]) -> dict[str, Any] | None:
    """Where instances of class ``name`` were allocated and what keeps them alive.

    The allocating line is the most frequent innermost user frame of the samples of the
    class itself; without those, of the samples reached through it (a buffer its
    constructor allocates). None when no sample is the class or is held by it.
    """
    related = [s for s in samples if name in s.path]
    if not related:
        return None
    own = [s for s in related if s.type == name]
    counts: dict[tuple[str, str, int], int] = {}
    stacks: dict[tuple[str, str, int], list[str]] = {}
    for s in own or related:
        user = _user_frames(s)
        if user:
            counts[user[0]] = counts.get(user[0], 0) + 1
            stacks.setdefault(user[0], [f"{java_location(c, ln)} {_short(c)}.{m}" for c, m, ln in user[:8]])
    roots: dict[str, int] = {}
    for s in related:
        if s.root:
            roots[s.root] = roots.get(s.root, 0) + 1
    best = max(counts, key=lambda k: counts[k]) if counts else None
    return {
        "class": name,
        "location": java_location(best[0], best[2]) if best else None,
        "function": f"{_short(best[0])}.{best[1]}" if best else None,
        "stack": stacks.get(best, []) if best else [],
        "root": max(roots, key=lambda r: roots[r]) if roots else None,
        "chain": _chain_text((own or related)[0]),
        "samples": len(related),
    }


def _short(name: str) -> str:
    """A class name without its package, arrays as ``Node[]`` (``[Ljava.util.HashMap$Node;`` -> ``HashMap$Node[]``)."""
    dims = len(name) - len(name.lstrip("["))
    base = name[dims:]
    if dims and base.startswith("L") and base.endswith(";"):
        base = base[1:-1]
    elif dims:
        base = _PRIMITIVES.get(base, base)
    return base.rsplit(".", 1)[-1] + "[]" * dims


def _chain_text(sample: OldObject) -> str:
    """The references from the root's holder down to the sampled object, e.g. ``Server.STATES -> ... -> [B``."""
    parts = []
    for i, cls in enumerate(reversed(sample.path)):
        j = len(sample.path) - 1 - i  # index in path (object first)
        fld = sample.fields[j - 1] if 0 < j <= len(sample.fields) else ""
        short = _short(cls)
        parts.append(f"{short}.{fld}" if fld else short)
    return " -> ".join(parts)


def retained_per_connection(
    class_slopes: Mapping[str, float], paths: Iterable[Sequence[str]], *, owners: Iterable[str]
) -> dict[str, float]:
    """Bytes per connection each owner class keeps alive: its own slope plus its share of others'.

    ``class_slopes`` is shallow bytes per connection per class (histogram slopes); ``paths``
    are the old-object samples' reference paths (object's class first, then its holders up
    to the root). A class K's growth is credited to owner C in the proportion of K's
    samples whose path reaches C before any other owner; an owner with no samples keeps
    only its shallow bytes. An estimate: samples are few, and taken by allocation, not by
    retained size.
    """
    owners = list(owners)
    through: dict[str, dict[str, int]] = {}  # K -> owner -> samples of K held (nearest) by owner
    totals: dict[str, int] = {}
    for path in paths:
        if not path:
            continue
        kind = path[0]
        totals[kind] = totals.get(kind, 0) + 1
        nearest = next((cls for cls in path[1:] if cls in owners), None)
        if nearest is not None and nearest != kind:
            held = through.setdefault(kind, {})
            held[nearest] = held.get(nearest, 0) + 1
    out = {}
    for owner in owners:
        total = float(class_slopes.get(owner, 0.0))
        for kind, held in through.items():
            if owner in held and kind not in owners:
                total += float(class_slopes.get(kind, 0.0)) * held[owner] / totals[kind]
        out[owner] = total
    return out


def jvm_sites(
    sites: Sequence[Mapping[str, Any]], jfr: Mapping[str, Any] | None, *, budget: float
) -> list[dict[str, Any]]:
    """The per-class sites of a JVM run (shallow slopes), with what JFR's old objects add.

    For each of the server's own classes: ``bytes_per_connection`` becomes the bytes it keeps
    alive, an estimate (``retained`` says how it was made; ``shallow_bytes_per_connection``
    keeps the histogram figure; the interval is scaled alike): its shallow slope, plus the
    share of JDK classes' growth whose old-object samples are held through it (see
    :func:`retained_per_connection`), plus, for growing JDK classes JFR has no sample of,
    a share of their growth in proportion to the owners' shallow growth (JDK objects do
    not leak by themselves; the server's classes that grow are what can hold them). With
    JFR, ``allocated_at`` (``Server.java:77``), ``function``, ``stack``, ``root`` and
    ``chain`` name where the class was allocated and what keeps it. A JDK class's site says
    whom its growth was credited to (``held_by``: shares from samples; ``credited_to``).
    """
    out = [dict(site, **{"class": site["location"]}) for site in sites]
    paths = [tuple(p) for p in ((jfr or {}).get("paths") or []) if p]
    found = {c["class"]: c for c in ((jfr or {}).get("classes") or []) if c.get("class")}
    owners = [s["location"] for s in out if is_user_class(str(s["location"]))]
    if not owners:
        return out
    slopes = {str(s["location"]): float(s["bytes_per_connection"]) for s in out}
    retained = retained_per_connection(slopes, paths, owners=owners)
    sampled = {p[0] for p in paths}
    growing = {o: slopes[o] for o in owners if slopes[o] > 0}
    weight = sum(growing.values())
    unsampled = [n for n, v in slopes.items() if n not in owners and n not in sampled and v > 0]
    for name in unsampled if weight > 0 else []:
        for owner, own in growing.items():
            retained[owner] += slopes[name] * own / weight
    how = []
    if paths:
        how.append("JFR old-object samples held through it")
    if unsampled and weight > 0:
        how.append("a share, by shallow growth, of growing JDK classes JFR did not sample")
    for site in out:
        name = str(site["location"])
        if name in growing and retained[name] > slopes[name]:
            ratio = retained[name] / slopes[name]
            site["shallow_bytes_per_connection"] = site["bytes_per_connection"]
            site["bytes_per_connection"] = round(retained[name], 1)
            site["ci_low"] = round(float(site.get("ci_low") or 0.0) * ratio, 1)
            site["ci_high"] = round(float(site.get("ci_high") or 0.0) * ratio, 1)
            site["over_budget"] = bool(site["ci_low"] > budget)
            if site.get("share") is not None:
                site["share"] = round(float(site["share"]) * ratio, 3)
            site["retained"] = "estimate: its shallow bytes, plus " + " and ".join(how)
        origin = found.get(name)
        if origin:
            site["allocated_at"] = origin.get("location")
            site["function"] = origin.get("function") or site.get("function") or ""
            site["stack"] = list(origin.get("stack") or site.get("stack") or [])
            site["root"] = origin.get("root")
            site["chain"] = origin.get("chain")
        elif name not in owners:
            held = _held_by(name, paths, owners)
            if held:
                site["held_by"] = held
            elif name in unsampled and weight > 0:
                site["credited_to"] = sorted(growing)
    out.sort(key=lambda s: (not is_user_class(str(s["location"])), -float(s["bytes_per_connection"])))
    return out


def _held_by(name: str, paths: Sequence[Sequence[str]], owners: Sequence[str]) -> dict[str, float]:
    """Share of class ``name``'s samples held (nearest) through each owner class."""
    mine = [p for p in paths if p[0] == name]
    shares: dict[str, float] = {}
    for path in mine:
        nearest = next((cls for cls in path[1:] if cls in owners), None)
        if nearest:
            shares[nearest] = shares.get(nearest, 0.0) + 1.0 / len(mine)
    return {k: round(v, 3) for k, v in shares.items()}
