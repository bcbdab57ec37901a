"""meta.json: the run folder's record of what was run, written at the start and completed as the run learns.

The one writer of ``meta.json``: every part is redacted (secrets never reach the folder) and
written atomically, so a reader never sees half a file.
"""

from __future__ import annotations

import json
from typing import Any

from ..redact import redact_data
from ..results import RunFolder, write_json

__all__ = ["write_meta", "update_meta"]


def write_meta(folder: RunFolder, meta: dict[str, Any]) -> None:
    """Write ``meta.json`` anew (at the start of a run)."""
    write_json(folder.meta, redact_data(meta))


def update_meta(folder: RunFolder, **parts: Any) -> None:
    """Set top-level ``parts`` of ``meta.json`` (``target=...``, ``sampling=...``), keeping the rest."""
    meta = json.loads(folder.meta.read_text(encoding="utf-8"))
    meta.update(parts)
    write_meta(folder, meta)
