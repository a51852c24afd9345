"""Unit tests of every caller of the merge engine, per kernel profile, through the public API.

Scenario names "Lnn" are the live recipes of docs/oracle.md (the model side; the oracle side
runs them on real kernels). Expected results come from the Old (<= 6.15) / New (6.16+) columns.
Every test checks the model's invariants after every step (the ``Checked`` wrapper).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest

from replay import UNKNOWN, AddressSpace, get_profile
from replay.flags import (
    MADV_DODUMP,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_GUARD_INSTALL,
    MADV_GUARD_REMOVE,
    MADV_HUGEPAGE,
    MADV_MERGEABLE,
    MADV_NOHUGEPAGE,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_WIPEONFORK,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_LOCKED,
    MAP_NORESERVE,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MCL_CURRENT,
    MCL_FUTURE,
    MCL_ONFAULT,
    MLOCK_ONFAULT,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    STACK_GUARD_GAP,
)
from tests.kernels import ALL, MSEAL, NEW_ANON, OLD_ANON

P = 0x1000
B = 0x100000000
R, RW, RWX = PROT_READ, PROT_READ | PROT_WRITE, PROT_READ | PROT_WRITE | PROT_EXEC
NR = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE  # the recipes' test mappings
ACC = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED  # accounted (no NORESERVE)

OLD = OLD_ANON
NEW = NEW_ANON

_OPS = {"mmap", "munmap", "mprotect", "pkey_mprotect", "madvise", "mlock", "mlock2", "munlock",
        "mlockall", "munlockall", "mremap", "brk", "mseal", "touch", "fork", "exec",
        "prctl_set_vma_anon_name", "prctl_set_memory_merge", "grow_stack", "open_file", "dup",
        "close", "memfd_create", "set_brk_base"}


class Checked:
    """Proxy that runs ``mm.check()`` after every operation, failed or not."""

    def __init__(self, mm: AddressSpace) -> None:
        self.mm = mm

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.mm, name)
        if name not in _OPS:
            return attr

        def call(*a: Any, **k: Any) -> Any:
            try:
                r = attr(*a, **k)
            finally:
                self.mm.check()
            return Checked(r) if isinstance(r, AddressSpace) else r

        return call


def new(kernel: str, **kw: Any) -> Any:
    return Checked(AddressSpace(kernel, **kw))


def pg(k: float) -> int:
    return B + int(k * P)


def lines(mm: Any, lo: int = 0, hi: int = 64) -> list[tuple[int, int, str]]:
    """(start page, end page, perms) of the VMAs in [B+lo, B+hi) pages."""
    return [((v.start - B) // P, (v.end - B) // P, v.perms) for v in mm.vmas()
            if v.end > pg(lo) and v.start < pg(hi)]


def spans(mm: Any) -> list[tuple[int, int]]:
    return [(s, e) for s, e, _ in lines(mm)]


def flags_at(mm: Any, k: int) -> frozenset[str]:
    return next(v.vmflags for v in mm.vmas() if v.start <= pg(k) < v.end)


def raises(code: int, fn: Callable[..., Any], *a: Any) -> None:
    with pytest.raises(OSError) as ei:
        fn(*a)
    assert ei.value.errno == code, f"expected {errno.errorcode[code]}, got {ei.value}"


# ---------------------------------------------------------------------------------------------
# The anon-merge fix (879bca0a2c4f): its three diagrams = L1, L2, L3, per profile
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ALL)
def test_anon_fix_diagram1_unfaulted_prev_faulted_middle(kernel: str) -> None:
    """L1 / selftest mprotect_unfaulted_left: Old 2 lines, New 1 line [0,10) r--p."""
    mm = new(kernel)
    mm.mmap(pg(0), 10 * P, RW, NR)
    mm.mprotect(pg(0), 5 * P, R)
    mm.touch(pg(5))
    mm.mprotect(pg(5), 5 * P, R)
    if kernel in OLD:
        assert lines(mm) == [(0, 5, "r--p"), (5, 10, "r--p")]
        expl = mm.last_explanation
        assert "anon_vma" in expl.refused_predicates()
        assert "OLD rule" in str(expl)
    else:
        assert lines(mm) == [(0, 10, "r--p")]
        assert mm.last_explanation.paths[0] == "merge_left"


@pytest.mark.parametrize("kernel", ALL)
def test_anon_fix_diagram2_faulted_middle_unfaulted_next(kernel: str) -> None:
    """L2 / selftest mprotect_unfaulted_right."""
    mm = new(kernel)
    mm.mmap(pg(0), 10 * P, RW, NR)
    mm.mprotect(pg(5), 5 * P, R)
    mm.touch(pg(0))
    mm.mprotect(pg(0), 5 * P, R)
    assert len(lines(mm)) == (2 if kernel in OLD else 1)


@pytest.mark.parametrize("kernel", ALL)
def test_anon_fix_diagram3_three_way(kernel: str) -> None:
    """L3 / selftest mprotect_unfaulted_both: unfaulted | faulted | unfaulted."""
    mm = new(kernel)
    mm.mmap(pg(1), 9 * P, RW, NR)
    mm.mprotect(pg(1), 3 * P, R)
    mm.mprotect(pg(7), 3 * P, R)
    mm.touch(pg(4))
    mm.mprotect(pg(4), 3 * P, R)
    if kernel in OLD:
        assert lines(mm) == [(1, 4, "r--p"), (4, 7, "r--p"), (7, 10, "r--p")]
    else:
        assert lines(mm) == [(1, 10, "r--p")]
        assert mm.last_explanation.paths == ["merge_both"]


@pytest.mark.parametrize("kernel", ALL)
def test_L4_faulted_prev_unfaulted_next(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(1), 9 * P, RW, NR)
    mm.mprotect(pg(7), 3 * P, R)
    mm.touch(pg(1))
    mm.mprotect(pg(1), 3 * P, R)
    mm.mprotect(pg(4), 3 * P, R)
    assert spans(mm) == ([(1, 7), (7, 10)] if kernel in OLD else [(1, 10)])


@pytest.mark.parametrize("kernel", ALL)
def test_L5_unfaulted_prev_faulted_next(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(1), 9 * P, RW, NR)
    mm.mprotect(pg(1), 3 * P, R)
    mm.touch(pg(4))
    mm.mprotect(pg(7), 3 * P, R)
    mm.mprotect(pg(4), 3 * P, R)
    assert spans(mm) == ([(1, 4), (4, 10)] if kernel in OLD else [(1, 10)])


# ---------------------------------------------------------------------------------------------
# fork (anon_vma_fork): L6, L7
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ALL)
def test_L6_forked_target(kernel: str) -> None:
    """A new mapping next to a forked faulted VMA does not merge; the parent (control) does."""
    mm = new(kernel)
    mm.mmap(pg(0), 5 * P, RW, ACC)
    mm.touch(pg(0))
    child = mm.fork()
    for k in range(5):
        child.touch(pg(k))
    assert child.vma_lookup(pg(0)).forked is True
    assert child.vma_lookup(pg(0)).avc == 2
    child.mmap(pg(5), 5 * P, RW, ACC)
    assert spans(child) == [(0, 5), (5, 10)]
    refusals = child.last_explanation.refusals()
    assert any(r.predicate in ("fork_child", "anon_vma") and r.side == "prev" for r in refusals)
    mm.mmap(pg(5), 5 * P, RW, ACC)
    assert spans(mm) == [(0, 10)]
    assert mm.vma_lookup(pg(0)).avc == 1


@pytest.mark.parametrize("kernel", ALL)
def test_L7_forked_source(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 5 * P, RW, NR)
    mm.touch(pg(0))
    child = mm.fork()
    child.mmap(pg(5), 5 * P, R, NR)
    child.mprotect(pg(0), 5 * P, R)
    assert spans(child) == [(0, 5), (5, 10)]
    if kernel in NEW:
        assert "fork_child" in child.last_explanation.refused_predicates()


@pytest.mark.parametrize("kernel", ALL)
def test_fork_wipeonfork_dontcopy_and_mlock(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 3 * P, RW, NR)
    mm.mmap(pg(4), 3 * P, RW, NR)
    mm.mmap(pg(8), 3 * P, RW, NR)
    for k in (0, 4, 8):
        mm.touch(pg(k))
    mm.madvise(pg(0), 3 * P, MADV_WIPEONFORK)
    mm.madvise(pg(4), 3 * P, MADV_DONTFORK)
    mm.mlock(pg(8), 3 * P)
    child = mm.fork()
    assert spans(child) == [(0, 3), (8, 11)]
    assert child.vma_lookup(pg(0)).faulted is False  # wiped: arrives unfaulted
    assert "lo" not in flags_at(child, 8)  # mlock is not inherited
    assert "lo" in flags_at(mm, 8)
    assert child.vma_lookup(pg(8)).forked is True
    assert mm.vma_lookup(pg(8)).forked is False


@pytest.mark.parametrize("kernel", ALL)
def test_exec_gives_a_fresh_address_space(kernel: str) -> None:
    mm = new(kernel)
    fd = mm.open_file("/lib/x.so")
    mm.mmap(pg(0), 3 * P, RW, NR)
    mm.mlockall(MCL_FUTURE)
    mm.exec()
    assert mm.vmas() == []
    assert mm.map_count == 0
    mm.mmap(pg(0), P, RW, NR)
    assert "lo" not in flags_at(mm, 0)  # def_flags reset
    assert mm.dup(fd) != fd  # open files survive exec


# ---------------------------------------------------------------------------------------------
# mmap
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ALL)
def test_L9_fault_reuses_neighbour_anon_vma(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 10 * P, RW, NR)
    mm.mprotect(pg(5), 5 * P, RWX)
    mm.touch(pg(0))
    mm.touch(pg(5))
    assert mm.last_explanation.paths == ["anon_vma_reuse"]
    assert mm.vma_lookup(pg(0)).anon_vma is mm.vma_lookup(pg(5)).anon_vma
    mm.mprotect(pg(5), 5 * P, RW)
    assert spans(mm) == [(0, 10)]


@pytest.mark.parametrize("kernel", ALL)
def test_L9_contrast_other_flag_at_fault_time_never_merges(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 10 * P, RW, NR)
    mm.madvise(pg(5), 5 * P, MADV_DONTDUMP)
    mm.touch(pg(0))
    mm.touch(pg(5))
    assert mm.vma_lookup(pg(0)).anon_vma is not mm.vma_lookup(pg(5)).anon_vma
    mm.madvise(pg(5), 5 * P, MADV_DODUMP)
    assert spans(mm) == [(0, 5), (5, 10)]
    assert "anon_vma" in mm.last_explanation.refused_predicates()


@pytest.mark.parametrize("kernel", ALL)
def test_L10_L11_L12_mmap_next_to_faulted(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 5 * P, RW, NR)
    mm.touch(pg(0))
    mm.mmap(pg(5), 5 * P, RW, NR)
    assert spans(mm) == [(0, 10)]  # L10
    mm = new(kernel)
    mm.mmap(pg(0), 15 * P, RW, NR)
    mm.touch(pg(0))
    mm.munmap(pg(5), 5 * P)
    assert spans(mm) == [(0, 5), (10, 15)]  # munmap never merges
    mm.mmap(pg(5), 5 * P, RW, NR)
    assert spans(mm) == [(0, 15)]  # L11
    assert mm.last_explanation.paths[-1] == "merge_both"
    mm = new(kernel)
    mm.mmap(pg(0), 15 * P, RW, NR)
    mm.touch(pg(0))
    mm.mmap(pg(5), 5 * P, RW, NR)
    assert spans(mm) == [(0, 15)]  # L12
    mm.mmap(pg(5), 5 * P, R, NR)
    assert spans(mm) == [(0, 5), (5, 10), (10, 15)]


@pytest.mark.parametrize("kernel", ALL)
def test_L13_vm_account(kernel: str) -> None:
    # a) hidden VM_ACCOUNT: both r--p but only the faulted one keeps "ac"
    mm = new(kernel)
    mm.mmap(pg(0), 5 * P, R, ACC)
    mm.mmap(pg(5), 5 * P, RW, ACC)
    mm.touch(pg(5))
    mm.mprotect(pg(5), 5 * P, R)
    assert lines(mm) == [(0, 5, "r--p"), (5, 10, "r--p")]
    assert "ac" in flags_at(mm, 5) and "ac" not in flags_at(mm, 0)
    assert "flags" in mm.last_explanation.refused_predicates()
    assert "ac" in str(mm.last_explanation)
    # b) unfaulted: ACCOUNT dropped on mprotect from ~6.7 (6.12 profile on), not in 6.1/6.6
    mm = new(kernel)
    mm.mmap(pg(0), 5 * P, R, ACC)
    mm.mmap(pg(5), 5 * P, RW, ACC)
    mm.mprotect(pg(5), 5 * P, R)
    assert len(spans(mm)) == (1 if get_profile(kernel).mprotect_unaccount_unfaulted else 2)
    # c) NORESERVE mismatch
    mm = new(kernel)
    mm.mmap(pg(0), 5 * P, RW, NR)
    mm.mmap(pg(5), 5 * P, RW, ACC)
    assert spans(mm) == [(0, 5), (5, 10)]
    assert "nr" in flags_at(mm, 0) and "ac" in flags_at(mm, 5)


def test_L13_overcommit_never_ignores_noreserve() -> None:
    mm = new("6.19", overcommit_memory=2)
    mm.mmap(pg(0), 5 * P, RW, NR)
    assert "nr" not in flags_at(mm, 0) and "ac" in flags_at(mm, 0)


@pytest.mark.parametrize("kernel", ALL)
def test_L1_account_variant(kernel: str) -> None:
    """The L1-ACCOUNT note of the recipes: L1 without NORESERVE does not merge on ~6.7+ even with NEW."""
    mm = new(kernel)
    mm.mmap(pg(0), 10 * P, RW, ACC)
    mm.mprotect(pg(0), 5 * P, R)
    mm.touch(pg(5))
    mm.mprotect(pg(5), 5 * P, R)
    assert len(spans(mm)) == 2


@pytest.mark.parametrize("kernel", ALL)
def test_L15_L16_populate(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 10 * P, RW, NR)
    mm.mprotect(pg(0), 5 * P, R)
    mm.madvise(pg(5), 5 * P, MADV_POPULATE_WRITE)
    assert mm.vma_lookup(pg(5)).faulted is True
    mm.mprotect(pg(5), 5 * P, R)
    assert len(spans(mm)) == (2 if kernel in OLD else 1)  # L15
    mm = new(kernel)
    mm.mmap(pg(0), 10 * P, RW, NR)
    mm.mprotect(pg(0), 5 * P, R)
    mm.madvise(pg(5), 5 * P, MADV_POPULATE_READ)
    mm.touch(pg(6), write=False)
    assert mm.vma_lookup(pg(5)).faulted is False  # read faults assign no anon_vma
    mm.mprotect(pg(5), 5 * P, R)
    assert spans(mm) == [(0, 10)]  # L16


def test_thp_read_fault_assigns_anon_vma() -> None:
    mm = new("6.19", thp="always")
    base = 0x200000000
    mm.mmap(base, 4 << 20, RW, NR)
    mm.touch(base + (2 << 20), write=False)
    assert mm.vma_lookup(base).faulted is True
    mm = new("6.19", thp="never")
    mm.mmap(base, 4 << 20, RW, NR)
    mm.touch(base + (2 << 20), write=False)
    assert mm.vma_lookup(base).faulted is False


@pytest.mark.parametrize("kernel", ALL)
def test_mmap_populate_locked_and_flags(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 2 * P, RW, NR | MAP_POPULATE)
    assert mm.vma_lookup(pg(0)).faulted is True
    mm.mmap(pg(4), 2 * P, R, NR | MAP_POPULATE)
    assert mm.vma_lookup(pg(4)).faulted is False  # read-only populate: read faults
    mm.mmap(pg(8), 2 * P, RW, NR | MAP_LOCKED)
    assert "lo" in flags_at(mm, 8) and mm.vma_lookup(pg(8)).faulted is True
    mm.mmap(pg(12), 2 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_GROWSDOWN)
    assert flags_at(mm, 12) == frozenset({"rd", "wr", "mr", "mw", "me", "gd", "ac"})
    mm.mmap(pg(16), 2 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    assert flags_at(mm, 16) == frozenset({"rd", "wr", "sh", "mr", "mw", "me", "ms"})
    assert lines(mm, 16, 18) == [(16, 18, "rw-s")]


@pytest.mark.parametrize("kernel", ALL)
def test_mmap_errors(kernel: str) -> None:
    mm = new(kernel)
    raises(errno.EINVAL, mm.mmap, pg(0) + 1, P, RW, NR)  # MAP_FIXED misaligned
    raises(errno.EINVAL, mm.mmap, pg(0), 0, RW, NR)  # length 0
    raises(errno.EINVAL, mm.mmap, pg(0), P, RW, MAP_ANONYMOUS | MAP_FIXED)  # no type
    raises(errno.EINVAL, mm.mmap, pg(0), P, RW, MAP_PRIVATE | MAP_FIXED, 3, 1)  # offset
    raises(errno.EBADF, mm.mmap, pg(0), P, RW, MAP_PRIVATE | MAP_FIXED, 77, 0)
    ro = mm.open_file("/etc/x", writable=False)
    raises(errno.EACCES, mm.mmap, pg(0), P, RW, MAP_SHARED | MAP_FIXED, ro, 0)
    mm.mmap(pg(0), 2 * P, RW, NR)
    raises(errno.EEXIST, mm.mmap, pg(1), P, RW,
           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
    assert mm.vmas()[0].start == pg(0)


@pytest.mark.parametrize("kernel", ALL)
def test_mmap_address_choice_topdown(kernel: str) -> None:
    mm = new(kernel, mmap_base=0x7F0000000000)
    a = mm.mmap(0, 3 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    assert a == 0x7F0000000000 - 3 * P
    b = mm.mmap(0, P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    assert b == a - P
    assert len(mm.vmas()) == 1  # consecutive anonymous mappings merge (contiguous pgoff)
    mm.munmap(a, P)
    c = mm.mmap(0, P, R, MAP_PRIVATE | MAP_ANONYMOUS)
    assert c == a  # the highest hole that fits
    hint = mm.mmap(0x500000000, P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    assert hint == 0x500000000  # a free hint is used as is
    busy = mm.mmap(0x500000000, P, R, MAP_PRIVATE | MAP_ANONYMOUS)
    assert busy != 0x500000000


@pytest.mark.parametrize("kernel", ALL)
def test_L30_file_identity(kernel: str) -> None:
    mm = new(kernel)
    f = mm.memfd_create("t")
    sh = MAP_SHARED | MAP_FIXED
    mm.mmap(pg(0), 5 * P, R, sh, f, 0)
    mm.mmap(pg(5), 5 * P, R, sh, f, 5 * P)
    assert spans(mm) == [(0, 10)]  # a) contiguous offsets, same struct file
    mm.munmap(pg(5), 5 * P)
    mm.mmap(pg(5), 5 * P, R, sh, f, 6 * P)
    assert spans(mm) == [(0, 5), (5, 10)]  # b) offset gap
    assert "pgoff" in mm.last_explanation.refused_predicates()
    mm.munmap(pg(5), 5 * P)
    f2 = mm.open_file(mm.files[f].path, shmem=True, ino=mm.files[f].ino, dev="00:01")
    mm.mmap(pg(5), 5 * P, R, sh, f2, 5 * P)
    assert spans(mm) == [(0, 5), (5, 10)]  # c) a re-open is another struct file
    assert "file" in mm.last_explanation.refused_predicates()
    mm.munmap(pg(5), 5 * P)
    mm.mmap(pg(5), 5 * P, R, sh, mm.dup(f), 5 * P)
    assert spans(mm) == [(0, 10)]  # d) dup shares the open file description
    mm = new(kernel)
    mm.mmap(pg(0), 5 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    mm.mmap(pg(5), 5 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    assert spans(mm) == [(0, 5), (5, 10)]  # e) shared anonymous never merges


# ---------------------------------------------------------------------------------------------
# munmap / mprotect / madvise errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ALL)
def test_munmap(kernel: str) -> None:
    mm = new(kernel)
    raises(errno.EINVAL, mm.munmap, pg(0) + 8, P)
    raises(errno.EINVAL, mm.munmap, pg(0), 0)
    mm.munmap(pg(0), 4 * P)  # nothing mapped: fine
    mm.mmap(pg(0), 10 * P, RW, NR)
    mm.munmap(pg(3), 2 * P)
    assert spans(mm) == [(0, 3), (5, 10)]
    assert mm.last_explanation.paths == ["split", "split", "unmap"]


@pytest.mark.parametrize("kernel", ALL)
def test_mprotect(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 4 * P, RW, NR)
    mm.mmap(pg(6), 4 * P, RW, NR)
    raises(errno.EINVAL, mm.mprotect, pg(0) + 1, P, R)
    raises(errno.EINVAL, mm.mprotect, pg(0), P, 0x100)
    raises(errno.ENOMEM, mm.mprotect, pg(4), P, R)  # unmapped
    raises(errno.ENOMEM, mm.mprotect, pg(2), 6 * P, R)  # hole: the part before is changed
    assert lines(mm) == [(0, 2, "rw-p"), (2, 4, "r--p"), (6, 10, "rw-p")]
    mm.mprotect(pg(0), 2 * P, RW)
    assert mm.last_explanation.paths == ["unchanged"]  # no merge attempt when nothing changes
    mm.mprotect(pg(0), 4 * P, R)  # one call across two VMAs coalesces
    assert lines(mm) == [(0, 4, "r--p"), (6, 10, "rw-p")]
    f = mm.open_file("/etc/ro", writable=False)
    mm.mmap(pg(20), P, R, MAP_SHARED | MAP_FIXED, f, 0)
    raises(errno.EACCES, mm.mprotect, pg(20), P, RW)  # no VM_MAYWRITE


@pytest.mark.parametrize("kernel", ALL)
def test_madvise_flags_and_errors(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 10 * P, RW, NR)
    raises(errno.EINVAL, mm.madvise, pg(0), P, 9999)
    raises(errno.EINVAL, mm.madvise, pg(0) + 1, P, MADV_DONTDUMP)
    mm.madvise(pg(2), 2 * P, MADV_HUGEPAGE)
    assert "hg" in flags_at(mm, 2)
    mm.madvise(pg(2), 2 * P, MADV_NOHUGEPAGE)
    assert "nh" in flags_at(mm, 2) and "hg" not in flags_at(mm, 2)
    assert spans(mm) == [(0, 2), (2, 4), (4, 10)]  # a toggle does not restore "neither"
    raises(errno.ENOMEM, mm.madvise, pg(8), 4 * P, MADV_DONTDUMP)  # hole after the mapping
    assert "dd" in flags_at(mm, 8)  # ...but the mapped part was changed
    mm.madvise(pg(0), P, MADV_MERGEABLE)
    assert "mg" in flags_at(mm, 0)
    mm.touch(pg(5))
    mm.madvise(pg(4), 4 * P, MADV_DONTNEED)
    assert mm.vma_lookup(pg(5)).faulted is True  # DONTNEED frees pages, keeps the anon_vma
    f = mm.open_file("/x")
    mm.mmap(pg(20), P, RW, MAP_PRIVATE | MAP_FIXED, f, 0)
    raises(errno.EINVAL, mm.madvise, pg(20), P, MADV_WIPEONFORK)


@pytest.mark.parametrize("kernel", ALL)
def test_L25_guard_install(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 10 * P, RW, NR)
    mm.mprotect(pg(5), 5 * P, R)
    if not get_profile(kernel).guard_install_available:
        raises(errno.EINVAL, mm.madvise, pg(0), P, MADV_GUARD_INSTALL)
        mm.mprotect(pg(0), 5 * P, R)
        assert spans(mm) == [(0, 10)]
        return
    mm.madvise(pg(0), P, MADV_GUARD_INSTALL)
    assert spans(mm) == [(0, 5), (5, 10)]  # no split, no merge
    raises(errno.EFAULT, mm.touch, pg(0))
    mm.mprotect(pg(0), 5 * P, R)
    assert len(spans(mm)) == (2 if kernel in OLD else 1)
    assert ("gu" in flags_at(mm, 0)) == get_profile(kernel).sticky_flags
    mm.madvise(pg(0), P, MADV_GUARD_REMOVE)
    mm.touch(pg(0), write=False)
    assert ("gu" in flags_at(mm, 0)) == get_profile(kernel).sticky_flags  # never cleared


@pytest.mark.parametrize("kernel", ALL)
def test_L26_soft_dirty_sticky(kernel: str) -> None:
    mm = new(kernel, soft_dirty=True)
    mm.mmap(pg(0), 5 * P, RW, NR)
    mm.mmap(pg(5), 5 * P, R, NR)
    for v in mm.raw_vmas():  # clear_refs "4": soft-dirty cleared
        v.flags &= ~0x8000000
    mm.mmap(pg(5), 5 * P, R, NR)  # fresh: sd
    assert "sd" in flags_at(mm, 5) and "sd" not in flags_at(mm, 0)
    mm.mprotect(pg(0), 5 * P, R)
    assert spans(mm) == [(0, 10)]
    assert ("sd" in flags_at(mm, 0)) == get_profile(kernel).sticky_flags


@pytest.mark.parametrize("kernel", ALL)
def test_L27_ksm_merge_any(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), P, RW, NR)
    mm.mmap(pg(1), P, RW, NR)
    assert spans(mm) == [(0, 2)]
    mm.munmap(pg(1), P)
    mm.prctl_set_memory_merge(True)
    assert "mg" in flags_at(mm, 0)
    mm.mmap(pg(1), P, RW, NR)
    assert len(spans(mm)) == (1 if get_profile(kernel).ksm_early else 2)
    assert "mg" in flags_at(mm, 1)


# ---------------------------------------------------------------------------------------------
# mlock / mseal / anon names
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ALL)
def test_mlock_family(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 10 * P, RW, NR)
    mm.mlock(pg(2), 2 * P, MLOCK_ONFAULT)
    lf = get_profile(kernel).lockonfault_mnemonic  # 6.1 prints "??"
    assert {"lo", lf} <= flags_at(mm, 2)
    assert mm.vma_lookup(pg(2)).faulted is False  # onfault: no populate
    mm.mlock(pg(6) + 5, P)  # start rounded down, length up: pages 6 and 7
    assert "lo" in flags_at(mm, 6) and mm.vma_lookup(pg(6)).faulted is True
    mm.munlock(pg(0), 10 * P)
    # the populated (faulted) page cannot merge into its unfaulted neighbours under OLD
    assert spans(mm) == ([(0, 6), (6, 8), (8, 10)] if kernel in OLD else [(0, 10)])
    raises(errno.EINVAL, mm.mlock, pg(0), P, 2)
    raises(errno.ENOMEM, mm.mlock, pg(20), P)
    mm.mmap(pg(12), 2 * P, PROT_NONE, NR)
    raises(errno.ENOMEM, mm.mlock, pg(12), 2 * P)  # populate of PROT_NONE fails...
    assert "lo" in flags_at(mm, 12)  # ...after the flag was set
    mm.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)
    mm.mmap(pg(30), P, RW, NR)
    assert {"lo", lf} <= flags_at(mm, 30)
    mm.munlockall()
    assert all("lo" not in v.vmflags for v in mm.vmas())
    raises(errno.EINVAL, mm.mlockall, 0)
    raises(errno.EINVAL, mm.mlockall, MCL_ONFAULT)


@pytest.mark.parametrize("kernel", ALL)
def test_L21_mseal(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 10 * P, RW, NR)
    if not get_profile(kernel).mseal_available:
        raises(errno.ENOSYS, mm.mseal, pg(0), 5 * P)
        return
    mm.mseal(pg(0), 5 * P)
    assert spans(mm) == [(0, 5), (5, 10)] and "sl" in flags_at(mm, 0)
    mm.mseal(pg(5), 5 * P)
    assert spans(mm) == [(0, 10)] and "sl" in flags_at(mm, 9)
    raises(errno.EPERM, mm.munmap, pg(0), P)
    raises(errno.EPERM, mm.mprotect, pg(0), P, R)
    raises(errno.EPERM, mm.mremap, pg(0), P, 2 * P, MREMAP_MAYMOVE)
    raises(errno.EPERM, mm.mmap, pg(2), P, RW, NR)
    raises(errno.ENOMEM, mm.mseal, pg(9), 4 * P)  # hole
    raises(errno.EINVAL, mm.mseal, pg(0), P, 1)
    raises(errno.EINVAL, mm.mseal, pg(0) + 1, P)
    assert spans(mm) == [(0, 10)]


@pytest.mark.parametrize("kernel", ALL)
def test_L22_anon_names(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 10 * P, RW, NR)
    mm.prctl_set_vma_anon_name(pg(0), 5 * P, "x")
    assert [v.path for v in mm.vmas()] == ["[anon:x]", None]
    mm.prctl_set_vma_anon_name(pg(5), 5 * P, "y")
    assert spans(mm) == [(0, 5), (5, 10)]
    assert "name" in mm.last_explanation.refused_predicates()
    mm.prctl_set_vma_anon_name(pg(5), 5 * P, "x")
    assert spans(mm) == [(0, 10)]
    raises(errno.EINVAL, mm.prctl_set_vma_anon_name, pg(0), P, "bad[name]")
    f = mm.open_file("/x")
    mm.mmap(pg(20), P, R, MAP_PRIVATE | MAP_FIXED, f, 0)
    raises(errno.EBADF, mm.prctl_set_vma_anon_name, pg(20), P, "x")


# ---------------------------------------------------------------------------------------------
# brk, stack, touch
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ALL)
def test_brk(kernel: str) -> None:
    mm = new(kernel)
    base = 0x555555560000
    mm.set_brk_base(base)
    assert mm.brk(0) == base
    assert mm.brk(base + 3 * P + 10) == base + 3 * P + 10
    assert mm.brk(base + 6 * P) == base + 6 * P
    assert [(v.start, v.end, v.path) for v in mm.vmas()] == [(base, base + 6 * P, "[heap]")]
    assert "ac" in mm.vmas()[0].vmflags
    assert mm.brk(base + 2 * P) == base + 2 * P  # shrink unmaps
    assert mm.vmas()[0].end == base + 2 * P
    mm.touch(base)
    child = mm.fork()
    child.brk(base + 4 * P)
    # the heap of a fork child has an anon_vma with avc 2: brk cannot expand it
    assert [(v.start - base) // P for v in child.vmas()] == [0, 2]
    assert all(v.path == "[heap]" for v in child.vmas())
    mm.mprotect(base, 2 * P, R)
    mm.brk(base + 4 * P)
    assert len(mm.vmas()) == 2  # flags changed: a separate VMA
    assert mm.brk(base - P) == base + 4 * P  # below start_brk: unchanged


@pytest.mark.parametrize("kernel", ALL)
def test_stack_growth(kernel: str) -> None:
    mm = new(kernel)
    top = 0x7FFFFFFDE000
    mm.mmap(top, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_GROWSDOWN)
    pgoff = mm.vma_lookup(top).pgoff
    mm.touch(top - 3 * P)
    v = mm.vma_lookup(top)
    assert v.start == top - 3 * P and v.pgoff == pgoff - 3 and v.faulted is True
    assert mm.last_explanation.paths == ["anon_vma_prepare", "stack_grow"]
    # a stack_guard_gap to a preceding accessible VMA is kept
    mm.mmap(top - 3 * P - STACK_GUARD_GAP - 2 * P, P, RW, NR)
    raises(errno.EFAULT, mm.touch, top - 3 * P - STACK_GUARD_GAP + P)
    raises(errno.EFAULT, mm.touch, 0x1000000)  # unmapped
    mm.mmap(pg(0), P, R, NR)
    raises(errno.EFAULT, mm.touch, pg(0))  # write to read-only
    mm.touch(pg(0), write=False)


# ---------------------------------------------------------------------------------------------
# mremap
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ALL)
def test_L17_mremap_expand_in_place(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 2 * P, RW, NR)
    mm.mmap(pg(5), 3 * P, RW, NR)
    assert mm.mremap(pg(0), 2 * P, 5 * P) == pg(0)
    assert spans(mm) == [(0, 8)]
    assert "expand_in_place" in mm.last_explanation.paths
    mm = new(kernel)  # faulted variant: distinct anon_vmas
    mm.mmap(pg(0), 2 * P, RW, NR)
    mm.mmap(pg(5), 3 * P, RW, NR)
    mm.touch(pg(0))
    mm.touch(pg(5))
    mm.mremap(pg(0), 2 * P, 5 * P)
    assert spans(mm) == [(0, 5), (5, 8)]
    # PROT_NONE reservation blocks in-place growth; without MAYMOVE -> ENOMEM
    mm = new(kernel)
    mm.mmap(pg(0), 2 * P, RW, NR)
    mm.mmap(pg(2), 3 * P, PROT_NONE, NR)
    raises(errno.ENOMEM, mm.mremap, pg(0), 2 * P, 4 * P, 0)
    moved = mm.mremap(pg(0), 2 * P, 4 * P, MREMAP_MAYMOVE)
    assert moved != pg(0) and mm.vma_lookup(moved).end == moved + 4 * P


@pytest.mark.parametrize("kernel", ALL)
def test_mremap_errors_and_shrink(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 4 * P, RW, NR)
    raises(errno.EINVAL, mm.mremap, pg(0), P, P, 8)
    raises(errno.EINVAL, mm.mremap, pg(0), P, 2 * P, MREMAP_FIXED, pg(10))
    raises(errno.EINVAL, mm.mremap, pg(0), P, 2 * P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP)
    raises(errno.EINVAL, mm.mremap, pg(0) + 1, P, P)
    raises(errno.EINVAL, mm.mremap, pg(0), P, 0)
    raises(errno.EFAULT, mm.mremap, pg(20), P, 2 * P, MREMAP_MAYMOVE)
    raises(errno.EFAULT, mm.mremap, pg(2), 4 * P, 5 * P, MREMAP_MAYMOVE)  # spans past the VMA
    assert mm.mremap(pg(0), 4 * P, 2 * P) == pg(0)
    assert spans(mm) == [(0, 2)]


@pytest.mark.parametrize("kernel", ALL)
def test_L19_mremap_unfaulted_next_to_faulted(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 5 * P, RW, NR)
    mm.mmap(pg(6), 5 * P, RW, NR)
    far = pg(40)
    mm.mremap(pg(6), 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, far)
    mm.touch(pg(0))
    mm.mremap(far, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, pg(5))
    assert spans(mm) == [(0, 10)]


def _l20(kernel: str, variant: str, forked: bool) -> list[tuple[int, int]]:
    """L20 / selftests merge_with_fork mremap_faulted_to_unfaulted_* (fb39444732f0): move a
    faulted VMA back next to unfaulted neighbours with MAYMOVE|FIXED|DONTUNMAP."""
    mm = new(kernel)
    mv = MREMAP_MAYMOVE | MREMAP_FIXED
    if variant == "prev_faulted_next":
        mm.mmap(pg(4), 6 * P, RW, ACC)  # B and C together: same anon_vma, aligned pgoff
        mm.touch(pg(4))
        if forked:
            mm = mm.fork()
        mm.mremap(pg(4), 3 * P, 3 * P, mv, pg(20))  # B away, C stays faulted
        mm.mmap(pg(1), 3 * P, RW, ACC)  # A
        mm.mremap(pg(20), 3 * P, 3 * P, mv | MREMAP_DONTUNMAP, pg(4))
        return [s for s in spans(mm) if s[0] < 10]
    moved_at = {"prev": 4, "next": 1, "prev_unfaulted_next": 4}[variant]
    mm.mmap(pg(moved_at), 3 * P, RW, ACC)
    mm.touch(pg(moved_at))
    if forked:
        mm = mm.fork()
    mm.mremap(pg(moved_at), 3 * P, 3 * P, mv, pg(20))
    for start in {"prev": [1], "next": [4], "prev_unfaulted_next": [1, 7]}[variant]:
        mm.mmap(pg(start), 3 * P, RW, ACC)
    mm.mremap(pg(20), 3 * P, 3 * P, mv | MREMAP_DONTUNMAP, pg(moved_at))
    return [s for s in spans(mm) if s[0] < 10]


_L20 = {  # variant -> (unforked, forked) spans on 6.18.8+/6.19
    "prev": ([(1, 7)], [(1, 4), (4, 7)]),
    "next": ([(1, 7)], [(1, 4), (4, 7)]),
    "prev_unfaulted_next": ([(1, 10)], [(1, 4), (4, 7), (7, 10)]),
    "prev_faulted_next": ([(1, 10)], [(1, 4), (4, 10)]),
}
_L20_OLD = {"prev": [(1, 4), (4, 7)], "next": [(1, 4), (4, 7)],
            "prev_unfaulted_next": [(1, 4), (4, 7), (7, 10)],
            "prev_faulted_next": [(1, 4), (4, 10)]}


@pytest.mark.parametrize("kernel", ALL)
@pytest.mark.parametrize("variant", list(_L20))
@pytest.mark.parametrize("forked", [False, True])
def test_L20_mremap_faulted_to_unfaulted(kernel: str, variant: str, forked: bool) -> None:
    got = _l20(kernel, variant, forked)
    if kernel in OLD:
        want = _L20_OLD[variant]  # no merge, except B+C in _prev_faulted_next
    elif get_profile(kernel).fork_check_copied_from:
        want = _L20[variant][1 if forked else 0]
    else:
        want = _L20[variant][0]  # 6.16 .. 6.18.7: merges in every case (the UAF), forked too
    assert got == want


@pytest.mark.parametrize("kernel", NEW)
def test_L20_anon_vma_propagation(kernel: str) -> None:
    """6.18.8 (61f67c230a5e): the merged VMA gets the moved VMA's anon_vma; before: none."""
    mm = new(kernel)
    mm.mmap(pg(3), 3 * P, RW, NR)
    mm.touch(pg(3))
    mm.mremap(pg(3), 3 * P, 3 * P, MREMAP_MAYMOVE | MREMAP_FIXED, pg(19))
    mm.mmap(pg(0), 3 * P, RW, NR)
    mm.mremap(pg(19), 3 * P, 3 * P, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, pg(3))
    merged = mm.vma_lookup(pg(0))
    assert merged.end == pg(6)
    assert merged.faulted is get_profile(kernel).copied_from_propagation
    left = mm.vma_lookup(pg(19))  # DONTUNMAP leaves the source, now unfaulted
    assert left.faulted is False and left.end == pg(22)


