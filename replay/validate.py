"""Invariant checks of an address space, ``AddressSpace.check()`` (run after every step in tests).

What is checked, and why it is really invariant (see docs/model.md, "Invariants"):

1. Structure: VMAs sorted, non-empty, page aligned, non-overlapping; the doubly linked list, the
   index and ``map_count`` agree.
2. anon_vma bookkeeping: a VMA with an anon_vma has ``avc >= 1``.
3. No *identical* adjacent pair unless its boundary was made without a merge attempt. Two
   adjacent VMAs that agree on every merge-relevant attribute (flags except the ignored ones, the
   same struct file, contiguous pgoff, the *same* anon_vma object or both none, name, policy, uffd
   context, no close hook, no VM_SPECIAL) are mergeable under every profile's rules, so the
   kernel can only leave them apart when the boundary came from a path that never tries to
   merge: a split (munmap, mprotect/madvise/... that did not merge), a flag or anon_vma change
   made in place (fault-time anon_vma reuse, MREMAP_DONTUNMAP, guard install, KSM enable,
   mlock not inherited by fork), stack growth, fork, or a snapshot. The model records those
   boundaries; any other identical pair is a bug in the model's merge engine.

Pairs that differ in anon_vma (e.g. the OLD rule leaving an unfaulted VMA next to a faulted one)
are deliberately not flagged: whether they merge is exactly what the profiles disagree about.
"""

from __future__ import annotations

from replay.flags import PAGE_SIZE, VM_SPECIAL
from replay.internal import MmCore
from replay.mm_types import Vma

__all__ = ["ValidateMixin", "identical"]


def identical(mm: MmCore, a: Vma, b: Vma) -> bool:
    """a and b (a before b) agree on every merge-relevant attribute."""
    return (
        a.end == b.start
        and not ((a.flags ^ b.flags) & ~mm._ignored)
        and not (a.flags & VM_SPECIAL)
        and a.file is b.file
        and b.pgoff == a.pgoff + ((a.end - a.start) // PAGE_SIZE)
        and a.anon_vma is b.anon_vma
        and a.avc == b.avc
        and a.anon_name == b.anon_name
        and a.policy == b.policy
        and a.uffd_ctx is b.uffd_ctx
        and not a.has_close_hook
        and not b.has_close_hook
    )


class ValidateMixin(MmCore):
    """``check()`` (mixed into :class:`replay.AddressSpace`)."""

    def check(self) -> None:
        """Raise AssertionError unless the model's invariants hold (see docs/model.md). Forgets
        the no-merge boundaries that are no longer between two VMAs first (_prune_bounds())."""
        self._prune_bounds()
        check_mm(self)


def check_mm(mm: MmCore) -> None:
    """Raise AssertionError describing the first broken invariant."""
    prev = None
    count = 0
    keys = list(mm._index.keys())
    for i, v in enumerate(mm._index):
        count += 1
        where = f"VMA [{v.start:#x},{v.end:#x})"
        assert v.start < v.end, f"{where}: empty or inverted"
        assert v.start % PAGE_SIZE == 0 and v.end % PAGE_SIZE == 0, f"{where}: not page aligned"
        assert keys[i] == v.start, f"{where}: index key {keys[i]:#x} is stale"
        assert v.prev is prev, f"{where}: prev link broken"
        if prev is not None:
            assert prev.next is v, f"{where}: next link of the VMA before is broken"
            assert prev.end <= v.start, (
                f"{where} overlaps [{prev.start:#x},{prev.end:#x})")
            if identical(mm, prev, v) and v.start not in mm._nomerge_bounds:
                raise AssertionError(
                    f"[{prev.start:#x},{prev.end:#x}) and {where} are identical but unmerged, and "
                    "their boundary was not made by a path that skips merging")
        if v.anon_vma is not None and not v.anon_vma.unknown:
            assert v.avc >= 1, f"{where}: has an anon_vma but avc {v.avc}"
        prev = v
    if prev is not None:
        assert prev.next is None, "last VMA has a next link"
    assert count == mm.map_count, f"map_count {mm.map_count} != {count} VMAs"
    assert count == len(mm._index), "index length differs from the VMA count"
