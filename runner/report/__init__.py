"""Reporters: plain data in, text out. They never open run folders or capture files."""

from .html import render_report

__all__ = ["render_report"]
