"""Invisible fragmentation: adjacent VMAs that look like one mapping in /proc/PID/maps but are separate.

The kernel merges two neighbours only when every merge predicate holds (``is_mergeable_vma()``,
``is_mergeable_anon_vma()`` and the pgoff check in mm/vma.c). /proc shows some of the inputs
(perms, file, offset, VmFlags) and hides others (the anon_vma identity, the avc count that marks a
fork child, the pgoff of anonymous memory). For each adjacent pair that looks identical in maps
(same perms and name, contiguous) this module names the reason as far as /proc can tell; see
``../shared/docs/kernel-vma.md`` §2.7 and §3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

# VmFlags the merge check ignores: VM_SOFTDIRTY always; VM_MAYBE_GUARD ("gu") is sticky where it exists
# (6.19, and 6.18.y after the sticky-flag backport), so it never blocks a merge either.
MERGE_IGNORED_FLAGS = frozenset({"sd", "gu"})

REASON_FLAGS = "vmflags"
REASON_FILE = "file"
REASON_ANON = "anon_vma"
REASON_UNKNOWN = "unknown"  # VmFlags not read


@dataclass
class Split:
    """One boundary between two adjacent VMAs that look identical in /proc/PID/maps."""

    addr: int  # the boundary (end of the left VMA, start of the right one)
    reason: str  # REASON_FLAGS | REASON_FILE | REASON_ANON
    detail: str
    flags_only_left: list[str] = field(default_factory=list)
    flags_only_right: list[str] = field(default_factory=list)


@dataclass
class Run:
    """A maximal run of adjacent VMAs that /proc/PID/maps shows as one mapping."""

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
        d = asdict(self)
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


def invisible_fragmentation(frame: pl.DataFrame) -> list[Run]:
    """Runs of adjacent VMAs that look identical in /proc/PID/maps, each split explained."""
    rows = frame.sort("start").iter_rows(named=True)
    runs: list[Run] = []
    prev: dict[str, Any] | None = None
    cur: Run | None = None
    for r in rows:
        if prev is not None and _looks_same(prev, r):
            if cur is None:
                cur = Run(prev["start"], prev["end"], 1, prev["perms"], prev["path"], [])
            cur.splits.append(explain_pair(prev, r))
            cur.end = r["end"]
            cur.vmas += 1
        elif cur is not None:
            runs.append(cur)
            cur = None
        prev = r
    if cur is not None:
        runs.append(cur)
    return runs


def reason_counts(runs: list[Run]) -> dict[str, int]:
    out = {REASON_FLAGS: 0, REASON_FILE: 0, REASON_ANON: 0, REASON_UNKNOWN: 0}
    for run in runs:
        for s in run.splits:
            out[s.reason] += 1
    return out


def map_count(frame: pl.DataFrame) -> int:
    """VMAs that count against vm.max_map_count: the gate VMA ([vsyscall]) is not in the mm."""
    return frame.height - int((frame["path"] == "[vsyscall]").sum())


def max_map_count() -> int | None:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None
