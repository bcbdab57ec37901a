"""Heartbeats for protocols without a preset: ``[[scenario.auto_reply]]`` rules (pure: no I/O).

    [[scenario.auto_reply]]
    match = '^ping$'          # a regular expression searched in each text message
    reply = "pong"            # a template ({user_id}, ...), sent back at once

A rule sees every message the user did not expect: a message a step's expect matched is
that step's; anything else (while a step waits for its reply, during a ``wait`` step,
the hold, or in a scenario file's ``conn.recv()``) is answered by the first rule that
matches it and is then skipped, so a heartbeat never reaches the scenario.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ...errors import ProfileError
from ..steps import Template, _check_template

__all__ = ["AutoReply", "validate_rules", "compile_rules", "reply_to"]


@dataclass(frozen=True, slots=True)
class AutoReply:
    """Answer a message matching ``pattern`` with ``reply``."""

    pattern: re.Pattern[str]
    reply: Template


def validate_rules(value: Any, key: str = "scenario.auto_reply") -> tuple[dict[str, str], ...]:
    """Check ``[[scenario.auto_reply]]`` tables: ``match`` (a regular expression) and ``reply`` (text)."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ProfileError(
            f"{key}: expected a list of tables ([[scenario.auto_reply]] with match and reply), got {value!r}"
        )
    rules = []
    for index, rule in enumerate(value, start=1):
        where = f"{key} rule {index}"
        if not isinstance(rule, dict):
            raise ProfileError(
                f'{where}: expected a table such as {{ match = "^ping$", reply = "pong" }}, got {rule!r}'
            )
        unknown = sorted(set(rule) - {"match", "reply"})
        if unknown:
            raise ProfileError(f"{where}: unknown key {unknown[0]!r}", hint="a rule has match and reply")
        for name in ("match", "reply"):
            if not isinstance(rule.get(name), str) or not rule[name]:
                raise ProfileError(f"{where}.{name}: expected non-empty text, got {rule.get(name)!r}")
        try:
            re.compile(rule["match"])
        except re.error as exc:
            raise ProfileError(f"{where}.match: {rule['match']!r} is not a regular expression ({exc})") from None
        _check_template(rule["reply"], f"{where}.reply")
        rules.append({"match": rule["match"], "reply": rule["reply"]})
    return tuple(rules)


def compile_rules(rules: Sequence[Mapping[str, str]]) -> tuple[AutoReply, ...]:
    return tuple(AutoReply(re.compile(rule["match"]), Template(rule["reply"])) for rule in rules)


def reply_to(rules: Sequence[AutoReply], message: str | bytes, fields: Mapping[str, Any]) -> str | None:
    """The reply of the first rule matching ``message``, or None (binary messages are never matched)."""
    if isinstance(message, bytes):
        return None
    for rule in rules:
        if rule.pattern.search(message):
            return rule.reply.render(fields)
    return None
