"""Page diagrams in the notation of the kernel's VMA tests (tools/testing/vma).

One character per page: a letter names the VMA that owns the page, a blank is unmapped. Letters
come from ``names`` (VMA object -> letter) when given, so a test can follow the kernel's
convention (the VMA that survives a merge keeps its letter); otherwise VMAs are lettered A, B, C...
in address order.

>>> from replay import AddressSpace
>>> from replay.harness import alloc_and_link_vma
>>> mm = AddressSpace("6.19")
>>> a = alloc_and_link_vma(mm, 0x0000, 0x2000, 0)
>>> b = alloc_and_link_vma(mm, 0x3000, 0x4000, 3)
>>> render(mm, 0, 5)
'AA B '
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from replay.flags import PAGE_SHIFT

if TYPE_CHECKING:  # pragma: no cover
    from replay.mm import AddressSpace
    from replay.mm_types import Vma

__all__ = ["render", "ruler"]


def ruler(npages: int) -> str:
    """The column ruler drawn above diagrams: 0123456789abcdef0123..."""
    return "".join("0123456789abcdef"[i % 16] for i in range(npages))


def render(mm: AddressSpace, first_page: int = 0, npages: int = 16,
           names: dict[int, str] | None = None) -> str:
    """Draw pages [first_page, first_page + npages) of ``mm``."""
    out = [" "] * npages
    auto = iter("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    v: Vma | None = mm._find(first_page << PAGE_SHIFT)
    while v is not None and (v.start >> PAGE_SHIFT) < first_page + npages:
        ch = names.get(id(v), "?") if names is not None else next(auto, "?")
        lo = max(v.start >> PAGE_SHIFT, first_page)
        hi = min(v.end >> PAGE_SHIFT, first_page + npages)
        for p in range(lo, hi):
            out[p - first_page] = ch
        v = v.next
    return "".join(out)