@pytest.mark.parametrize("kernel", ALL)
def test_mremap_dontunmap_clears_lock(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 3 * P, RW, ACC)
    mm.mlock(pg(0), 3 * P)
    mm.mremap(pg(0), 3 * P, 3 * P, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, pg(10))
    assert "lo" not in flags_at(mm, 0)
    # 6.16 (b714ccb02a76) also cleared VM_ACCOUNT of the source, until 0e59f47c15ce
    assert ("ac" in flags_at(mm, 0)) != get_profile(kernel).dontunmap_clears_account
    assert "lo" in flags_at(mm, 10)
    assert mm.vma_lookup(pg(0)).faulted is False


@pytest.mark.parametrize("kernel", ALL)
def test_mremap_multi_vma_move(kernel: str) -> None:
    """6.17 (d23cb648e365): a FIXED same-size move may span several VMAs and gaps."""
    mm = new(kernel)
    mm.mmap(pg(0), 2 * P, RW, NR)
    mm.mmap(pg(3), 2 * P, R, NR)
    if get_profile(kernel).mremap_multi_vma:
        assert mm.mremap(pg(0), 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, pg(20)) == pg(20)
        assert spans(mm) == [(20, 22), (23, 25)]
    else:
        raises(errno.EFAULT, mm.mremap, pg(0), 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED,
               pg(20))


