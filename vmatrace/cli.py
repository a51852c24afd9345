"""The ``vmatrace`` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vmatrace import __version__
from vmatrace.errors import VmatraceError

if TYPE_CHECKING:
    from collectors.procmaps import Snapshot
    from vmatrace.analysis import Run
    from vmatrace.trace import Trace

PLUGINS = ("collectors.record", "collectors.strace_import", "replay.cli")

EPILOG = """examples:
  vmatrace snapshot $$                 VMAs of this shell and its invisible fragmentation
  vmatrace snapshot 1234 -o s.parquet  save a snapshot as Parquet (or .json)
  sudo vmatrace top -n 5               the five processes with the most VMAs
  vmatrace doctor                      can `record` work on this machine?
  sudo vmatrace record -- python3 -c 'import json'
  vmatrace info trace.vmat             validate and summarise a trace
"""


def _int_in(lo: int, hi: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi], else a one-line usage error naming ``what``."""

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            v = lo - 1
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"not {what}: {s!r}")
        return v

    return parse


_pid = _int_in(1, 2**22, "a PID")  # PID_MAX_LIMIT on 64-bit
_count = _int_in(1, 2**31, "a positive number")
_snapshot_id = _int_in(0, 2**32 - 1, "a snapshot id (0 to 4294967295)")


def cmd_snapshot(args: argparse.Namespace) -> int:
    from collectors.procmaps import read_snapshot
    from vmatrace.analysis import invisible_fragmentation, max_map_count
    from vmatrace.report import print_json, render_snapshot, snapshot_json

    snap = read_snapshot(args.pid, smaps=not args.no_smaps, method=args.method)
    runs = invisible_fragmentation(snap.frame)
    limit = max_map_count()
    if args.output:
        _write_snapshot_file(Path(args.output), snap, runs, limit, force=args.force)
        print(f"wrote {snap.frame.height} VMAs of PID {snap.pid} to {args.output}", file=sys.stderr)
        return 0
    if args.json:
        print_json(snapshot_json(snap, runs, limit))
    else:
        render_snapshot(snap, runs, limit, show_vmas=args.all or snap.frame.height <= 400)
    return 0


def _write_snapshot_file(path: Path, snap: Snapshot, runs: list[Run], limit: int | None, *, force: bool) -> None:
    import json

    from vmatrace.report import snapshot_json
    from vmatrace.safeio import safe_create

    fd = safe_create(path, force=force)
    with os.fdopen(fd, "wb") as f:
        if path.suffix == ".parquet":
            snap.frame.write_parquet(f, compression="zstd")
        else:
            f.write(json.dumps(snapshot_json(snap, runs, limit), indent=1, default=str).encode())


def cmd_top(args: argparse.Namespace) -> int:
    from vmatrace.census import take_census
    from vmatrace.report import print_json, render_census

    c = take_census(args.n)
    if args.json:
        print_json({
            "max_map_count": c.max_map_count, "processes_read": c.seen, "total_vmas": c.total_vmas,
            "skipped": c.skipped, "top": [e.to_dict(c.max_map_count) for e in c.entries],
        })
    else:
        render_census(c)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from vmatrace.doctor import record_can_work, run_checks
    from vmatrace.report import print_json, render_checks

    checks = run_checks()
    ok = record_can_work(checks)
    if args.json:
        print_json({"record_can_work": ok, "checks": [c.__dict__ for c in checks]})
    else:
        render_checks(checks, ok)
    return 0 if ok else 1


