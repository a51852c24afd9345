"""mm/madvise.c: madvise(2), the per-VMA walk that mseal and mlock reuse (madvise_walk_vmas()),
guard regions, MADV_POPULATE_*, and anonymous VMA names (madvise_set_anon_name())."""

from __future__ import annotations

import errno as E
from typing import Any

from replay import explain as X
from replay.flags import (
    MADV_COLD,
    MADV_COLLAPSE,
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_DONTNEED_LOCKED,
    MADV_FREE,
    MADV_GUARD_INSTALL,
    MADV_GUARD_REMOVE,
    MADV_HUGEPAGE,
    MADV_KEEPONFORK,
    MADV_MERGEABLE,
    MADV_NOHUGEPAGE,
    MADV_NORMAL,
    MADV_PAGEOUT,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_RANDOM,
    MADV_REMOVE,
    MADV_SEQUENTIAL,
    MADV_UNMERGEABLE,
    MADV_WILLNEED,
    MADV_WIPEONFORK,
    VM_ACCESS_FLAGS,
    VM_DONTCOPY,
    VM_DONTDUMP,
    VM_DROPPABLE,
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_IO,
    VM_KSM_INCOMPATIBLE,
    VM_LOCKED,
    VM_MAYBE_GUARD,
    VM_MAYWRITE,
    VM_MERGEABLE,
    VM_NOHUGEPAGE,
    VM_PFNMAP,
    VM_RAND_READ,
    VM_READ,
    VM_SEALED,
    VM_SEQ_READ,
    VM_SHARED,
    VM_SPECIAL,
    VM_WIPEONFORK,
    VM_WRITE,
)
from replay.internal import PAGE_OFF, U64, MmCore, err
from replay.mm_types import Vma


