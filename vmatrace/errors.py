"""The one error type users see: the CLI prints ``vmatrace: error: <message>`` and exits non-zero."""

from __future__ import annotations


class VmatraceError(Exception):
    """A user-facing error with a one-line message (no traceback is shown)."""

    exit_code = 1


class NoSuchProcess(VmatraceError):
    """The process does not exist (or exited)."""


class AccessDenied(VmatraceError):
    """Reading the process needs privileges we do not have."""
