"""Address spaces built from a /proc snapshot, where anon_vma state is UNKNOWN.

Snapshot frame columns (polars): ``start``, ``end`` (UInt64), ``perms``, ``offset`` (UInt64),
``dev``, ``inode`` (UInt64), ``path`` (nullable: "[heap]", "[stack]", "[vdso]",
"[anon:name]", file paths), ``rss_kb``, ``anonymous_kb`` (nullable), ``vmflags`` (space-separated
smaps mnemonics, nullable).

What a snapshot proves and what it does not:

* ``Anonymous > 0`` proves the VMA has an anon_vma. Zero proves nothing (MADV_DONTNEED frees pages
  but keeps the anon_vma), so every private VMA without anonymous pages gets an
  :class:`replay.UnknownAnonVma`: its ``faulted`` is :data:`replay.UNKNOWN`.
* Nothing shows anon_vma identity or avc. Faulted VMAs are assumed to have ``avc == 1`` (not fork
  children); adjacent faulted VMAs that the kernel could have split from one VMA
  (anon_vma_compatible(): same file, flags equal but for R/W/X, contiguous pgoff) are assumed to
  share an anon_vma, others get distinct ones.
* The pgoff of private anonymous memory is not shown; it is assumed to be ``start >> 12`` (true
  unless the VMA was moved by mremap while faulted).
* Shared mappings never get an anon_vma: they start as "unfaulted" (known).

Decisions that read an UNKNOWN state use the address space's ``unknown_policy`` ("unfaulted")
and add "depends on unknown anon_vma of [a,b)" to the explanation.
:meth:`SnapshotMixin.narrow_from_snapshot` resolves UNKNOWN states from a later snapshot.

A *deep* snapshot (``collectors.deep``: a BPF task_vma iterator, columns ``DEEP_SCHEMA``) removes
every guess: :meth:`SnapshotMixin.from_deep_snapshot` (chosen by
:meth:`SnapshotMixin.from_snapshot` when the columns are there) takes the raw vm_flags, the real pgoff, the open-file identity (``file_id``:
one :class:`replay.OpenFile` per struct file), the anon_vma identity (``anon_vma_id``: VMAs
that share an anon_vma share one :class:`replay.AnonVma`), the exact ``avc`` (a fork child's is
not 1), the close hook and the anon name. No VMA gets an :class:`replay.UnknownAnonVma`.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Self

from replay.flags import (
    PAGE_SHIFT,
    TASK_SIZE,
    VM_ACCESS_FLAGS,
    VM_EXEC,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_READ,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_WRITE,
    flags_from_mnemonics,
    mnemonics,
)
from replay.internal import MmCore
from replay.mm_types import AnonVma, OpenFile, UnknownAnonVma, Vma, VmaView
from vmatrace.base.errors import SnapshotError

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

    from replay.profiles import KernelProfile

__all__ = ["DEEP_COLUMNS", "REQUIRED_COLUMNS", "SnapshotMixin", "is_deep"]

REQUIRED_COLUMNS = ("start", "end", "perms", "offset", "dev", "inode", "path")
# the deep snapshot columns this module reads (vmatrace.base.snapshot.DEEP_SCHEMA)
DEEP_COLUMNS = ("vm_flags", "pgoff", "file_id", "anon_vma_id", "avc", "close_hook", "anon_name",
                "mempolicy", "uffd")
# A VMA mempolicy or userfaultfd context is known only as set or not set: every VMA that has one
# shares one stand-in, so the model treats set policies (contexts) as equal (mpol_equal()).
_POLICY_SET = object()
_UFFD_SET = object()


def is_deep(frame: pl.DataFrame) -> bool:
    """The frame is a deep snapshot: it has every column :meth:`SnapshotMixin.from_deep_snapshot` reads,
    filled (a trace with deep snapshots has the columns for its plain ones too, all null)."""
    if not all(c in frame.columns for c in DEEP_COLUMNS):
        return False
    rows = frame.to_dicts()
    return not rows or rows[0].get("vm_flags") is not None


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise SnapshotError(f"snapshot frame lacks column(s) {', '.join(missing)}")
    rows = sorted(frame.to_dicts(), key=lambda r: int(r["start"]))
    return rows


def _flags_of(row: dict[str, Any]) -> int:
    vmf = row.get("vmflags")
    if vmf:
        return flags_from_mnemonics(str(vmf))
    p = str(row["perms"])
    flags = 0
    if p[0] == "r":
        flags |= VM_READ
    if p[1] == "w":
        flags |= VM_WRITE
    if p[2] == "x":
        flags |= VM_EXEC
    flags |= VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    if p[3] == "s":
        flags |= VM_MAYSHARE | (VM_SHARED if flags & VM_WRITE else 0)
    return flags


class SnapshotMixin(MmCore):
    """Address spaces from /proc snapshots (mixed into :class:`replay.AddressSpace`)."""

    @classmethod
    def from_snapshot(cls, frame: pl.DataFrame, kernel: str | KernelProfile = "6.19", *,
                      deep_files: dict[int, OpenFile] | None = None, **kw: Any) -> Self:
        """An address space whose VMAs are the rows of a /proc snapshot frame (see
        :mod:`replay.snapshot`; a deep snapshot goes to :meth:`from_deep_snapshot`, with
        ``deep_files``); ``kw`` are the constructor's keyword arguments."""
        if is_deep(frame):
            return cls.from_deep_snapshot(frame, kernel, deep_files=deep_files, **kw)
        mm = cls(kernel, **kw)
        files: dict[tuple[str, int], OpenFile] = {}
        prev: Vma | None = None
        for row in _rows(frame):
            start, end = int(row["start"]), int(row["end"])
            if start >= TASK_SIZE:
                continue  # [vsyscall]: the gate VMA is not in the mm's tree
            if start >= end or start & 0xFFF or end & 0xFFF:
                raise SnapshotError(f"bad VMA range {start:#x}-{end:#x}")
            if prev is not None and start < prev.end:
                raise SnapshotError(f"overlapping VMAs at {start:#x}")
            flags = _flags_of(row)
            path = row.get("path")
            inode = int(row.get("inode") or 0)
            dev = str(row.get("dev") or "00:00")
            file: OpenFile | None = None
            name: str | None = None
            label: str | None = None
            if path and path.startswith("[anon:"):
                name = path[6:-1]
            elif path and path.startswith("[anon_shmem:"):
                file = OpenFile("/dev/zero (deleted)", dev=dev, ino=inode, shmem=True)
                name = path[12:-1]
            elif path == "[heap]":
                if mm.start_brk is None:
                    mm.start_brk = start
                mm.cur_brk = end
            elif path == "[stack]":
                mm.start_stack = end - 1
            elif path and path.startswith("["):
                label = path
            elif path and inode:
                shm = path.startswith(("/dev/zero", "/memfd:", "/SYSV"))
                if path.startswith("/dev/zero"):
                    file = OpenFile(path, dev=dev, ino=inode, shmem=True)  # each its own shmem file
                else:
                    key = (dev, inode)
                    file = files.get(key)
                    if file is None:
                        file = files[key] = OpenFile(path, dev=dev, ino=inode, shmem=shm,
                                                     has_close_hook=path.startswith("/SYSV"))
            pgoff = (int(row.get("offset") or 0) >> PAGE_SHIFT) if file is not None else (
                start >> PAGE_SHIFT)
            v = Vma(start, end, pgoff, flags, file, anon_name=name, label=label,
                    has_close_hook=bool(file and file.has_close_hook))
            anon_kb = row.get("anonymous_kb")
            if not flags & (VM_SHARED | VM_MAYSHARE):
                if anon_kb is not None and int(anon_kb) > 0:
                    shared = None
                    if (prev is not None and prev.end == start and isinstance(prev.anon_vma, AnonVma)
                            and prev.file is file and not ((prev.flags ^ flags) & ~(
                                VM_ACCESS_FLAGS | VM_SOFTDIRTY))
                            and pgoff == prev.pgoff + prev.pages):
                        shared = prev.anon_vma
                    v.anon_vma = shared or AnonVma(snapshot=True)
                    v.avc = 1
                else:
                    v.anon_vma = UnknownAnonVma()
            mm._link(v, prev)
            mm._nomerge_bounds.update((start, end))
            prev = v
        return mm

    @classmethod
    def from_deep_snapshot(cls, frame: pl.DataFrame, kernel: str | KernelProfile = "6.19", *,
                           deep_files: dict[int, OpenFile] | None = None, **kw: Any) -> Self:
        """Build an address space with the exact hidden state of a deep snapshot (module docstring).

        The raw ``vm_flags`` are used as they are (bits the model has no name for compare equal on
        both sides of a merge, as in the kernel). Names and labels ([heap], [stack], [vdso],
        [anon:NAME], file paths) come from the /proc columns. ``deep_files``: file_id -> OpenFile,
        used and filled, so that several deep snapshots of one trace (one collector numbers the
        open files) share one OpenFile per open file.
        """
        if not is_deep(frame):
            missing = [c for c in DEEP_COLUMNS if c not in frame.columns]
            raise SnapshotError(f"not a deep snapshot: column(s) {', '.join(missing)} missing")
        mm = cls(kernel, **kw)
        files: dict[int, OpenFile] = deep_files if deep_files is not None else {}
        anons: dict[int, AnonVma] = {}
        prev: Vma | None = None
        for row in _rows(frame):
            start, end = int(row["start"]), int(row["end"])
            if start >= TASK_SIZE:
                continue  # [vsyscall]
            if start >= end or start & 0xFFF or end & 0xFFF:
                raise SnapshotError(f"bad VMA range {start:#x}-{end:#x}")
            if prev is not None and start < prev.end:
                raise SnapshotError(f"overlapping VMAs at {start:#x}")
            flags = int(row["vm_flags"])
            path = row.get("path")
            close = bool(row["close_hook"])
            name = row["anon_name"]
            label: str | None = None
            file: OpenFile | None = None
            fid = row["file_id"]
            if fid is not None:
                file = files.get(int(fid))
                if file is None:
                    shm = bool(path) and str(path).startswith(("/dev/zero", "/memfd:", "/SYSV", "[anon_shmem:"))
                    fpath = "/dev/zero (deleted)" if str(path or "").startswith("[anon_shmem:") else str(path or "")
                    file = files[int(fid)] = OpenFile(fpath, dev=str(row.get("dev") or "00:00"),
                                                      ino=int(row.get("inode") or 0), shmem=shm, has_close_hook=close)
                if name is None and path and str(path).startswith("[anon_shmem:"):
                    name = str(path)[12:-1]
            elif path == "[heap]":
                if mm.start_brk is None:
                    mm.start_brk = start
                mm.cur_brk = end
            elif path == "[stack]":
                mm.start_stack = end - 1
            elif path and str(path).startswith("[anon:"):
                if name is None:
                    name = str(path)[6:-1]
            elif path and str(path).startswith("["):
                label = str(path)
            v = Vma(start, end, int(row["pgoff"]), flags, file, anon_name=name, label=label, has_close_hook=close,
                    policy=_POLICY_SET if row["mempolicy"] else None,
                    uffd_ctx=_UFFD_SET if row["uffd"] else None)
            aid = row["anon_vma_id"]
            if aid is not None:
                a = anons.get(int(aid))
                if a is None:
                    a = anons[int(aid)] = AnonVma(snapshot=True)
                v.anon_vma = a
                v.avc = int(row["avc"])
            mm._link(v, prev)
            mm._nomerge_bounds.update((start, end))  # the kernel kept them apart: no invariant claim
            prev = v
        return mm

    def narrow_from_snapshot(self, frame: pl.DataFrame) -> tuple[list[VmaView], list[str]]:
        """Use a later snapshot of the same process to resolve UNKNOWN anon_vma states.

        Returns ``(resolved, disagreements)``: the model VMAs whose state this snapshot resolved (now
        known faulted, or merged because the kernel evidently found an unknown anon_vma
        compatible), and the differences the model cannot explain by unknown state (text lines).
        """
        mm = self
        resolved: list[VmaView] = []
        problems: list[str] = []
        rows = [r for r in _rows(frame) if int(r["start"]) < TASK_SIZE]
        # 1. Boundaries: a snapshot VMA covering several model VMAs means the kernel merged them.
        for r in rows:
            s, e = int(r["start"]), int(r["end"])
            parts = mm._gather(s, e)
            if not parts:
                problems.append(f"[{s:#x},{e:#x}): in the snapshot, not in the model")
                continue
            if parts[0].start != s or parts[-1].end != e:
                problems.append(
                    f"[{s:#x},{e:#x}): snapshot boundaries differ from the model's "
                    f"[{parts[0].start:#x},{parts[-1].end:#x})")
                continue
            if len(parts) > 1:
                unknown = [p for p in parts if p.anon_vma is not None and p.anon_vma.unknown]
                contiguous = all(a.end == b.start for a, b in itertools.pairwise(parts))
                if unknown and contiguous:
                    known = next((p.anon_vma for p in parts if p.anon_vma is not None
                                  and not p.anon_vma.unknown), None)
                    first = parts[0]
                    for p in parts[1:]:
                        mm._unlink(p)
                    first.end = e
                    first.anon_vma = known if known is not None else first.anon_vma
                    first.avc = 1 if known is not None else first.avc
                    resolved.append(mm._view(first))
                else:
                    problems.append(
                        f"[{s:#x},{e:#x}): one VMA in the snapshot, {len(parts)} in the model")
                    continue
            cur = mm.vma_lookup(s)
            row_flags = _flags_of(r)
            if cur is not None and r.get("vmflags"):
                have = mnemonics(cur.flags, soft_dirty=mm.soft_dirty)
                want_m = mnemonics(row_flags, soft_dirty=mm.soft_dirty)
                if have != want_m:
                    problems.append(
                        f"[{s:#x},{e:#x}): VmFlags differ: model {' '.join(sorted(have))}, "
                        f"snapshot {' '.join(sorted(want_m))}")
        # 2. Anonymous > 0 proves faulted.
        for r in rows:
            s, e = int(r["start"]), int(r["end"])
            anon_kb = r.get("anonymous_kb")
            if anon_kb is None or int(anon_kb) <= 0:
                continue
            for v in mm._gather(s, e):
                a = v.anon_vma
                if a is not None and a.unknown:
                    v.anon_vma = AnonVma(snapshot=True)
                    v.avc = 1
                    mm._nomerge_bounds.update((v.start, v.end))
                    resolved.append(mm._view(v))
                elif a is None and not v.flags & (VM_SHARED | VM_MAYSHARE):
                    problems.append(
                        f"[{v.start:#x},{v.end:#x}): snapshot shows anonymous pages, the model says "
                        "the VMA is unfaulted")
        # 3. Model VMAs absent from the snapshot.
        snap = [(int(r["start"]), int(r["end"])) for r in rows]
        i = 0
        for v in mm._index:
            while i < len(snap) and snap[i][1] <= v.start:
                i += 1
            if i >= len(snap) or snap[i][0] >= v.end:
                problems.append(f"[{v.start:#x},{v.end:#x}): in the model, not in the snapshot")
        return resolved, problems
