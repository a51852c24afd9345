"""mm/mseal.c: mseal(2) (6.10+)."""

from __future__ import annotations

import errno as E

from replay.flags import VM_SEALED
from replay.internal import PAGE_OFF, U64, MmCore, err


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
        self._walk_modify(start, end, lambda v: None if v.flags & VM_SEALED else
                          v.flags | VM_SEALED)