# ---------------------------------------------------------------------------------------------
# vm.max_map_count
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ALL)
def test_max_map_count(kernel: str) -> None:
    mm = new(kernel, max_map_count=3)
    for k in (0, 4, 8):
        mm.mmap(pg(k), 3 * P, RW, NR)
    assert mm.map_count == 3
    raises(errno.ENOMEM, mm.mprotect, pg(9), P, R)  # split at the limit
    raises(errno.ENOMEM, mm.munmap, pg(1), P)  # interior unmap would add a VMA
    mm.munmap(pg(0), P)  # head: no net increase, allowed
    assert mm.map_count == 3
    mm.mprotect(pg(8), 3 * P, R)  # whole VMA: no split needed
    assert lines(mm, 8, 11) == [(8, 11, "r--p")]


# ---------------------------------------------------------------------------------------------
# explanations, invariants, unknown
# ---------------------------------------------------------------------------------------------


def test_explanation_lists_every_refusing_predicate() -> None:
    mm = new("6.15", history=10)
    mm.mmap(pg(0), 5 * P, RW, NR)
    mm.touch(pg(0))
    mm.mmap(pg(5), 5 * P, RWX, ACC)  # differs in ex, ac/nr; prev is faulted (new is not)
    refs = {r.predicate: r for r in mm.last_explanation.refusals() if r.side == "prev"}
    assert set(refs) == {"flags"}
    assert set(refs["flags"].detail.split()) == {"ex", "ac", "nr"}
    assert len(mm.history) == 3
    assert "nomerge" in str(mm.history[-1])


