"""Declarative scenario steps: validation, templates and message matchers (pure: no I/O).

A profile's ``[[scenario.steps]]`` describe what every connection does after its
handshake. This module checks them (one-line :class:`~runner.errors.ProfileError`
naming the step and key), and compiles them into small value objects that
:mod:`runner.load.scenario` executes against a real connection.

Step kinds (by the keys a step table holds)::

    exchange  send = "text" | send_json = {...}, and/or expect = "substring" |
              expect_regex = "re" | expect_json = {"dotted.path" = value}; timeout = "5s"
    wait      wait = "1s"                      (hold the connection idle)
    repeat    repeat = 3, steps = [ {...}, ... ]  ({i} is the iteration, from 0)
    close     close = true                     (closing handshake; ends the scenario)

With ``[scenario] protocol = "socket.io"`` (see :mod:`runner.load.protocols`)::

    emit = ["join", {room = "r"}]            an event (a string alone: an event without arguments)
    emit_ack = ["join", {...}]                an event and its ack (awaited; expect_args checks the ack's arguments)
    expect_event = "joined"                   wait for that event (others are skipped)
    expect_args = {"0.room" = "r"}            dotted paths into the event's argument list

With ``protocol = "graphql-ws"``::

    subscribe = "subscription { ... }"        with variables = {...} and id = "s1" (default: the step's number)
    expect_next = {"data.x.y" = 1}            wait for a next (of ``id`` when given); an error for it fails the step
    complete = "s1"                           stop that subscription

Any step may have a ``name``; an exchange's name is its Locust request name (unnamed
exchanges are reported as ``step N``). Text values are templates: ``{user_id}``,
``{n}`` (the user's connection number), ``{i}``, ``{random}``, the columns of the
credentials CSV, and ``{name%K}`` (an integer field modulo K, e.g. ``room-{user_id%10}``).
Braces that do not form such a placeholder (JSON text) are left alone.

This module must stay free of socket/ssl imports: :mod:`runner.profile` uses it
before Locust has monkey-patched the standard library for gevent.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import ProfileError, did_you_mean
from ..units import parse_duration

__all__ = [
    "BUILTIN_FIELDS",
    "Template",
    "Matcher",
    "Substring",
    "Regex",
    "JsonFields",
    "Exchange",
    "Wait",
    "Repeat",
    "Close",
    "Step",
    "validate_steps",
    "compile_steps",
    "check_fields",
    "render_json",
    "ProtocolStep",
    "check_protocol",
    "SOCKETIO_KEYS",
    "GRAPHQL_KEYS",
]

#: Fields every template may use; credentials CSV columns are added per run.
BUILTIN_FIELDS = frozenset({"user_id", "n", "i", "random"})
#: Fields that are integers (so ``{name%K}`` works on them).
_INTEGER_FIELDS = frozenset({"user_id", "n", "i"})
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:%(\d+))?\}")
_RAW_KEYS = ("send", "send_json", "expect", "expect_regex", "expect_json")
#: Step keys of the presets (runner.load.protocols): they need [scenario] protocol.
SOCKETIO_KEYS = ("emit", "emit_ack", "expect_event", "expect_args")
GRAPHQL_KEYS = ("subscribe", "variables", "id", "expect_next", "complete")
_STEP_KEYS = ("name", *_RAW_KEYS, "timeout", "wait", "repeat", "steps", "close", *SOCKETIO_KEYS, *GRAPHQL_KEYS)
_PRESET_ACTIONS = ("emit", "emit_ack", "subscribe", "complete")
_PRESET_EXPECTS = ("expect_event", "expect_next")


# --- templates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """Text with ``{field}`` / ``{field%K}`` placeholders; other braces are literal."""

    text: str

    @property
    def names(self) -> set[str]:
        return {m.group(1) for m in _PLACEHOLDER.finditer(self.text)}

    @property
    def moduli(self) -> set[str]:
        """Names used with ``%K``."""
        return {m.group(1) for m in _PLACEHOLDER.finditer(self.text) if m.group(2)}

    def _value(self, match: re.Match[str], fields: Mapping[str, Any]) -> Any:
        name, modulo = match.group(1), match.group(2)
        value = f"{random.getrandbits(64):016x}" if name == "random" else fields[name]
        if modulo:
            value = int(value) % max(int(modulo), 1)
        return value

    def render(self, fields: Mapping[str, Any]) -> str:
        return _PLACEHOLDER.sub(lambda m: str(self._value(m, fields)), self.text)

    def render_value(self, fields: Mapping[str, Any]) -> Any:
        """Like :meth:`render`, but a template that is one placeholder keeps the field's type (JSON numbers)."""
        match = _PLACEHOLDER.fullmatch(self.text)
        return self._value(match, fields) if match else self.render(fields)


