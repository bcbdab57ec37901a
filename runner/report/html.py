"""report.html: one self-contained page (inline CSS and SVG) rendered from Jinja templates."""

from __future__ import annotations

from typing import Any

import jinja2

from ..analysis import Analysis
from ..progress import format_bytes
from ..results import RunRecord
from .charts import memory_chart

__all__ = ["render_report"]

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("runner.report", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
    undefined=jinja2.StrictUndefined,
)
_ENV.filters["bytes"] = format_bytes


def render_report(record: RunRecord, summary: dict[str, Any], analysis: Analysis) -> str:
    """The HTML report of one run."""
    charts = {"memory": memory_chart(record.samples, summary.get("phases", []))}
    return _ENV.get_template("report.html.j2").render(summary=summary, analysis=analysis, charts=charts, profile=record.profile)
