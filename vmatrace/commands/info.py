"""``vmatrace info TRACE``: validate and summarise a trace, or analyse one recorded snapshot."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from vmatrace.base.errors import EXIT_DAMAGED, DamagedInput, VmatraceError, warn
from vmatrace.commands import _args

if TYPE_CHECKING:
    from vmatrace.base.trace import Trace


def add_parser(sub: Any) -> None:
    i = _args.parser(
        sub, "info", help="validate and summarise a trace",
        description="Reads a trace, names anything damaged (exit 3, after reading what is readable) "
                    "or unreadable (exit 1), and summarises it.",
        examples="  vmatrace info trace.vmat\n  vmatrace info trace.vmat --snapshot 3")
    i.add_argument("trace", metavar="TRACE")
    i.add_argument("--snapshot", type=_args.snapshot_id, metavar="ID",
                   help="show recorded snapshot ID (see the list) with its invisible fragmentation")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from vmatrace.base.trace import read_trace
    from vmatrace.report import console, print_json

    t = read_trace(args.trace)
    if args.snapshot is not None:
        try:
            rc = _info_snapshot(t, args.snapshot, as_json=args.json)
        except VmatraceError:
            for w in t.warnings:  # the damage behind the error, too
                warn(w)
            raise
    else:
        kinds = t.events.group_by("kind").len().sort("len", descending=True) if t.events.height else None
        if args.json:
            print_json({
                "meta": t.meta, "events": t.events.height, "snapshots": t.snapshot_index.to_dicts(),
                "kinds": kinds.to_dicts() if kinds is not None else [], "lost": t.losses.to_dicts(),
                "warnings": t.warnings,
            })
        else:
            m = t.meta
            console.print(escape(f"{t.path}: vmatrace trace v{m['format_version']} by {m.get('collector')} on "
                                 f"{m.get('kernel_release')} ({m.get('host')}), {m.get('start_wall')}"))
            console.print(escape(f"  command: {m.get('cmdline') or m.get('comm') or '?'}; pids {m.get('pids')}"))
            console.print(f"  {t.events.height} events, {int(t.losses['count'].sum()) if t.losses.height else 0} lost, "
                          f"{t.snapshot_index.height} snapshots, {t.procs.height} processes, "
                          f"{t.stacks.select('pid', 'stack_id').n_unique() if t.stacks.height else 0} stacks")
            if kinds is not None:
                console.print(escape("  " + ", ".join(f"{k} {n}" for k, n in kinds.iter_rows())))
            for r in t.snapshot_index.sort("snapshot_id").iter_rows(named=True):
                console.print(escape(f"  snapshot {r['snapshot_id']}: PID {r['pid']} {r['reason']}, "
                                     f"{r['vma_count']} VMAs" + (f" ({r['warnings']})" if r["warnings"] else "")))
            for pid in m.get("exit_snapshot_missing") or []:
                console.print(escape(f"  PID {pid}: no exit snapshot (it ended without one the recorder could "
                                     "take: its last layout is not in the trace)"))
            for w in m.get("record_warnings") or []:
                console.print(escape(f"  recording warning: {w}"))
        rc = 0
    for w in t.warnings:
        warn(w)
    return EXIT_DAMAGED if t.warnings else rc


def _info_snapshot(t: Trace, sid: int, *, as_json: bool) -> int:
    """Analyse one recorded snapshot as `snapshot` analyses a live process."""
    from vmatrace.analysis import invisible_fragmentation, snapshot_json
    from vmatrace.base.snapshot import Snapshot
    from vmatrace.report import print_json, render_snapshot

    def damage(table: str) -> str:
        lost = [w.split(":", 1)[0] for w in t.warnings if w.startswith(f"{table}/")]
        return ", ".join(lost[:3]) + (" ..." if len(lost) > 3 else "")

    idx = t.snapshot_index.filter(t.snapshot_index["snapshot_id"] == sid)
    if idx.height == 0:
        have = ", ".join(str(i) for i in t.snapshot_index["snapshot_id"].to_list()) or "none"
        if damage("snapshot_index"):
            raise DamagedInput(f"{t.path}: snapshot {sid} is not in the readable part of the snapshot index "
                               f"(damaged: {damage('snapshot_index')}; readable: {have})")
        raise VmatraceError(f"{t.path} has no snapshot {sid} (it has: {have})")
    row = idx.row(0, named=True)
    frame = t.snapshot(sid)
    if frame.height != row["vma_count"]:
        where = damage("snapshots") or "a missing chunk"
        raise DamagedInput(f"{t.path}: snapshot {sid} is damaged: {frame.height} of its {row['vma_count']} VMAs are "
                           f"readable (the rest were in {where}); it is not analysed")
    snap = Snapshot(pid=row["pid"], t_start_ns=row["t_start_ns"], t_end_ns=row["t_end_ns"], method=row["method"],
                    frame=frame, warnings=row["warnings"].split("; ") if row["warnings"] else [])
    runs = invisible_fragmentation(snap)
    limit = t.meta.get("max_map_count")
    limit = limit if isinstance(limit, int) and limit > 0 else None
    if as_json:
        print_json({"snapshot_id": sid, "reason": row["reason"], **snapshot_json(snap, runs, limit)})
    else:
        print(f"snapshot {sid} of PID {row['pid']} ({row['reason']}), from {t.path}")
        render_snapshot(snap, runs, limit, show_vmas=snap.frame.height <= 400)
    return 0
