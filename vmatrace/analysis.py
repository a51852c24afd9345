"""Invisible fragmentation: adjacent VMAs that look like one mapping in /proc/PID/maps but are separate.

The kernel merges two neighbours only when every merge predicate holds (``is_mergeable_vma()``,
``is_mergeable_anon_vma()`` and the pgoff check in mm/vma.c). /proc shows some of the inputs
(perms, file, offset, VmFlags) and hides others (the anon_vma identity, the avc count that marks a
fork child, the pgoff of anonymous memory). For each adjacent pair that looks identical in maps
(same perms and name, contiguous) this module names the reason as far as /proc can tell; the
README's "Invisible fragmentation" table lists the reasons, and docs/model.md ("Snapshots and
UNKNOWN") what /proc proves and what it does not.
"""

from __future__ import annotations

import json
import re
from itertools import compress
from json.encoder import encode_basestring
from operator import eq
from typing import TYPE_CHECKING, Any, NamedTuple

from vmatrace.base.snapshot import Snapshot

if TYPE_CHECKING:
    from collections.abc import Sequence

    import polars as pl

# VmFlags the merge check ignores: VM_SOFTDIRTY always; VM_MAYBE_GUARD ("gu") is sticky where it exists
# (6.19, and 6.18.y after the sticky-flag backport), so it never blocks a merge either.
MERGE_IGNORED_FLAGS = frozenset({"sd", "gu"})

REASON_FLAGS = "vmflags"
REASON_FILE = "file"
REASON_ANON = "anon_vma"
REASON_UNKNOWN = "unknown"  # VmFlags not read
REASON_OTHER = "other"  # deep snapshots only: close hook, anon name, NUMA policy, userfaultfd

# Causes a deep snapshot (collectors.deep) proves; each maps to one of the reason codes above.
CAUSE_FLAGS = "vm_flags differ"
CAUSE_OPEN_FILE = "different open file"
CAUSE_FILE = "different file"
CAUSE_FILE_PGOFF = "file offset discontinuity"
CAUSE_ANON_PGOFF = "anon pgoff discontinuity"
CAUSE_ANON_VMAS = "distinct anon_vmas"
CAUSE_FORK = "fork child"
CAUSE_CLOSE = "close hook"
CAUSE_NAME = "different anon name"
CAUSE_POLICY = "NUMA policy"
CAUSE_UFFD = "userfaultfd context"
CAUSE_NONE = "nothing differs"
_CAUSE_REASON = {CAUSE_FLAGS: REASON_FLAGS, CAUSE_OPEN_FILE: REASON_FILE, CAUSE_FILE: REASON_FILE,
                 CAUSE_FILE_PGOFF: REASON_FILE, CAUSE_ANON_PGOFF: REASON_ANON,
                 CAUSE_ANON_VMAS: REASON_ANON, CAUSE_FORK: REASON_ANON, CAUSE_CLOSE: REASON_OTHER,
                 CAUSE_NAME: REASON_OTHER, CAUSE_POLICY: REASON_OTHER, CAUSE_UFFD: REASON_OTHER,
                 CAUSE_NONE: REASON_OTHER}


class Split(NamedTuple):
    """One boundary between two adjacent VMAs that look identical in /proc/PID/maps."""

    addr: int  # the boundary (end of the left VMA, start of the right one)
    reason: str  # REASON_FLAGS | REASON_FILE | REASON_ANON
    detail: str
    flags_only_left: Sequence[str] = ()
    flags_only_right: Sequence[str] = ()
    causes: Sequence[str] = ()  # deep snapshots: every proven cause (CAUSE_*)


class Run(NamedTuple):
    """A maximal run of adjacent VMAs that /proc/PID/maps shows as one mapping (a NamedTuple rather
    than a dataclass: ``vmatrace snapshot`` then need not import dataclasses, 10 ms of start-up)."""

    start: int
    end: int
    vmas: int
    perms: str
    path: str | None
    splits: list[Split]

    @property
    def extra_vmas(self) -> int:
        return self.vmas - 1

    def to_dict(self) -> dict[str, Any]:
        d = self._asdict()
        d["splits"] = [s._asdict() for s in self.splits]
        d["extra_vmas"] = self.extra_vmas
        return d


def _flags(s: str | None) -> frozenset[str]:
    return frozenset(s.split()) if s else frozenset()


def _looks_same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["end"] == b["start"] and a["perms"] == b["perms"] and a["path"] == b["path"])