def test_check_catches_an_identical_unmerged_pair() -> None:
    mm = AddressSpace("6.19")
    mm.mmap(pg(0), 4 * P, RW, NR)
    mm.mmap(pg(4), 4 * P, R, NR)
    v = mm.vma_lookup(pg(4))
    v.flags = mm.vma_lookup(pg(0)).flags  # forge a state the kernel could not reach
    with pytest.raises(AssertionError, match="identical but unmerged"):
        mm.check()


def test_check_catches_overlap() -> None:
    mm = AddressSpace("6.19")
    mm.mmap(pg(0), 4 * P, RW, NR)
    mm.mmap(pg(6), 4 * P, R, NR)
    mm.vma_lookup(pg(0)).end = pg(7)
    with pytest.raises(AssertionError, match="overlaps"):
        mm.check()


def test_unknown_is_not_a_bool() -> None:
    with pytest.raises(TypeError):
        bool(UNKNOWN)


def test_pkey_mprotect() -> None:
    mm = new("6.19")
    mm.mmap(pg(0), 2 * P, RW, NR)
    raises(errno.EINVAL, mm.pkey_mprotect, pg(0), P, R, 1)
    mm.pkey_mprotect(pg(0), P, R, -1)
    mm = new("6.19", pkeys=True)
    mm.mmap(pg(0), 2 * P, RW, NR)
    mm.pkey_mprotect(pg(0), P, RW, 1)
    assert spans(mm) == [(0, 1), (1, 2)]  # pkey bits differ
    mm.pkey_mprotect(pg(1), P, RW, 1)
    assert spans(mm) == [(0, 2)]


