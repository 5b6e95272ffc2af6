"""Errors a user can fix. The CLI prints them without a traceback and exits with code 2."""

from __future__ import annotations

import errno
from pathlib import Path

# disk full or over quota, a file over the size limit, no permission, a read-only file system
DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
               errno.EFBIG: "the file is over the size limit", errno.EACCES: "no permission to write there",
               errno.EPERM: "no permission to write there", errno.EROFS: "the file system is read-only"}


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


class DiskError(RelevelError):
    """Writing an output failed for a reason outside relevel (full disk, permissions): names the path."""

    @classmethod
    def from_os_error(cls, exc: OSError, resume_command: str) -> DiskError:
        path = exc.filename or "an output file"
        return cls(f"{path}: {DISK_ERRNOS[exc.errno]} ({exc.strerror}). Committed chunks are kept: fix that, "
                   f"then resume with: {resume_command}")


class Interrupted(RelevelError):
    """The user pressed Ctrl-C; the message says how to resume."""

    exit_code = 130
