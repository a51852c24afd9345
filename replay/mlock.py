"""mm/mlock.c: mlock(2), mlock2(2), munlock(2), mlockall(2), munlockall(2)."""

from __future__ import annotations

import errno as E

from replay import explain as X
from replay.flags import (
    MCL_CURRENT,
    MCL_FUTURE,
    MCL_ONFAULT,
    MLOCK_ONFAULT,
    TASK_SIZE,
    VM_DROPPABLE,
    VM_HUGETLB,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_LOCKONFAULT,
    VM_SPECIAL,
)
from replay.internal import PAGE_OFF, U64, MmCore, err, page_align
from replay.mm_types import Vma


class MlockMixin(MmCore):
    """mlock and friends (mm/mlock.c)."""

    def mlock(self, addr: int, length: int, flags: int = 0) -> None:
        """mlock(2) / mlock2(2) (flags=MLOCK_ONFAULT)."""
        if not self.explain:
            return self._mlock(addr, length, flags, True)
        return self._run("mlock", (addr, length, flags), self._mlock, addr, length, flags, True)

    def mlock2(self, addr: int, length: int, flags: int = 0) -> None:
        self._run("mlock2", (addr, length, flags), self._mlock, addr, length, flags, True)

    def munlock(self, addr: int, length: int) -> None:
        """munlock(2)."""
        if not self.explain:
            return self._mlock(addr, length, 0, False)
        return self._run("munlock", (addr, length), self._mlock, addr, length, 0, False)

    def _mlock(self, addr: int, length: int, flags: int, lock: bool) -> None:
        if (addr | length) < 0:  # the kernel's unsigned long view of a negative value
            addr, length = addr & U64, length & U64
        if flags & ~MLOCK_ONFAULT:
            raise err(E.EINVAL, "unknown mlock2 flags")
        length = page_align(length + (addr & PAGE_OFF))
        start = addr & ~PAGE_OFF
        end = start + length
        if end > U64:  # start + len wrapped (or PAGE_ALIGN(len) did)
            raise err(E.EINVAL, "range wraps")
        if end == start:
            return
        to_add = (VM_LOCKED | (VM_LOCKONFAULT if flags & MLOCK_ONFAULT else 0)) if lock else 0
        vma = self._find(start)
        if vma is None or vma.start > start:
            raise err(E.ENOMEM, "range starts in a hole")

        def compute(v: Vma) -> int | None:
            if v.flags & (VM_SPECIAL | VM_HUGETLB | VM_DROPPABLE):
                if self._cur is not None:
                    self._step(X.SKIP, v.start, v.end, v, note="mlock_fixup() skips this VMA")
                return None
            return (v.flags & ~VM_LOCKED_MASK) | to_add

        if self._walk_modify(start, end, compute, stop_at_hole=True, first=vma):
            raise err(E.ENOMEM, "hole in range")
        if lock:
            # __mm_populate(ignore_errors=0): GUP fails on PROT_NONE (-EFAULT -> ENOMEM)
            self._populate(start, end, strict=True)

    def mlockall(self, flags: int) -> None:
        """mlockall(2)."""
        self._run("mlockall", (flags,), self._mlockall, flags)

    def _mlockall(self, flags: int) -> None:
        if not flags or flags & ~(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) or flags == MCL_ONFAULT:
            raise err(E.EINVAL, "bad mlockall flags")
        self.def_flags &= ~VM_LOCKED_MASK
        to_add = VM_LOCKED | (VM_LOCKONFAULT if flags & MCL_ONFAULT else 0)
        if flags & MCL_FUTURE:
            self.def_flags |= to_add
        if flags & MCL_CURRENT:
            self._apply_all_lock(to_add)
            if not flags & MCL_ONFAULT:
                first = self._index.first()
                if first is not None:
                    self._populate(first.start, TASK_SIZE)

    def munlockall(self) -> None:
        """munlockall(2)."""
        self._run("munlockall", (), self._munlockall)

    def _munlockall(self) -> None:
        self.def_flags &= ~VM_LOCKED_MASK
        self._apply_all_lock(0)

    def _apply_all_lock(self, to_add: int) -> None:
        # apply_mlockall_flags(): mlock_fixup() over each whole VMA, in order
        v = self._index.first()
        while v is not None:
            nxt_start = v.end
            if not v.flags & (VM_SPECIAL | VM_HUGETLB | VM_DROPPABLE):
                nf = (v.flags & ~VM_LOCKED_MASK) | to_add
                if nf != v.flags:
                    t, _ = self._vma_modify(v, v.start, v.end, nf, v.anon_name)
                    nxt_start = max(nxt_start, t.end)
            v = self._find(nxt_start)
