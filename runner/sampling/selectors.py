"""Series selectors of the profile: ``name`` or ``name{label="value", ...}`` (pure: no I/O, no imports that patch).

The profile checks them when it is read, before the run imports gevent, Locust or
prometheus_client; the metrics_url source matches them against a scraped page.
"""

from __future__ import annotations

import re

__all__ = ["parse_selector"]

_SELECTOR = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse_selector(text: str) -> tuple[str, dict[str, str]]:
    """``name`` or ``name{label="value", ...}`` -> (name, labels); ValueError says what is wrong."""
    match = _SELECTOR.match(text)
    if not match:
        raise ValueError(
            f'{text!r} is not a series name such as process_resident_memory_bytes or name{{label="value"}}'
        )
    name, body = match.group(1), match.group(2)
    labels: dict[str, str] = {}
    rest = (body or "").strip()
    while rest:
        label = _LABEL.match(rest)
        if not label:
            raise ValueError(f'{text!r}: cannot read the labels {body!r} (write label="value", comma separated)')
        labels[label.group(1)] = label.group(2).replace('\\"', '"').replace("\\\\", "\\")
        rest = rest[label.end() :].strip()
    return name, labels
