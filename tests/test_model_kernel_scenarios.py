"""The kernel's own userland VMA tests as page-diagram tests of the model (docs/model.md, "Where
the rules come from", describes the three sets).

Each test cites the kernel test it ports: tools/testing/vma/vma.c @ 6ab2d9c7c680 (the pre-6.16
set), the changes made by 879bca0a2c4f, and tools/testing/vma/tests/merge.c @ c17ee635fd3a (the
newest set, with sticky-flag permutations). Scenarios that the kernel drives through
vma_merge_new_range()/vma_merge_existing_range()/vma_expand()/vma_shrink() with a hand-built vmg
use ``replay.harness``, which calls the model's own methods, as the kernel's harness calls the
kernel's; the rest go through the public syscalls.

Diagrams: one character per page, the column ruler on top, ``*`` marks the operated range.
Every test runs ``mm.check()`` after every step.
"""

from __future__ import annotations

import errno
import itertools

import pytest

from replay import AddressSpace, AnonVma
from replay.diagram import render
from replay.flags import (
    MADV_DONTFORK,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_NORESERVE,
    MAP_PRIVATE,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_READ,
    PROT_WRITE,
    VM_DONTEXPAND,
    VM_IO,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_SPECIAL,
    VM_STICKY,
)
from replay.harness import (
    DEFAULT_FLAGS,
    MERGE_NOMEM,
    MERGE_SUCCESS,
    VmaMergeStruct,
    alloc_and_link_vma,
    expand,
    is_mergeable_anon_vma_old,
    merge_existing,
    merge_new,
    modify_flags,
    shrink,
)
from tests.kernels import NEW_ANON, OLD_ANON, STICKY, VMA_TEST_ERA

P = 0x1000
F = DEFAULT_FLAGS

# Profiles a test set belongs to: tools/testing/vma exists since 6.12 (the vma_merge_struct era).
ALL = VMA_TEST_ERA
PRE_FIX = [k for k in ALL if k in OLD_ANON]  # the pre-6.16 set: before 879bca0a2c4f
POST_FIX = [k for k in ALL if k in NEW_ANON]  # the newest set (NEW anon rule)


