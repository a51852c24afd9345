"""mm/memory.c: page faults, and what they call: anon_vma_prepare() (mm/rmap.c) and
populate_vma_page_range() (mm/gup.c)."""

from __future__ import annotations

import errno as E

from replay import explain as X
from replay.flags import (
    EXEC_ONLY_PKEY_BITS,
    PAGE_SHIFT,
    PMD_SIZE,
    VM_ACCESS_FLAGS,
    VM_GROWSDOWN,
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_IO,
    VM_LOCKONFAULT,
    VM_NOHUGEPAGE,
    VM_PFNMAP,
    VM_PKEY_MASK,
    VM_READ,
    VM_SHARED,
    VM_SPECIAL,
    VM_WRITE,
)
from replay.internal import U64, MmCore, err
from replay.mm_types import AnonVma, Vma


class MemoryMixin(MmCore):
    """Faults (mm/memory.c, mm/rmap.c, mm/gup.c)."""

    def touch(self, addr: int, write: bool = True) -> None:
        """Access one byte at addr (a page fault). Raises EFAULT where the process gets SIGSEGV."""
        if not self.explain:
            return self._touch(addr, write)
        return self._run("touch", (addr, write), self._touch, addr, write)

    def _touch(self, addr: int, write: bool) -> None:
        if addr < 0:  # the kernel's unsigned long view of a negative value
            addr &= U64
        v = self._find(addr)
        if v is None:
            raise err(E.EFAULT, "unmapped address (SIGSEGV)")
        if v.start > addr:
            if not v.flags & VM_GROWSDOWN:
                raise err(E.EFAULT, "unmapped address (SIGSEGV)")
            try:
                self._expand_downwards(v, addr)
            except OSError as e:
                raise err(E.EFAULT, f"stack expansion refused ({e.strerror}) (SIGSEGV)") from e
        fl = v.flags
        if not fl & (VM_WRITE if write else VM_ACCESS_FLAGS):
            raise err(E.EFAULT, "access not permitted (SIGSEGV)")
        if fl & VM_PKEY_MASK == EXEC_ONLY_PKEY_BITS and not fl & (VM_READ | VM_WRITE):
            raise err(E.EFAULT, "execute-only protection key (SIGSEGV)")
        if self.guard_pages and addr in self.guard_pages:
            raise err(E.EFAULT, "guard page (SIGSEGV)")
        f = v.file
        if f is not None and f.size is not None and v.pgoff + ((addr - v.start) >> PAGE_SHIFT) >= f.size:
            if write and not fl & VM_SHARED:
                # do_cow_fault(): vmf_anon_prepare() comes before __do_fault() finds the page
                # beyond the end of the file, so the VMA is faulted all the same (qemu-checked on
                # 6.1 and 6.12, and live)
                a = v.anon_vma
                if a is None or a.unknown:
                    self._anon_vma_prepare(v)
            raise err(E.EFAULT, "beyond end of file (SIGBUS)")
        if write:
            if not fl & VM_SHARED:
                a = v.anon_vma
                if a is None or a.unknown:
                    self._anon_vma_prepare(v)
        elif self.thp == "always" or fl & VM_HUGEPAGE:
            self._read_fault(v, addr)

    def _anon_vma_prepare(self, v: Vma) -> None:
        """anon_vma_prepare() with find_mergeable_anon_vma(): reuse next's, then prev's."""
        a = v.anon_vma
        if a is not None:
            if a.unknown:
                # the fault proves it is (now) faulted; identity stays unknown
                v.anon_vma = AnonVma(snapshot=True)
                v.avc = 1
                self._note_unknown(v, "faulted now; was it before?")
            return
        ign = self._reuse_ignore
        for nb, a_, b_ in ((v.next, v, v.next), (v.prev, v.prev, v)):
            if nb is None or a_ is None or b_ is None:
                continue
            # anon_vma_compatible(a, b) + reusable_anon_vma()
            if (a_.end == b_.start and a_.policy == b_.policy and a_.file is b_.file
                    and not ((a_.flags ^ b_.flags) & ~ign)
                    and b_.pgoff == a_.pgoff + ((b_.start - a_.start) >> PAGE_SHIFT)):
                na = nb.anon_vma
                if na is not None and na.unknown:
                    self._note_unknown(nb, "reusable at fault time?")
                    continue
                if na is not None and nb.avc == 1:
                    v.anon_vma = na
                    v.avc = 1
                    self._nomerge_bounds.update((v.start, v.end))
                    if self._cur is not None:
                        self._step(X.ANON_REUSE, v.start, v.end, v, note=f"from {nb.rng[0]:#x}")
                    return
        v.anon_vma = AnonVma()
        v.avc = 1
        if self._cur is not None:
            self._step(X.ANON_PREPARE, v.start, v.end, v)

    def _populate(self, start: int, end: int, write: bool | None = None, *,
                  strict: bool = False) -> None:
        """populate_vma_page_range()/__mm_populate(): write-fault private writable memory.

        ``strict``: mlock's __mm_populate(ignore_errors=0), which fails (ENOMEM) at a PROT_NONE
        VMA; other callers ignore errors.
        """
        v = self._find(start)
        while v is not None and v.start < end:
            fl = v.flags
            if strict and not fl & (VM_IO | VM_PFNMAP | VM_LOCKONFAULT):
                if not fl & VM_ACCESS_FLAGS or (
                        fl & VM_PKEY_MASK == EXEC_ONLY_PKEY_BITS
                        and not fl & (VM_READ | VM_WRITE)):
                    raise err(E.ENOMEM, "mlock populate of a PROT_NONE VMA")
                if self.guard_pages and self.guard_pages.overlaps(max(start, v.start),
                                                                  min(end, v.end)):
                    raise err(E.ENOMEM, "mlock populate hit a guard page")
                if self._beyond_eof(v, min(end, v.end)):
                    if (fl & (VM_WRITE | VM_SHARED)) == VM_WRITE and write is not False:
                        # the write faults before the failing page, or do_cow_fault() on it,
                        # prepared the anon_vma before __do_fault() met the end of the file
                        self._anon_vma_prepare(v)
                    raise err(E.ENOMEM, "mlock populate beyond the end of the file (SIGBUS)")
            if not fl & (VM_IO | VM_PFNMAP | VM_LOCKONFAULT) and fl & VM_ACCESS_FLAGS:
                w = (fl & (VM_WRITE | VM_SHARED)) == VM_WRITE if write is None else write
                if w and not fl & VM_SHARED and fl & VM_WRITE:
                    self._anon_vma_prepare(v)
                elif not w:
                    self._read_fault(v, max(start, v.start))
            v = v.next

    @staticmethod
    def _beyond_eof(v: Vma, end: int) -> bool:
        """Does [.., end) of v reach past the end of its file (a SIGBUS for faults)?"""
        f = v.file
        return (f is not None and f.size is not None
                and v.pgoff + ((end - v.start) >> PAGE_SHIFT) > f.size)

    def _read_fault(self, v: Vma, addr: int) -> None:
        """A read fault: no anon_vma, except a huge-PMD anonymous fault (THP)."""
        if v.file is not None or v.flags & VM_SHARED or self.thp in ("never", "unconfigured"):
            return
        if self.thp == "madvise" and not v.flags & VM_HUGEPAGE:
            return
        if v.flags & (VM_NOHUGEPAGE | VM_SPECIAL | VM_HUGETLB):
            return
        hs = addr & ~(PMD_SIZE - 1)
        if hs >= v.start and hs + PMD_SIZE <= v.end:
            self._anon_vma_prepare(v)
