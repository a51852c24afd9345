"""System-wide VMA census for ``vmatrace top``: which processes hold the most VMAs, and why."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Any

import psutil

from collectors.procmaps import read_snapshot
from vmatrace.analysis import Run, invisible_fragmentation, max_map_count, reason_counts
from vmatrace.base.errors import VmatraceError


@dataclass
class ProcEntry:
    pid: int
    comm: str
    user: str | None
    vmas: int
    invisible_extra: int | None = None  # VMAs that would not exist if every look-alike run were one VMA
    reasons: dict[str, int] | None = None
    worst: Run | None = None

    def to_dict(self, limit: int | None) -> dict[str, Any]:
        return {
            "pid": self.pid, "comm": self.comm, "user": self.user, "vmas": self.vmas,
            "share_of_max_map_count": (self.vmas / limit) if limit else None,
            "invisible_extra_vmas": self.invisible_extra, "reasons": self.reasons,
            "worst_region": self.worst.to_dict() if self.worst else None,
        }


@dataclass
class Census:
    entries: list[ProcEntry]
    max_map_count: int | None
    seen: int
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    total_vmas: int = 0


def _count_vmas(pid: int) -> int:
    """VMAs counted against vm.max_map_count: maps lines, less the gate VMA ([vsyscall])."""
    fd = os.open(f"/proc/{pid}/maps", os.O_RDONLY | os.O_CLOEXEC)
    try:
        n = 0
        tail = b""
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                return n - (1 if tail.rstrip().endswith(b"[vsyscall]") else 0)
            n += b.count(b"\n")
            tail = b[-64:]
    finally:
        os.close(fd)


def take_census(n: int = 10, *, analyse: bool = True) -> Census:
    """Count VMAs of every visible process; analyse the ``n`` largest through smaps."""
    me = os.geteuid()
    entries: list[ProcEntry] = []
    skipped: dict[str, int] = {}
    seen = 0
    for p in psutil.process_iter(["pid", "name", "username", "uids"]):
        pid = p.info["pid"]
        if pid == os.getpid():
            continue  # the census itself is not what anyone is chasing
        uids = p.info.get("uids")
        if me != 0 and uids is not None and uids.real != me and uids.effective != me:
            skipped["other users' processes (run as root to see them)"] = skipped.get(
                "other users' processes (run as root to see them)", 0) + 1
            continue
        try:
            count = _count_vmas(pid)
        except OSError as e:
            key = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                   errno.ENOENT: "exited during the census", errno.ESRCH: "exited during the census"}.get(
                e.errno or 0, f"unreadable ({e.strerror})")
            skipped[key] = skipped.get(key, 0) + 1
            continue
        if count <= 0:
            skipped["kernel threads and zombies (no address space)"] = skipped.get(
                "kernel threads and zombies (no address space)", 0) + 1
            continue
        seen += 1
        entries.append(ProcEntry(pid, p.info.get("name") or "?", p.info.get("username"), count))
    entries.sort(key=lambda e: (-e.vmas, e.pid))
    top = entries[:n]
    if analyse:
        for entry in top:
            try:
                snap = read_snapshot(entry.pid, smaps=True, helper=False)  # many small reads
            except VmatraceError:
                continue
            runs = invisible_fragmentation(snap)
            entry.invisible_extra = sum(r.extra_vmas for r in runs)
            entry.reasons = reason_counts(runs)
            entry.worst = max(runs, key=lambda r: r.vmas, default=None)
    return Census(top, max_map_count(), seen, skipped, sum(e.vmas for e in entries))