def vmas(mm: AddressSpace) -> list[tuple[int, int, int]]:
    """(start page, end page, pgoff) of every VMA."""
    return [(v.start // P, v.end // P, v.pgoff) for v in mm.raw_vmas()]


def ok(mm: AddressSpace) -> AddressSpace:
    mm.check()
    return mm


def vmg(start: int, end: int, pgoff: int, flags: int = F, **kw: object) -> VmaMergeStruct:
    return VmaMergeStruct(start * P, end * P, pgoff, flags, **kw)  # type: ignore[arg-type]


def link(mm: AddressSpace, start: int, end: int, pgoff: int, flags: int = F,
         **kw: object) -> object:
    v = alloc_and_link_vma(mm, start * P, end * P, pgoff, flags, **kw)  # type: ignore[arg-type]
    mm.check()
    return v


# ---------------------------------------------------------------------------------------------
# simple cases (every set)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ALL)
def test_simple_merge(kernel: str) -> None:
    """vma.c test_simple_merge: merge BOTH sides of a new range.

    012
    A*B  ->  AAA
    """
    mm = AddressSpace(kernel)
    a = link(mm, 0, 1, 0)
    link(mm, 2, 3, 2)
    got = merge_new(ok(mm), vmg(1, 2, 1))
    assert got is a
    assert vmas(ok(mm)) == [(0, 3, 0)]
    assert render(mm, 0, 3) == "AAA"


@pytest.mark.parametrize("kernel", ALL)
def test_simple_modify(kernel: str) -> None:
    """vma.c test_simple_modify: an interior flag change only SPLITS (no merge possible).

    012
    V*V  ->  ABC
    """
    mm = AddressSpace(kernel)
    link(mm, 0, 3, 0)
    v = mm.vma_lookup(0)
    assert v is not None
    got = modify_flags(mm, v, 1 * P, 2 * P, F & ~0x2)  # VM_READ | VM_MAYREAD | VM_MAYWRITE
    # the VMA given is modified in place and becomes the middle piece; the splits allocate new
    # VMAs for what is before and after it (vma_modify(): split_vma(new_below=1), then 0)
    assert got is v
    assert (got.start, got.end, got.pgoff) == (1 * P, 2 * P, 1)
    assert vmas(ok(mm)) == [(0, 1, 0), (1, 2, 1), (2, 3, 2)]
    before, middle, after = mm.raw_vmas()
    assert middle is v and before is not v and after is not v


@pytest.mark.parametrize("kernel", ALL)
def test_simple_expand(kernel: str) -> None:
    """vma.c test_simple_expand: vma_expand() of V [0,1) to [0,3) (the model's _vma_expand(),
    which every new-range merge uses)."""
    mm = AddressSpace(kernel)
    v = link(mm, 0, 1, 0)
    g = vmg(0, 3, 0, target=v)
    assert expand(mm, g) == 0 and g.state == MERGE_SUCCESS
    assert (v.start, v.end, v.pgoff) == (0, 3 * P, 0)  # type: ignore[attr-defined]
    assert vmas(ok(mm)) == [(0, 3, 0)] and mm.map_count == 1


@pytest.mark.parametrize("kernel", ALL)
def test_simple_shrink(kernel: str) -> None:
    """vma.c test_simple_shrink: vma_shrink() of V [0,3) to [0,1) (the model's _vma_shrink(),
    which munmap's head trims use)."""
    mm = AddressSpace(kernel)
    v = link(mm, 0, 3, 0)
    assert shrink(mm, v, 0, 1 * P, 0) == 0  # type: ignore[arg-type]
    assert (v.start, v.end, v.pgoff) == (0, 1 * P, 0)  # type: ignore[attr-defined]
    assert vmas(ok(mm)) == [(0, 1, 0)] and mm.map_count == 1


@pytest.mark.parametrize("kernel", ALL)
def test_split_keeps_the_original_as_middle(kernel: str) -> None:
    """What the kernel's test_simple_modify asserts after a split, through the public calls: a
    flag change inside a VMA keeps the VMA object as the middle piece (vma_modify()), for
    mprotect, madvise and mlock alike; munmap of the interior keeps it as the lower piece."""
    base = 0x100000000
    for change in ("mprotect", "madvise", "mlock"):
        mm = AddressSpace(kernel)
        mm.mmap(base, 3 * P, PROT_READ | PROT_WRITE, ANON)
        v = mm.vma_lookup(base)
        if change == "mprotect":
            mm.mprotect(base + P, P, PROT_READ)
        elif change == "madvise":
            mm.madvise(base + P, P, MADV_DONTFORK)
        else:
            mm.mlock(base + P, P)
        lo, mid, hi = ok(mm).raw_vmas()
        assert mid is v, change
        assert (mid.start, mid.end, mid.pgoff) == (base + P, base + 2 * P, (base + P) // P)
        assert lo.pgoff == base // P and hi.pgoff == (base + 2 * P) // P
    mm = AddressSpace(kernel)
    mm.mmap(base, 3 * P, PROT_READ | PROT_WRITE, ANON)
    v = mm.vma_lookup(base)
    mm.munmap(base + P, P)
    assert ok(mm).raw_vmas()[0] is v and v.end == base + P  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# merge_new: the pre-6.16 data, and the newest set's 16 sticky permutations
# ---------------------------------------------------------------------------------------------

_MERGE_NEW_CASES = [(kernel, False, False, False, False) for kernel in ALL] + [
    (kernel, *perm) for kernel in STICKY
    for perm in itertools.product([False, True], repeat=4) if any(perm)
]


@pytest.mark.parametrize(("kernel", "s_new", "s_a", "s_b", "s_c"), _MERGE_NEW_CASES)
def test_merge_new(kernel: str, s_new: bool, s_a: bool, s_b: bool, s_c: bool) -> None:
    """vma.c / tests/merge.c __test_merge_new(is_sticky, a_is_sticky, b_is_sticky, c_is_sticky)."""
    mm = AddressSpace(kernel)
    new_f = F | (VM_STICKY if s_new else 0)

    def sticky(v: object) -> bool:
        return bool(v.flags & VM_STICKY)  # type: ignore[attr-defined]

    # 0123456789abc
    # AA B       CC
    a = link(mm, 0, 2, 0, F | (VM_STICKY if s_a else 0), avc=1, has_close_hook=True)
    b = link(mm, 3, 4, 3, F | (VM_STICKY if s_b else 0), avc=1)
    c = link(mm, 0xB, 0xC, 0xB, F | (VM_STICKY if s_c else 0), avc=1)
    x = AnonVma()
    b.anon_vma = x  # type: ignore[attr-defined]
    # a) NO merge: AA B   **    CC  -> a new VMA D
    assert merge_new(mm, vmg(7, 9, 7, new_f)) is None
    d = alloc_and_link_vma(mm, 7 * P, 9 * P, 7, new_f)
    names = {id(a): "A", id(b): "B", id(c): "C", id(d): "D"}
    assert mm.map_count == 4
    assert render(ok(mm), 0, 13, names) == "AA B   DD  C "
    # b) Merge BOTH sides: AA*B   DD  CC -> A [0,4) takes B's anon_vma (dup), B deleted
    got = merge_new(mm, vmg(2, 3, 2, new_f))
    assert got is a and (a.start, a.end, a.pgoff) == (0, 4 * P, 0)  # type: ignore[attr-defined]
    assert a.anon_vma is x  # type: ignore[attr-defined]
    assert mm.map_count == 3
    if kernel in STICKY:
        assert sticky(a) == (s_new or s_a or s_b)
    s_ab = sticky(a)
    # c) Merge to PREVIOUS: AAAA*  DD  CC
    got = merge_new(ok(mm), vmg(4, 5, 4, new_f))
    assert got is a and a.end == 5 * P  # type: ignore[attr-defined]
    assert mm.map_count == 3
    if kernel in STICKY:
        assert sticky(a) == (s_ab or s_new)
    # d) Merge to NEXT (D has close but is not deleted): AAAAA *DD  CC
    d.anon_vma = x
    d.avc = 1
    d.has_close_hook = True
    got = merge_new(ok(mm), vmg(6, 7, 6, new_f))
    assert got is d and (d.start, d.end, d.pgoff) == (6 * P, 9 * P, 6)
    assert mm.map_count == 3
    if kernel in STICKY:
        assert sticky(d) == s_new
    # e) Merge BOTH (D deleted, no close now): AAAAA*DDD  CC -> A [0,9)
    d.has_close_hook = False
    a.has_close_hook = True
    got = merge_new(ok(mm), vmg(5, 6, 5, new_f))
    assert got is a and a.end == 9 * P and mm.map_count == 2  # type: ignore[attr-defined]
    # f) Merge to NEXT: AAAAAAAAA *CC -> C [0xa,0xc) pg 0xa
    c.anon_vma = x  # type: ignore[attr-defined]
    got = merge_new(ok(mm), vmg(0xA, 0xB, 0xA, new_f))
    assert got is c and (c.start, c.pgoff) == (0xA * P, 0xA)  # type: ignore[attr-defined]
    assert mm.map_count == 2
    if kernel in STICKY:
        assert sticky(c) == (s_new or s_c)
    # g) Merge BOTH: AAAAAAAAA*CCC -> A [0,0xc) pg0 anon X, one VMA
    got = merge_new(ok(mm), vmg(9, 0xA, 9, new_f))
    assert got is a and (a.start, a.end, a.pgoff) == (0, 0xC * P, 0)  # type: ignore[attr-defined]
    assert a.anon_vma is x and mm.map_count == 1  # type: ignore[attr-defined]
    assert render(ok(mm), 0, 13, names) == "AAAAAAAAAAAA "
    if kernel in STICKY:
        assert sticky(a) == any((s_new, s_a, s_b, s_c))


@pytest.mark.parametrize("kernel", ALL)
@pytest.mark.parametrize("special", [VM_IO, VM_DONTEXPAND, VM_PFNMAP, VM_MIXEDMAP])
def test_vma_merge_special_flags(kernel: str, special: int) -> None:
    """vma.c test_vma_merge_special_flags: NO merge when the flags hold any VM_SPECIAL bit."""
    assert VM_SPECIAL == VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP
    mm = AddressSpace(kernel)
    link(mm, 0, 3, 0, F | special)
    g = vmg(3, 4, 3, F | special)
    assert merge_new(ok(mm), g) is None and g.state == "nomerge"
    v = link(mm, 3, 4, 3, F)
    g = vmg(3, 4, 3, F | special, middle=v)
    assert merge_existing(ok(mm), g) is None and g.state == "nomerge"
    assert vmas(ok(mm)) == [(0, 3, 0), (3, 4, 3)]


@pytest.mark.parametrize("kernel", ALL)
def test_vma_merge_with_close(kernel: str) -> None:
    """vma.c test_vma_merge_with_close: only a VMA that would be DELETED must lack ->close."""
    # a) PPP**NNNN, N close -> new range merges into P only... as a 3-way merge would delete N:
    #    P [0,5), N kept
    mm = AddressSpace(kernel)
    p = link(mm, 0, 3, 0)
    link(mm, 5, 9, 5, has_close_hook=True)
    assert merge_new(mm, vmg(3, 5, 3)) is p
    assert vmas(ok(mm)) == [(0, 5, 0), (5, 9, 5)]
    # b) PPPVV, V close, modify all of V -> NO merge (V would be deleted)
    mm = AddressSpace(kernel)
    link(mm, 0, 3, 0)
    v = link(mm, 3, 5, 3, has_close_hook=True)
    assert merge_existing(mm, vmg(3, 5, 3, middle=v)) is None
    assert vmas(ok(mm)) == [(0, 3, 0), (3, 5, 3)]
    # c) VVNNNN, V close, modify all of V -> NO merge
    mm = AddressSpace(kernel)
    v = link(mm, 3, 5, 3, has_close_hook=True)
    link(mm, 5, 9, 5)
    assert merge_existing(mm, vmg(3, 5, 3, middle=v)) is None
    assert vmas(ok(mm)) == [(3, 5, 3), (5, 9, 5)]
    # d) PPPVVNNNN, V close -> NO merge
    mm = AddressSpace(kernel)
    link(mm, 0, 3, 0)
    v = link(mm, 3, 5, 3, has_close_hook=True)
    link(mm, 5, 9, 5)
    assert merge_existing(mm, vmg(3, 5, 3, middle=v)) is None
    assert mm.map_count == 3
    # e) PPPVVNNNN, N close -> merge LEFT only: P [0,5), N kept
    mm = AddressSpace(kernel)
    p = link(mm, 0, 3, 0)
    v = link(mm, 3, 5, 3)
    link(mm, 5, 9, 5, has_close_hook=True)
    assert merge_existing(mm, vmg(3, 5, 3, middle=v)) is p
    assert vmas(ok(mm)) == [(0, 5, 0), (5, 9, 5)]
    assert mm.last_explanation is not None
    assert "close" in mm.last_explanation.refused_predicates()


@pytest.mark.parametrize("kernel", ALL)
def test_vma_merge_new_with_close(kernel: str) -> None:
    """vma.c test_vma_merge_new_with_close: PP***NN, both close -> P [0,5) with close, N kept."""
    mm = AddressSpace(kernel)
    p = link(mm, 0, 2, 0, has_close_hook=True)
    link(mm, 5, 7, 5, has_close_hook=True)
    assert merge_new(mm, vmg(2, 5, 2)) is p
    assert vmas(ok(mm)) == [(0, 5, 0), (5, 7, 5)]
    assert p.has_close_hook


# ---------------------------------------------------------------------------------------------
# merge_existing: pre-fix (vmg.anon_vma unset), post-fix (879bca0a2c4f: vmg.anon_vma = X, avc 1),
# the newest set (8 sticky permutations)
# ---------------------------------------------------------------------------------------------

_MERGE_EXISTING_CASES = (
    [(k, False, False, False) for k in ALL]
    + [(k, *perm) for k in STICKY for perm in itertools.product([False, True], repeat=3)
       if any(perm)]
)


@pytest.mark.parametrize(("kernel", "s_prev", "s_mid", "s_next"), _MERGE_EXISTING_CASES)
def test_merge_existing(kernel: str, s_prev: bool, s_mid: bool, s_next: bool) -> None:
    """vma.c test_merge_existing / tests/merge.c __test_merge_existing(prev, middle, next sticky).

    The pre-fix version (6ab2d9c7c680) leaves vmg.anon_vma unset although V is faulted; the
    post-fix version (879bca0a2c4f) sets vmg.anon_vma = V's anon_vma with one avc. Both must give
    the same layouts; the post-fix data encode the NEW rule (faulted middle into an unfaulted
    target merges).
    """
    pre_fix = kernel in PRE_FIX
    fp = F | (VM_STICKY if s_prev else 0)
    fm = F | (VM_STICKY if s_mid else 0)
    fn = F | (VM_STICKY if s_next else 0)

    def state(mid: object, start: int, end: int, pgoff: int) -> VmaMergeStruct:
        x = mid.anon_vma  # type: ignore[attr-defined]
        return vmg(start, end, pgoff, fm, middle=mid, anon_vma=None if pre_fix else x)

    def st(v: object) -> bool:
        return bool(v.flags & VM_STICKY)  # type: ignore[attr-defined]

    sticky = kernel in STICKY
    # a) Merge RIGHT, partial ("adjust next start"): 012345678 / VVVVNNN / vv**** ->  VNNNNNN
    mm = AddressSpace(kernel)
    v = link(mm, 2, 6, 2, fm, anon_vma=AnonVma(), has_close_hook=True)
    n = link(mm, 6, 9, 6, fn, has_close_hook=True)
    got = merge_existing(mm, state(v, 3, 6, 3))
    assert got is n and vmas(ok(mm)) == [(2, 3, 2), (3, 9, 3)]
    assert n.anon_vma is v.anon_vma  # type: ignore[attr-defined]
    if sticky:
        assert st(n) == (s_mid or s_next)
    # b) Merge RIGHT, full middle: VVVVNNN -> NNNNNNN
    mm = AddressSpace(kernel)
    v = link(mm, 2, 6, 2, fm, anon_vma=AnonVma())
    n = link(mm, 6, 9, 6, fn, has_close_hook=True)
    got = merge_existing(mm, state(v, 2, 6, 2))
    assert got is n and vmas(ok(mm)) == [(2, 9, 2)]
    assert n.anon_vma is v.anon_vma  # type: ignore[attr-defined]
    if sticky:
        assert st(n) == (s_mid or s_next)
    # c) Merge LEFT, partial ("adjust middle start"): PPPVVVV / ***v -> PPPPPPV
    mm = AddressSpace(kernel)
    p = link(mm, 0, 3, 0, fp, has_close_hook=True)
    v = link(mm, 3, 7, 3, fm, anon_vma=AnonVma(), has_close_hook=True)
    got = merge_existing(mm, state(v, 3, 6, 3))
    assert got is p and vmas(ok(mm)) == [(0, 6, 0), (6, 7, 6)]
    assert p.anon_vma is v.anon_vma  # type: ignore[attr-defined]
    if sticky:
        assert st(p) == (s_prev or s_mid)
    # d) Merge LEFT, full middle: PPPVVVV -> PPPPPPP
    mm = AddressSpace(kernel)
    p = link(mm, 0, 3, 0, fp, has_close_hook=True)
    v = link(mm, 3, 7, 3, fm, anon_vma=AnonVma())
    got = merge_existing(mm, state(v, 3, 7, 3))
    assert got is p and vmas(ok(mm)) == [(0, 7, 0)]
    if sticky:
        assert st(p) == (s_prev or s_mid)
    # e) Merge BOTH: PPPVVVVNN -> PPPPPPPPP
    mm = AddressSpace(kernel)
    p = link(mm, 0, 3, 0, fp, has_close_hook=True)
    v = link(mm, 3, 7, 3, fm, anon_vma=AnonVma())
    link(mm, 7, 9, 7, fn)
    got = merge_existing(mm, state(v, 3, 7, 3))
    assert got is p and vmas(ok(mm)) == [(0, 9, 0)]
    assert p.anon_vma is not None  # type: ignore[attr-defined]
    if sticky:
        assert st(p) == (s_prev or s_mid or s_next)
    # f) NO merge for any range not touching an end: PPPVVVVVNN with ranges inside V
    for s, e in [(4, 5), (5, 6), (6, 7), (4, 7), (4, 6), (5, 6)]:
        mm = AddressSpace(kernel)
        link(mm, 0, 3, 0, fp)
        v = link(mm, 3, 8, 3, fm)
        link(mm, 8, 0xA, 8, fn)
        assert merge_existing(mm, vmg(s, e, s, fm, middle=v)) is None
        assert mm.map_count == 3
        ok(mm)


@pytest.mark.parametrize("kernel", PRE_FIX)
def test_merge_existing_old_rule_with_vmg_anon_set(kernel: str) -> None:
    """879bca0a2c4f's change to the tests: had the pre-fix tests set vmg.anon_vma, the OLD rule would have REFUSED
    cases a-e (a faulted middle never merges into an unfaulted target)."""
    mm = AddressSpace(kernel)
    p = link(mm, 0, 3, 0)
    v = link(mm, 3, 7, 3, anon_vma=AnonVma())
    assert merge_existing(mm, vmg(3, 7, 3, middle=v, anon_vma=v.anon_vma)) is None  # type: ignore[attr-defined]
    assert vmas(ok(mm)) == [(0, 3, 0), (3, 7, 3)]
    assert p.anon_vma is None  # type: ignore[attr-defined]
    expl = mm.last_explanation
    assert expl is not None and "anon_vma" in expl.refused_predicates()


@pytest.mark.parametrize("kernel", ALL)
def test_anon_vma_non_mergeable(kernel: str) -> None:
    """vma.c test_anon_vma_non_mergeable: prev and next with DIFFERENT anon_vmas -> left only.

    012345678
    PPPVVVVNN  (P: X1, V unfaulted, N: X2)  ->  PPPPPPPNN
    """
    x1, x2 = AnonVma(), AnonVma()
    mm = AddressSpace(kernel)
    p = link(mm, 0, 3, 0, anon_vma=x1)
    v = link(mm, 3, 7, 3)
    n = link(mm, 7, 9, 7, anon_vma=x2)
    got = merge_existing(mm, vmg(3, 7, 3, middle=v, anon_vma=None))
    assert got is p and vmas(ok(mm)) == [(0, 7, 0), (7, 9, 7)]
    assert n.anon_vma is x2  # type: ignore[attr-defined]
    expl = mm.last_explanation
    assert expl is not None and "anon_vma_prev_next" in expl.refused_predicates()
    # b) the same through a new range
    mm = AddressSpace(kernel)
    p = link(mm, 0, 3, 0, anon_vma=x1)
    link(mm, 7, 9, 7, anon_vma=x2)
    assert merge_new(mm, vmg(3, 7, 3)) is p
    assert vmas(ok(mm)) == [(0, 7, 0), (7, 9, 7)]


def test_anon_vma_old_helper_probes() -> None:
    """vma.c (pre-fix) probes of is_mergeable_anon_vma() in anon_vma_non_mergeable."""
    mm = AddressSpace("6.15")
    x1, x2 = AnonVma(), AnonVma()
    p = alloc_and_link_vma(mm, 0, 3 * P, 0, anon_vma=x1)
    n = alloc_and_link_vma(mm, 7 * P, 9 * P, 7, anon_vma=x2)
    assert is_mergeable_anon_vma_old(None, x1, p) is True
    assert is_mergeable_anon_vma_old(None, x2, n) is True
    assert is_mergeable_anon_vma_old(x1, x2, None) is False


@pytest.mark.parametrize("kernel", ALL)
def test_dup_anon_vma(kernel: str) -> None:
    """vma.c test_dup_anon_vma: the surviving VMA takes the anon_vma of what it absorbs."""
    x = AnonVma()
    # a) vma_expand() of target P [0,3) to [0,5), next N [3,5) (faulted) removed: P gets X
    mm = AddressSpace(kernel)
    p = link(mm, 0, 3, 0)
    n = link(mm, 3, 5, 3, anon_vma=x)
    assert expand(mm, vmg(0, 5, 0, target=p, next=n)) == 0
    assert p.anon_vma is x and vmas(ok(mm)) == [(0, 5, 0)]  # type: ignore[attr-defined]
    assert mm.map_count == 1 and n.prev is None and n.next is None  # type: ignore[attr-defined]
    # b) PPPVVNNN, N faulted (avc 1), modify all of V -> P [0,8) anon X
    mm = AddressSpace(kernel)
    p = link(mm, 0, 3, 0)
    v = link(mm, 3, 5, 3)
    link(mm, 5, 8, 5, anon_vma=x)
    assert merge_existing(mm, vmg(3, 5, 3, middle=v, anon_vma=None)) is p
    assert p.anon_vma is x and vmas(ok(mm)) == [(0, 8, 0)]  # type: ignore[attr-defined]
    # c) V faulted (pre-fix: vmg.anon unset; post-fix: set), P and N unfaulted -> P [0,8) X
    mm = AddressSpace(kernel)
    p = link(mm, 0, 3, 0)
    v = link(mm, 3, 5, 3, anon_vma=x)
    link(mm, 5, 8, 5)
    g = vmg(3, 5, 3, middle=v, anon_vma=None if kernel in PRE_FIX else x)
    assert merge_existing(mm, g) is p
    assert p.anon_vma is x and vmas(ok(mm)) == [(0, 8, 0)]  # type: ignore[attr-defined]
    # d) PPPVVVVV, V faulted, modify [3,5) -> P [0,5) X (adjust middle start)
    mm = AddressSpace(kernel)
    p = link(mm, 0, 3, 0)
    v = link(mm, 3, 8, 3, anon_vma=x)
    assert merge_existing(mm, vmg(3, 5, 3, middle=v, anon_vma=None)) is p
    assert p.anon_vma is x and vmas(ok(mm)) == [(0, 5, 0), (5, 8, 5)]  # type: ignore[attr-defined]
    # e) VVVVVNNN, V faulted, modify [3,5) -> N [3,8) X (adjust next start)
    mm = AddressSpace(kernel)
    v = link(mm, 0, 5, 0, anon_vma=x)
    n = link(mm, 5, 8, 5)
    assert merge_existing(mm, vmg(3, 5, 3, middle=v, anon_vma=None)) is n
    assert n.anon_vma is x and vmas(ok(mm)) == [(0, 3, 0), (3, 8, 3)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("kernel", ALL)
def test_vmi_prealloc_fail(kernel: str) -> None:
    """vma.c test_vmi_prealloc_fail: the maple tree preallocation fails while V (faulted) merges
    into P, and while P is expanded over V: state NOMEM, and the anon_vma that was dup'ed into P
    is unlinked again (unlink_anon_vmas() leaves P unfaulted), so nothing has changed. The
    model's merge runs up to its vma_iter_prealloc() point; without the fault the same calls
    merge (checked after each failure)."""
    x = AnonVma()
    # merge_existing: P [0,3) unfaulted, V [3,5) faulted (one avc); vmg.anon_vma = X since
    # 879bca0a2c4f, unset in the pre-fix set (which the OLD rule needs to merge at all)
    anon = None if kernel in PRE_FIX else x
    mm = AddressSpace(kernel)
    p = link(mm, 0, 3, 0)
    v = link(mm, 3, 5, 3, anon_vma=x)
    g = vmg(3, 5, 3, middle=v, anon_vma=anon, fail_alloc=True)
    assert merge_existing(mm, g) is None and g.state == MERGE_NOMEM
    assert mm.last_explanation is not None and mm.last_explanation.errno == errno.ENOMEM
    assert vmas(ok(mm)) == [(0, 3, 0), (3, 5, 3)]
    assert p.anon_vma is None and v.anon_vma is x  # type: ignore[attr-defined]
    # the same merge without the fault: P takes V's anon_vma
    g = vmg(3, 5, 3, middle=v, anon_vma=anon)
    assert merge_existing(mm, g) is p and g.state == MERGE_SUCCESS
    assert p.anon_vma is x and vmas(ok(mm)) == [(0, 5, 0)]  # type: ignore[attr-defined]
    # vma_expand(): target P, next V removed by the expansion to [0,5)
    mm = AddressSpace(kernel)
    p = link(mm, 0, 3, 0)
    v = link(mm, 3, 5, 3, anon_vma=x)
    g = vmg(0, 5, 3, target=p, next=v, fail_alloc=True)
    assert expand(mm, g) == -errno.ENOMEM and g.state == MERGE_NOMEM
    assert vmas(ok(mm)) == [(0, 3, 0), (3, 5, 3)] and mm.map_count == 2
    assert p.anon_vma is None  # type: ignore[attr-defined]
    g = vmg(0, 5, 0, target=p, next=v)
    assert expand(mm, g) == 0 and g.state == MERGE_SUCCESS
    assert p.anon_vma is x and vmas(ok(mm)) == [(0, 5, 0)]  # type: ignore[attr-defined]
    # the fault also reaches a new-range merge (vma_merge_new_range() -> vma_expand())
    mm = AddressSpace(kernel)
    link(mm, 0, 3, 0)
    g = vmg(3, 5, 3, fail_alloc=True)
    assert merge_new(mm, g) is None and g.state == MERGE_NOMEM
    assert vmas(ok(mm)) == [(0, 3, 0)]


# ---------------------------------------------------------------------------------------------
# Public-API ports: merge_extend, copy_vma, expand_only_mode, mmap_region_basic
# ---------------------------------------------------------------------------------------------

B = 0x100000000  # a base far from anything (page number 0x100000)
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE
RW = PROT_READ | PROT_WRITE


def pages(mm: AddressSpace) -> list[tuple[int, int]]:
    return [((v.start - B) // P, (v.end - B) // P) for v in mm.vmas()]


@pytest.mark.parametrize("kernel", ALL)
def test_merge_extend(kernel: str) -> None:
    """vma.c test_merge_extend: V [0,1), W [3,4); extending V by 2 pages absorbs W.

    0123      0123
    V  W  ->  VVVV   (mremap in place: vma_merge_extend())
    """
    mm = AddressSpace(kernel)
    mm.mmap(B, P, RW, ANON)
    mm.mmap(B + 3 * P, P, RW, ANON)
    assert mm.mremap(B, P, 3 * P) == B
    assert pages(ok(mm)) == [(0, 4)]
    assert mm.vma_lookup(B).pgoff == B // P  # type: ignore[union-attr]


@pytest.mark.parametrize("kernel", ALL)
def test_copy_vma(kernel: str) -> None:
    """vma.c test_copy_vma: a) copy to a free place -> new VMA; b) copy next to N -> merged."""
    mm = AddressSpace(kernel)
    mm.mmap(B + 3 * P, 2 * P, RW, ANON)
    assert mm.mremap(B + 3 * P, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, B) == B
    assert pages(ok(mm)) == [(0, 2)]
    assert mm.vma_lookup(B).pgoff == B // P  # type: ignore[union-attr]  # unfaulted: pgoff follows
    mm = AddressSpace(kernel)
    mm.mmap(B, 2 * P, RW, ANON)
    mm.mmap(B + 6 * P, 2 * P, RW, ANON)
    assert mm.mremap(B, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, B + 4 * P) == B + 4 * P
    assert pages(ok(mm)) == [(4, 8)]
    assert mm.last_explanation is not None and "expand_next" in mm.last_explanation.paths


@pytest.mark.parametrize("kernel", ALL)
def test_expand_only_mode(kernel: str) -> None:
    """vma.c test_expand_only_mode: just-expand merges into prev and never absorbs next."""
    mm = AddressSpace(kernel)
    link(mm, 0, 2, 0)
    prev = link(mm, 3, 5, 3)
    got = merge_new(mm, vmg(5, 9, 5, just_expand=True, prev=prev))
    assert got is prev and vmas(ok(mm)) == [(0, 2, 0), (3, 9, 3)]
    # and just-expand ignores a compatible next: ...PPP**NN stays two VMAs
    mm = AddressSpace(kernel)
    prev = link(mm, 3, 5, 3)
    link(mm, 7, 9, 7)
    assert merge_new(mm, vmg(5, 7, 5, just_expand=True, prev=prev)) is prev
    assert vmas(ok(mm)) == [(3, 7, 3), (7, 9, 7)]


@pytest.mark.parametrize("kernel", ALL)
def test_mmap_region_basic(kernel: str) -> None:
    """mmap.c / vma.c test_mmap_region_basic: four MAP_FIXED anonymous maps -> 2 VMAs."""
    mm = AddressSpace(kernel)
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
    for page in (0x300, 0x250, 0x303, 0x24D):
        assert mm.mmap(page * P, 3 * P, RW, flags) == page * P
        ok(mm)
    assert [(v.start // P, v.end // P) for v in mm.vmas()] == [(0x24D, 0x253), (0x300, 0x306)]
    assert [v.pgoff for v in mm.raw_vmas()] == [0x24D, 0x300]
