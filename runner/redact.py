"""Secrets never leave the runner: redaction of URLs, command lines, environments and free text.

Used on everything written out (summary.json, report, JUnit, history, the terminal):
credentials in URLs, token-like query parameters, ``--token=...`` style arguments, and
environment variables whose names look like secrets (TOKEN, SECRET, PASSWORD, KEY, ...).
"""

from __future__ import annotations

import re
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["MASK", "is_secret_name", "redact_url", "redact_text", "redact_env", "redact_data"]

MASK = "***"

_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSW(OR)?D|PASSWD|PWD|API[_-]?KEY|ACCESS[_-]?KEY|PRIVATE[_-]?KEY|(^|[_-])KEY($|[_-])|AUTH|CREDENTIAL|SESSION|COOKIE|SIGNATURE|SIG$)", re.I)
_URL = re.compile(r"\b(?:wss?|https?)://[^\s\"'<>]+", re.I)
_USERINFO = re.compile(r"(?<=://)[^/@\s\"'<>]+@")
_ASSIGNMENT = re.compile(
    r"(?P<name>[A-Za-z0-9_.-]*(?:token|secret|passw(?:or)?d|api[_-]?key|access[_-]?key|auth|credential|session|cookie)[A-Za-z0-9_.-]*)"
    r"(?P<sep>\s*[=:]\s*|\s+(?=[^\s-]))(?P<value>\"[^\"]*\"|'[^']*'|[^\s&,;\"']+)",
    re.I,
)
_BEARER = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{6,}", re.I)


def is_secret_name(name: str) -> bool:
    """True for names like API_TOKEN, db_password, X-Api-Key, session_id."""
    return bool(_SECRET_NAME.search(name))


def redact_url(url: str) -> str:
    """The URL without credentials and with secret-looking query parameters masked."""
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


def redact_text(text: str) -> str:
    """Free text (log lines, error messages, command lines) with secrets masked."""
    if not text:
        return text
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _ASSIGNMENT.sub(lambda m: f"{m.group('name')}{m.group('sep')}{MASK}", text)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """An environment with the values of secret-named variables masked."""
    return {k: (MASK if is_secret_name(k) else redact_text(v)) for k, v in env.items()}


def redact_data(data: Any) -> Any:
    """Plain JSON-like data with every string redacted and secret-named keys masked."""
    if isinstance(data, str):
        return redact_text(data)
    if isinstance(data, Mapping):
        return {k: (MASK if isinstance(k, str) and is_secret_name(k) and isinstance(v, (str, int, float)) and v not in ("", None) else redact_data(v)) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(v) for v in data]
    return data
