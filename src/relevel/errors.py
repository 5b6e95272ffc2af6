"""Errors a user can fix. The CLI prints them without a traceback and exits with code 2."""

from __future__ import annotations

from pathlib import Path


class RelevelError(Exception):
    """A mistake in the user's input or config; the message says what to fix."""

    exit_code = 2


class InputError(RelevelError):
    """A bad record: names the file, the line (or row) and the field."""

    def __init__(self, path: Path | str, line: int | None, field: str | None, reason: str):
        self.path, self.line, self.field, self.reason = str(path), line, field, reason
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}': {reason}" if field else reason
        super().__init__(f"{where}: {what}")


class ConfigError(RelevelError):
    """A bad config file: names the file and the key."""


class Interrupted(RelevelError):
    """The user pressed Ctrl-C; the message says how to resume."""

    exit_code = 130
