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
from .client import WebSocketClient, WebSocketError
from .steps import BUILTIN_FIELDS, Close, Exchange, Repeat, Step, Template, Wait, check_fields, compile_steps

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
]

REQUEST_TYPE = "WS"
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
        raise ProfileError(f"load.credentials: {path!r} has no rows", hint="first row: field names (e.g. username,token), then one row per user")
    bad = [c for c in columns if not c.isidentifier()]
    if bad:
        raise ProfileError(f"load.credentials: column name {bad[0]!r} cannot be a placeholder", hint="use letters, digits and _ only")
    clash = sorted(set(columns) & BUILTIN_FIELDS)
    if clash:
        raise ProfileError(f"load.credentials: column {clash[0]!r} hides the built-in {{{clash[0]}}}", hint="rename the column")
    return rows


# --- the user's code -------------------------------------------------------------------


def _user_frames(tb: Any) -> list[traceback.FrameSummary]:
    """Frames of the user's code only: ours (runner/), the standard library's import machinery and gevent's are left out."""
    frames = traceback.extract_tb(tb)
    return [f for f in frames if not f.filename.startswith(_PACKAGE_DIR) and "importlib" not in f.filename and "/gevent/" not in f.filename]


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
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == name)
        raise ScenarioFileError(
            f"scenario file {Path(path).name} has no function {function!r}",
            hint=f"define def {function}(conn, ctx), or set scenario.function" + (f" (functions in the file: {', '.join(found)})" if found else ""),
        )
    return func


class ScenarioConnection:
    """The connection a code scenario gets: send, recv with a timeout, close."""

    def __init__(self, client: WebSocketClient, timeout: float) -> None:
        self._client = client
        self.timeout = timeout

    @property
    def open(self) -> bool:
        return self._client.open

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
        return self._client.recv(timeout=self.timeout if timeout is None else timeout)

    def recv_json(self, timeout: float | None = None) -> Any:
        message = self.recv(timeout)
        try:
            return json.loads(message)
        except ValueError:
            raise ExpectationFailed(f"expected a JSON message, got {len(message)} bytes that are not JSON") from None

    def close(self) -> None:
        """The closing handshake (the runner closes for you when the function returns)."""
        self._client.close()

    def abort(self) -> None:
        """End the connection without the closing handshake, as a killed tab or a lost network does."""
        self._client.abort()


class ScenarioContext:
    """What a code scenario knows about its user, and how it times named steps."""

    def __init__(self, fields: dict[str, Any], recorder: "_Recorder", client: WebSocketClient | None = None) -> None:
        self.fields = fields
        self.user_id: int = fields["user_id"]
        self.n: int = fields["n"]
        self._recorder = recorder
        self._client = client

    def render(self, template: str) -> str:
        """A template such as ``"user-{user_id}"`` with this user's fields."""
        return Template(template).render(self.fields)

    def sleep(self, seconds: float) -> None:
        """Wait with the connection watched: pings answered, a server's close counted when it comes."""
        if self._client is None:
            time.sleep(seconds)  # cooperative: Locust has monkey-patched time for gevent
        else:
            _idle(self._client, seconds, self._recorder.user.counters)

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


class _Recorder:
    """Fires Locust request events and keeps the shared counters, for one user."""

    def __init__(self, user: Any) -> None:
        self.user = user

    def record(self, name: str, start: float, exception: BaseException | None, length: int = 0) -> None:
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        counters = self.user.counters
        if exception is not None:
            counters.errors += 1
        counters.record_latency(name, elapsed_ms)
        self.user.environment.events.request.fire(
            request_type=REQUEST_TYPE, name=name, response_time=elapsed_ms, response_length=length, exception=exception, context={}
        )

    def time(self, name: str, action: Callable[[], Any], length: int = 0) -> bool:
        start = time.perf_counter()
        try:
            action()
        except _FAILURES as exc:
            self.record(name, start, exc, length)
            return False
        self.record(name, start, None, length)
        return True