def render_json(value: Any, fields: Mapping[str, Any]) -> Any:
    """A JSON-like value with every string rendered as a template."""
    if isinstance(value, str):
        return Template(value).render_value(fields)
    if isinstance(value, dict):
        return {Template(str(k)).render(fields): render_json(v, fields) for k, v in value.items()}
    if isinstance(value, list):
        return [render_json(v, fields) for v in value]
    return value


def _json_templates(value: Any) -> list[Template]:
    if isinstance(value, str):
        return [Template(value)]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (Template(str(k)), *_json_templates(v))]
    if isinstance(value, list):
        return [t for v in value for t in _json_templates(v)]
    return []


# --- matchers --------------------------------------------------------------------------


def _text(message: str | bytes) -> str:
    return message if isinstance(message, str) else message.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Substring:
    """The message contains the rendered text."""

    template: Template

    def matches(self, message: str | bytes, fields: Mapping[str, Any]) -> bool:
        return self.template.render(fields) in _text(message)

    def describe(self) -> str:
        return f"a message containing {self.template.text!r}"

    def templates(self) -> list[Template]:
        return [self.template]


@dataclass(frozen=True)
class Regex:
    """The message matches the regular expression (placeholders are substituted escaped)."""

    template: Template
    compiled: re.Pattern[str] | None = None  # when the pattern has no placeholders

    def matches(self, message: str | bytes, fields: Mapping[str, Any]) -> bool:
        pattern = self.compiled
        if pattern is None:
            pattern = re.compile(
                _PLACEHOLDER.sub(lambda m: re.escape(str(self.template._value(m, fields))), self.template.text)
            )
        return pattern.search(_text(message)) is not None

    def describe(self) -> str:
        return f"a message matching /{self.template.text}/"

    def templates(self) -> list[Template]:
        return [self.template]


@dataclass(frozen=True)
class JsonFields:
    """The message is a JSON object whose dotted paths equal the given values."""

    expected: tuple[tuple[str, Any], ...]

    def matches(self, message: str | bytes, fields: Mapping[str, Any]) -> bool:
        try:
            data = json.loads(message)
        except (ValueError, TypeError):
            return False
        return self.matches_value(data, fields)

    def matches_value(self, data: Any, fields: Mapping[str, Any]) -> bool:
        """The already decoded value (an event's argument list, a GraphQL payload) has the fields."""
        for path, want in self.expected:
            found, value = _lookup(data, path)
            if not found:
                return False
            want = render_json(want, fields)
            if value != want and not (
                _is_scalar(value) and _is_scalar(want) and _scalar_text(value) == _scalar_text(want)
            ):
                return False  # "7" and 7 are the same field value: servers differ in how they type ids
        return True

    def describe(self) -> str:
        return "a JSON message with " + ", ".join(f"{path} = {json.dumps(want)}" for path, want in self.expected)

    def templates(self) -> list[Template]:
        return [t for _, want in self.expected for t in _json_templates(want)]


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _lookup(data: Any, path: str) -> tuple[bool, Any]:
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return False, None
    return True, data


Matcher = Substring | Regex | JsonFields


# --- compiled steps --------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """Send a message and/or wait for a matching one; one Locust request named ``name``."""

    name: str
    send: Template | None = None
    send_json: Any = None
    expect: Matcher | None = None
    timeout: float | None = None

    def payload(self, fields: Mapping[str, Any]) -> str | None:
        """The text to send, or None when the step only expects."""
        if self.send is not None:
            return self.send.render(fields)
        if self.send_json is not None:
            return json.dumps(render_json(self.send_json, fields), separators=(",", ":"))
        return None

    def templates(self) -> list[Template]:
        found = [self.send] if self.send else []
        found += _json_templates(self.send_json) if self.send_json is not None else []
        return found + (self.expect.templates() if self.expect else [])


@dataclass(frozen=True)
class Wait:
    seconds: float


