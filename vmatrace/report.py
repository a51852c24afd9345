"""Terminal rendering (rich) and JSON shaping for the foundation commands."""

from __future__ import annotations

import json
import sys
from itertools import repeat
from operator import sub
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vmatrace.analysis import Run, cause_counts, map_count, reason_counts

if TYPE_CHECKING:
    from vmatrace.base.snapshot import Snapshot
    from vmatrace.census import Census
    from vmatrace.doctor import Check


class _Console(Console):
    """rich's Console, except that a closed stdout (``vmatrace ... | head``) raises
    BrokenPipeError for the CLI to end quietly with 128 + SIGPIPE (rich itself exits 1)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


console = _Console(highlight=False)
err_console = _Console(stderr=True, highlight=False)


def hexa(x: int) -> str:
    return f"{x:x}"


def human(n: int) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n}{unit}" if unit == "B" else f"{n:.0f}{unit}" if n >= 10 else f"{n:.1f}{unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")


def render_snapshot(snap: Snapshot, runs: list[Run], limit: int | None, *, show_vmas: bool,
                    hide_incomplete: bool = False) -> None:
    """The VMA table (``show_vmas``), the count, the warnings (``hide_incomplete``: not the one
    that says the read is incomplete, which the caller reports) and the invisible fragmentation."""
    n = snap.height
    if show_vmas and snap.deep:
        _render_deep_vmas(snap, runs)
    elif show_vmas:
        _write_vma_table(snap, runs)
    share = f" ({100 * map_count(snap) / limit:.2f}% of vm.max_map_count={limit})" if limit else ""
    console.print(f"[bold]{n}[/] VMAs{share}")
    for w in snap.warnings:
        if not (hide_incomplete and w.startswith("incomplete")):
            err_console.print(f"[yellow]warning:[/] {escape(w)}")
    extra = sum(r.extra_vmas for r in runs)
    if not runs:
        console.print("invisible fragmentation: none (no adjacent VMAs that look identical in /proc/PID/maps)")
        return
    rc = reason_counts(runs)
    console.print(f"invisible fragmentation: [bold]{extra}[/] extra VMAs in {len(runs)} runs "
                  f"(vmflags {rc['vmflags']}, file {rc['file']}, anon_vma {rc['anon_vma']}"
                  + (f", unknown {rc['unknown']}: no VmFlags read" if rc["unknown"] else "")
                  + (f", other {rc['other']}" if rc.get("other") else "") + ")")
    if snap.deep:
        cc = cause_counts(runs)
        console.print("proven causes (deep snapshot): "
                      + ", ".join(f"{c} {k}" for c, k in sorted(cc.items(), key=lambda kv: -kv[1])))
    t = Table(show_edge=False, pad_edge=False)
    for col in ("start", "end", "VMAs", "perms", "path", "splits: address, reason"):
        whole = col in ("start", "end", "VMAs", "perms")  # addresses stay whole when narrow or piped
        t.add_column(col, no_wrap=whole, min_width=12 if col in ("start", "end") else None)
    for run in sorted(runs, key=lambda r: -r.vmas)[:50]:
        details = "\n".join(f"{s.addr:x}: {escape(s.detail)}" for s in run.splits[:8])
        if len(run.splits) > 8:
            details += f"\n… {len(run.splits) - 8} more"
        t.add_row(f"{run.start:x}", f"{run.end:x}", str(run.vmas), run.perms, escape(run.path or "[anon]"), details)
    console.print(t)


def _write_vma_table(snap: Snapshot, runs: list[Run]) -> None:
    """Every VMA as plain aligned text in one write: fast for 30,000 rows, and addresses stay whole
    however narrow the terminal and when the output is piped. ``*`` marks a VMA that starts at a
    boundary of invisible fragmentation."""
    split_at = {s.addr for r in runs for s in r.splits}
    c = snap.columns
    starts, ends = c["start"], c["end"]
    sizes = list(map(sub, ends, starts))
    size_text = {n: human(n) for n in set(sizes)}  # sizes repeat: each formatted once
    cols = [
        ("start", [f"{'*' if s in split_at else ''}{s:x}" for s in starts], True),
        ("end", [f"{e:x}" for e in ends], True),
        ("size", list(map(size_text.__getitem__, sizes)), True),
        ("perms", c["perms"], False),
        ("offset", [f"{o:x}" for o in c["offset"]], True),
        ("rss", ["" if v is None else f"{v}k" for v in c["rss_kb"]], True),
        ("anon", ["" if v is None else f"{v}k" for v in c["anonymous_kb"]], True),
        ("vmflags", [v or "" for v in c["vmflags"]], False),
        ("path", [v or "" for v in c["path"]], False),
    ]
    widths = [max([len(name), *map(len, vals)]) for name, vals, _ in cols]
    lines = [f"PID {snap.pid}: {snap.height} VMAs ({snap.method})"
             + ("; * marks a boundary of invisible fragmentation" if split_at else "")]
    lines.append(" ".join((name.rjust(w) if right else name.ljust(w)) if i < len(cols) - 1 else name
                          for i, ((name, _, right), w) in enumerate(zip(cols, widths, strict=True))))
    fmt_cols = [list(map(str.rjust if right else str.ljust, vals, repeat(w)))
                for (_, vals, right), w in zip(cols[:-1], widths[:-1], strict=True)]
    lines += map(" ".join, zip(*fmt_cols, cols[-1][1], strict=True))
    console.file.write("\n".join(lines) + "\n")
    console.file.flush()


def render_census(c: Census) -> None:
    t = Table(title="VMAs per process", show_edge=False, pad_edge=False)
    for col, just in (("PID", "right"), ("COMM", "left"), ("USER", "left"), ("VMAs", "right"),
                      ("% max", "right"), ("invisible", "right"), ("reasons f/F/a", "left"), ("worst region", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for e in c.entries:
        share = f"{100 * e.vmas / c.max_map_count:.2f}" if c.max_map_count else "?"
        reasons = f"{e.reasons['vmflags']}/{e.reasons['file']}/{e.reasons['anon_vma']}" if e.reasons else ""
        worst = ""
        if e.worst is not None:
            worst = escape(f"{e.worst.start:x}-{e.worst.end:x} {e.worst.vmas} VMAs {e.worst.path or '[anon]'}")
        t.add_row(str(e.pid), escape(e.comm), escape(e.user or "?"), str(e.vmas), share,
                  "" if e.invisible_extra is None else str(e.invisible_extra), reasons, worst)
    console.print(t)
    console.print(f"{c.seen} processes with an address space, {c.total_vmas} VMAs in all; vm.max_map_count={c.max_map_count}. "
                  "reasons: f=VmFlags differ, F=file/offset, a=anon_vma (invisible in /proc)")
    for why, k in sorted(c.skipped.items()):
        console.print(f"skipped {k}: {escape(why)}")


def render_checks(checks: list[Check], ok: bool) -> None:
    t = Table(show_edge=False, pad_edge=False)
    for col in ("", "check", "state", "fix"):
        t.add_column(col)
    for c in checks:
        mark = "[green]ok[/]" if c.ok else ("[red]FAIL[/]" if c.required else "[yellow]note[/]")
        t.add_row(mark, c.name, escape(c.detail), "" if c.ok else escape(c.fix or ""))
    console.print(t)
    console.print("[green]record can work here[/]" if ok else "[red]record cannot work here yet[/]: see the fixes above")


def _render_deep_vmas(snap: Snapshot, runs: list[Run]) -> None:
    """The VMA table of a deep snapshot: the hidden state instead of sizes."""
    t = Table(title=f"PID {snap.pid}: {snap.frame.height} VMAs (deep: {snap.method})", show_edge=False,
              pad_edge=False)
    for col, just in (("start", "right"), ("end", "right"), ("size", "right"), ("perms", "left"),
                      ("pgoff", "right"), ("file", "right"), ("anon_vma", "right"), ("avc", "right"),
                      ("vmflags", "left"), ("path", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    split_at = {s.addr for r in runs for s in r.splits}
    for r in snap.frame.iter_rows(named=True):
        mark = "[yellow]" if r["start"] in split_at else ""
        extra = "".join(f" {k}" for k, on in (("close", r["close_hook"]), ("fork-child", r["fork_child"]),
                                              ("mpol", r["mempolicy"]), ("uffd", r["uffd"])) if on)
        t.add_row(f"{mark}{r['start']:x}", f"{r['end']:x}", human(r["end"] - r["start"]), r["perms"],
                  f"{r['pgoff']:x}", "" if r["file_id"] is None else f"#{r['file_id']}",
                  "" if r["anon_vma_id"] is None else f"#{r['anon_vma_id']}", str(r["avc"]),
                  (r["vmflags"] or "") + extra, escape(r["path"] or ""))
    console.print(t)
