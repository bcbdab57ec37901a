"""Secrets never leave the runner: redaction of URLs, command lines, environments and free text.

Used on everything the runner writes or prints (summary.json, run.json, meta.json, the
report, JUnit, history, the terminal). What counts as a secret:

- credentials in URLs (``wss://user:pass@host``) and secret-named query parameters
  (``?token=...``, ``&X-Amz-Signature=...``);
- ``Authorization``-style values (``Bearer ...``, ``Basic ...``);
- ``NAME=VALUE`` / ``NAME: VALUE`` / ``"NAME": "VALUE"`` and ``--NAME VALUE`` where NAME
  is secret-named (its words include token, secret, password, key, auth, cookie, ...);
- the session id of a debugger URL (``ws://127.0.0.1:PORT/<uuid>``, as Node's inspector
  prints it): whoever has it drives the server's runtime;
- the *values* of secret-named environment variables of the runner's own environment,
  wherever they appear (as CI systems mask known secrets), when at least 6 characters long.

A name is split into words (``X-Api-Key`` -> x, api, key; ``apiKey`` -> api, key), so
``MONKEY``, ``author`` or ``keyboard`` are not secret names; password, passwd, secret
and token count even inside a longer word (``PGPASSWORD``).
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "MASK",
    "is_secret_name",
    "redact_url",
    "redact_text",
    "redact_command",
    "redact_data",
    "known_secrets",
]

MASK = "***"

#: Words that make a name secret (compared after splitting the name into lower-case words).
SECRET_WORDS = frozenset(
    {
        "token",
        "tokens",
        "secret",
        "secrets",
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "pass",
        "key",
        "apikey",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "cookie",
        "cookies",
        "session",
        "sessionid",
        "sid",
        "signature",
        "sig",
        "jwt",
        "bearer",
        "private",
        "privatekey",
        "accesskey",
        "secretkey",
        "accesstoken",
        "refreshtoken",
        "clientsecret",
        "xsrf",
        "csrf",
    }
)
#: Parts that make a name secret even inside a longer word (PGPASSWORD, MYSECRET, GHTOKEN).
_SECRET_PARTS = ("password", "passwd", "secret", "token")
#: Shortest environment value masked wherever it appears (shorter ones are too common).
MIN_KNOWN_SECRET = 6

_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_URL = re.compile(r"\b(?:wss?|https?|ftp|redis|amqps?|postgres(?:ql)?|mysql|mongodb(?:\+srv)?)://[^\s\"'<>]+", re.I)
#: The path of a debugger WebSocket URL that is a UUID (Node's inspector: the session id).
_DEBUGGER_ID = re.compile(r"(?<=/)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?![0-9a-f-])", re.I)
_USERINFO = re.compile(r"(?<=://)[^/@\s\"'<>]+@")
_SCHEME_VALUE = re.compile(r"\b(Bearer|Basic|Token|Digest)(\s+)[A-Za-z0-9._~+/=-]{6,}", re.I)
_VALUE = re.compile(r"\"[^\"]*\"|'[^']*'|[^\s&,;\"'<>)}\]]+")
#: ``NAME=``, ``NAME: ``, ``"NAME": ``; the value is matched separately so that a
#: non-secret name never swallows a secret one (``log: password=x``).
_NAME_SEP = re.compile(r"(?P<quote>[\"']?)(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)(?P=quote)(?P<sep>\s*[=:]\s*)")
_FLAG = re.compile(
    r"(?P<dashes>--?)(?P<name>[A-Za-z][A-Za-z0-9_.-]*)(?P<sep>\s+)(?P<value>(?!-)[^\s\"']+|\"[^\"]*\"|'[^']*')"
)


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORDS.findall(name)]


#: Names that match the rules but are well known not to hold secrets.
NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD", "SSH_AUTH_SOCK", "GPG_AGENT_INFO", "KEYTIMEOUT"})


def is_secret_name(name: str) -> bool:
    """True for names like API_TOKEN, db_password, X-Api-Key, apiKey, session_id."""
    if name in NOT_SECRET_NAMES:
        return False
    words = _words(name)
    if any(w in SECRET_WORDS for w in words):
        return True
    joined = "".join(words)
    return joined in SECRET_WORDS or any(part in joined for part in _SECRET_PARTS)


def known_secrets(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Values of the secret-named variables of ``environ`` (default: this process's environment)."""
    env = os.environ if environ is None else environ
    return frozenset(v for k, v in env.items() if is_secret_name(k) and len(v) >= MIN_KNOWN_SECRET)


