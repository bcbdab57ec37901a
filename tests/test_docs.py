"""The documentation covers the contracts: every profile key and every command-line option
appears in docs/ (or in profiles/smoke.toml, which documents every key with a comment)."""

from __future__ import annotations

import argparse
from pathlib import Path

from runner.cli import build_parser
from runner.profile import _SCHEMA, _TOP_LEVEL

ROOT = Path(__file__).resolve().parent.parent


def _documentation() -> str:
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages, "docs/ has no pages"
    return "\n".join(
        p.read_text(encoding="utf-8") for p in [*pages, ROOT / "README.md", ROOT / "profiles" / "smoke.toml"]
    )


def test_every_profile_key_is_documented() -> None:
    text = _documentation()
    missing = [f"{section}.{key}" for section, keys in _SCHEMA.items() for key in keys if key not in text]
    missing += [key for key in _TOP_LEVEL if key not in text]
    assert not missing, f"profile keys not documented in docs/ or profiles/smoke.toml: {missing}"


def test_every_command_line_option_is_documented() -> None:
    text = _documentation()
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sub in subparsers.choices.items():
        assert f"soak {name}" in text, f"`soak {name}` is not documented"
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:  # internal (set by soak itself)
                continue
            for option in action.option_strings:
                if option.startswith("--") and option != "--help" and option not in text:
                    missing.append(f"soak {name} {option}")
    assert not missing, f"command-line options not documented in docs/: {missing}"


def test_readme_stays_short_and_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 220, "README.md teaches the first minutes; depth goes to docs/"
    for line in readme.splitlines():
        for part in line.split("](")[1:]:
            link = part.split(")")[0].split("#")[0]
            if link and not link.startswith("http"):
                assert (ROOT / link).exists(), f"README links to {link}, which does not exist"