@pytest.mark.parametrize("kernel", ALL)
def test_populate_write_needs_write_permission(kernel: str) -> None:
    mm = new(kernel)
    mm.mmap(pg(0), 2 * P, R, NR)
    raises(errno.EINVAL, mm.madvise, pg(0), P, MADV_POPULATE_WRITE)
    raises(errno.ENOMEM, mm.madvise, pg(1), 4 * P, MADV_POPULATE_READ)
    assert PROT_EXEC == 4


_DONTUNMAP_CASES = {
    # qemu 6.1 / 6.12 and live 6.18 observations of MREMAP_DONTUNMAP copies
    "a": ([("mmap", 14, 3)], (14, 3, 17),
          {"no_source_neighbour": [(14, 17), (17, 20)], "not_source": [(14, 17), (17, 20)],
           "any": [(14, 20)]}),
    "i": ([("mmap", 14, 3), ("mmap", 20, 3)], (20, 3, 17),
          {"no_source_neighbour": [(14, 17), (17, 20), (20, 23)], "not_source": [(14, 20), (20, 23)],
           "any": [(14, 23)]}),
    "l": ([("mmap", 10, 2), ("mmap", 14, 6)], (14, 2, 12),
          {"no_source_neighbour": [(10, 12), (12, 14), (14, 20)],
           "not_source": [(10, 14), (14, 20)], "any": [(10, 20)]}),
    # the source is far away: 6.1 merges normally (qemu fz31-680)
    "far": ([("mmap", 12, 4), ("mmap", 38, 4)], (38, 4, 16),
            {"no_source_neighbour": [(12, 20), (38, 42)], "not_source": [(12, 20), (38, 42)],
             "any": [(12, 20), (38, 42)]}),
}


