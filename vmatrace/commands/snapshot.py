"""``vmatrace snapshot PID``: the VMAs of a live process and its invisible fragmentation."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from vmatrace.base.errors import EXIT_INCOMPLETE
from vmatrace.commands import _args

if TYPE_CHECKING:
    from pathlib import Path

    from vmatrace.analysis import Run
    from vmatrace.base.snapshot import Snapshot


def add_parser(sub: Any) -> None:
    s = _args.parser(
        sub, "snapshot", help="the VMAs of a live process and its invisible fragmentation",
        description="Read /proc/PID/smaps (or maps through PROCMAP_QUERY with --no-smaps) and show "
                    "every VMA, the VMA count against vm.max_map_count, and runs of adjacent VMAs that "
                    "look identical in /proc/PID/maps but are separate, each with its reason.",
        examples="  vmatrace snapshot $$\n  vmatrace snapshot 1234 --json\n"
                 "  vmatrace snapshot 1234 -o snap.parquet\n"
                 "  vmatrace snapshot 1234 --no-smaps --method procmap_query\n"
                 "  sudo vmatrace snapshot 1234 --deep   # anon_vma, fork child, pgoff, open file: certain")
    s.add_argument("pid", type=_args.pid, metavar="PID")
    s.add_argument("--json", action="store_true", help="JSON on stdout")
    _args.add_output(s, "write to FILE: Parquet if it ends in .parquet, else JSON")
    s.add_argument("--all", action="store_true", help="list every VMA even for large address spaces")
    s.add_argument("--no-smaps", action="store_true", help="layout only (no sizes/VmFlags): fastest")
    s.add_argument("--method", choices=("auto", "text", "procmap_query"), default="auto",
                   help="how to read the layout with --no-smaps (default: PROCMAP_QUERY where available)")
    s.add_argument("--deep", action="store_true",
                   help="read the hidden VMA state (anon_vma identity, fork child, anon pgoff, open file, "
                        "close hook) with a BPF task_vma iterator and explain invisible fragmentation "
                        "with certainty; needs root, bcc and kernel BTF (vmatrace doctor). No sizes.")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from collectors.procmaps import read_snapshot
    from vmatrace.analysis import invisible_fragmentation, max_map_count, snapshot_json_text

    if args.deep:
        if args.no_smaps or args.method != "auto":
            from vmatrace.base.errors import UsageError

            raise UsageError("--deep reads the layout itself: it takes neither --no-smaps nor --method")
        from collectors.deep import DeepCollector

        with DeepCollector() as deep:
            snap = deep.snapshot(args.pid)
    else:
        snap = read_snapshot(args.pid, smaps=not args.no_smaps, method=args.method)
    runs = invisible_fragmentation(snap)
    limit = max_map_count()
    if args.output:
        from pathlib import Path

        _write_snapshot_file(Path(args.output), snap, runs, limit, force=args.force)
        print(f"wrote {snap.height} VMAs of PID {snap.pid} to {args.output}", file=sys.stderr)
    elif args.json:
        sys.stdout.write(snapshot_json_text(snap, runs, limit))
        sys.stdout.flush()
    else:
        from vmatrace.report import render_snapshot

        render_snapshot(snap, runs, limit, show_vmas=args.all or snap.height <= 400,
                        hide_incomplete=True)
    if not snap.complete:
        # one line, also after --json (whose "complete" is false): the count above is not the
        # process's, it is what was read before the process went away
        why = next(w for w in snap.warnings if w.startswith("incomplete"))
        print(f"vmatrace: error: the snapshot is {why}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0


def _write_snapshot_file(path: Path, snap: Snapshot, runs: list[Run], limit: int | None, *, force: bool) -> None:
    from vmatrace.analysis import snapshot_json_text
    from vmatrace.base.safeio import safe_create

    fd = safe_create(path, force=force)
    with os.fdopen(fd, "wb") as f:
        if path.suffix == ".parquet":
            snap.frame.write_parquet(f, compression="zstd")
        else:
            f.write(snapshot_json_text(snap, runs, limit).encode())
