"""What one simulated user does on each connection: identity, TLS, and a scenario.

A :class:`ScenarioPlan` is built once per load process from the profile
(:func:`build_plan`) and used by every Locust user:

- **identity** - handshake headers (``Authorization``, ``Cookie``, ...), query
  parameters, subprotocols and ``Origin``, templated per user (``{user_id}``, ``{n}``,
  ``{random}``) or filled from a CSV of credentials (``load.credentials``: user k
  gets row k mod rows). Rendered values are never written anywhere: error messages
  show templates, and messages received from the server are redacted.
- **TLS** - ``wss://`` verifies the server certificate by default; ``target.ca_bundle``
  adds a CA (self-signed test servers, private CAs); ``target.insecure_tls`` turns
  verification off and says so in the summary notes.
- **scenario** - either the declarative steps of the profile (:mod:`runner.load.steps`),
  or a Python file whose function receives ``(conn, ctx)``:

      def scenario(conn, ctx):
          conn.send_json({"type": "auth", "token": ctx.fields["token"]})
          with ctx.step("join"):                   # timed as its own Locust request
              conn.send_json({"type": "join", "room": f"room-{ctx.user_id % 10}"})
              reply = conn.recv_json(timeout=5)
              assert reply["type"] == "joined", reply  # a failed step, not a bug

  Network errors, timeouts and ``AssertionError`` count as failed requests. Any other
  exception is a bug in the scenario: the run stops with exit code 3 (the load
  generator failed, so the target was never judged) and the user's traceback (only
  the frames of their files) is printed on stderr. A file that cannot be loaded at all
  (syntax error, import error, no such function) is found before anything starts and
  is exit code 2, a profile error, with the file and line in the message.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import itertools
import json
import ssl
import sys
import sysconfig
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ProfileError, UsageError
from ..redact import MASK, redact_text
from .channel import Channel
from .client import ConnectionClosedError, WebSocketClient, WebSocketError
from .protocols import Incoming, Session
from .protocols.auto_reply import AutoReply, compile_rules
from .protocols.graphql_ws import SUBPROTOCOL, GraphQLWSSession
from .protocols.socketio import SocketIOSession, socketio_url
from .requests import REQUEST_TYPE, RequestRecorder
from .steps import (
    BUILTIN_FIELDS,
    Close,
    Exchange,
    ProtocolStep,
    Repeat,
    Step,
    Template,
    Wait,
    _json_templates,
    check_fields,
    compile_steps,
    render_json,
)

__all__ = [
    "ScenarioPlan",
    "Identity",
    "ScenarioConnection",
    "ScenarioContext",
    "ExpectationFailed",
    "StepFailed",
    "ScenarioBug",
    "ScenarioFileError",
    "build_plan",
    "make_ssl_context",
    "load_code_scenario",
    "REQUEST_TYPE",
    "drop_due",
]

_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)
_STATE_ATTRIBUTE = "_soak_scenario_state"
_LIBRARY_DIRS = tuple({sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})


class ExpectationFailed(WebSocketError):
    """An expected message did not come, or the user's code asserted something false."""

    kind = "expectation failed"


class StepFailed(Exception):
    """Raised into the user's code when a ``ctx.step`` failed (already recorded); ends the cycle."""


class ScenarioFileError(UsageError):
    """The scenario file cannot be loaded (found before the run starts: exit 2)."""


class ScenarioBug(Exception):
    """The user's scenario code raised an unexpected exception (the run stops: exit 3)."""

    def __init__(self, summary: str, user_traceback: str) -> None:
        super().__init__(summary)
        self.user_traceback = user_traceback


#: What a cycle counts as a failed request rather than a bug.
_FAILURES = (WebSocketError, OSError, ssl.SSLError, EOFError, AssertionError)


def drop_due(credit: float, share: float) -> tuple[bool, float]:
    """(drop this connection?, the new credit): every 1/share-th connection, evenly (load.drop_fraction)."""
    if not share:
        return False, credit
    credit += share
    if credit >= 1.0 - 1e-9:
        return True, credit - 1.0
    return False, credit


# --- identity and TLS ----------------------------------------------------------------