@dataclass
class _UserState:
    user_id: int
    cycles: int = 0


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
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _bug_reported: bool = False

    # --- connections ---

    def fields(self, user_id: int, n: int) -> dict[str, Any]:
        return self.identity.fields(user_id, n)

    def url_for(self, url: str, fields: Mapping[str, Any]) -> str:
        if not self.identity.query:
            return url
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        pairs += [(name, template.render(fields)) for name, template in self.identity.query]
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(pairs), parts.fragment))

    def client(self, url: str, fields: Mapping[str, Any], *, source_address: str | None = None, timeout: float | None = None) -> WebSocketClient:
        """A not yet connected client carrying this user's identity."""
        identity = self.identity
        return WebSocketClient(
            self.url_for(url, fields),
            timeout=self.timeout if timeout is None else timeout,
            source_address=source_address,
            headers={name: template.render(fields) for name, template in identity.headers},
            subprotocols=[t.render(fields) for t in identity.subprotocols] or None,
            origin=identity.origin.render(fields) if identity.origin else None,
            ssl_context=self.ssl_context,
        )

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
        """Connect, run the scenario, hold, close: one connection of ``user`` (a ChurnUser)."""
        state = self._state(user)
        fields = self.fields(state.user_id, state.cycles)
        state.cycles += 1
        recorder = _Recorder(user)
        client = self.client(url, fields, source_address=source_address)
        if not recorder.time("connect", client.connect):
            client.abort()
            return
        user.counters.opened += 1
        try:
            if self.code is not None:
                carry_on = self._run_code(client, fields, recorder)
            else:
                carry_on = self._run_steps(self.steps, client, fields, recorder)
            if carry_on and self.hold:
                carry_on = _idle(client, self.hold, user.counters)
            if carry_on and client.open:
                recorder.time("close", client.close)
        finally:
            if client.ending is None:  # else the server ended it, counted when it happened
                client.abort()
                user.counters.closed += 1

    def _run_steps(self, steps: tuple[Step, ...], client: WebSocketClient, fields: dict[str, Any], recorder: _Recorder) -> bool:
        """Run steps in order; False when the cycle must end (a failure, or a close step)."""
        for step in steps:
            if isinstance(step, Wait):
                if not _idle(client, step.seconds, recorder.user.counters):
                    return False
            elif isinstance(step, Repeat):
                for i in range(step.times):
                    if not self._run_steps(step.steps, client, {**fields, "i": i}, recorder):
                        return False
            elif isinstance(step, Close):
                recorder.time(step.name, client.close)
                return False
            elif isinstance(step, Exchange):
                payload = step.payload(fields)
                if not recorder.time(step.name, lambda: self._exchange(step, payload, client, fields), len(payload or "")):
                    return False
        return True

    def _exchange(self, step: Exchange, payload: str | None, client: WebSocketClient, fields: dict[str, Any]) -> None:
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
                seen = f"; {skipped} other message(s) came, the last: {self._shown(last, fields)}" if skipped else "; nothing came"
                raise ExpectationFailed(f"{step.name}: no {step.expect.describe()} within {timeout:g}s{seen}") from None
            if step.expect.matches(message, fields):
                return
            skipped += 1
            last = message

    def _shown(self, message: str | bytes | None, fields: Mapping[str, Any]) -> str:
        """A server message for an error text: cut short, identity values and secrets masked."""
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else (message or "")
        for secret in self.identity.secrets(fields):
            text = text.replace(secret, MASK)
        text = redact_text(text)
        return repr(text[:120] + ("..." if len(text) > 120 else ""))

    def _run_code(self, client: WebSocketClient, fields: dict[str, Any], recorder: _Recorder) -> bool:
        context = ScenarioContext(fields, recorder, client)
        start = time.perf_counter()
        try:
            assert self.code is not None
            self.code(ScenarioConnection(client, self.timeout), context)
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
            print(f"soak: the scenario in {self.code_file} raised an exception (your code, not soak-runner's):", file=sys.stderr)
            print(user_traceback, file=sys.stderr, end="", flush=True)
        bug = ScenarioBug(f"the scenario raised {_one_line(exc)} at {_where(exc)}", user_traceback)
        user.environment.events.user_error.fire(user_instance=user, exception=bug, tb=_user_tb(exc.__traceback__))
        raise StopUser() from None


def _idle(client: WebSocketClient, seconds: float, counters: Any) -> bool:
    """Sleep with the connection watched (pings answered, a server close seen as it happens); False when it ended."""
    client.watch(counters.server_ended)
    try:
        time.sleep(seconds)  # cooperative: Locust has monkey-patched time for gevent
    finally:
        client.unwatch()
    return client.ending is None


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
    code = load_code_scenario(scenario.file, scenario.function) if scenario.file else None
    wss = bool(target.url and target.url.startswith("wss://"))
    if not (steps or code or identity.configured or wss or target.ca_bundle or target.insecure_tls):
        return None
    notes = []
    if target.insecure_tls:
        notes.append("TLS certificate verification was OFF (target.insecure_tls = true): the server's identity was not checked")
    return ScenarioPlan(
        identity=identity,
        steps=steps if steps else (() if code else _echo_steps(load)),
        code=code,
        code_file=scenario.file,
        ssl_context=make_ssl_context(ca_bundle=target.ca_bundle, insecure=target.insecure_tls) if (wss or target.ca_bundle or target.insecure_tls) else None,
        timeout=load.timeout,
        hold=load.hold,
        notes=notes,
    )


def _echo_steps(load: Any) -> tuple[Step, ...]:
    """The default echo loop as steps, for runs that only add identity or TLS."""
    payload = ("soak-runner " * (load.message_bytes // 12 + 1))[: load.message_bytes]
    if not payload or load.messages == 0:
        return ()
    literal = Template(payload)  # letters and spaces only: no placeholders
    from .steps import Substring

    return tuple(Exchange(name="echo", send=literal, expect=Substring(literal)) for _ in range(load.messages))
