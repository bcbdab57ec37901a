"""Reporters: plain data in, text out. They never open run folders or capture files.

- :func:`render_report` - report.html (Jinja templates, inline SVG charts from :mod:`.charts`);
- :func:`render_junit` - junit.xml (one test case per metric verdict).

:mod:`runner.finish` reads the run folder and the history and writes what these return.
"""

from .html import render_report
from .junit import render_junit

__all__ = ["render_report", "render_junit"]
