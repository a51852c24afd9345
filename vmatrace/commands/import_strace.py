"""``vmatrace import-strace LOG``: a trace from an ``strace -f`` log, for users without root or bcc."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vmatrace.base.errors import EXIT_DAMAGED, EXIT_OK, warn


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "import-strace",
        help="convert strace output into a trace (no root or bcc needed)",
        description=(
            "Convert strace output into a vmatrace trace (no root or bcc needed). Record with\n"
            "  strace -f -y -tt -X raw -e trace=%memory,%process,%file,%desc,%ipc -o LOG PROGRAM ...\n"
            "(-ff -o PREFIX works too: pass every PREFIX.PID file; -k adds stacks). Where no\n"
            "--maps is given for a process, its layout right after each execve is rebuilt from\n"
            "the ELF headers of the executable and its interpreter (docs/strace-import.md)."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("examples:\n"
                "  vmatrace import-strace app.strace -o app.trace\n"
                "  vmatrace import-strace log.* -o app.trace --maps 1234:maps-1234.txt"),
    )
    p.add_argument("logs", metavar="LOG", nargs="+", type=Path, help="strace output file(s)")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="TRACE", help="trace directory to write")
    p.add_argument("--maps", action="append", default=[], metavar="[PID:]FILE",
                   help="a saved /proc/PID/maps text to add as a snapshot (repeatable)")
    p.add_argument("--root", default="/", help="where to find the traced executables (default /)")
    p.add_argument("--force", "-f", action="store_true", help="overwrite TRACE if it exists")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Carry out ``import-strace``."""
    from collectors.strace_import import import_strace

    meta = import_strace(list(args.logs), args.output, maps=args.maps, force=args.force, root=args.root)
    for wmsg in meta["warnings"][:20]:
        warn(wmsg)
    n = meta["event_count"]
    rec = len(meta["reconstructions"])
    print(f"imported {n} events from {meta['strace']['strace_lines']} strace lines "
          f"({len(meta['pids'])} processes, {rec} reconstructed layouts) into {args.output}",
          file=sys.stderr)
    st = meta["strace"]
    if st["unparsed_lines"] or st["unpaired_calls"]:
        warn(f"the log is damaged: {st['unparsed_lines']} lines skipped, {st['unpaired_calls']} calls without "
             "their result: the trace lacks what they held")
        return EXIT_DAMAGED
    return EXIT_OK