def explain_pair(a: dict[str, Any], b: dict[str, Any]) -> Split:
    """Why two adjacent VMAs with equal perms and name are not one VMA: every visible reason.

    The first reason found is the split's ``reason``; ``detail`` lists them all. Mirrors the
    predicates of is_mergeable_vma() (flags, file, name) and the pgoff check of can_vma_merge_*()
    in mm/vma.c, as far as /proc shows their inputs.
    """
    reasons: list[tuple[str, str]] = []
    only_a: list[str] = []
    only_b: list[str] = []
    flags_known = a.get("vmflags") is not None and b.get("vmflags") is not None
    if flags_known:
        fa, fb = _flags(a["vmflags"]), _flags(b["vmflags"])
        only_a = sorted(fa - fb - MERGE_IGNORED_FLAGS)
        only_b = sorted(fb - fa - MERGE_IGNORED_FLAGS)
        if only_a or only_b:
            parts = ([f"left has {' '.join(only_a)}"] if only_a else []) + (
                [f"right has {' '.join(only_b)}"] if only_b else [])
            reasons.append((REASON_FLAGS, "VmFlags differ: " + ", ".join(parts)))
    file_backed = a["inode"] != 0 or b["inode"] != 0
    if file_backed:
        if (a["dev"], a["inode"]) != (b["dev"], b["inode"]):
            reasons.append((REASON_FILE, "different files with the same name"))
        elif b["offset"] != a["offset"] + (a["end"] - a["start"]):
            reasons.append((REASON_FILE, f"file offset discontinuity ({a['offset']:#x} + "
                                         f"{a['end'] - a['start']:#x} != {b['offset']:#x})"))
    if reasons:
        return Split(a["end"], reasons[0][0], "; ".join(d for _, d in reasons), only_a, only_b)
    if not flags_known:
        return Split(a["end"], REASON_UNKNOWN, "VmFlags not read (snapshot without smaps): the reason may be a "
                     "flag (ac, lo, dd, ...) or anon_vma")
    if file_backed:
        return Split(a["end"], REASON_FILE,
                     "same file, contiguous offset: distinct open files (struct file), or a COW-faulted "
                     "private mapping with distinct anon_vmas / a fork child")
    ra, rb = a.get("anonymous_kb"), b.get("anonymous_kb")
    if ra is None or rb is None:
        hint = "no smaps data"
    elif ra > 0 and rb > 0:
        hint = "both sides have anonymous pages: distinct anon_vmas (faulted separately, or a fork child)"
    elif ra > 0 or rb > 0:
        hint = ("one side shows no anonymous pages: on kernels before 6.16 (879bca0a2c4f) an unfaulted VMA could "
                "not merge with a faulted neighbour; on any kernel: a fork child, or anon pgoff after mremap")
    else:
        hint = "no anonymous pages on either side (pages freed, or anon pgoff discontinuity after mremap)"
    diff = sorted((_flags(a["vmflags"]) ^ _flags(b["vmflags"])) & MERGE_IGNORED_FLAGS)
    note = f"; differs only in ignored flags {' '.join(diff)}" if diff else ""
    return Split(a["end"], REASON_ANON, f"anon_vma: distinct anon_vmas or a fork child ({hint}); "
                 f"or a different NUMA policy (see /proc/PID/numa_maps){note}")