class MadviseMixin(MmCore):
    """madvise, the VMA walk, anon names (mm/madvise.c)."""

    def _walk_modify(self, start: int, end: int, compute: Any, *, name_change: bool = False,
                     new_name: str | None = None, stop_at_hole: bool = False,
                     first: Vma | None = None) -> bool:
        """madvise_walk_vmas()-style loop. ``compute(vma) -> new flags | None (skip)``.

        ``first``: find_vma(start), if the caller has it. Returns True if there was a hole (the
        caller decides the errno).
        """
        hole = False
        vma = self._find(start) if first is None else first
        if vma is None or vma.start >= end:
            return True
        if vma.start > start:
            hole = True
            tmp = vma.start
        else:
            tmp = start
        while vma is not None and vma.start < end:
            if vma.start > tmp:
                hole = True
                if stop_at_hole:
                    return True
            seg_s = tmp if tmp > vma.start else vma.start
            seg_e = end if end < vma.end else vma.end
            new_flags = compute(vma)
            if new_flags is not None:
                name = new_name if name_change else vma.anon_name
                if new_flags == vma.flags and name == vma.anon_name:
                    if self._cur is not None:
                        self._step(X.UNCHANGED, seg_s, seg_e, vma)
                else:
                    v, merged = self._vma_modify(vma, seg_s, seg_e, new_flags, name)
                    if not merged and self._cur is not None:
                        self._step(X.MODIFY, seg_s, seg_e, v)
                    vma = v
            tmp = vma.end if vma.end > seg_e else seg_e
            if tmp >= end:
                break
            vma = vma.next  # find_vma(tmp): vma ends exactly at tmp here
        if tmp < end:
            hole = True
        return hole

    def madvise(self, addr: int, length: int, advice: int) -> None:
        """madvise(2)."""
        if not self.explain:
            return self._madvise(addr, length, advice)
        return self._run("madvise", (addr, length, advice), self._madvise, addr, length, advice)

    def _madvise(self, start: int, length: int, advice: int) -> None:
        if (start | length) < 0:  # the kernel's unsigned long view of a negative value
            start, length = start & U64, length & U64
        if advice not in _MADV_KNOWN and not (
                self.profile.guard_install_available
                and advice in (MADV_GUARD_INSTALL, MADV_GUARD_REMOVE)):
            raise err(E.EINVAL, f"unknown advice {advice}")
        if start & PAGE_OFF:
            raise err(E.EINVAL, "address not page aligned")
        length = (length + PAGE_OFF) & ~PAGE_OFF
        end = start + length
        if end > U64:  # start + len wrapped (or PAGE_ALIGN(len) did)
            raise err(E.EINVAL, "range wraps")
        if end == start:
            return
        compute = _FLAG_FNS.get(advice)
        if advice == MADV_UNMERGEABLE and self.profile.unmergeable_clears_sealed:
            compute = _unmergeable_clearing_sealed
        if compute is not None:
            if self._walk_modify(start, end, compute):
                raise err(E.ENOMEM, "range not fully mapped")
            return None
        if advice in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
            return self._madvise_populate(start, end, advice == MADV_POPULATE_WRITE)
        if advice == MADV_GUARD_INSTALL:
            return self._guard_install(start, end)
        if advice == MADV_GUARD_REMOVE:
            self._drop_guards(start, end)
            if self._walk_nochange(start, end):
                raise err(E.ENOMEM, "range not fully mapped")
            return None
        # non-VMA-changing advice: per VMA in walk order, the seal check of
        # madvise_vma_behavior() (EPERM) and then the advice's own checks (EINVAL)
        vmas = self._gather(start, end)
        discard = advice in _MADV_DISCARD
        for v in vmas:
            if discard:
                _check_discard_seal(v)
            fl = v.flags
            if advice in (MADV_DONTNEED, MADV_FREE) and fl & (
                    VM_LOCKED | VM_PFNMAP | VM_HUGETLB):
                raise err(E.EINVAL, "MADV_DONTNEED/FREE on a locked or special VMA")
            if advice == MADV_REMOVE:
                # madvise_remove(): locked or without a file EINVAL, then not shared-writable
                # EACCES (vma_is_shared_maywrite())
                if fl & VM_LOCKED or v.file is None:
                    raise err(E.EINVAL, "MADV_REMOVE on a locked or anonymous VMA")
                if fl & (VM_SHARED | VM_MAYWRITE) != VM_SHARED | VM_MAYWRITE:
                    raise err(E.EACCES, "MADV_REMOVE on a mapping that is not shared-writable")
            if advice in (MADV_COLD, MADV_PAGEOUT) and fl & (
                    VM_LOCKED | VM_PFNMAP | VM_HUGETLB):
                raise err(E.EINVAL, "MADV_COLD/PAGEOUT on a locked VMA (can_madv_lru_vma())")
            if advice == MADV_FREE and (v.file is not None or fl & VM_SHARED):
                raise err(E.EINVAL, "MADV_FREE on a non-anonymous VMA")
        if self._walk_nochange(start, end, vmas):
            raise err(E.ENOMEM, "range not fully mapped")
        return None

    def _walk_nochange(self, start: int, end: int, vmas: list[Vma] | None = None) -> bool:
        """Is there a hole in [start,end)? ``vmas``: the caller's _gather(start, end), if any."""
        tmp = start
        for v in self._gather(start, end) if vmas is None else vmas:
            if v.start > tmp:
                return True
            tmp = v.end
        return tmp < end

    def _madvise_populate(self, start: int, end: int, write: bool) -> None:
        """MADV_POPULATE_READ/WRITE: faultin_page_range(); holes are ENOMEM."""
        tmp = start
        hole = False
        in_walk = self.profile.madvise_populate_in_walk
        for v in self._gather(start, end):
            if v.start > tmp:
                if not in_walk:
                    raise err(E.ENOMEM, "hole in range")
                hole = True
            fl = v.flags
            if fl & (VM_IO | VM_PFNMAP) or not fl & VM_ACCESS_FLAGS or (
                    write and not fl & VM_WRITE) or (not write and not fl & VM_READ):
                raise err(E.EINVAL, "incompatible mapping for populate")
            s = max(start, v.start)
            if self.guard_pages and self.guard_pages.overlaps(s, min(end, v.end)):
                raise err(E.EFAULT, "populate hit a guard page")
            if self._beyond_eof(v, min(end, v.end)):
                if write and not fl & VM_SHARED:
                    self._anon_vma_prepare(v)  # do_cow_fault() prepares it before the SIGBUS
                raise err(E.EFAULT, "populate beyond the end of the file (SIGBUS)")
            if write and not fl & VM_SHARED:
                self._anon_vma_prepare(v)
            elif not write:
                self._read_fault(v, s)
            tmp = v.end
        if tmp < end or hole:
            raise err(E.ENOMEM, "hole in range")

    def _guard_install(self, start: int, end: int) -> None:
        """MADV_GUARD_INSTALL: no split, no merge; anon_vma_prepare (+ VM_MAYBE_GUARD, 6.19)."""
        vmas = self._gather(start, end)
        sets_flag = self.profile.guard_install_sets_maybe_guard
        for v in vmas:
            _check_discard_seal(v)
            if v.flags & (VM_SPECIAL | VM_HUGETLB | VM_LOCKED | VM_DROPPABLE):
                raise err(E.EINVAL, "guard regions not allowed here")
            if sets_flag:
                if v.file is None:
                    self._anon_vma_prepare(v)
                if not v.flags & VM_MAYBE_GUARD:
                    v.flags |= VM_MAYBE_GUARD
                    self._nomerge_bounds.add(v.start)
                    self._nomerge_bounds.add(v.end)
                    if self._cur is not None:
                        self._step(X.FLAG_SET, v.start, v.end, v, note="VM_MAYBE_GUARD")
            else:
                self._anon_vma_prepare(v)
            self.guard_pages.add(max(start, v.start), min(end, v.end))
        if self._walk_nochange(start, end):
            raise err(E.ENOMEM, "range not fully mapped")

    def prctl_set_vma_anon_name(self, addr: int, length: int, name: str | None) -> None:
        """prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, addr, len, name)."""
        self._run("prctl_set_vma_anon_name", (addr, length, name), self._set_anon_name, addr,
                  length, name)

    def _set_anon_name(self, start: int, length: int, name: str | None) -> None:
        if (start | length) < 0:  # the kernel's unsigned long view of a negative value
            start, length = start & U64, length & U64
        if name is not None:
            if len(name) >= 80 or any(c in name for c in "\\`$[]") or not name.isprintable():
                raise err(E.EINVAL, "bad anon name")
            if name == "":
                name = None
        if start & PAGE_OFF:
            raise err(E.EINVAL, "address not page aligned")
        length = (length + PAGE_OFF) & ~PAGE_OFF
        end = start + length
        if end > U64:  # start + len wrapped (or PAGE_ALIGN(len) did)
            raise err(E.EINVAL, "range wraps")
        if end == start:
            return

        def compute(v: Vma) -> int:
            if v.file is not None and not (v.file.shmem and v.file.path.startswith("/dev/zero")):
                raise err(E.EBADF, "anon name on a file mapping")
            return v.flags

        if self._walk_modify(start, end, compute, name_change=True, new_name=name):
            raise err(E.ENOMEM, "range not fully mapped")