def cmd_info(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from vmatrace.report import console, print_json
    from vmatrace.trace import read_trace

    t = read_trace(args.trace)
    if args.snapshot is not None:
        return _info_snapshot(t, args.snapshot, as_json=args.json)
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
            console.print(escape(f"  snapshot {r['snapshot_id']}: PID {r['pid']} {r['reason']}, {r['vma_count']} VMAs"
                                 + (f" ({r['warnings']})" if r["warnings"] else "")))
        for w in t.warnings:
            print(f"vmatrace: warning: {w}", file=sys.stderr)
    return 2 if t.warnings else 0


def _info_snapshot(t: Trace, sid: int, *, as_json: bool) -> int:
    """Analyse one recorded snapshot as `snapshot` analyses a live process."""
    from collectors.procmaps import Snapshot
    from vmatrace.analysis import invisible_fragmentation
    from vmatrace.report import print_json, render_snapshot, snapshot_json

    idx = t.snapshot_index.filter(t.snapshot_index["snapshot_id"] == sid)
    if idx.height == 0:
        have = ", ".join(str(i) for i in t.snapshot_index["snapshot_id"].to_list()) or "none"
        raise VmatraceError(f"{t.path} has no snapshot {sid} (it has: {have})")
    row = idx.row(0, named=True)
    snap = Snapshot(pid=row["pid"], t_start_ns=row["t_start_ns"], t_end_ns=row["t_end_ns"], method=row["method"],
                    frame=t.snapshot(sid), warnings=row["warnings"].split("; ") if row["warnings"] else [])
    runs = invisible_fragmentation(snap.frame)
    limit = t.meta.get("max_map_count")
    limit = limit if isinstance(limit, int) and limit > 0 else None
    if as_json:
        print_json({"snapshot_id": sid, "reason": row["reason"], **snapshot_json(snap, runs, limit)})
    else:
        print(f"snapshot {sid} of PID {row['pid']} ({row['reason']}), from {t.path}")
        render_snapshot(snap, runs, limit, show_vmas=snap.frame.height <= 400)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vmatrace", description="Trace-replay analysis of Linux process address spaces (VMAs).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"vmatrace {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("snapshot", help="the VMAs of a live process and its invisible fragmentation",
                       description="Read /proc/PID/smaps (or maps through PROCMAP_QUERY with --no-smaps) and show "
                                   "every VMA, the VMA count against vm.max_map_count, and runs of adjacent VMAs that "
                                   "look identical in /proc/PID/maps but are separate, each with its reason.",
                       epilog="examples:\n  vmatrace snapshot $$\n  vmatrace snapshot 1234 --json\n"
                              "  vmatrace snapshot 1234 -o snap.parquet\n  vmatrace snapshot 1234 --no-smaps --method procmap_query",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("pid", type=_pid, metavar="PID")
    s.add_argument("--json", action="store_true", help="JSON on stdout")
    s.add_argument("-o", "--output", metavar="FILE", help="write to FILE: Parquet if it ends in .parquet, else JSON")
    s.add_argument("--force", action="store_true", help="overwrite FILE")
    s.add_argument("--all", action="store_true", help="list every VMA even for large address spaces")
    s.add_argument("--no-smaps", action="store_true", help="layout only (no sizes/VmFlags): fastest")
    s.add_argument("--method", choices=("auto", "text", "procmap_query"), default="auto",
                   help="how to read the layout with --no-smaps (default: PROCMAP_QUERY where available)")
    s.set_defaults(func=cmd_snapshot)

    t = sub.add_parser("top", help="processes ranked by VMA count, with invisible fragmentation",
                       description="A system-wide census: processes ranked by VMA count, their share of "
                                   "vm.max_map_count, invisible-fragmentation extra VMAs and the worst region. As "
                                   "root it sees every process, otherwise only yours, and says what it skipped.",
                       epilog="examples:\n  sudo vmatrace top\n  vmatrace top -n 3 --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("-n", type=_count, default=10, metavar="N", help="how many processes to list and analyse (10)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_top)

    d = sub.add_parser("doctor", help="check that this machine can record; print the fix for what is missing",
                       description="Checks privileges, bcc, kernel headers, tracefs, tracepoints, BTF, PROCMAP_QUERY "
                                   "and VM sysctls. Exit status 0 only when `vmatrace record` can work.",
                       epilog="example:\n  vmatrace doctor", formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_doctor)

    i = sub.add_parser("info", help="validate and summarise a trace",
                       description="Reads a trace, names anything damaged (exit 2, after reading what is readable) "
                                   "or unreadable (exit 1), and summarises it.",
                       epilog="examples:\n  vmatrace info trace.vmat\n  vmatrace info trace.vmat --snapshot 3",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("trace", metavar="TRACE")
    i.add_argument("--snapshot", type=_snapshot_id, metavar="ID",
                   help="show recorded snapshot ID (see the list) with its invisible fragmentation")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    for mod in PLUGINS:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):
                continue  # that capability is not built yet
            raise
        add = getattr(m, "add_parser", None)
        if add is not None:
            add(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VmatraceError as e:
        print(f"vmatrace: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `vmatrace ... | head`: stdout closed; exit quietly like other Unix tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