def explain_pair_deep(a: dict[str, Any], b: dict[str, Any]) -> Split:
    """Why two adjacent VMAs that look identical in /proc are apart, from a deep snapshot: every
    merge input is known, so each cause is a fact, not a guess.

    Mirrors is_mergeable_vma() (vm_flags but VM_SOFTDIRTY and sticky flags, file, anon name,
    userfaultfd context; vm_ops->close refuses the merge that would remove a VMA),
    is_mergeable_anon_vma() (same anon_vma, or one side without, and the side that has one not a
    fork child: its anon_vma_chain not singular), the pgoff check of can_vma_merge_*() and the
    mempolicy check (mpol_equal()) of mm/vma.c. NUMA policies are known only as set or not: two set
    policies are named as a possible cause.
    """
    causes: list[str] = []
    fa, fb = _flags(a["vmflags"]), _flags(b["vmflags"])
    only_a = sorted(fa - fb - MERGE_IGNORED_FLAGS)
    only_b = sorted(fb - fa - MERGE_IGNORED_FLAGS)
    details: list[str] = []
    if only_a or only_b:
        causes.append(CAUSE_FLAGS)
        parts = ([f"left has {' '.join(only_a)}"] if only_a else []) + (
            [f"right has {' '.join(only_b)}"] if only_b else [])
        details.append("vm_flags differ: " + ", ".join(parts))
    elif a["vm_flags"] != b["vm_flags"] and not (fa ^ fb):
        unnamed = int(a["vm_flags"]) ^ int(b["vm_flags"])
        causes.append(CAUSE_FLAGS)
        details.append(f"vm_flags differ in bits without a VmFlags mnemonic ({unnamed:#x})")
    pages = (int(a["end"]) - int(a["start"])) >> 12
    if a["file_id"] is not None or b["file_id"] is not None:
        if (a["dev"], a["inode"]) != (b["dev"], b["inode"]) or a["file_id"] is None or b["file_id"] is None:
            causes.append(CAUSE_FILE)
            details.append("different files")
        elif a["file_id"] != b["file_id"]:
            causes.append(CAUSE_OPEN_FILE)
            details.append(f"different open files of the same file (struct file #{a['file_id']} and #{b['file_id']})")
        if int(b["pgoff"]) != int(a["pgoff"]) + pages:
            causes.append(CAUSE_FILE_PGOFF)
            details.append(f"file offset discontinuity ({int(a['pgoff']) << 12:#x} + {pages << 12:#x} != "
                           f"{int(b['pgoff']) << 12:#x})")
    elif int(b["pgoff"]) != int(a["pgoff"]) + pages:
        causes.append(CAUSE_ANON_PGOFF)
        details.append(f"anon pgoff discontinuity (left pgoff {int(a['pgoff']):#x} + {pages} pages != "
                       f"right pgoff {int(b['pgoff']):#x}: moved by mremap)")
    xa, xb = a["anon_vma_id"], b["anon_vma_id"]
    if xa is not None and xb is not None and xa != xb:
        causes.append(CAUSE_ANON_VMAS)
        details.append(f"distinct anon_vmas (#{xa} and #{xb})")
    fork = [side for side, r in (("left", a), ("right", b)) if r["fork_child"]]
    if fork and (xa is None or xb is None or xa != xb):
        causes.append(CAUSE_FORK)
        details.append(f"fork child: the {' and '.join(fork)} VMA's anon_vma_chain is not singular "
                       f"(avc {a['avc']}/{b['avc']})")
    if a["close_hook"] or b["close_hook"]:
        causes.append(CAUSE_CLOSE)
        details.append("close hook: vm_ops->close is set (such a VMA is never merged away)")
    if a["anon_name"] != b["anon_name"]:
        causes.append(CAUSE_NAME)
        details.append(f"different anon names ({a['anon_name']!r}, {b['anon_name']!r})")
    if a["mempolicy"] != b["mempolicy"]:
        causes.append(CAUSE_POLICY)
        details.append("NUMA policy set on one side only")
    elif a["mempolicy"] and b["mempolicy"]:
        causes.append(CAUSE_POLICY)
        details.append("both have a NUMA policy: they may differ (see /proc/PID/numa_maps)")
    if a["uffd"] or b["uffd"]:
        causes.append(CAUSE_UFFD)
        details.append("userfaultfd context set")
    if not causes:
        causes.append(CAUSE_NONE)
        details.append("no merge input differs: nothing has asked the kernel to merge them since they "
                       "became compatible")
    return Split(a["end"], _CAUSE_REASON[causes[0]], "; ".join(details), only_a, only_b, causes)


def _columns(vmas: Snapshot | pl.DataFrame) -> dict[str, list[Any]]:
    return vmas.columns if isinstance(vmas, Snapshot) else vmas.to_dict(as_series=False)


def invisible_fragmentation(vmas: Snapshot | pl.DataFrame) -> list[Run]:
    """Runs of adjacent VMAs that look identical in /proc/PID/maps, each split explained (with
    certainty for a deep snapshot: it has the ``anon_vma_id`` column).

    One pass over the columns finds the pairs that look the same; only those rows are read as
    dicts to be explained.
    """
    c = _columns(vmas)
    explain = explain_pair_deep if "anon_vma_id" in c else explain_pair
    n = len(c["start"])
    if n < 2:
        return []
    if c["start"] != sorted(c["start"]):
        order = sorted(range(n), key=c["start"].__getitem__)
        c = {k: [col[i] for i in order] for k, col in c.items()}
    starts, ends, perms, paths = c["start"], c["end"], c["perms"], c["path"]
    # pairs (i - 1, i), in C-level maps: contiguous, same perms, same name
    same = map(all, zip(map(eq, ends, starts[1:]), map(eq, perms, perms[1:]),
                        map(eq, paths, paths[1:]), strict=True))  # n - 1 pairs each
    right = list(compress(range(1, n), same))
    if not right:
        return []
    keys = list(c)
    want = sorted({j - 1 for j in right} | set(right))
    row = {j: {k: c[k][j] for k in keys} for j in want}
    runs: list[Run] = []
    first: dict[str, Any] = {}  # the first VMA of the run being built
    splits: list[Split] = []
    last = -2
    for i in [*right, -1]:
        if i - 1 != last and splits:  # the run ended at VMA ``last``
            runs.append(Run(first["start"], row[last]["end"], len(splits) + 1, first["perms"], first["path"], splits))
            splits = []
        if i < 0:
            break
        if not splits:
            first = row[i - 1]
        splits.append(explain(row[i - 1], row[i]))
        last = i
    return runs


