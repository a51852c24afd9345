"""Error types, exit codes and the warning line: what every layer reports to users the same way.

The command line prints an error as one line, ``vmatrace: error: <message>``, and exits with the
error's ``exit_code``; a warning is one line, ``vmatrace: warning: <message>``, on stderr. The exit
codes (documented in the README's table) are:

==== =====================================================================================
code meaning
==== =====================================================================================
0    success
1    error: unreadable or invalid input, a failed operation (nothing complete was produced)
2    usage error (bad arguments, as argparse reports them)
3    damaged input, read as far as it goes: the result stands, with warnings that say what is missing
4    incomplete result: the target went away or failed before the result was complete
130  interrupted (SIGINT); 128+N for another signal that ended vmatrace (141: stdout closed)
==== =====================================================================================
"""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DAMAGED = 3
EXIT_INCOMPLETE = 4
EXIT_INTERRUPTED = 130


class VmatraceError(Exception):
    """A user-facing error with a one-line message (no traceback is shown)."""

    exit_code = EXIT_ERROR


class UsageError(VmatraceError):
    """Arguments that cannot work together (argparse's own errors exit 2 as well)."""

    exit_code = EXIT_USAGE


class DamagedInput(VmatraceError):
    """What was asked for is in the damaged part of an input (the rest was readable)."""

    exit_code = EXIT_DAMAGED


class TargetFailed(VmatraceError):
    """The command to observe could not start (its exec failed): there is no result."""

    exit_code = EXIT_INCOMPLETE


class Interrupted(VmatraceError):
    """SIGINT or SIGTERM before there was anything to keep."""

    exit_code = EXIT_INTERRUPTED


class NoSuchProcess(VmatraceError):
    """The process does not exist (or exited)."""


class AccessDenied(VmatraceError):
    """Reading the process needs privileges we do not have."""


class SnapshotError(VmatraceError, ValueError):
    """A snapshot could not be taken or used: /proc text that does not parse, a frame that lacks a
    column or has overlapping rows. The message says why in one line."""


def warn(message: str) -> None:
    """Print one warning line on stderr (the one way every layer warns users)."""
    print(f"vmatrace: warning: {message}", file=sys.stderr)