def make_ssl_context(*, ca_bundle: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """The client TLS context: verifying by default, with an extra CA, or not verifying at all."""
    context = ssl.create_default_context()
    if ca_bundle:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except (ssl.SSLError, OSError) as exc:
            raise ProfileError(f"target.ca_bundle: cannot load {ca_bundle!r} as PEM certificates ({exc})") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class Identity:
    """Who a user is on the handshake; every value a template."""

    headers: tuple[tuple[str, Template], ...] = ()
    query: tuple[tuple[str, Template], ...] = ()
    subprotocols: tuple[Template, ...] = ()
    origin: Template | None = None
    credentials: tuple[dict[str, str], ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.headers or self.query or self.subprotocols or self.origin or self.credentials)

    def templates(self) -> list[Template]:
        found = [t for _, t in self.headers] + [t for _, t in self.query] + list(self.subprotocols)
        return found + ([self.origin] if self.origin else [])

    def fields(self, user_id: int, n: int) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self.credentials:
            values.update(self.credentials[(user_id - 1) % len(self.credentials)])
        values.update({"user_id": user_id, "n": n, "i": 0})
        return values

    def secrets(self, fields: Mapping[str, Any]) -> list[str]:
        """Rendered identity values, to be masked wherever a server's message is shown."""
        values = [t.render(fields) for _, t in self.headers] + [t.render(fields) for _, t in self.query]
        values += [str(fields[c]) for row in self.credentials[:1] for c in row if c in fields]
        return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def read_credentials(path: str) -> tuple[dict[str, str], ...]:
    """Rows of a credentials CSV (first row names the fields); never logged."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = tuple({k.strip(): (v or "") for k, v in row.items() if k} for row in reader)
            columns = [c.strip() for c in (reader.fieldnames or [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ProfileError(f"load.credentials: cannot read {path!r} as CSV ({type(exc).__name__})") from None
    if not columns or not rows:
        raise ProfileError(
            f"load.credentials: {path!r} has no rows",
            hint="first row: field names (e.g. username,token), then one row per user",
        )
    bad = [c for c in columns if not c.isidentifier()]
    if bad:
        raise ProfileError(
            f"load.credentials: column name {bad[0]!r} cannot be a placeholder", hint="use letters, digits and _ only"
        )
    clash = sorted(set(columns) & BUILTIN_FIELDS)
    if clash:
        raise ProfileError(
            f"load.credentials: column {clash[0]!r} hides the built-in {{{clash[0]}}}", hint="rename the column"
        )
    return rows


# --- the user's code -------------------------------------------------------------------


def _user_frames(tb: Any) -> list[traceback.FrameSummary]:
    """Frames of the user's code only.

    Ours (runner/), the standard library's import machinery and gevent's are left out.
    """
    frames = traceback.extract_tb(tb)
    return [
        f
        for f in frames
        if not f.filename.startswith(_PACKAGE_DIR) and "importlib" not in f.filename and "/gevent/" not in f.filename
    ]


def _user_tb(tb: Any) -> Any:
    """The traceback from the first frame of the user's code on (Locust formats it for locust_stats.json)."""
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    return tb


def format_user_traceback(exc: BaseException) -> str:
    """A traceback like Python's, with the user's frames only."""
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(_user_frames(exc.__traceback__))
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def _is_library(filename: str) -> bool:
    return filename.startswith(_LIBRARY_DIRS) or "site-packages" in filename or filename.startswith("<")


def _where(exc: BaseException) -> str:
    """``file:line in function`` of the deepest frame in the user's own files (not ours, not a library's)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{Path(exc.filename).name}:{exc.lineno}"
    frames = _user_frames(exc.__traceback__)
    own = [f for f in frames if not _is_library(f.filename)] or frames
    if not own:
        return "?"
    last = own[-1]
    return f"{Path(last.filename).name}:{last.lineno} in {last.name}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_code_scenario(path: str, function: str = "scenario") -> Callable[..., Any]:
    """Import the scenario file and return its function; load errors are exit 2 with the user's location."""
    name = f"soak_scenario_{Path(path).stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ScenarioFileError(f"scenario.file: {path!r} is not a Python file", hint="give a .py file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any error in the user's module is theirs to see
        raise ScenarioFileError(
            f"scenario file {Path(path).name} cannot be loaded: {_one_line(exc)} at {_where(exc)}",
            hint="fix the scenario file; run it with python to see the whole traceback",
        ) from None
    func = getattr(module, function, None)
    if not callable(func):
        found = sorted(
            n
            for n, v in vars(module).items()
            if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == name
        )
        raise ScenarioFileError(
            f"scenario file {Path(path).name} has no function {function!r}",
            hint=f"define def {function}(conn, ctx), or set scenario.function"
            + (f" (functions in the file: {', '.join(found)})" if found else ""),
        )
    return func


class ScenarioConnection:
    """The connection a code scenario gets: send, recv with a timeout, close; a preset's events.

    With ``[scenario] protocol = "socket.io"``: ``emit``, ``call`` (an emit that waits for its
    ack) and ``recv_event``; with ``"graphql-ws"``: ``subscribe``, ``recv_next``, ``complete``.
    Heartbeats are answered whenever the connection is read (``ctx.sleep`` reads too).
    """

    def __init__(self, channel: Channel | WebSocketClient, timeout: float) -> None:
        self._channel = channel if isinstance(channel, Channel) else Channel(channel)
        self._client = self._channel.client
        self.timeout = timeout

    @property
    def open(self) -> bool:
        return self._channel.open

    @property
    def subprotocol(self) -> str | None:
        return self._client.protocol.subprotocol

    def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message."""
        self._client.send(message)

    def send_json(self, value: Any) -> None:
        self._client.send(json.dumps(value, separators=(",", ":")))

    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next message; ``TimeoutError`` after ``timeout`` seconds (default: load.timeout)."""
        if self._channel.session is not None:
            raise RuntimeError("conn.recv reads plain messages; with a protocol preset use recv_event or recv_next")
        return self._channel.recv(self.timeout if timeout is None else timeout)

    def recv_json(self, timeout: float | None = None) -> Any:
        message = self.recv(timeout)
        try:
            return json.loads(message)
        except ValueError:
            raise ExpectationFailed(f"expected a JSON message, got {len(message)} bytes that are not JSON") from None

    def close(self) -> None:
        """The closing handshake (the runner closes for you when the function returns)."""
        self._channel.close()

    def abort(self) -> None:
        """End the connection without the closing handshake, as a killed tab or a lost network does."""
        self._channel.abort()

    # --- socket.io ---

    def _session(self, kind: type, method: str) -> Any:
        session = self._channel.session
        if not isinstance(session, kind):
            preset = "socket.io" if kind is SocketIOSession else "graphql-ws"
            raise RuntimeError(f"conn.{method} needs [scenario] protocol = {preset!r} in the profile")
        return session

    def emit(self, event: str, *args: Any) -> None:
        """Emit a Socket.IO event with ``args`` (JSON values)."""
        self._session(SocketIOSession, "emit").emit(event, args)
        self._channel.flush()

    def call(self, event: str, *args: Any, timeout: float | None = None) -> list[Any]:
        """Emit ``event`` and wait for its ack; returns the ack's arguments. Other events wait for recv_event."""
        ack_id = self._session(SocketIOSession, "call").emit(event, args, ack=True)
        self._channel.flush()
        seconds = self.timeout if timeout is None else timeout
        try:
            found = self._channel.take(
                lambda e: e.kind == "ack" and e.key == str(ack_id), time.monotonic() + seconds, keep_others=True
            )
        except TimeoutError:
            raise TimeoutError(f"no ack of {event!r} within {seconds:g}s") from None
        return list(found.data)

    def recv_event(self, name: str | None = None, timeout: float | None = None) -> list[Any]:
        """The arguments of the next Socket.IO event ``name`` (any event when None); others are skipped."""
        self._session(SocketIOSession, "recv_event")
        seconds = self.timeout if timeout is None else timeout
        try:
            deadline = time.monotonic() + seconds
            found = self._channel.take(lambda e: e.kind == "event" and name in (None, e.key), deadline)
        except TimeoutError:
            raise TimeoutError(f"no event {name or 'at all'!r} within {seconds:g}s") from None
        return list(found.data) if name is not None else [found.key, *found.data]

    # --- graphql-ws ---

    def subscribe(self, op_id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        """Start the GraphQL operation ``query`` under ``op_id``."""
        self._session(GraphQLWSSession, "subscribe").subscribe(op_id, query, variables)
        self._channel.flush()

    def recv_next(self, op_id: str, timeout: float | None = None) -> Any:
        """The payload of the next result of ``op_id``; its error or complete fails the step."""
        self._session(GraphQLWSSession, "recv_next")
        seconds = self.timeout if timeout is None else timeout
        try:
            found = self._channel.take(
                lambda e: _next_of(e, op_id), time.monotonic() + seconds, keep_others=lambda e: e.key != op_id
            )
        except TimeoutError:
            raise TimeoutError(f"no next of {op_id!r} within {seconds:g}s") from None
        return found.data

    def complete(self, op_id: str) -> None:
        """Stop the GraphQL operation ``op_id``."""
        self._session(GraphQLWSSession, "complete").complete(op_id)
        self._channel.flush()


def _next_of(event: Incoming, op_id: str | None, shown: Callable[[Any], str] = repr) -> bool:
    """A next of ``op_id`` (any when None); an error or complete of it fails at once."""
    if op_id is not None and event.key != op_id:
        return False
    if event.kind == "error":
        raise ExpectationFailed(f"subscription {event.key!r} failed: {shown(event.data)}")
    if event.kind == "complete" and op_id is not None:
        raise ExpectationFailed(f"subscription {event.key!r} completed before the expected next")
    return event.kind == "next"


class ScenarioContext:
    """What a code scenario knows about its user, and how it times named steps."""

    def __init__(self, fields: dict[str, Any], recorder: RequestRecorder, channel: Channel | None = None) -> None:
        self.fields = fields
        self.user_id: int = fields["user_id"]
        self.n: int = fields["n"]
        self._recorder = recorder
        self._channel = channel

    def render(self, template: str) -> str:
        """A template such as ``"user-{user_id}"`` with this user's fields."""
        return Template(template).render(self.fields)

    def sleep(self, seconds: float) -> None:
        """Pause with the connection kept: heartbeats answered, a server's close counted when it comes."""
        if self._channel is not None and self._channel.open:
            _idle(self._channel, seconds, self._recorder.user.counters)
        else:
            time.sleep(seconds)  # cooperative: Locust has monkey-patched time for gevent

    def fail(self, message: str) -> None:
        """Fail the current step (or the cycle) with ``message``."""
        raise ExpectationFailed(message)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block as the Locust request ``name``; a failure inside ends the cycle."""
        start = time.perf_counter()
        try:
            yield
        except _FAILURES as exc:
            self._recorder.record(name, start, exc)
            raise StepFailed(f"step {name!r} failed: {_one_line(exc)}") from exc
        self._recorder.record(name, start, None)


# --- the plan --------------------------------------------------------------------------


@dataclass
class _UserState:
    user_id: int
    cycles: int = 0
    drop_credit: float = 0.0


@dataclass
class ScenarioPlan:
    """Everything a user needs to open, drive and close one connection of a run."""

    identity: Identity = field(default_factory=Identity)
    steps: tuple[Step, ...] = ()
    code: Callable[..., Any] | None = None
    code_file: str | None = None
    ssl_context: ssl.SSLContext | None = None
    timeout: float = 10.0
    hold: float = 0.0
    #: Sentences for the summary's notes (e.g. TLS verification off).
    notes: list[str] = field(default_factory=list)
    #: Added to every user id (distributed load: a distinct range per worker process).
    user_id_offset: int = 0
    #: The preset the connections speak (runner.load.protocols): "socket.io", "graphql-ws" or None.
    protocol: str | None = None
    #: Socket.IO namespace.
    namespace: str = "/"
    #: Socket.IO CONNECT auth / graphql-ws connection_init payload (a JSON template), or None.
    auth: Any = None
    auto_reply: tuple[AutoReply, ...] = ()
    #: load.drop_fraction: this share of connections ends without the closing handshake.
    drop_fraction: float = 0.0
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _bug_reported: bool = False

    # --- connections ---

    def fields(self, user_id: int, n: int) -> dict[str, Any]:
        return self.identity.fields(user_id, n)

    def url_for(self, url: str, fields: Mapping[str, Any]) -> str:
        if self.protocol == "socket.io":
            url = socketio_url(url)
        if not self.identity.query:
            return url
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        pairs += [(name, template.render(fields)) for name, template in self.identity.query]
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(pairs), parts.fragment))

    def client(
        self, url: str, fields: Mapping[str, Any], *, source_address: str | None = None, timeout: float | None = None
    ) -> WebSocketClient:
        """A not yet connected client carrying this user's identity."""
        identity = self.identity
        return WebSocketClient(
            self.url_for(url, fields),
            timeout=self.timeout if timeout is None else timeout,
            source_address=source_address,
            headers={name: template.render(fields) for name, template in identity.headers},
            subprotocols=self._subprotocols(fields),
            origin=identity.origin.render(fields) if identity.origin else None,
            ssl_context=self.ssl_context,
        )

    def _subprotocols(self, fields: Mapping[str, Any]) -> list[str] | None:
        names = [t.render(fields) for t in self.identity.subprotocols]
        if self.protocol == "graphql-ws" and SUBPROTOCOL not in names:
            names.insert(0, SUBPROTOCOL)
        return names or None

    def session(self, fields: Mapping[str, Any]) -> Session | None:
        """A new preset session for one connection (the auth payload rendered for this user)."""
        auth = render_json(self.auth, fields) if self.auth is not None else None
        if self.protocol == "socket.io":
            return SocketIOSession(self.namespace, auth)
        if self.protocol == "graphql-ws":
            return GraphQLWSSession(auth)
        return None

    def probe(self, url: str) -> None:
        """The readiness probe: one handshake (with user 1's identity, over TLS when wss://) and a close."""
        client = self.client(url, self.fields(1, 0), timeout=2.0)
        try:
            client.connect()
            client.close()
        finally:
            client.abort()

    # --- one cycle ---

    def _state(self, user: Any) -> _UserState:
        state = user.__dict__.get(_STATE_ATTRIBUTE)
        if state is None:
            state = _UserState(user_id=next(self._ids) + self.user_id_offset)
            user.__dict__[_STATE_ATTRIBUTE] = state
        return state

    def run_cycle(self, user: Any, *, url: str, source_address: str | None = None) -> None:
        """Connect, run the scenario, hold, close (or drop): one connection of ``user`` (a ChurnUser)."""
        state = self._state(user)
        fields = self.fields(state.user_id, state.cycles)
        state.cycles += 1
        recorder = RequestRecorder(user, _FAILURES)
        client = self.client(url, fields, source_address=source_address)
        channel = Channel(client, self.session(fields), self.auto_reply, fields)
        if not recorder.time("connect", channel.connect):
            channel.abort()
            return
        user.counters.opened += 1
        try:
            if self.code is not None:
                carry_on = self._run_code(channel, fields, recorder)
            else:
                carry_on = self._run_steps(self.steps, channel, fields, recorder)
            if carry_on and self.hold:
                carry_on = _idle(channel, self.hold, user.counters, getattr(user, "stopping", None))
            if carry_on and channel.open:
                drop, state.drop_credit = drop_due(state.drop_credit, self.drop_fraction)
                recorder.time("drop" if drop else "close", channel.abort if drop else channel.close)
            elif carry_on and channel.session is not None:  # the server ended a preset's session on its own
                reason = channel.session.ended or "the connection closed"
                closed = ConnectionClosedError(f"before the client's close: {reason}")
                recorder.record("close", time.perf_counter(), closed)
        finally:
            if client.ending is None:  # else the server ended it, counted when it happened
                channel.abort()
                user.counters.closed += 1

    def _run_steps(
        self, steps: tuple[Step, ...], channel: Channel, fields: dict[str, Any], recorder: RequestRecorder
    ) -> bool:
        """Run steps in order; False when the cycle must end (a failure, or a close step)."""
        for step in steps:
            if isinstance(step, Wait):
                if not _idle(channel, step.seconds, recorder.user.counters):
                    return False
            elif isinstance(step, Repeat):
                for i in range(step.times):
                    if not self._run_steps(step.steps, channel, {**fields, "i": i}, recorder):
                        return False
            elif isinstance(step, Close):
                recorder.time(step.name, channel.close)
                return False
            elif isinstance(step, Exchange):
                payload = step.payload(fields)
                exchange = functools.partial(self._exchange, step, payload, channel, fields)
                if not recorder.time(step.name, exchange, len(payload or "")):
                    return False
            elif isinstance(step, ProtocolStep):
                if not recorder.time(step.name, functools.partial(self._preset_step, step, channel, fields)):
                    return False
        return True

    def _exchange(self, step: Exchange, payload: str | None, channel: Channel, fields: dict[str, Any]) -> None:
        client = channel.client
        if payload is not None:
            client.send(payload)
        if step.expect is None:
            return
        timeout = step.timeout or self.timeout
        deadline = time.monotonic() + timeout
        skipped = 0
        last: str | bytes | None = None
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError()
                message = client.recv(timeout=remaining)
            except TimeoutError:
                seen = (
                    f"; {skipped} other message(s) came, the last: {self._shown(last, fields)}"
                    if skipped
                    else "; nothing came"
                )
                raise ExpectationFailed(f"{step.name}: no {step.expect.describe()} within {timeout:g}s{seen}") from None
            if step.expect.matches(message, fields):
                return
            if channel.auto_reply(message):
                continue
            skipped += 1
            last = message

    def _preset_step(self, step: ProtocolStep, channel: Channel, fields: dict[str, Any]) -> None:
        """Send the step's emit/subscribe/complete, then wait for its ack, event or next."""
        session = channel.session
        op_id = step.op_id.render(fields) if step.op_id else None
        ack_id: int | None = None
        if step.action in ("emit", "emit_ack"):
            assert isinstance(session, SocketIOSession)
            name, *args = render_json(step.payload, fields)
            ack_id = session.emit(str(name), args, ack=step.action == "emit_ack")
        elif step.action == "subscribe":
            assert isinstance(session, GraphQLWSSession) and op_id is not None
            payload = render_json(step.payload, fields)
            try:
                session.subscribe(op_id, payload["query"], payload["variables"])
            except ValueError as exc:
                raise ExpectationFailed(f"{step.name}: {exc}") from None
        elif step.action == "complete":
            assert isinstance(session, GraphQLWSSession)
            session.complete(Template(step.payload).render(fields))
        channel.flush()
        if step.action != "emit_ack" and step.expect is None:
            return
        timeout = step.timeout or self.timeout
        expected = step.fields

        def shown(data: Any) -> str:
            return self._shown(json.dumps(data, separators=(",", ":")), fields)

        def accept(event: Incoming) -> bool:
            if ack_id is not None:
                if event.kind != "ack" or event.key != str(ack_id):
                    return False
                if expected is not None and not expected.matches_value(event.data, fields):
                    raise ExpectationFailed(f"the {step.describe()} came as {shown(event.data)}")
                return True
            if step.expect == "event":
                ok = event.kind == "event" and step.event is not None and event.key == step.event.render(fields)
            else:
                ok = _next_of(event, op_id, shown)
            return ok and (expected is None or expected.matches_value(event.data, fields))

        skipped: list[Incoming] = []
        count = [0]

        def counted(event: Incoming) -> bool:
            if accept(event):
                return True
            count[0] += 1
            return False

        # an ack or another subscription's results belong to later steps: kept; other events are skipped
        keep: bool | Callable[[Incoming], bool] = ack_id is not None
        if step.expect == "next" and op_id is not None:
            keep = lambda event: event.key != op_id  # noqa: E731
        try:
            channel.take(counted, time.monotonic() + timeout, keep_others=keep, skipped=skipped)
        except ExpectationFailed as exc:
            raise ExpectationFailed(f"{step.name}: {exc}") from None
        except TimeoutError:
            last = "; nothing came" if not count[0] else f"; {count[0]} other event(s) came"
            if skipped:
                last += f", the last: {skipped[-1].kind} {skipped[-1].key!r} {shown(skipped[-1].data)}"
            raise ExpectationFailed(f"{step.name}: no {step.describe()} within {timeout:g}s{last}") from None

    def _shown(self, message: str | bytes | None, fields: Mapping[str, Any]) -> str:
        """A server message for an error text: cut short, identity values and secrets masked."""
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else (message or "")
        for secret in self.identity.secrets(fields):
            text = text.replace(secret, MASK)
        text = redact_text(text)
        return repr(text[:120] + ("..." if len(text) > 120 else ""))

    def _run_code(self, channel: Channel, fields: dict[str, Any], recorder: RequestRecorder) -> bool:
        context = ScenarioContext(fields, recorder, channel)
        start = time.perf_counter()
        try:
            assert self.code is not None
            self.code(ScenarioConnection(channel, self.timeout), context)
        except StepFailed:
            return False
        except _FAILURES as exc:
            recorder.record("scenario", start, exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a bug in the user's scenario: stop the run with their traceback
            self._report_bug(recorder.user, exc)
        return True

    def _report_bug(self, user: Any, exc: Exception) -> None:
        """Hand the user's bug to Locust as a user error carrying *their* frames, print it once, stop this user.

        Locust's runners turn ``user_error`` into ``runner.exceptions`` (a worker sends it to the
        master), which the driver's check turns into a LoadError: the run stops with exit 3.
        """
        from locust.exception import StopUser  # only ever reached inside a Locust run

        user_traceback = format_user_traceback(exc)
        if not self._bug_reported:
            self._bug_reported = True
            print(
                f"soak: the scenario in {self.code_file} raised an exception (your code, not soak-runner's):",
                file=sys.stderr,
            )
            print(user_traceback, file=sys.stderr, end="", flush=True)
        bug = ScenarioBug(f"the scenario raised {_one_line(exc)} at {_where(exc)}", user_traceback)
        user.environment.events.user_error.fire(user_instance=user, exception=bug, tb=_user_tb(exc.__traceback__))
        raise StopUser() from None


def _idle(channel: Channel, seconds: float, counters: Any, stopping: Any = None) -> bool:
    """Idle on the connection for ``seconds``; False when the server ended it meanwhile.

    A preset's session or auto-reply rules read the socket themselves (heartbeats answered, a
    close seen by the read; the caller finds the channel not open). Otherwise the connection is
    watched on the hub: pings answered, a server close or reset counted as it happens.
    """
    if channel.session is not None or channel.rules:
        channel.idle(seconds, stopping)
        return True
    channel.client.watch(counters.server_ended)
    try:
        channel.idle(seconds, stopping)  # a cooperative sleep (Locust patched time for gevent)
    finally:
        channel.client.unwatch()
    return channel.client.ending is None


def build_plan(profile: Any) -> ScenarioPlan | None:
    """The plan of a run, or None when the profile uses the plain echo loop over ws:// with no identity.

    Raises :class:`~runner.errors.ProfileError` (exit 2) for unknown placeholders, an unreadable
    credentials file or CA bundle, and a scenario file that cannot be loaded.
    """
    load = profile.load
    target = profile.target
    scenario = profile.scenario
    credentials = read_credentials(load.credentials) if load.credentials else ()
    identity = Identity(
        headers=tuple((name, Template(value)) for name, value in load.headers.items()),
        query=tuple((name, Template(value)) for name, value in load.query.items()),
        subprotocols=tuple(Template(s) for s in load.subprotocols),
        origin=Template(load.origin) if load.origin else None,
        credentials=credentials,
    )
    available = set(BUILTIN_FIELDS) | (set(credentials[0]) if credentials else set())
    check_fields(identity.templates(), available, "load (headers, query, subprotocols, origin)")
    steps = compile_steps(scenario.steps) if scenario.steps else ()
    if steps:
        check_fields(steps, available, "scenario.steps")
    if scenario.auth is not None:
        check_fields(_json_templates(scenario.auth), available, "scenario.auth")
    rules = compile_rules(scenario.auto_reply)
    if rules:
        check_fields([rule.reply for rule in rules], available, "scenario.auto_reply")
    code = load_code_scenario(scenario.file, scenario.function) if scenario.file else None
    wss = bool(target.url and target.url.startswith("wss://"))
    tls = wss or target.ca_bundle or target.insecure_tls
    if not (steps or code or identity.configured or tls or scenario.protocol or rules):
        return None
    notes = []
    if target.insecure_tls:
        notes.append(
            "TLS certificate verification was OFF (target.insecure_tls = true): the server's identity was not checked"
        )
    return ScenarioPlan(
        identity=identity,
        steps=steps if steps else (() if code or scenario.protocol else _echo_steps(load)),
        code=code,
        code_file=scenario.file,
        ssl_context=make_ssl_context(ca_bundle=target.ca_bundle, insecure=target.insecure_tls)
        if (wss or target.ca_bundle or target.insecure_tls)
        else None,
        timeout=load.timeout,
        hold=load.hold,
        notes=notes,
        protocol=scenario.protocol,
        namespace=scenario.namespace,
        auth=scenario.auth,
        auto_reply=rules,
        drop_fraction=load.drop_fraction,
    )


def _echo_steps(load: Any) -> tuple[Step, ...]:
    """The default echo loop as steps, for runs that only add identity or TLS."""
    payload = ("soak-runner " * (load.message_bytes // 12 + 1))[: load.message_bytes]
    if not payload or load.messages == 0:
        return ()
    literal = Template(payload)  # letters and spaces only: no placeholders
    from .steps import Substring

    return tuple(Exchange(name="echo", send=literal, expect=Substring(literal)) for _ in range(load.messages))