def reason_counts(runs: list[Run]) -> dict[str, int]:
    out = {REASON_FLAGS: 0, REASON_FILE: 0, REASON_ANON: 0, REASON_UNKNOWN: 0}
    for run in runs:
        for s in run.splits:
            out[s.reason] = out.get(s.reason, 0) + 1
    return out


def cause_counts(runs: list[Run]) -> dict[str, int]:
    """Deep snapshots: how many splits each proven cause takes part in."""
    out: dict[str, int] = {}
    for run in runs:
        for s in run.splits:
            for c in s.causes:
                out[c] = out.get(c, 0) + 1
    return out


def map_count(vmas: Snapshot | pl.DataFrame) -> int:
    """VMAs that count against vm.max_map_count: the gate VMA ([vsyscall]) is not in the mm."""
    paths = vmas.columns["path"] if isinstance(vmas, Snapshot) else vmas["path"].to_list()
    return len(paths) - paths.count("[vsyscall]")


def snapshot_json(snap: Snapshot, runs: list[Run], limit: int | None) -> dict[str, Any]:
    """A snapshot and its analysis as JSON-ready data (``vmas``: one object per VMA)."""
    c = snap.columns
    keys = list(c)
    return {**_snapshot_head(snap, runs, limit), "vmas": [dict(zip(keys, row, strict=True))
                                                          for row in zip(*c.values(), strict=True)]}


def _snapshot_head(snap: Snapshot, runs: list[Run], limit: int | None) -> dict[str, Any]:
    return {
        "pid": snap.pid,
        "method": snap.method,
        "t_start_ns": snap.t_start_ns,
        "t_end_ns": snap.t_end_ns,
        "complete": snap.complete,
        "warnings": snap.warnings,
        "vma_count": snap.height,
        "map_count": map_count(snap),
        "max_map_count": limit,
        "invisible_fragmentation": {
            "runs": [r.to_dict() for r in runs],
            "extra_vmas": sum(r.extra_vmas for r in runs),
            "reasons": reason_counts(runs),
            **({"causes": cause_counts(runs)} if snap.deep else {}),
        },
    }


def snapshot_json_text(snap: Snapshot, runs: list[Run], limit: int | None) -> str:
    """:func:`snapshot_json` as JSON text: the other keys, then the VMAs (one compact object per
    VMA, columns in order), written column by column rather than row by row."""
    head = json.dumps(_snapshot_head(snap, runs, limit), indent=1, default=str)
    return f"{head[:-2]},\n \"vmas\": {_vmas_json(snap.columns)}\n}}\n"


_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def _json_column(col: list[Any]) -> tuple[str, list[Any]]:
    """One column as a %-format piece and the values to fill it with: the values themselves where
    they can go in as they are (ints; text without quotes, backslashes or control characters),
    JSON tokens otherwise (null, true/false, escaped text)."""
    probe = next((v for v in col if v is not None), None)
    if probe is None:
        return "null", []
    nulls = None in col
    if isinstance(probe, bool):
        return "%s", ["null" if v is None else "true" if v else "false" for v in col]
    if isinstance(probe, int):
        return ("%s", ["null" if v is None else str(v) for v in col]) if nulls else ("%d", col)
    if not nulls and not _NEEDS_ESCAPE.search("".join(col)):
        return '"%s"', col
    return "%s", ["null" if v is None else encode_basestring(v) for v in col]


def _vmas_json(c: dict[str, list[Any]]) -> str:
    """The VMAs as a JSON array of one compact object per VMA: one %-template per VMA, all of them
    filled by one %-format (no Python code runs per VMA)."""
    if not c or not next(iter(c.values())):
        return "[]"
    pieces, values = [], []
    for k, col in c.items():
        piece, vals = _json_column(col)
        pieces.append(f"{encode_basestring(k)}:{piece}")
        if vals:
            values.append(vals)
    template = "{" + ",".join(pieces) + "}"
    n, per_row = len(next(iter(c.values()))), len(values)
    if not per_row:
        return "[" + ",".join([template] * n) + "]"
    flat: list[Any] = [None] * (n * per_row)  # the values row by row, for one %-format over all rows
    for i, vals in enumerate(values):
        flat[i::per_row] = vals
    return "[" + ",".join([template] * n) % tuple(flat) + "]"


def max_map_count() -> int | None:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None