def _madvise_flag_fn(advice: int) -> Any:
    """madvise_behavior(): the flag change of a flag advice, or None."""
    def setf(bit: int, clear: int = 0) -> Any:
        return lambda v: (v.flags & ~clear) | bit

    def clrf(bit: int) -> Any:
        return lambda v: v.flags & ~bit

    if advice == MADV_NORMAL:
        return clrf(VM_RAND_READ | VM_SEQ_READ)
    if advice == MADV_RANDOM:
        return setf(VM_RAND_READ, VM_SEQ_READ)
    if advice == MADV_SEQUENTIAL:
        return setf(VM_SEQ_READ, VM_RAND_READ)
    if advice == MADV_DONTFORK:
        def dontfork(v: Vma) -> int:
            _check_discard_seal(v)
            return v.flags | VM_DONTCOPY
        return dontfork
    if advice == MADV_DOFORK:
        def dofork(v: Vma) -> int:
            if v.flags & VM_IO:
                raise err(E.EINVAL, "MADV_DOFORK on VM_IO")
            return v.flags & ~VM_DONTCOPY
        return dofork
    if advice == MADV_WIPEONFORK:
        def wipe(v: Vma) -> int:
            _check_discard_seal(v)
            if v.file is not None or v.flags & VM_SHARED:
                raise err(E.EINVAL, "MADV_WIPEONFORK on a file or shared mapping")
            return v.flags | VM_WIPEONFORK
        return wipe
    if advice == MADV_KEEPONFORK:
        def keep(v: Vma) -> int:
            if v.flags & VM_DROPPABLE:
                raise err(E.EINVAL, "MADV_KEEPONFORK on VM_DROPPABLE")
            return v.flags & ~VM_WIPEONFORK
        return keep
    if advice == MADV_DONTDUMP:
        return setf(VM_DONTDUMP)
    if advice == MADV_DODUMP:
        def dodump(v: Vma) -> int:
            if v.flags & VM_SPECIAL or v.flags & VM_DROPPABLE:
                raise err(E.EINVAL, "MADV_DODUMP on a special mapping")
            return v.flags & ~VM_DONTDUMP
        return dodump
    if advice == MADV_HUGEPAGE:
        return setf(VM_HUGEPAGE, VM_NOHUGEPAGE)
    if advice == MADV_NOHUGEPAGE:
        return setf(VM_NOHUGEPAGE, VM_HUGEPAGE)
    if advice == MADV_MERGEABLE:
        def merge(v: Vma) -> int | None:
            if v.flags & VM_KSM_INCOMPATIBLE:
                return None  # ksm_madvise(): silently ignored
            return v.flags | VM_MERGEABLE
        return merge
    if advice == MADV_UNMERGEABLE:
        return clrf(VM_MERGEABLE)
    return None  # WILLNEED, DONTNEED, FREE, COLD, PAGEOUT, COLLAPSE, REMOVE ...