@dataclass(frozen=True)
class Repeat:
    times: int
    steps: tuple["Step", ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Close:
    name: str = "close"


@dataclass(frozen=True)
class ProtocolStep:
    """A preset's step: one action (emit, emit_ack, subscribe, complete) and/or one awaited event; one request."""

    name: str
    #: "emit" | "emit_ack" | "subscribe" | "complete" | None (only expects)
    action: str | None = None
    #: emit: [event name, *args]; subscribe: {"query": ..., "variables": ...}; complete: the id (all templates)
    payload: Any = None
    #: The subscription id of subscribe / expect_next.
    op_id: Template | None = None
    #: "event" | "next" | None
    expect: str | None = None
    #: The awaited event's name (expect_event).
    event: Template | None = None
    #: expect_args / expect_next fields; for emit_ack, the ack's arguments.
    fields: JsonFields | None = None
    timeout: float | None = None

    def templates(self) -> list[Template]:
        found = _json_templates(self.payload)
        found += [t for t in (self.op_id, self.event) if t is not None]
        return found + (self.fields.templates() if self.fields else [])

    def describe(self) -> str:
        """What the step waits for, for its failure message."""
        pairs = self.fields.expected if self.fields else ()
        wanted = f" with {', '.join(f'{p} = {json.dumps(w)}' for p, w in pairs)}" if pairs else ""
        if self.action == "emit_ack":
            return f"ack of {self.payload[0]!r}" + wanted
        if self.expect == "event":
            return f"event {self.event.text if self.event else '?'!r}" + wanted
        return f"next of {self.op_id.text if self.op_id else 'any subscription'!r}" + wanted


Step = Exchange | Wait | Repeat | Close | ProtocolStep


# --- validation ------------------------------------------------------------------------


def _where(key: str, path: tuple[int, ...]) -> str:
    return f"{key} step {'.'.join(str(p) for p in path)}"


def _check_template(text: str, where: str) -> None:
    for match in re.finditer(r"\{([^{}\s\"']*)\}", text):
        inner = match.group(0)
        if not _PLACEHOLDER.fullmatch(inner) and re.fullmatch(r"[A-Za-z_][\w%]*", match.group(1) or "x"):
            raise ProfileError(
                f"{where}: broken placeholder {inner}",
                hint="write {user_id}, {n}, {i}, {random}, a credentials column, or {user_id%10}",
            )


def _duration(value: Any, where: str) -> float:
    return parse_duration(value, key=where)


def validate_steps(value: Any, key: str = "scenario.steps", _path: tuple[int, ...] = ()) -> tuple[dict[str, Any], ...]:
    """Check ``[[scenario.steps]]`` and return them normalised (durations in seconds)."""
    if not isinstance(value, (list, tuple)):
        raise ProfileError(f"{key}: expected a list of step tables ([[scenario.steps]]), got {type(value).__name__}")
    if not value:
        raise ProfileError(f"{key}: the list of steps is empty", hint="add at least one step, or remove the key")
    normalised = []
    for index, step in enumerate(value, start=1):
        path = (*_path, index)
        where = _where(key, path)
        if not isinstance(step, dict):
            raise ProfileError(
                f'{where}: expected a table such as {{ send = "hi", expect = "hi" }}, got {type(step).__name__}'
            )
        for name in step:
            if name not in _STEP_KEYS:
                raise ProfileError(f"{where}: unknown key {name!r}", hint=did_you_mean(name, _STEP_KEYS))
        normalised.append(_validate_step(step, key, path))
    return tuple(normalised)


def _validate_step(step: dict[str, Any], key: str, path: tuple[int, ...]) -> dict[str, Any]:
    where = _where(key, path)
    out: dict[str, Any] = {}
    if "name" in step:
        if not isinstance(step["name"], str) or not step["name"].strip():
            raise ProfileError(f"{where}.name: expected a non-empty string, got {step['name']!r}")
        out["name"] = step["name"].strip()
    sends: list[str] = [k for k in ("send", "send_json") if k in step]
    expects: list[str] = [k for k in ("expect", "expect_regex", "expect_json") if k in step]
    others: list[str] = [k for k in ("wait", "repeat", "close") if k in step]
    actions: list[str] = [k for k in _PRESET_ACTIONS if k in step]
    awaits: list[str] = [k for k in _PRESET_EXPECTS if k in step]
    if (actions or awaits) and not others:
        if sends or expects:
            raise ProfileError(
                f"{where}: {(sends + expects)[0]} and {(actions + awaits)[0]} cannot be in one step",
                hint="send/expect are plain messages; a preset's steps use emit/expect_event or subscribe/expect_next",
            )
        return _validate_preset_step(step, where, out, actions, awaits)
    for name in ("expect_args", "variables", "id"):
        if name in step and not (actions or awaits):
            raise ProfileError(
                f"{where}: {name} belongs to {_OWNER[name]}",
                hint=f"add {_OWNER[name]}, or remove {name}",
            )
    kinds = (["exchange"] if sends or expects or actions or awaits else []) + others
    if "steps" in step and "repeat" not in step:
        raise ProfileError(f"{where}: 'steps' belongs to a repeat block", hint="add repeat = N, or move the steps up")
    if len(kinds) != 1:
        if not kinds:
            raise ProfileError(
                f"{where}: the step does nothing",
                hint="give it send/send_json, expect/expect_regex/expect_json, wait, repeat or close",
            )
        raise ProfileError(
            f"{where}: {' and '.join([*[*sends, *expects][:1], *[*actions, *awaits][:1], *others])} cannot be in "
            "one step",
            hint="split them into separate steps",
        )
    if "timeout" in step and not expects:
        raise ProfileError(
            f"{where}: timeout applies to an expect", hint="add expect/expect_regex/expect_json, or remove timeout"
        )
    if len(sends) > 1:
        raise ProfileError(f"{where}: send and send_json in one step", hint="keep one")
    if len(expects) > 1:
        raise ProfileError(
            f"{where}: {' and '.join(expects)} in one step", hint="keep one; use two steps to expect two messages"
        )

    if "wait" in step:
        out["wait"] = _duration(step["wait"], f"{where}.wait")
    elif "close" in step:
        if step["close"] is not True:
            raise ProfileError(f"{where}.close: write close = true (it ends the scenario with a closing handshake)")
        out["close"] = True
    elif "repeat" in step:
        times = step["repeat"]
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ProfileError(f"{where}.repeat: expected a whole number of at least 1, got {times!r}")
        if "steps" not in step:
            raise ProfileError(f"{where}: repeat needs steps = [ ... ] to repeat")
        out["repeat"] = times
        out["steps"] = list(validate_steps(step["steps"], key, path))
    else:
        if "send" in step:
            if not isinstance(step["send"], str):
                raise ProfileError(
                    f"{where}.send: expected text, got {type(step['send']).__name__}", hint="use send_json for a table"
                )
            _check_template(step["send"], f"{where}.send")
            out["send"] = step["send"]
        if "send_json" in step:
            try:
                json.dumps(step["send_json"])
            except (TypeError, ValueError) as exc:
                raise ProfileError(f"{where}.send_json: cannot be written as JSON ({exc})") from None
            out["send_json"] = step["send_json"]
        for name in ("expect", "expect_regex"):
            if name in step:
                if not isinstance(step[name], str) or not step[name]:
                    raise ProfileError(f"{where}.{name}: expected non-empty text, got {step[name]!r}")
                _check_template(step[name], f"{where}.{name}")
                out[name] = step[name]
        if "expect_regex" in step:
            probe = _PLACEHOLDER.sub("x", step["expect_regex"])
            try:
                re.compile(probe)
            except re.error as exc:
                raise ProfileError(
                    f"{where}.expect_regex: {step['expect_regex']!r} is not a regular expression ({exc})"
                ) from None
        if "expect_json" in step:
            table = step["expect_json"]
            if not isinstance(table, dict) or not table:
                raise ProfileError(
                    f'{where}.expect_json: expected a table of fields, e.g. {{ type = "joined" }}, got {table!r}'
                )
            out["expect_json"] = dict(_flatten(table))
        if "timeout" in step:
            seconds = _duration(step["timeout"], f"{where}.timeout")
            if seconds <= 0:
                raise ProfileError(f"{where}.timeout: must be longer than zero, got {step['timeout']!r}")
            out["timeout"] = seconds
    return out


_OWNER = {"expect_args": "expect_event or emit_ack", "variables": "subscribe", "id": "subscribe or expect_next"}


def _json_value(value: Any, where: str) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: cannot be written as JSON ({exc})") from None
    for template in _json_templates(value):
        _check_template(template.text, where)


def _text_value(step: dict[str, Any], name: str, where: str) -> str:
    value = step[name]
    if not isinstance(value, str) or not value.strip():
        raise ProfileError(f"{where}.{name}: expected non-empty text, got {value!r}")
    _check_template(value, f"{where}.{name}")
    return value


def _validate_preset_step(
    step: dict[str, Any], where: str, out: dict[str, Any], actions: list[str], awaits: list[str]
) -> dict[str, Any]:
    """The keys of a Socket.IO or GraphQL step (which preset the run speaks is checked by check_protocol)."""
    if len(actions) > 1 or len(awaits) > 1:
        pair = actions if len(actions) > 1 else awaits
        raise ProfileError(
            f"{where}: {pair[0]} and {pair[1]} cannot be in one step",
            hint="split them into separate steps",
        )
    socketio_keys = [k for k in step if k in SOCKETIO_KEYS]
    graphql_keys = [k for k in step if k in GRAPHQL_KEYS]
    if socketio_keys and graphql_keys:
        raise ProfileError(
            f"{where}: mixes Socket.IO keys ({', '.join(socketio_keys)}) with GraphQL keys ({', '.join(graphql_keys)})",
            hint="a run speaks one protocol",
        )
    if "emit_ack" in step and "expect_event" in step:
        raise ProfileError(
            f"{where}: emit_ack waits for its ack, not for an event",
            hint="expect the event in the next step; expect_args here checks the ack's arguments",
        )
    if "expect_args" in step and not ({"expect_event", "emit_ack"} & set(step)):
        raise ProfileError(
            f"{where}: expect_args belongs to expect_event or emit_ack",
            hint='add expect_event = "name"',
        )
    if "variables" in step and "subscribe" not in step:
        raise ProfileError(
            f"{where}: variables belong to subscribe",
            hint='add subscribe = "subscription { ... }", or remove variables',
        )
    if "id" in step and not ({"subscribe", "expect_next"} & set(step)):
        raise ProfileError(
            f"{where}: id belongs to subscribe or expect_next",
            hint='complete takes the id as its value: complete = "s1"',
        )
    if "timeout" in step and not (awaits or "emit_ack" in step):
        raise ProfileError(
            f"{where}: timeout applies to what a step waits for",
            hint="add expect_event/expect_next or use emit_ack, or remove timeout",
        )
    for name in ("emit", "emit_ack"):
        if name in step:
            value = step[name]
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not value or not isinstance(value[0], str) or not value[0].strip():
                raise ProfileError(
                    f"{where}.{name}: expected a list whose first item is the event name, got {step[name]!r}",
                    hint=f'write {name} = ["join", {{ room = "lobby" }}] ({name} = "ping": an event without arguments)',
                )
            _json_value(value, f"{where}.{name}")
            out[name] = value
    if "subscribe" in step:
        out["subscribe"] = _text_value(step, "subscribe", where)
    if "variables" in step:
        if not isinstance(step["variables"], dict):
            raise ProfileError(
                f'{where}.variables: expected a table such as {{ room = "lobby" }}, got {step["variables"]!r}'
            )
        _json_value(step["variables"], f"{where}.variables")
        out["variables"] = step["variables"]
    for name in ("id", "complete", "expect_event"):
        if name in step:
            out[name] = _text_value(step, name, where)
    for name in ("expect_args", "expect_next"):
        if name in step:
            table = step[name]
            if not isinstance(table, dict) or (name == "expect_args" and not table):
                raise ProfileError(
                    f'{where}.{name}: expected a table of dotted paths, e.g. {{ "0.room" = "r" }}, got {table!r}'
                )
            _json_value(table, f"{where}.{name}")
            out[name] = dict(_flatten(table))
    if "timeout" in step:
        seconds = _duration(step["timeout"], f"{where}.timeout")
        if seconds <= 0:
            raise ProfileError(f"{where}.timeout: must be longer than zero, got {step['timeout']!r}")
        out["timeout"] = seconds
    return out


def check_protocol(
    steps: tuple[dict[str, Any], ...] | list[dict[str, Any]],
    protocol: str | None,
    key: str = "scenario.steps",
    _path: tuple[int, ...] = (),
) -> None:
    """Every step speaks the run's protocol: preset keys need their preset, plain send/expect need none."""
    for index, step in enumerate(steps, start=1):
        path = (*_path, index)
        where = _where(key, path)
        for family, keys in (("socket.io", SOCKETIO_KEYS), ("graphql-ws", GRAPHQL_KEYS)):
            used = [k for k in keys if k in step]
            if used and protocol != family:
                now = f"the run speaks {protocol}" if protocol else "no protocol is set"
                hint = f'add protocol = "{family}" under [scenario]' if not protocol else "a run speaks one protocol"
                raise ProfileError(f'{where}: {used[0]} needs [scenario] protocol = "{family}" ({now})', hint=hint)
        raw = [k for k in _RAW_KEYS if k in step]
        if raw and protocol:
            preset_keys = "emit/emit_ack/expect_event" if protocol == "socket.io" else "subscribe/expect_next/complete"
            raise ProfileError(
                f"{where}: {raw[0]} is a plain WebSocket message, but the run speaks {protocol}",
                hint=f"use {preset_keys}, or remove [scenario] protocol",
            )
        if "steps" in step:
            check_protocol(step["steps"], protocol, key, path)


def _flatten(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested tables become dotted paths: {user = {id = 1}} -> [("user.id", 1)]."""
    items: list[tuple[str, Any]] = []
    for name, value in table.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict) and value:
            items += _flatten(value, path + ".")
        else:
            items.append((path, value))
    return items


# --- compiling -------------------------------------------------------------------------


def compile_steps(
    steps: tuple[dict[str, Any], ...] | list[dict[str, Any]], _path: tuple[int, ...] = ()
) -> tuple[Step, ...]:
    """Normalised step tables (from :func:`validate_steps`) -> executable step objects."""
    compiled: list[Step] = []
    for index, step in enumerate(steps, start=1):
        path = (*_path, index)
        if "wait" in step:
            compiled.append(Wait(float(step["wait"])))
        elif step.get("close"):
            compiled.append(Close(step.get("name", "close")))
        elif "repeat" in step:
            compiled.append(Repeat(int(step["repeat"]), compile_steps(step["steps"], path)))
        elif any(k in step for k in (*_PRESET_ACTIONS, *_PRESET_EXPECTS)):
            compiled.append(_compile_preset_step(step, path))
        else:
            expect: Matcher | None = None
            if "expect" in step:
                expect = Substring(Template(step["expect"]))
            elif "expect_regex" in step:
                template = Template(step["expect_regex"])
                expect = Regex(template, None if template.names else re.compile(template.text))
            elif "expect_json" in step:
                expect = JsonFields(tuple(step["expect_json"].items()))
            compiled.append(
                Exchange(
                    name=step.get("name") or f"step {'.'.join(str(p) for p in path)}",
                    send=Template(step["send"]) if "send" in step else None,
                    send_json=step.get("send_json"),
                    expect=expect,
                    timeout=step.get("timeout"),
                )
            )
    return tuple(compiled)


def _compile_preset_step(step: dict[str, Any], path: tuple[int, ...]) -> ProtocolStep:
    number = ".".join(str(p) for p in path)
    action = next((k for k in _PRESET_ACTIONS if k in step), None)
    payload: Any = None
    if action in ("emit", "emit_ack"):
        payload = list(step[action])
    elif action == "subscribe":
        payload = {"query": step["subscribe"], "variables": step.get("variables") or None}
    elif action == "complete":
        payload = step["complete"]
    expect = "event" if "expect_event" in step else "next" if "expect_next" in step else None
    table = step.get("expect_args", step.get("expect_next"))
    op_id = step.get("id") or (number if action == "subscribe" else None)
    return ProtocolStep(
        name=step.get("name") or f"step {number}",
        action=action,
        payload=payload,
        op_id=Template(op_id) if op_id else None,
        expect=expect,
        event=Template(step["expect_event"]) if "expect_event" in step else None,
        fields=JsonFields(tuple(table.items())) if table is not None else None,
        timeout=step.get("timeout"),
    )


def _all_templates(steps: tuple[Step, ...]) -> list[Template]:
    found: list[Template] = []
    for step in steps:
        if isinstance(step, (Exchange, ProtocolStep)):
            found += step.templates()
        elif isinstance(step, Repeat):
            found += _all_templates(step.steps)
    return found


def check_fields(
    templates: list[Template] | tuple[Step, ...], available: set[str] | frozenset[str], where: str
) -> None:
    """Every placeholder names a known field, and ``%K`` is used on integer fields only."""
    if templates and not isinstance(templates[0], Template):
        templates = _all_templates(templates)  # type: ignore[arg-type]
    for template in templates:
        assert isinstance(template, Template)
        unknown = sorted(template.names - set(available))
        if unknown:
            raise ProfileError(
                f"{where}: unknown placeholder {{{unknown[0]}}} in {template.text!r}",
                hint=f"available: {', '.join('{' + n + '}' for n in sorted(available))}",
            )
        bad = sorted(template.moduli - _INTEGER_FIELDS)
        if bad:
            raise ProfileError(f"{where}: {{{bad[0]}%K}} needs a number field", hint="use % with {user_id}, {n} or {i}")
