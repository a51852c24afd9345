"""mm/mprotect.c: mprotect(2) and pkey_mprotect(2) (do_mprotect_pkey(), mprotect_fixup())."""

from __future__ import annotations

import errno as E

from replay import explain as X
from replay.flags import (
    EXEC_ONLY_PKEY,
    PROT_EXEC,
    PROT_GROWSDOWN,
    PROT_GROWSUP,
    PROT_READ,
    PROT_SEM,
    PROT_WRITE,
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_HUGETLB,
    VM_LOCKED,
    VM_NORESERVE,
    VM_PKEY_BIT0,
    VM_PKEY_MASK,
    VM_READ,
    VM_SEALED,
    VM_SHARED,
    VM_WRITE,
)
from replay.internal import PAGE_OFF, U64, MmCore, err
from replay.mm_types import Vma

_VM_RWX = VM_READ | VM_WRITE | VM_EXEC
_PROT_GROWS = PROT_GROWSDOWN | PROT_GROWSUP
_PROT_UNKNOWN = ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM)


class MprotectMixin(MmCore):
    """mprotect and pkey_mprotect (mm/mprotect.c)."""

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """mprotect(2) (do_mprotect_pkey() + mprotect_fixup())."""
        if not self.explain:
            return self._mprotect(addr, length, prot, -1)
        return self._run("mprotect", (addr, length, prot), self._mprotect, addr, length, prot,
                         -1)

    def pkey_mprotect(self, addr: int, length: int, prot: int, pkey: int) -> None:
        """pkey_mprotect(2); needs ``pkeys=True`` (this model's machines have no PKU)."""
        self._run("pkey_mprotect", (addr, length, prot, pkey), self._mprotect, addr, length,
                  prot, pkey)

    def _mprotect(self, start: int, length: int, prot: int, pkey: int) -> None:
        if (start | length) < 0:  # the kernel's unsigned long view of a negative value
            start, length = start & U64, length & U64
        grows = prot & _PROT_GROWS
        if grows:
            prot &= ~_PROT_GROWS
            if grows == _PROT_GROWS:
                raise err(E.EINVAL, "both GROWSDOWN and GROWSUP")
        if start & PAGE_OFF:
            raise err(E.EINVAL, "address not page aligned")
        if not length:
            return
        length = (length + PAGE_OFF) & ~PAGE_OFF
        end = start + length
        if end > U64:  # start + len wrapped (or PAGE_ALIGN(len) did)
            raise err(E.ENOMEM, "range wraps")
        if prot & _PROT_UNKNOWN:
            raise err(E.EINVAL, "unknown prot bits")
        if pkey != -1 and (not self.pkeys or not 0 <= pkey < 16):
            raise err(E.EINVAL, "protection keys unavailable")
        vma = self._find(start)
        if vma is None:
            raise err(E.ENOMEM, "no VMA")
        if grows & PROT_GROWSDOWN:
            if vma.start >= end:
                raise err(E.ENOMEM, "no VMA")
            start = vma.start
            if not vma.flags & VM_GROWSDOWN:
                raise err(E.EINVAL, "PROT_GROWSDOWN on a non-GROWSDOWN VMA")
        elif vma.start > start:
            raise err(E.ENOMEM, "range starts in a hole")
        newprot = prot & _VM_RWX
        tmp = start
        while True:
            if vma.start > tmp:
                raise err(E.ENOMEM, "hole in range")
            vend = vma.end
            new_flags = (vma.flags & ~_VM_RWX) | newprot
            if self.pkeys:
                new_flags = (new_flags & ~VM_PKEY_MASK) | (
                    self._override_pkey(vma, prot & 7, pkey) * VM_PKEY_BIT0)
            if (new_flags & ~(new_flags >> 4)) & VM_ACCESS_FLAGS:
                raise err(E.EACCES, "prot exceeds VM_MAY*")
            seg_end = end if end < vend else vend
            vma = self._mprotect_fixup(vma, tmp, seg_end, new_flags)
            tmp = vma.end if vma.end > seg_end else seg_end  # vma_iter_end() after a merge
            if tmp >= end:
                return
            nv = vma.next  # find_vma(tmp): vma ends exactly at tmp here
            if nv is None or nv.start >= end:
                raise err(E.ENOMEM, "hole at end of range")
            vma = nv

    def _override_pkey(self, vma: Vma | None, prot: int, pkey: int) -> int:
        """arch_override_mprotect_pkey() (x86 with PKU): PROT_EXEC alone gets the
        execute-only pkey; leaving PROT_EXEC-only drops it; otherwise the VMA keeps its key."""
        if not self.pkeys:
            return 0
        if pkey != -1:
            return pkey
        if prot == PROT_EXEC:
            return EXEC_ONLY_PKEY
        cur = ((vma.flags & VM_PKEY_MASK) // VM_PKEY_BIT0) if vma is not None else 0
        return 0 if cur == EXEC_ONLY_PKEY else cur

    def _mprotect_fixup(self, vma: Vma, start: int, end: int, new_flags: int) -> Vma:
        """Mirrors mprotect_fixup()."""
        old = vma.flags
        if vma.flags & VM_SEALED:
            raise err(E.EPERM, f"sealed VMA [{vma.start:#x},{vma.end:#x})")
        if new_flags == old:
            if self._cur is not None:
                self._step(X.UNCHANGED, start, end, vma)
            return vma
        if new_flags & VM_WRITE:
            if not old & (VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE):
                new_flags |= VM_ACCOUNT
        elif (self._unaccount and old & VM_ACCOUNT
              and vma.file is None and self._anon(vma) is None):
            new_flags &= ~VM_ACCOUNT
        v, merged = self._vma_modify(vma, start, end, new_flags, vma.anon_name)
        if not merged and self._cur is not None:
            self._step(X.MODIFY, start, end, v)
        if (old & (VM_WRITE | VM_SHARED | VM_LOCKED)) == VM_LOCKED and new_flags & VM_WRITE:
            self._populate(start, end)
        return v