def redact_url(url: str) -> str:
    """The URL without credentials and with secret-named query parameters masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(f"{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_name(k) for k, _ in pairs):
            query = urlencode([(k, MASK if is_secret_name(k) else v) for k, v in pairs], safe="*{}")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


#: ``session.py:42``, ``auth.go:7``: a source location, not a secret.
_SOURCE_FILE = re.compile(
    r"\.(py|pyx|js|mjs|cjs|ts|go|rs|c|cc|cpp|h|hpp|java|kt|rb|ex|exs|erl|cs|php|lua|zig|swift|scala)$", re.I
)


def _mask_assignments(text: str) -> str:
    """Mask the values of ``NAME=VALUE``-like pairs whose NAME is secret."""
    out: list[str] = []
    pos = 0
    for match in _NAME_SEP.finditer(text):
        if match.start() < pos:
            continue
        value_match = _VALUE.match(text, match.end())
        if value_match is None:
            continue
        name, sep, value = match.group("name"), match.group("sep"), value_match.group(0)
        if not is_secret_name(name) or value.startswith("//") or _SOURCE_FILE.search(name):
            continue
        if sep == ":" and value.isdigit():  # host:port, file:line
            continue
        masked = f"{value[0]}{MASK}{value[0]}" if value[:1] in "\"'" and len(value) >= 2 else MASK
        out.append(text[pos : match.end()])
        out.append(masked)
        pos = value_match.end()
    out.append(text[pos:])
    return "".join(out)


def _mask_flag(match: re.Match[str]) -> str:
    if not is_secret_name(match.group("name")):
        return match.group(0)
    return f"{match.group('dashes')}{match.group('name')}{match.group('sep')}{MASK}"


def _without_debugger_id(url: str) -> str:
    """A ws:// or wss:// URL with a debugger session id in its path masked."""
    return _DEBUGGER_ID.sub(MASK, url) if url[:2].lower() == "ws" else url


def redact_text(text: str, *, secrets: Iterable[str] | None = None) -> str:
    """Free text (log lines, error messages, command lines) with secrets masked.

    ``secrets``: literal values to mask wherever they appear; by default the values of
    the secret-named variables of this process's environment.
    """
    if not text or not isinstance(text, str):
        return text
    for value in sorted(known_secrets() if secrets is None else secrets, key=len, reverse=True):
        if value and value in text:
            text = text.replace(value, MASK)
    text = _URL.sub(lambda m: redact_url(_without_debugger_id(m.group(0))), text)
    text = _SCHEME_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _mask_assignments(text)
    return _FLAG.sub(_mask_flag, text)


def redact_command(argv: Sequence[str]) -> list[str]:
    """A command line (list of arguments) with secrets masked, including ``--token VALUE`` pairs."""
    out: list[str] = []
    hide_next = False
    for part in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        if part.startswith("-") and "=" not in part and is_secret_name(part.lstrip("-")):
            hide_next = True
        out.append(redact_text(part))
    return out


def redact_data(data: Any) -> Any:
    """Plain JSON-like data with every string redacted and the values of secret-named keys masked.

    Lists of strings that look like command lines (``["--token", "x"]``) are redacted as such.
    """
    if isinstance(data, str):
        return redact_text(data)
    if isinstance(data, Mapping):
        out = {}
        for key, value in data.items():
            if (
                isinstance(key, str)
                and is_secret_name(key)
                and isinstance(value, (str, int, float))
                and not isinstance(value, bool)
                and value != ""
            ):
                out[key] = MASK
            else:
                out[key] = redact_data(value)
        return out
    if isinstance(data, (list, tuple)):
        if data and all(isinstance(v, str) for v in data):
            return redact_command(data)
        return [redact_data(v) for v in data]
    return data
