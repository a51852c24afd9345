"""Internal entry points shaped like the kernel's userland VMA test harness (tools/testing/vma).

The kernel's own tests drive ``vma_merge_new_range()``/``vma_merge_existing_range()`` with a
hand-built ``struct vma_merge_struct``; these helpers do exactly that on an
:class:`replay.AddressSpace` so the kernel's scenarios can be ported one by one. Public-API
tests should prefer the syscalls; use these only where the kernel test sets internal state
(an avc without an anon_vma, ``vmg.anon_vma`` left unset, a vm_ops->close hook on anonymous
memory, "just expand" mode, allocation failure).

Addresses are bytes; ``pgoff`` is in pages, as in the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

from replay.flags import PAGE_SHIFT, VM_MAYREAD, VM_MAYWRITE, VM_READ, VM_WRITE
from replay.mm import AddressSpace
from replay.mm_types import UNKNOWN, AnonVma, Unknown, Vma

__all__ = [
    "DEFAULT_FLAGS",
    "VmaMergeStruct",
    "alloc_and_link_vma",
    "expand",
    "is_mergeable_anon_vma_old",
    "merge_existing",
    "merge_new",
    "modify_flags",
    "shrink",
]

# The kernel tests' default flags: VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE.
DEFAULT_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE

MERGE_SUCCESS = "success"
MERGE_NOMERGE = "nomerge"
MERGE_NOMEM = "nomem"


@dataclass
class VmaMergeStruct:
    """struct vma_merge_struct (the fields the tests set). ``anon_vma=UNKNOWN`` means "unset"."""

    start: int
    end: int
    pgoff: int
    flags: int = DEFAULT_FLAGS
    prev: Vma | None = None
    middle: Vma | None = None
    next: Vma | None = None
    anon_vma: AnonVma | Unknown | None = UNKNOWN
    just_expand: bool = False
    fail_alloc: bool = False  # the vmi_prealloc_fail fault injection
    state: str = ""


def alloc_and_link_vma(mm: AddressSpace, start: int, end: int, pgoff: int,
                       flags: int = DEFAULT_FLAGS, *, anon_vma: AnonVma | None = None,
                       avc: int | None = None, has_close_hook: bool = False) -> Vma:
    """alloc_and_link_vma(): insert a VMA directly (no merge). avc defaults to 1 if faulted."""
    prev = mm._prev_of(start)
    v = Vma(start, end, pgoff, flags, None, anon_vma, (1 if anon_vma is not None else 0)
            if avc is None else avc, has_close_hook=has_close_hook)
    mm._link(v, prev)
    mm._nomerge_bounds.update((start, end))
    return v


def _anon(vmg: VmaMergeStruct) -> AnonVma | None:
    a = vmg.anon_vma
    return None if isinstance(a, Unknown) else a


def merge_new(mm: AddressSpace, vmg: VmaMergeStruct) -> Vma | None:
    """vma_merge_new_range() on [vmg.start, vmg.end)."""
    if vmg.fail_alloc:
        vmg.state = MERGE_NOMEM
        return None
    prev = vmg.prev if vmg.prev is not None else mm._prev_of(vmg.start)
    nxt = vmg.next if vmg.next is not None else (prev.next if prev is not None
                                                 else mm._index.first())
    mm._begin("merge_new", (vmg.start, vmg.end, vmg.pgoff))
    v = mm._merge_new_range(vmg.start, vmg.end, vmg.flags, None, vmg.pgoff, _anon(vmg), None,
                            None, None, prev, nxt, just_expand=vmg.just_expand)
    mm._end()
    vmg.state = MERGE_SUCCESS if v is not None else MERGE_NOMERGE
    return v


def merge_existing(mm: AddressSpace, vmg: VmaMergeStruct) -> Vma | None:
    """vma_merge_existing_range() on [vmg.start, vmg.end) of vmg.middle.

    As in the kernel's tests, ``vmg.anon_vma`` is whatever the test set (unset = NULL), not
    necessarily the middle's own anon_vma.
    """
    if vmg.fail_alloc:
        vmg.state = MERGE_NOMEM
        return None
    assert vmg.middle is not None
    mm._begin("merge_existing", (vmg.start, vmg.end))
    v = mm._merge_existing_range(vmg.middle, vmg.start, vmg.end, vmg.flags,
                                 vmg.middle.anon_name, vmg.middle.policy, vmg.middle.uffd_ctx,
                                 _anon(vmg))
    mm._end()
    if v is not None:
        # the kernel's test writes no attribute after the merge, so a partial merge can leave
        # an identical neighbour; a real caller would have changed the range's attribute
        mm._nomerge_bounds.update((v.start, v.end))
    vmg.state = MERGE_SUCCESS if v is not None else MERGE_NOMERGE
    return v


def modify_flags(mm: AddressSpace, vma: Vma, start: int, end: int, flags: int) -> Vma:
    """vma_modify_flags(): merge or split only; the flags are NOT written (as in the kernel)."""
    v, _ = mm._vma_modify(vma, start, end, flags, vma.anon_name, write=False)
    return v


def expand(mm: AddressSpace, target: Vma, start: int, end: int, *,
           fail_alloc: bool = False) -> str:
    """vma_expand(): grow target to [start, end), removing a next VMA it covers entirely."""
    if fail_alloc:
        return MERGE_NOMEM
    nxt = target.next
    if nxt is not None and nxt.end <= end:
        mm._dup_anon_vma(target, nxt)
        mm._unlink(nxt)
    if start != target.start:
        target.pgoff -= (target.start - start) >> PAGE_SHIFT
        mm._set_start(target, start)
    target.end = end
    return MERGE_SUCCESS


def shrink(mm: AddressSpace, vma: Vma, start: int, end: int) -> None:
    """vma_shrink(): trim vma to [start, end)."""
    if start != vma.start:
        vma.pgoff += (start - vma.start) >> PAGE_SHIFT
        mm._set_start(vma, start)
    vma.end = end


def is_mergeable_anon_vma_old(anon_vma1: AnonVma | None, anon_vma2: AnonVma | None,
                              vma: Vma | None) -> bool:
    """The pre-6.16 is_mergeable_anon_vma(a1, a2, vma) helper, as the old tests probed it.

    One side unfaulted is fine only if ``vma`` is absent or has a single avc; otherwise the two
    anon_vmas must be identical.
    """
    if (anon_vma1 is None or anon_vma2 is None) and (vma is None or vma.avc == 1):
        return True
    return anon_vma1 is anon_vma2
