"""Internal entry points shaped like the kernel's userland VMA test harness (tools/testing/vma).

The kernel's own tests drive ``vma_merge_new_range()``/``vma_merge_existing_range()``,
``vma_expand()`` and ``vma_shrink()`` with a hand-built ``struct vma_merge_struct``; these helpers
do exactly that on an :class:`replay.AddressSpace`, so the kernel's scenarios can be ported one by
one. Every helper runs the model's own method (``_merge_new_range``, ``_merge_existing_range``,
``_vma_expand``, ``_vma_shrink``, ``_vma_modify``); what they add is only the state the kernel's
tests set by hand (an avc without an anon_vma, ``vmg.anon_vma`` left unset, a vm_ops->close hook
on anonymous memory, "just expand" mode) and the tests' allocation failure, which arms the model's
``vma_iter_prealloc()`` fault point. Public-API tests should prefer the syscalls.

Addresses are bytes; ``pgoff`` is in pages, as in the kernel.
"""

from __future__ import annotations

import errno as E
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from replay.flags import VM_MAYREAD, VM_MAYWRITE, VM_READ, VM_WRITE
from replay.mm import AddressSpace
from replay.mm_types import UNKNOWN, AnonVma, Unknown, Vma

__all__ = [
    "DEFAULT_FLAGS",
    "MERGE_NOMEM",
    "MERGE_NOMERGE",
    "MERGE_SUCCESS",
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

_T = TypeVar("_T")


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
    target: Vma | None = None
    anon_vma: AnonVma | Unknown | None = UNKNOWN
    just_expand: bool = False
    fail_alloc: bool = False  # the tests' fail_prealloc: the model's vma_iter_prealloc() fails
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


def _run(mm: AddressSpace, vmg: VmaMergeStruct, op: str, args: tuple[object, ...],
         call: Callable[[], _T]) -> tuple[_T | None, int]:
    """Run one model call as an operation (explained), with the allocation fault armed if the
    test asks for it. Returns (result, 0) or (None, -ENOMEM) as the kernel's NOMEM state."""
    mm._fail_prealloc = vmg.fail_alloc
    mm._begin(op, args)
    try:
        r = call()
    except OSError as e:
        mm._end(e.errno)
        if e.errno != E.ENOMEM:
            raise
        vmg.state = MERGE_NOMEM
        return None, -E.ENOMEM
    finally:
        mm._fail_prealloc = False  # as the tests' cleanup_mm() resets it
    mm._end()
    return r, 0


def merge_new(mm: AddressSpace, vmg: VmaMergeStruct) -> Vma | None:
    """vma_merge_new_range() on [vmg.start, vmg.end)."""
    prev = vmg.prev if vmg.prev is not None else mm._prev_of(vmg.start)
    nxt = vmg.next if vmg.next is not None else (prev.next if prev is not None
                                                 else mm._index.first())
    v, rc = _run(mm, vmg, "merge_new", (vmg.start, vmg.end, vmg.pgoff), lambda: (
        mm._merge_new_range(vmg.start, vmg.end, vmg.flags, None, vmg.pgoff, _anon(vmg), None,
                            None, None, prev, nxt, just_expand=vmg.just_expand)))
    if rc == 0:
        vmg.state = MERGE_SUCCESS if v is not None else MERGE_NOMERGE
    return v


def merge_existing(mm: AddressSpace, vmg: VmaMergeStruct) -> Vma | None:
    """vma_merge_existing_range() on [vmg.start, vmg.end) of vmg.middle.

    As in the kernel's tests, ``vmg.anon_vma`` is whatever the test set (unset = NULL), not
    necessarily the middle's own anon_vma.
    """
    middle = vmg.middle
    assert middle is not None
    v, rc = _run(mm, vmg, "merge_existing", (vmg.start, vmg.end), lambda: (
        mm._merge_existing_range(middle, vmg.start, vmg.end, vmg.flags, middle.anon_name,
                                 middle.policy, middle.uffd_ctx, _anon(vmg))))
    if v is not None:
        # the kernel's test writes no attribute after the merge, so a partial merge can leave
        # an identical neighbour; a real caller would have changed the range's attribute
        mm._nomerge_bounds.update((v.start, v.end))
    if rc == 0:
        vmg.state = MERGE_SUCCESS if v is not None else MERGE_NOMERGE
    return v


def modify_flags(mm: AddressSpace, vma: Vma, start: int, end: int, flags: int) -> Vma:
    """vma_modify_flags(): merge or split only; the flags are NOT written (as in the kernel)."""
    v, _ = mm._vma_modify(vma, start, end, flags, vma.anon_name, write=False)
    return v


def expand(mm: AddressSpace, vmg: VmaMergeStruct) -> int:
    """vma_expand(): vmg.target becomes [vmg.start, vmg.end) at vmg.pgoff; vmg.next is removed
    if the range ends where it ends. Returns 0 or -ENOMEM (vmg.state NOMEM)."""
    target, nxt = vmg.target, vmg.next
    assert target is not None
    remove = nxt if nxt is not None and nxt is not target and vmg.end == nxt.end else None
    _, rc = _run(mm, vmg, "expand", (vmg.start, vmg.end, vmg.pgoff), lambda: (
        mm._vma_expand(target, vmg.start, vmg.end, vmg.pgoff, remove)))
    if rc == 0:
        vmg.state = MERGE_SUCCESS
    return rc


def shrink(mm: AddressSpace, vma: Vma, start: int, end: int, pgoff: int) -> int:
    """vma_shrink(): vma becomes [start, end) at pgoff. Returns 0."""
    mm._vma_shrink(vma, start, end, pgoff)
    return 0


def is_mergeable_anon_vma_old(anon_vma1: AnonVma | None, anon_vma2: AnonVma | None,
                              vma: Vma | None) -> bool:
    """The pre-6.16 is_mergeable_anon_vma(a1, a2, vma) helper, as the old tests probed it.

    One side unfaulted is fine only if ``vma`` is absent or has a single avc; otherwise the two
    anon_vmas must be identical.
    """
    if (anon_vma1 is None or anon_vma2 is None) and (vma is None or vma.avc == 1):
        return True
    return anon_vma1 is anon_vma2