@pytest.mark.parametrize("kernel", ALL)
@pytest.mark.parametrize("case", list(_DONTUNMAP_CASES))
def test_mremap_dontunmap_copy_merging_per_era(kernel: str, case: str) -> None:
    maps, (src, n, dst), want = _DONTUNMAP_CASES[case]
    mm = new(kernel)
    for _, start, length in maps:
        mm.mmap(pg(start), length * P, RW, ACC)
    mm.mremap(pg(src), n * P, n * P, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, pg(dst))
    assert spans(mm) == want[get_profile(kernel).dontunmap_copy_merges]


@pytest.mark.parametrize("kernel", ALL)
def test_mmap_prev_check_with_next_anon_vma(kernel: str) -> None:
    """6.1-6.11 mmap_region() checks prev with next's anon_vma (qemu-checked on 6.1)."""
    mm = new(kernel)
    mm.mmap(pg(26), 3 * P, RW, ACC)
    mm.mmap(pg(16), 7 * P, RW, ACC)
    mm.touch(pg(28))
    mm.mmap(pg(19), 7 * P, RW, ACC)
    legacy = get_profile(kernel).mmap_prev_uses_next_anon
    assert spans(mm) == ([(16, 19), (19, 29)] if legacy else [(16, 29)])


@pytest.mark.parametrize("pkeys", [False, True])
def test_exec_only_memory(pkeys: bool) -> None:
    """x86 with PKU (e.g. the qemu oracles' CPU): PROT_EXEC-only memory gets the execute-only
    pkey, so reads fault and mlock's populate fails; without PKU it is readable."""
    mm = new("6.12", pkeys=pkeys)
    mm.mmap(pg(0), 4 * P, PROT_EXEC, ACC)
    if pkeys:
        raises(errno.EFAULT, mm.touch, pg(0), False)
        raises(errno.ENOMEM, mm.mlock, pg(1), P)
    else:
        mm.touch(pg(0), write=False)
        mm.mlock(pg(1), P)
    mm.mprotect(pg(2), 2 * P, PROT_READ | PROT_EXEC)  # leaves the execute-only key
    mm.touch(pg(2), write=False)
    mm.mprotect(pg(2), 2 * P, PROT_EXEC)
    assert (lines(mm)[-1][0], lines(mm)[-1][2]) == (2, "--xp")


