"""The JVM heap texts as data: histogram rows, old-object samples, and what a class keeps alive."""

from __future__ import annotations

import pytest

from runner.analysis.jvm_heap import (
    class_provenance,
    is_user_class,
    java_location,
    jvm_sites,
    parse_class_histogram,
    parse_old_objects,
    retained_per_connection,
)

# as HotSpot 17 prints it (rows shortened)
HISTOGRAM = """\
 num     #instances         #bytes  class name (module)
-------------------------------------------------------
   1:         25187        2055016  [B (java.base@17.0.15)
   2:         23876         573024  java.lang.String (java.base@17.0.15)
   3:          2300          92000  Server$ConnState
   4:             1             16  [Ljava.util.concurrent.ConcurrentHashMap$Node; (java.base@17.0.15)
Total         51364        2720056
"""


def test_histogram_rows_and_total() -> None:
    histogram = parse_class_histogram(HISTOGRAM)
    assert histogram.total_bytes == 2720056 and histogram.total_instances == 51364
    rows = histogram.by_name()
    assert rows["Server$ConnState"].instances == 2300 and rows["Server$ConnState"].module is None
    assert rows["[B"].bytes == 2055016 and rows["[B"].module == "java.base@17.0.15"
    assert len(histogram.entries) == 4


def test_a_text_without_total_is_refused() -> None:
    with pytest.raises(ValueError, match="no Total line"):
        parse_class_histogram("Unknown diagnostic command\n")


def _type(name: str) -> dict:
    return {"name": name, "classLoader": None, "package": None}


def _frame(cls: str, method: str, line: int) -> dict:
    return {"method": {"type": _type(cls), "name": method}, "lineNumber": line, "type": "JIT compiled"}


def _sample(obj: dict, frames: list[dict]) -> dict:
    return {
        "type": "jdk.OldObjectSample",
        "values": {
            "object": obj,
            "stackTrace": {"frames": frames},
            "root": {"description": None, "system": "Class Loader Data"},
        },
    }


def _held(type_: str, field: str | None, holder: dict, index: int | None = None) -> dict:
    return {
        "address": 1,
        "type": _type(type_),
        "description": None,
        "referrer": {
            "array": {"size": 16, "index": index} if index is not None else None,
            "field": {"name": field} if field else None,
            "object": holder,
            "skip": 0,
        },
    }


STATIC = {"address": 9, "type": _type("java/lang/Class"), "description": "Class Name: Server", "referrer": None}
MAP = _held("java/util/concurrent/ConcurrentHashMap", "STATES", STATIC)
TABLE = _held("[Ljava/util/concurrent/ConcurrentHashMap$Node;", "table", MAP)
NODE = _held("java/util/concurrent/ConcurrentHashMap$Node", None, TABLE, index=3)
STATE = _held("Server$ConnState", "val", NODE)
BUFFER = _held("[B", "scratch", STATE)
RECORDING = {
    "recording": {
        "events": [
            _sample(BUFFER, [_frame("Server$ConnState", "<init>", 40), _frame("Server", "serve", 77)]),
            _sample(STATE, [_frame("Server", "serve", 77), _frame("Server", "lambda$main$0", 61)]),
            _sample(
                {"address": 2, "type": _type("[B"), "description": None, "referrer": None},
                [_frame("java/lang/String", "<init>", 300)],
            ),
        ]
    }
}


def test_old_objects_keep_the_path_to_the_static_root() -> None:
    samples = parse_old_objects(RECORDING)
    assert [s.type for s in samples] == ["[B", "Server$ConnState", "[B"]
    buffer = samples[0]
    assert buffer.path == (
        "[B",
        "Server$ConnState",
        "java.util.concurrent.ConcurrentHashMap$Node",
        "[Ljava.util.concurrent.ConcurrentHashMap$Node;",
        "java.util.concurrent.ConcurrentHashMap",
        "Server",
    )
    assert buffer.root == "static field Server.STATES"
    assert buffer.frames[0] == ("Server$ConnState", "<init>", 40)
    assert samples[2].root == "Class Loader Data"


def test_provenance_names_the_allocating_line_the_root_and_the_chain() -> None:
    found = class_provenance("Server$ConnState", parse_old_objects(RECORDING))
    assert found is not None
    assert found["location"] in {"Server.java:40", "Server.java:77"}
    assert found["root"] == "static field Server.STATES" and found["samples"] == 2
    assert found["chain"].startswith("Server.STATES -> ConcurrentHashMap.table -> ConcurrentHashMap$Node[]")
    assert found["chain"].endswith("Server$ConnState")
    assert class_provenance("Server$Other", parse_old_objects(RECORDING)) is None


def test_an_owner_is_credited_with_the_share_of_growth_it_holds() -> None:
    paths = [s.path for s in parse_old_objects(RECORDING)]
    slopes = {"Server$ConnState": 40.0, "[B": 1100.0, "java.lang.String": 50.0}
    # one of the two [B samples is held through ConnState: half of [B's growth is credited to it
    assert retained_per_connection(slopes, paths, owners=["Server$ConnState"]) == {"Server$ConnState": 590.0}
    assert retained_per_connection(slopes, [], owners=["Server$ConnState"]) == {"Server$ConnState": 40.0}


def test_names() -> None:
    assert java_location("com.example.Server$ConnState", 15) == "Server.java:15"
    assert is_user_class("Server$ConnState") and not is_user_class("[B") and not is_user_class("java.lang.String")


def test_jvm_sites_credit_the_owner_and_name_its_line_and_root() -> None:
    samples = parse_old_objects(RECORDING)
    jfr = {"paths": [list(s.path) for s in samples], "classes": [class_provenance("Server$ConnState", samples)]}
    sites = [
        {
            "location": "[B",
            "function": "",
            "bytes_per_connection": 1100.0,
            "ci_low": 1000.0,
            "ci_high": 1200.0,
            "over_budget": True,
            "stack": [],
        },
        {
            "location": "Server$ConnState",
            "function": "",
            "bytes_per_connection": 40.0,
            "ci_low": 39.0,
            "ci_high": 41.0,
            "over_budget": False,
            "stack": [],
        },
    ]
    out = jvm_sites(sites, jfr, budget=64)
    state = out[0]
    assert state["class"] == "Server$ConnState" and state["bytes_per_connection"] == 590.0
    assert state["shallow_bytes_per_connection"] == 40.0 and state["over_budget"] is True
    assert state["allocated_at"] == "Server.java:77" and state["function"] == "Server.serve"
    assert state["root"] == "static field Server.STATES"
    assert out[1]["held_by"] == {"Server$ConnState": 0.5}
    # without JFR: the only growing server class is credited with the JDK growth, as an estimate
    plain = jvm_sites(sites, None, budget=64)
    assert plain[0]["class"] == "Server$ConnState" and plain[0]["bytes_per_connection"] == 1140.0
    assert "allocated_at" not in plain[0] and "did not sample" in plain[0]["retained"]
    assert plain[1]["credited_to"] == ["Server$ConnState"]
    # no server class grows: nothing is credited
    alone = jvm_sites([sites[0]], None, budget=64)
    assert alone[0]["bytes_per_connection"] == 1100.0 and "credited_to" not in alone[0]
