"""Explanations: which kernel path each operation took, and why merges were refused.

An :class:`Explanation` is built per operation only when the address space was created with
``explain=True`` (the default); the hot path with ``explain=False`` builds nothing. Paths and
predicate names use the kernel's vocabulary so reports can say "the kernel did X because P".
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "PATHS",
    "PREDICATES",
    "Explanation",
    "Refusal",
    "Step",
]

# Paths an operation can take (one Step each).
NEW_VMA = "new_vma"  # no merge: a new VMA was created (mmap/brk/mremap destination)
EXPAND_PREV = "expand_prev"  # new range merged into prev (vma_expand() of prev)
EXPAND_NEXT = "expand_next"  # new range merged into next (next grows down)
MERGE_BOTH = "merge_both"  # prev, (middle/new range) and next became one VMA
MERGE_LEFT = "merge_left"  # existing range: all of middle merged into prev
MERGE_RIGHT = "merge_right"  # existing range: all of middle merged into next
ADJUST_MIDDLE_START = "adjust_middle_start"  # prev grows over the head of middle
ADJUST_NEXT_START = "adjust_next_start"  # next grows down over the tail of middle
SPLIT = "split"  # __split_vma()
UNMAP = "unmap"  # a VMA (piece) removed
UNCHANGED = "unchanged"  # attribute already as requested: no merge attempt at all
MODIFY = "modify"  # attribute written onto a VMA (after split or as is)
NOMERGE = "nomerge"  # a merge attempt that found nothing
EXPAND_IN_PLACE = "expand_in_place"  # mremap grew a VMA in place
MOVE = "move"  # mremap moved a range (copy_vma + move page tables)
DONTUNMAP = "dontunmap"  # MREMAP_DONTUNMAP left the source behind
STACK_GROW = "stack_grow"  # expand_downwards()
ANON_PREPARE = "anon_vma_prepare"  # first fault: new anon_vma
ANON_REUSE = "anon_vma_reuse"  # first fault: reused a neighbour's anon_vma
FLAG_SET = "flag_set"  # flag set directly on a VMA with no merge/split (guard, KSM, DONTUNMAP)
FORK = "fork"
EXEC = "exec"
SKIP = "skip"  # VMA skipped by the caller (e.g. mlock of VM_SPECIAL)

PATHS = (
    NEW_VMA, EXPAND_PREV, EXPAND_NEXT, MERGE_BOTH, MERGE_LEFT, MERGE_RIGHT, ADJUST_MIDDLE_START,
    ADJUST_NEXT_START, SPLIT, UNMAP, UNCHANGED, MODIFY, NOMERGE, EXPAND_IN_PLACE, MOVE, DONTUNMAP,
    STACK_GROW, ANON_PREPARE, ANON_REUSE, FLAG_SET, FORK, EXEC, SKIP,
)

# Predicates that can refuse a merge.
PREDICATES = (
    "no_neighbour",  # nothing adjacent on that side
    "special",  # VM_SPECIAL in the proposed flags
    "flags",  # flags differ (detail names the mnemonics)
    "file",  # different struct file
    "pgoff",  # not pgoff-contiguous
    "anon_vma",  # anon_vmas incompatible (both faulted, different) or OLD rule (avc != 1)
    "fork_child",  # NEW rule: the VMA whose anon_vma would be used is a fork child
    "anon_vma_prev_next",  # 3-way: prev and next have different anon_vmas
    "close",  # vm_ops->close on a VMA that this era forbids
    "name",  # anon_vma_name differs
    "policy",  # NUMA policy differs
    "uffd",  # userfaultfd context differs
    "just_expand",  # brk: never absorbs the following VMA
    "interior",  # existing-range change strictly inside a VMA
    "stale_start",  # mseal_apply() of 6.17 - 7.0-rc: the range starts below the VMA
)


def _rng(r: tuple[int, int] | None) -> str:
    return "-" if r is None else f"[{r[0]:#x},{r[1]:#x})"


@dataclass(slots=True)
class Refusal:
    """One predicate that refused merging with the VMA on ``side`` ("prev"/"next"/"middle")."""

    side: str
    vma: tuple[int, int] | None
    predicate: str
    detail: str = ""

    def __str__(self) -> str:
        d = f" ({self.detail})" if self.detail else ""
        return f"{self.side} {_rng(self.vma)}: {self.predicate}{d}"


@dataclass(slots=True)
class Step:
    """One kernel path taken: ``path`` over ``[start, end)``; ``target`` is the resulting VMA."""

    path: str
    start: int
    end: int
    target: tuple[int, int] | None = None
    refusals: list[Refusal] = field(default_factory=list)
    note: str = ""

    def __str__(self) -> str:
        s = f"{self.path} {_rng((self.start, self.end))}"
        if self.target is not None:
            s += f" -> {_rng(self.target)}"
        if self.note:
            s += f" [{self.note}]"
        if self.refusals:
            merged = self.path in (EXPAND_PREV, EXPAND_NEXT, MERGE_LEFT, MERGE_RIGHT,
                                   ADJUST_MIDDLE_START, ADJUST_NEXT_START)
            s += (" (not with " if merged else " because ") + "; ".join(
                str(r) for r in self.refusals) + (")" if merged else "")
        return s


@dataclass(slots=True)
class Explanation:
    """What one operation did, in kernel terms."""

    op: str
    args: tuple[object, ...]
    steps: list[Step] = field(default_factory=list)
    errno: int | None = None
    unknown: list[str] = field(default_factory=list)  # "depends on unknown anon_vma of [..)"

    @property
    def paths(self) -> list[str]:
        return [s.path for s in self.steps]

    def refusals(self) -> list[Refusal]:
        return [r for s in self.steps for r in s.refusals]

    def refused_predicates(self) -> set[str]:
        return {r.predicate for s in self.steps for r in s.refusals}

    def __str__(self) -> str:
        args = ", ".join(hex(a) if isinstance(a, int) and a > 9 else repr(a) for a in self.args)
        lines = [f"{self.op}({args})" + (f" = -{self.errno}" if self.errno else "")]
        lines += [f"  {s}" for s in self.steps]
        lines += [f"  ! {u}" for u in self.unknown]
        return "\n".join(lines)
