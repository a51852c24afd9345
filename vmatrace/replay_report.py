"""Reports of a trace replay: the terminal summary (rich), attribution to call sites and ELF
segments, and one self-contained HTML file (plotly, its JavaScript inlined: no network).

This module reads :mod:`replay.results` (plain data) and the trace; it never sees the engine.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import polars as pl
from rich.markup import escape
from rich.table import Table

from replay.results import EXPLAINED, HIDDEN_KINDS, KINDS, ReplayResult, to_json
from vmatrace.base.trace import Trace
from vmatrace.report import console

# kinds whose new VMAs are new mappings; the others make VMAs by splitting existing ones
_CREATING = frozenset({"mmap", "brk", "mremap", "shmat"})
_LIBC_LIKE = ("libc.so", "ld-linux", "libpthread", "libffi")


@dataclass
class Attribution:
    created: list[tuple[str, int]]  # (call site, VMAs) by new mappings
    splits: list[tuple[str, int]]  # (call site, VMAs) by splits
    segments: list[tuple[str, int]]  # (ELF segment kind, VMAs) in the main process's last snapshot
    relro_pairs: int  # RELRO pieces with `ac` next to a read-only segment without it
    stacks_recorded: bool
    fix_sites: list[tuple[str, int]]  # (call site, VMAs saved) of the events the 6.16 fix merged


def _call_sites(trace: Trace) -> dict[tuple[int, int], str]:
    """(pid, stack_id) -> the innermost frame outside libc and ld.so, as ``symbol (module)``."""
    st = trace.stacks
    if st.height == 0:
        return {}
    out: dict[tuple[int, int], str] = {}
    for (pid, sid), g in st.sort("depth").group_by(["pid", "stack_id"], maintain_order=True):
        frames = list(zip(g["symbol"].to_list(), g["module"].to_list(), strict=True))
        # the innermost frame with a name, in a module that is neither libc, ld.so nor libffi, nor
        # anonymous memory (a JIT, a trampoline on the stack)
        pick = next(((s, m) for s, m in frames if m and s and s != "[unknown]" and not m.startswith("[")
                     and not any(x in m for x in _LIBC_LIKE)), None)
        s, m = pick or (frames[0] if frames else ("?", "?"))
        mod = (m or "?").rsplit("/", 1)[-1]
        out[(int(pid), int(sid))] = f"{s or '?'} ({mod})"
    return out


def attribute(trace: Trace, result: ReplayResult, top: int = 10) -> Attribution:
    """VMAs created and splits by call site (recording profile), VMAs by ELF segment."""
    sites = _call_sites(trace)
    created: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    run = result.profiles[0] if result.profiles else None
    if run is not None:
        # the events after which the judged model's count grew, looked up by seq in one join
        # (no Python object per event of the trace)
        grew_seq: list[int] = []
        grew_by: list[int] = []
        for p in run.processes:
            vals = p.count_values
            for k in range(1, len(vals)):
                if vals[k] > vals[k - 1]:
                    grew_seq.append(p.count_seqs[k])
                    grew_by.append(vals[k] - vals[k - 1])
        if grew_seq:
            grew = pl.DataFrame({"seq": grew_seq, "n": grew_by}, schema={"seq": pl.UInt64, "n": pl.Int64})
            rows = grew.join(trace.events.select("seq", "pid", "kind", "stack_id"), on="seq", how="inner")
            for pid, kind, sid, n in rows.select("pid", "kind", "stack_id", "n").iter_rows():
                site = sites.get((pid, sid), f"[{kind}, no stack]") if sid is not None else f"[{kind}, no stack]"
                (created if kind in _CREATING else splits)[site] += n
    fix_sites: Counter[str] = Counter()
    for e in result.fix_events:
        site = sites.get((e.pid, e.stack_id), f"[{e.kind}, no stack]") if e.stack_id is not None \
            else f"[{e.kind}, no stack]"
        fix_sites[site] += e.saved
    segs, pairs = _segments(trace, result)
    return Attribution(created.most_common(top), splits.most_common(top), segs, pairs,
                       trace.stacks.height > 0, fix_sites.most_common(top))


def _segments(trace: Trace, result: ReplayResult) -> tuple[list[tuple[str, int]], int]:
    """Classify the file-backed VMAs of the main process's last snapshot by the ELF segment
    they map (PT_LOAD by permissions, and the PT_GNU_RELRO piece ld.so made read-only)."""
    from collectors.elf import read_elf

    real = result.real_process(result.main_pid) if result.main_pid is not None else None
    if real is None or not real.snapshots:
        return [], 0
    frame = trace.snapshot(real.snapshots[-1][0])
    counts: Counter[str] = Counter()
    pairs = 0
    rows = frame.to_dicts()
    infos: dict[str, Any] = {}
    for k, r in enumerate(rows):
        path = r["path"]
        if not path or not path.startswith("/") or not r["inode"]:
            continue
        if path not in infos:
            try:
                infos[path] = read_elf(path)
            except Exception:
                infos[path] = None
        info = infos[path]
        if info is None:
            counts["not ELF (data file)"] += 1
            continue
        off = int(r["offset"])
        seg = next((s for s in info.segments if (s.offset & ~0xFFF) <= off < s.offset + max(s.filesz, 1)), None)
        if seg is None:
            counts["ELF, no PT_LOAD at this offset"] += 1
            continue
        bias = int(r["start"]) - ((seg.vaddr & ~0xFFF) + (off - (seg.offset & ~0xFFF)))
        kind = f"PT_LOAD {seg.perms[:3]}"
        if info.relro is not None:
            lo = bias + info.relro[0]
            hi = bias + info.relro[0] + info.relro[1]
            if int(r["start"]) >= (lo & ~0xFFF) and int(r["end"]) <= ((hi + 0xFFF) & ~0xFFF) and r["perms"][1] == "-" \
                    and seg.perms[1] == "w":
                kind = "PT_GNU_RELRO (made read-only by ld.so)"
                vmf = (r.get("vmflags") or "").split()
                prevr = rows[k - 1] if k else None
                if ("ac" in vmf and prevr is not None and prevr["end"] == r["start"]
                        and prevr["path"] == path and prevr["perms"] == r["perms"]
                        and "ac" not in (prevr.get("vmflags") or "").split()):
                    pairs += 1
        counts[kind] += 1
    return counts.most_common(), pairs


# ---------------------------------------------------------------------------------------------
# Terminal


_KIND_TITLES = {"fragmented": "fragmented", "merged": "merged", "other": "other", "anon_vma": "anon_vma",
                "fork_child": "fork child"}
_KIND_MARKS = {"fragmented": "F", "merged": "M", "other": "O", "anon_vma": "A", "fork_child": "C"}


def _shown_kinds(result: ReplayResult) -> tuple[str, ...]:
    """The divergence kinds to show: the hidden-state ones only where deep snapshots were compared."""
    if result.deep_snapshots_compared or any(d.kind in HIDDEN_KINDS for pr in result.profiles
                                             for p in pr.processes for d in p.divergences):
        return KINDS
    return tuple(k for k in KINDS if k not in HIDDEN_KINDS)


def render_terminal(result: ReplayResult, att: Attribution | None = None, *, divergences: int = 15) -> None:
    m = result.meta
    console.print(escape(f"replay of {result.trace}: {result.events} events, {result.lost_events} lost, "
                         f"kernel {m.get('kernel_release')}, {len(result.real)} processes"))
    if result.lost_events:
        console.print(f"[bold red]{result.lost_events} events were lost while recording: the figures "
                      "are incomplete between each loss and the next snapshot[/]")
    main = result.real_process(result.main_pid) if result.main_pid is not None else None
    t = Table(title=f"main process {result.main_pid} ({main.comm if main else '?'}): VMAs and divergences "
                    "(all processes)", title_justify="left")
    kinds = _shown_kinds(result)
    for col in ("profile", "final VMAs", "peak VMAs", *(_KIND_TITLES[k] for k in kinds), "unexplained",
                "result mismatches", "resyncs"):
        t.add_column(col, justify="left" if col == "profile" else "right")
    t.add_row("real kernel", str(main.final_vma_count if main else "-"), str(main.peak_vma_count if main else "-"),
              *([""] * len(kinds)), "", "", "")
    for pr in result.profiles:
        mp = pr.process(result.main_pid) if result.main_pid is not None else None
        dc = pr.divergence_counts()
        unexplained = str(sum(not d.explained for p in pr.processes for d in p.divergences)) if pr.judged \
            else "free-running"
        t.add_row(escape(pr.label), str(mp.final_vma_count if mp else "-"), str(mp.peak_vma_count if mp else "-"),
                  *(str(dc[k]) for k in kinds), unexplained,
                  str(sum(len(p.mismatches) for p in pr.processes)), str(sum(p.resyncs for p in pr.processes)))
    console.print(t)
    if result.deep_snapshots_compared:
        console.print(f"{result.deep_snapshots_compared} deep snapshots compared: anon_vma sharing and fork-child "
                      "status checked VMA by VMA (kinds anon_vma, fork child)")
    if result.fix_pair:
        ft = Table(title=f"the 6.16 anon-merge fix (879bca0a2c4f): {escape(result.fix_pair[0])} vs "
                         f"{escape(result.fix_pair[1])}", title_justify="left")
        for col in ("pid", "comm", "without fix", "with fix", "saved (final)", "saved (peak)",
                    "events merged by the fix", "fork-child boundaries"):
            ft.add_column(col, justify="right")
        shown = 0
        for f in result.fix:
            rp = result.real_process(f.pid)
            if f.pid != result.main_pid and not (f.saved_peak or f.events_merged_by_fix or f.fork_child_boundaries):
                continue
            shown += 1
            ft.add_row(str(f.pid), escape(rp.comm if rp else ""), str(f.without_fix), str(f.with_fix),
                       str(f.saved_final), str(f.saved_peak), str(f.events_merged_by_fix), str(f.fork_child_boundaries))
        tot = to_json(result, details=False)["anon_merge_fix"]["all_processes"]
        ft.add_row("all", f"{len(result.fix)} processes", str(tot["without_fix"]), str(tot["with_fix"]),
                   str(tot["saved_final"]), str(tot["saved_peak"]), str(tot["events_merged_by_fix"]),
                   str(tot["fork_child_boundaries"]))
        console.print(ft)
    if att is not None:
        for title, rows in (("VMAs created by call site", att.created), ("splits by call site", att.splits),
                            ("VMAs the 6.16 fix merged, by call site", att.fix_sites),
                            ("VMAs of the main process by ELF segment", att.segments)):
            if rows:
                at = Table(title=title, title_justify="left")
                at.add_column("where")
                at.add_column("VMAs", justify="right")
                for k, n in rows[:10]:
                    at.add_row(escape(k), str(n))
                console.print(at)
        if att.relro_pairs:
            console.print(f"{att.relro_pairs} RELRO pieces keep `ac` (VM_ACCOUNT) next to a read-only segment "
                          "without it: try --what-if merge_ignores_account=true")
        if not att.stacks_recorded:
            console.print("(no stacks in the trace: record with --stacks to attribute VMAs to call sites)")
    divs = [(pr.label, d) for pr in result.profiles[:1] for p in pr.processes for d in p.divergences]
    if divs:
        dt = Table(title=f"divergences under {escape(result.profiles[0].label)} (first {divergences})",
                   title_justify="left")
        for col in ("pid", "kind", "region", "cause", "detail", "events"):
            dt.add_column(col)
        for _label, d in divs[:divergences]:
            dt.add_row(str(d.pid), d.kind, f"{d.start:x}-{d.end:x}", escape(d.cause), escape(d.detail),
                       " ".join(str(s) for s in d.events[-4:]) + (f" (+{d.events_total - 4})" if d.events_total > 4 else ""))
        console.print(dt)
    for w in result.warnings:
        console.print(escape(f"note: {w}"))


# ---------------------------------------------------------------------------------------------
# HTML


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def render_html(trace: Trace, result: ReplayResult, att: Attribution, max_map_count: int | None) -> str:
    """One self-contained HTML page: plotly's JavaScript is inlined once, no request leaves it."""
    import plotly.graph_objects as go

    figs: list[tuple[str, Any]] = []
    main = result.main_pid
    kinds = _shown_kinds(result)
    # 1. VMA count over time
    fig = go.Figure()
    peak = 0
    for pr in result.profiles:
        p = pr.process(main) if main is not None else None
        if p is None or not p.count_seqs:
            continue
        xs, ys = _downsample(list(p.count_seqs), list(p.count_values))
        peak = max(peak, max(ys))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=pr.label, line={"shape": "hv"}))
    real = result.real_process(main) if main is not None else None
    if real is not None and real.snapshots:
        seq_at = _snapshot_seqs(trace, real.pid)
        fig.add_trace(go.Scatter(x=[seq_at.get(s[0], 0) for s in real.snapshots], y=[s[3] for s in real.snapshots],
                                 mode="markers", name="real kernel (snapshots)", marker={"size": 10, "symbol": "x"}))
        peak = max(peak, real.peak_vma_count or 0)
    if max_map_count and peak > max_map_count * 0.5:
        fig.add_hline(y=max_map_count, line_dash="dash", annotation_text="vm.max_map_count")
    fig.update_layout(title=f"VMA count of PID {main} over the trace", xaxis_title="event seq",
                      yaxis_title="VMAs", height=420)
    figs.append(("count", fig))
    # 2. the address space: the main process's last snapshot, one bar per VMA, divergences marked
    if real is not None and real.snapshots:
        frame = trace.snapshot(real.snapshots[-1][0]).filter(pl.col("start") < (1 << 47))
        starts = frame["start"].to_list()
        ends = frame["end"].to_list()
        paths = [p or "[anon]" for p in frame["path"].to_list()]
        perms = frame["perms"].to_list()
        names = [f"{s:x}-{e:x} {pm} {pa}" for s, e, pm, pa in zip(starts, ends, perms, paths, strict=True)]
        colors = ["#4c78a8" if pa.startswith("/") else "#f58518" if pa == "[anon]" else "#54a24b" for pa in paths]
        amap = go.Figure(go.Bar(x=list(range(len(starts))), y=[max(1, (e - s) >> 12) for s, e in zip(starts, ends, strict=True)],
                                marker_color=colors, hovertext=names, name="VMAs (pages, log scale)"))
        first = result.profiles[0] if result.profiles else None
        if first is not None:
            p = first.process(main) if main is not None else None
            for d in (p.divergences if p else []):
                k = next((i for i, s in enumerate(starts) if s <= d.start < ends[i]), None)
                if k is not None:
                    amap.add_annotation(x=k, y=1, text=_KIND_MARKS.get(d.kind, "?"), showarrow=True,
                                        hovertext=d.detail)
        fix_seqs = {e.seq for e in result.fix_events if e.pid == main}
        amap.update_layout(title=f"address space of PID {main} at its last snapshot: one bar per VMA "
                                 f"(blue file, orange anonymous, green special); "
                                 f"{'/'.join(_KIND_MARKS[k] for k in kinds)} mark divergences "
                                 f"({', '.join(_KIND_TITLES[k] for k in kinds)}); "
                                 f"{len(fix_seqs)} events merged by the fix", yaxis_type="log", height=380,
                           xaxis_title="VMA, in address order", yaxis_title="pages")
        figs.append(("map", amap))
    # 3. call sites
    if att.created or att.splits:
        cs = go.Figure()
        for label, rows in (("VMAs created", att.created), ("splits", att.splits)):
            if rows:
                cs.add_trace(go.Bar(y=[k for k, _ in rows][::-1], x=[n for _, n in rows][::-1], orientation="h", name=label))
        cs.update_layout(title="top call sites", height=380, barmode="group")
        figs.append(("sites", cs))
    parts = []
    for k, (name, f) in enumerate(figs):
        parts.append(f.to_html(full_html=False, include_plotlyjs="inline" if k == 0 else False,
                               div_id=f"plot-{name}", config={"displaylogo": False}))
    j = to_json(result, details=False)
    prof_rows = [[p["label"], p["final_vma_count"], p["peak_vma_count"], *(p["divergences"][k] for k in kinds),
                  p["result_mismatches"], p["resyncs"]]
                 for p in j["profiles"]]
    comms = {r.pid: r.comm for r in result.real}
    fix_rows = [[f.pid, comms.get(f.pid, ""), f.without_fix,
                 f.with_fix, f.saved_final, f.saved_peak, f.events_merged_by_fix, f.fork_child_boundaries]
                for f in result.fix if f.pid == main or f.saved_peak or f.events_merged_by_fix or f.fork_child_boundaries]
    div_rows = [[pr.label, d.pid, d.kind, f"{d.start:x}-{d.end:x}", d.cause, "yes" if d.cause in EXPLAINED else "no",
                 d.detail, " ".join(map(str, d.events))]
                for pr in result.profiles for p in pr.processes for d in p.divergences][:500]
    banner = (f'<div class="banner">{result.lost_events} events were lost while recording: the state is '
              "unknown from each loss to the next snapshot.</div>") if result.lost_events else ""
    notes = "".join(f"<li>{html.escape(w)}</li>" for w in result.warnings)
    seg_rows = [[k, n] for k, n in att.segments]
    site_rows = ([[k, n, "created"] for k, n in att.created] + [[k, n, "splits"] for k, n in att.splits]
                 + [[k, n, "merged by the 6.16 fix"] for k, n in att.fix_sites])
    title = html.escape(f"vmatrace replay: {result.meta.get('cmdline') or result.trace}")
    deep_note = (f" ({j['deep_snapshots_compared']} deep: anon_vma sharing and fork-child status compared too)"
                 if j["deep_snapshots_compared"] else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.banner {{ background: #fdd; border: 2px solid #c00; padding: .6em; font-weight: bold; }}
code {{ background: #f4f4f4; }}
</style></head><body>
<h1>{title}</h1>
{banner}
<p>Trace <code>{html.escape(result.trace)}</code>, kernel {html.escape(str(result.meta.get('kernel_release')))},
{result.events} events ({result.lost_events} lost), {len(result.real)} processes, {j['snapshots_compared']} snapshots
compared{deep_note}, {j['resyncs']} resyncs. Real kernel, main process {main}: {j['real']['final_vma_count']} VMAs at its last
snapshot, peak {j['real']['peak_vma_count']}.</p>
<h2>Profiles</h2>
{_table(["profile", "final VMAs", "peak VMAs", *(_KIND_TITLES[k] for k in kinds), "result mismatches", "resyncs"], prof_rows)}
<h2>The 6.16 anon-merge fix (879bca0a2c4f)</h2>
<p>{html.escape(' vs '.join(result.fix_pair) if result.fix_pair else 'no fix pair')}: all processes
{j['anon_merge_fix']['all_processes']['saved_final']} VMAs saved at the end,
{j['anon_merge_fix']['all_processes']['events_merged_by_fix']} events merged by the fix,
{j['anon_merge_fix']['all_processes']['fork_child_boundaries']} fork-child boundaries it cannot merge.</p>
{_table(["pid", "comm", "without fix", "with fix", "saved (final)", "saved (peak)", "events merged by the fix", "fork-child boundaries"], fix_rows)}
{''.join(parts)}
<h2>Top call sites</h2>
{_table(["call site", "VMAs", "how"], site_rows) if site_rows else "<p>No stacks in the trace (record with --stacks).</p>"}
<h2>VMAs of the main process by ELF segment</h2>
{_table(["segment", "VMAs"], seg_rows)}
<p>{att.relro_pairs} RELRO pieces keep <code>ac</code> (VM_ACCOUNT) next to a read-only segment without it.</p>
<h2>Divergences</h2>
{_table(["profile", "pid", "kind", "region", "cause", "explained", "detail", "events"], div_rows) if div_rows else "<p>None.</p>"}
<h2>Notes</h2><ul>{notes}</ul>
<script type="application/json" id="vmatrace-summary">{html.escape(json.dumps(j, default=str))}</script>
</body></html>
"""


def _downsample(xs: list[int], ys: list[int], buckets: int = 2000) -> tuple[list[int], list[int]]:
    """At most 2 points per bucket (its lowest and highest count, in order), so that a plot of a
    million-event trace stays small and keeps every peak."""
    n = len(xs)
    if n <= 2 * buckets:
        return xs, ys
    step = n / buckets
    ox: list[int] = []
    oy: list[int] = []
    for b in range(buckets):
        lo, hi = int(b * step), min(n, int((b + 1) * step))
        if lo >= hi:
            continue
        seg = range(lo, hi)
        kmin = min(seg, key=ys.__getitem__)
        kmax = max(seg, key=ys.__getitem__)
        for k in sorted({kmin, kmax}):
            ox.append(xs[k])
            oy.append(ys[k])
    return ox, oy


def _snapshot_seqs(trace: Trace, pid: int) -> dict[int, int]:
    """snapshot id -> the seq of the last event of ``pid`` before it (the x position in the plot)."""
    from bisect import bisect_right
    from itertools import accumulate

    ev = trace.events.filter(pl.col("pid") == pid).select("seq", "ts_ns").sort("ts_ns")
    ts = ev["ts_ns"].to_list()
    last_seq = list(accumulate(ev["seq"].to_list(), max))  # the latest seq at or before each time
    out = {}
    for r in trace.snapshot_index.filter(pl.col("pid") == pid).iter_rows(named=True):
        k = bisect_right(ts, r["t_start_ns"] or 0)
        out[int(r["snapshot_id"])] = last_seq[k - 1] if k else 0
    return out
