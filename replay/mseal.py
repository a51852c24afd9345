"""mm/mseal.c: mseal(2) (6.10+)."""

from __future__ import annotations

import errno as E

from replay import explain as X
from replay.flags import VM_SEALED
from replay.internal import PAGE_OFF, U64, MmCore, err
from replay.mm_types import Vma


class MsealMixin(MmCore):
    """mseal (mm/mseal.c)."""

    def mseal(self, addr: int, length: int, flags: int = 0) -> None:
        """mseal(2) (6.10+)."""
        self._run("mseal", (addr, length, flags), self._mseal, addr, length, flags)

    def _mseal(self, start: int, length: int, flags: int) -> None:
        if (start | length) < 0:  # the kernel's unsigned long view of a negative value
            start, length = start & U64, length & U64
        if not self.profile.mseal_available:
            raise err(E.ENOSYS, "mseal does not exist in this kernel")
        if flags:
            raise err(E.EINVAL, "flags must be 0")
        if start & PAGE_OFF:
            raise err(E.EINVAL, "address not page aligned")
        length = (length + PAGE_OFF) & ~PAGE_OFF
        end = start + length
        if end > U64:  # start + len wrapped (or PAGE_ALIGN(len) did)
            raise err(E.EINVAL, "range wraps")
        if end == start:
            return
        if self._walk_nochange(start, end):
            raise err(E.ENOMEM, "range not fully mapped")
        self.sealed_ever = True
        self._mseal_apply(start, end)

    def _mseal_apply(self, start: int, end: int) -> None:
        """Mirrors mseal_apply(): every VMA of the (hole-free) range that is not sealed yet is
        sealed through vma_modify_flags(), which merges it with a sealed neighbour or splits it.

        With ``mseal_stale_curr_start`` the walk's curr_start is the curr_end computed before
        the previous VMA was modified, which lies below the next VMA's start once that VMA
        merged with the sealed one after it.
        """
        stale = self.profile.mseal_stale_curr_start
        vma = self._find(start)
        curr_start = start
        while vma is not None and vma.start < end:
            curr_end = vma.end if vma.end < end else end
            if not stale:  # the fix: curr_start = max(vm_start, start) for every VMA
                curr_start = vma.start if vma.start > start else start
            if not vma.flags & VM_SEALED:
                if curr_start < vma.start:
                    vma = self._seal_from_below(vma, curr_start, curr_end)
                else:
                    vma, merged = self._vma_modify(vma, curr_start, curr_end,
                                                   vma.flags | VM_SEALED, vma.anon_name)
                    if not merged and self._cur is not None:
                        self._step(X.MODIFY, curr_start, curr_end, vma)
            if curr_end >= end:
                break
            curr_start = curr_end
            vma = vma.next

    def _seal_from_below(self, vma: Vma, start: int, end: int) -> Vma:
        """vma_modify_flags() over [start, end) with start below vma's vm_start (the stale
        curr_start of mseal_apply()): vma_merge_existing_range() finds no left side, and next's
        pgoff, counted from an address below vm_start as an unsigned offset, never matches; so
        vma_modify() only splits at ``end`` (the start is not inside the VMA), and what is left
        of the VMA is sealed."""
        if self._cur is not None:
            self._step(X.NOMERGE, start, end, None, [X.Refusal(
                "middle", vma.rng, "stale_start", f"the range starts at {start:#x}, below the "
                "VMA: no left side, and next's pgoff does not match")])
        if end < vma.end:
            self._split(vma, end)
        vma.flags |= VM_SEALED
        self._nomerge_bounds.add(vma.start)  # left apart from its prev without a merge attempt
        if self._cur is not None:
            self._step(X.MODIFY, vma.start, vma.end, vma)
        return vma