_MADV_KNOWN = frozenset({
    MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_DONTNEED, MADV_FREE,
    MADV_REMOVE, MADV_DONTFORK, MADV_DOFORK, MADV_MERGEABLE, MADV_UNMERGEABLE, MADV_HUGEPAGE,
    MADV_NOHUGEPAGE, MADV_DONTDUMP, MADV_DODUMP, MADV_WIPEONFORK, MADV_KEEPONFORK, MADV_COLD,
    MADV_PAGEOUT, MADV_POPULATE_READ, MADV_POPULATE_WRITE, MADV_DONTNEED_LOCKED, MADV_COLLAPSE})


def _check_discard_seal(v: Vma) -> None:
    """can_madvise_modify(): discard advice on sealed, read-only, private anonymous memory."""
    if v.flags & VM_SEALED and v.file is None and not v.flags & (VM_WRITE | VM_SHARED):
        raise err(E.EPERM, "discard advice on sealed read-only anonymous memory")


_MADV_DISCARD = frozenset({MADV_DONTNEED, MADV_FREE, MADV_DONTNEED_LOCKED, MADV_REMOVE})


def _unmergeable_clearing_sealed(v: Vma) -> int:
    """6.16's MADV_UNMERGEABLE: a VM_MERGEABLE VMA loses VM_SEALED with it (profile field
    unmergeable_clears_sealed); a VMA that is not mergeable is left as it is."""
    if not v.flags & VM_MERGEABLE:
        return v.flags
    return v.flags & ~(VM_MERGEABLE | VM_SEALED)


_FLAG_FNS: dict[int, Any] = {
    a: f for a in _MADV_KNOWN if (f := _madvise_flag_fn(a)) is not None}
