"""The ``vmatrace`` command line: the parser built from the static verb list, and the one error funnel.

Every error a library raises reaches :func:`main` and leaves as one line on stderr with the exit
code of the table in ``vmatrace.base.errors`` (and the README); no traceback is shown for any of
them. An unexpected exception (a bug) is one line and exit 1 too; ``VMATRACE_DEBUG=1`` lets its
traceback through.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from vmatrace import __version__
from vmatrace.base.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, VmatraceError
from vmatrace.commands import COMMANDS

EPILOG = """examples:
  vmatrace snapshot $$                 VMAs of this shell and its invisible fragmentation
  vmatrace snapshot 1234 -o s.parquet  save a snapshot as Parquet (or .json)
  sudo vmatrace top -n 5               the five processes with the most VMAs
  vmatrace doctor                      can `record` work on this machine?
  sudo vmatrace record -o t.vmat -- python3 -c 'import json'
  vmatrace replay t.vmat               the model against the real kernel, the anon-merge fix counted
  vmatrace report t.vmat -o t.html     the same as a terminal summary and one offline HTML file
  vmatrace info t.vmat                 validate and summarise a trace

exit status: 0 ok, 1 error, 2 usage, 3 damaged input (read as far as it goes),
             4 incomplete result, 130 interrupted
"""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (the usage is one ``--help`` away), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def verb_name(module: str) -> str:
    """The verb a module of :data:`COMMANDS` registers (``import_strace`` -> ``import-strace``)."""
    return module.replace("_", "-")


def _verb(argv: Sequence[str]) -> str | None:
    """The verb named on the command line, if it is one: its parser is then the only one built
    (the others' modules are not even imported); anything else builds them all."""
    for a in argv:
        if a in ("-h", "--help"):
            return None  # the top-level help lists every verb
        if not a.startswith("-"):
            return a if a in {verb_name(m) for m in COMMANDS} else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    wanted = _verb(sys.argv[1:] if argv is None else argv)
    p = _Parser(
        prog="vmatrace", description="Trace-replay analysis of Linux process address spaces (VMAs).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"vmatrace {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if wanted is None or verb_name(name) == wanted:
            importlib.import_module(f"vmatrace.commands.{name}").add_parser(sub)
    return p


def _os_error_line(e: OSError) -> str:
    what = e.strerror or errno.errorcode.get(e.errno or 0, type(e).__name__)
    return f"{e.filename}: {what}" if e.filename else what


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while the verbs load: no traceback either
        return EXIT_INTERRUPTED
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except VmatraceError as e:
        print(f"vmatrace: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `vmatrace ... | head`: stdout closed; exit quietly like other Unix tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as e:
        print(f"vmatrace: error: {_os_error_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except RecursionError:
        print("vmatrace: error: the input is nested too deeply to read", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print("vmatrace: error: out of memory", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:
        from replay.errors import ReplayError  # imported only here: it loads the model package

        if isinstance(e, ReplayError):
            print(f"vmatrace: error: the model refused the input: {e}", file=sys.stderr)
            return EXIT_ERROR
        if os.environ.get("VMATRACE_DEBUG") == "1":
            raise
        # anything else is a bug of vmatrace (or of the model): still one line and exit 1
        what = " ".join(str(e).split()) or "(no message)"
        print(f"vmatrace: error: internal error, please report it: {type(e).__name__}: {what} "
              "(VMATRACE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_ERROR
