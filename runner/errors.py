"""The error tree of soak-runner; every error knows the exit code it maps to.

Only :func:`runner.cli.main` turns these into exit codes and one-line messages.

    SoakError                   base class, exit 3 unless a subclass says otherwise
    ├── UsageError              bad command line or profile (exit 2)
    │   └── ProfileError        the profile file is missing, not TOML, or invalid
    ├── RunError                the run could not be carried out (exit 3)
    │   ├── TargetError         the target did not start, never became ready, or died
    │   └── LoadError           the load generator failed
    └── RunFolderError          a saved run folder is missing or unreadable (exit 2)

Exit codes (a contract, see README): 0 pass, 1 leak, 2 usage or profile error,
3 run error, 4 inconclusive.
"""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = [
    "did_you_mean",
    "EXIT_PASS",
    "EXIT_LEAK",
    "EXIT_USAGE",
    "EXIT_RUN_ERROR",
    "EXIT_INCONCLUSIVE",
    "SoakError",
    "UsageError",
    "ProfileError",
    "RunError",
    "TargetError",
    "LoadError",
    "RunFolderError",
]

EXIT_PASS = 0
EXIT_LEAK = 1
EXIT_USAGE = 2
EXIT_RUN_ERROR = 3
EXIT_INCONCLUSIVE = 4


class SoakError(Exception):
    """Base class of every error soak-runner raises on purpose."""

    exit_code: int = EXIT_RUN_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(SoakError):
    """The command line or its arguments are wrong."""

    exit_code = EXIT_USAGE


class ProfileError(UsageError):
    """The profile is missing, is not TOML, or holds an invalid value."""


class RunError(SoakError):
    """The soak could not be carried out."""

    exit_code = EXIT_RUN_ERROR


class TargetError(RunError):
    """The target did not start, never accepted a WebSocket handshake, or died."""

    def __init__(self, message: str, *, hint: str | None = None, log_tail: list[str] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.log_tail = log_tail or []


class LoadError(RunError):
    """The load generator failed."""


class RunFolderError(UsageError):
    """A saved run folder is missing, or has no samples to analyse."""


def did_you_mean(word: str, valid: Iterable[str], *, what: str = "valid keys") -> str:
    """The hint for an unknown name: the closest valid one, else the list of valid ones."""
    choices = list(valid)
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"did you mean {match[0]!r}?" if match else f"{what}: {', '.join(sorted(choices))}"