@pytest.mark.parametrize("kernel", ALL)
def test_mremap_dontunmap_partial_locked_source(kernel: str) -> None:
    """qemu 6.12 / live 6.18: before 6.16 only the moved range of a locked source is split out
    and unlocked; since, the whole source VMA is unlocked in place."""
    mm = new(kernel)
    mm.mmap(pg(14), 6 * P, RW, ACC | MAP_LOCKED)
    mm.mremap(pg(15), 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, pg(30))
    locked = [(s, e, "lo" in flags_at(mm, s)) for s, e in spans(mm)]
    if get_profile(kernel).dontunmap_unlocks_whole_source:
        assert locked == [(14, 20, False), (30, 32, True)]
    else:
        assert locked == [(14, 15, True), (15, 17, False), (17, 20, True), (30, 32, True)]


@pytest.mark.parametrize("kernel", ALL)
def test_shared_anon_grown_past_its_object(kernel: str) -> None:
    """A shmem object keeps the size it was mapped with: touching, populating or mlocking the
    part of a grown mapping beyond it is a SIGBUS (EFAULT / ENOMEM), as on the live kernel."""
    mm = new(kernel)
    mm.mmap(pg(0), 3 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    mm.mremap(pg(0), 3 * P, 8 * P, 0)
    mm.touch(pg(2))
    raises(errno.EFAULT, mm.touch, pg(3))
    raises(errno.EFAULT, mm.madvise, pg(2), 5 * P, MADV_POPULATE_WRITE)
    raises(errno.ENOMEM, mm.mlock, pg(7), P)


@pytest.mark.parametrize("kernel", ALL)
def test_mremap_dontunmap_locked_first_page_next_to_its_rest(kernel: str) -> None:
    """Fuzz corpus 6.1/6.12-fz401-565: before 6.16 the moved page is split out of the locked
    source before the copy, so the copy merges with the source's remainder."""
    mm = new(kernel)
    mm.mmap(pg(6), 4 * P, PROT_READ | PROT_EXEC, NR)
    mm.mlock(pg(6), 4 * P)
    mm.mremap(pg(6), P, P, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, pg(8))
    locked = [(s, e, "lo" in flags_at(mm, s)) for s, e in spans(mm)]
    if get_profile(kernel).dontunmap_unlocks_whole_source:
        # live 6.18: the copy merges into the source, and the merged VMA is unlocked
        assert locked == [(6, 10, False)]
    else:
        assert locked == [(6, 7, False), (7, 10, True)]


@pytest.mark.parametrize("kernel", MSEAL)
def test_madvise_errno_order_per_vma(kernel: str) -> None:
    """Fuzz corpus fz2-1826: a locked VMA's EINVAL comes before a later sealed VMA's EPERM."""
    mm = new(kernel)
    mm.mmap(pg(22), 3 * P, RW, ACC)
    mm.mlock2(pg(22), 3 * P, MLOCK_ONFAULT)
    mm.mmap(pg(25), 4 * P, PROT_NONE, NR)
    mm.mseal(pg(25), 4 * P)
    raises(errno.EINVAL, mm.madvise, pg(23), 4 * P, MADV_DONTNEED)
    raises(errno.EPERM, mm.madvise, pg(25), 2 * P, MADV_DONTNEED)


@pytest.mark.parametrize("kernel", ALL)
def test_madvise_lru_and_free_refusals(kernel: str) -> None:
    """Fuzz fz777-*: COLD/PAGEOUT refuse locked VMAs (can_madv_lru_vma()); FREE needs anonymous
    memory; a hole before the refusing VMA does not change the errno."""
    from replay.flags import MADV_COLD, MADV_FREE, MADV_PAGEOUT

    mm = new(kernel)
    mm.mmap(pg(22), 3 * P, RWX, ACC | MAP_POPULATE)
    mm.mlock(pg(22), 2 * P)
    raises(errno.EINVAL, mm.madvise, pg(21), 2 * P, MADV_COLD)
    raises(errno.EINVAL, mm.madvise, pg(22), P, MADV_PAGEOUT)
    mm.madvise(pg(24), P, MADV_COLD)
    mm.mmap(pg(30), P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    raises(errno.EINVAL, mm.madvise, pg(30), P, MADV_FREE)


def test_no_merge_boundaries_stay_bounded_over_a_long_replay() -> None:
    """The set of boundaries made without a merge attempt (split...) only keeps addresses that
    are still VMA boundaries once it grows: a long replay does not accumulate every split."""
    mm = AddressSpace("6.19", explain=False)
    anon = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
    for i in range(20_000):
        base = 0x10000000 + i * 4 * P  # a new place every time
        mm.mmap(base, 3 * P, PROT_READ, anon)
        mm.mprotect(base + P, P, PROT_READ | PROT_WRITE)  # two splits
        mm.munmap(base, 3 * P)
    assert mm.map_count == 0
    assert len(mm._nomerge_bounds) <= 4096 + 2
    mm.check()
    assert not mm._nomerge_bounds
