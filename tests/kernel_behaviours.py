"""Kernel behaviours the differential fuzzer found on the pinned kernels, one short sequence each,
named after the behaviour: each check states what the kernel does on which releases, and the
model must agree step by step (tests/test_kernel_behaviours.py). They run in every kernel's one
qemu boot (tests/qemu_batches.py) and on the live kernel."""

from __future__ import annotations

import errno
from collections.abc import Callable

from replay.oracle.core import SeqResult, VmaRow

# A check gets the kernel's release as (major, minor, stable patch level): it compares with
# (major, minor) tuples for mainline releases and with 3-tuples where a stable backport matters.
Release = tuple[int, int, int]
Check = Callable[[Release, SeqResult], None]


def _vmas(r: SeqResult, step: int = -1) -> list[VmaRow]:
    return list(r.steps[step].vmas)


def _layout(r: SeqResult, step: int = -1) -> list[tuple[int, int]]:
    return [(v.start, v.end) for v in r.steps[step].vmas]


def _dontunmap_account(rel: Release, r: SeqResult) -> None:
    # b714ccb02a76 (6.16) cleared VM_ACCOUNT of the source; 0e59f47c15ce (6.18, 6.17.y) undid it
    husk = next(v for v in _vmas(r) if v.start == 0)
    assert ("ac" in husk.flags) == (rel[:2] != (6, 16)), husk


def _lookup_first(rel: Release, r: SeqResult) -> None:
    # the overlap check (EINVAL) precedes the VMA lookup (EFAULT) since 6.17
    assert r.steps[-1].errno == (errno.EINVAL if rel >= (6, 17) else errno.EFAULT)


def _dest_unmapped_first(rel: Release, r: SeqResult) -> None:
    # before 6.17 the MREMAP_FIXED destination is unmapped before the source range is found not
    # to be one VMA (EFAULT); since d23cb648e365 (6.17) a same-size move takes every VMA of the
    # range, gaps kept
    if rel >= (6, 17):
        assert r.steps[-1].errno == 0 and r.steps[-1].ret == 11
    else:
        assert r.steps[-1].errno == errno.EFAULT and (9, 11) in _layout(r)


def _whole_source_era(rel: Release) -> bool:
    """b714ccb02a76 (6.16) until 7.2: the DONTUNMAP copy may merge with its source, and the
    whole source VMA is unlocked."""
    return (6, 16) <= rel < (7, 2)


def _dontunmap_copy_vs_source(rel: Release, r: SeqResult) -> None:
    assert _layout(r) == ([(5, 8)] if _whole_source_era(rel) else [(5, 7), (7, 8)])


def _dontunmap_locked_source(rel: Release, r: SeqResult) -> None:
    locked = [(v.start, v.end, "lo" in v.flags) for v in _vmas(r)]
    if _whole_source_era(rel):
        assert locked == [(12, 15, False)]
    else:
        assert locked == [(12, 13, False), (13, 15, True)]


def _cow_beyond_eof(rel: Release, r: SeqResult) -> None:
    # the failed write fault (SIGBUS) still gave [2,4) an anon_vma: the OLD anon rule then
    # refuses the merge with the unfaulted prev, the NEW rule (6.16) allows it
    assert r.steps[4].errno == errno.EFAULT
    assert _layout(r) == ([(1, 4)] if rel >= (6, 16) else [(1, 2), (2, 4)])


def _unmergeable_sealed(rel: Release, r: SeqResult) -> None:
    if rel >= (6, 10):
        assert ("sl" in _vmas(r)[0].flags) == (rel[:2] != (6, 16))


def _mseal_stale_start(rel: Release, r: SeqResult) -> None:
    # [0,2) merges with the sealed [2,4); from 6c2da14ae1e0 (6.17) until 2697dd8ae721 (7.0;
    # stable 6.18.21, 6.19.11) mseal_apply() then modifies [4,8) from its stale curr_start 2:
    # no merge with the sealed [0,4), only the split at 5
    if rel < (6, 10):
        assert r.steps[-1].errno == errno.ENOSYS
        return
    stale = (6, 17) <= rel < (6, 18, 21) or (6, 19) <= rel < (6, 19, 11)
    assert r.steps[-1].errno == 0
    assert [(v.start, v.end, "sl" in v.flags) for v in _vmas(r)] == (
        [(0, 4, True), (4, 5, True), (5, 8, False)] if stale else [(0, 5, True), (5, 8, False)])


def _map_stack(rel: Release, r: SeqResult) -> None:
    # c4608d1bf7c6 (6.7): MAP_STACK is VM_NOHUGEPAGE, so it does not merge with its neighbour
    if rel >= (6, 7):
        assert _layout(r) == [(0, 2), (2, 4)] and "nh" in _vmas(r)[1].flags
    else:
        assert _layout(r) == [(0, 4)]


def _hugetlb(rel: Release, r: SeqResult) -> None:
    assert [s.errno for s in r.steps[1:]] == [errno.EINVAL, errno.ENOMEM]


def _validate(rel: Release, r: SeqResult) -> None:
    assert [s.errno for s in r.steps[2:]] == [errno.EOPNOTSUPP, 0]


def _remove(rel: Release, r: SeqResult) -> None:
    errs = [s.errno for s in r.steps[1:] if s.op.startswith("madvise")]
    assert errs == [errno.EACCES, errno.EINVAL, 0]


def _zero_shared(rel: Release, r: SeqResult) -> None:
    assert [v.backing for v in _vmas(r)] == ["zero_(deleted)+3"]


def _zero_private(rel: Release, r: SeqResult) -> None:
    # still an anonymous VMA that keeps /dev/zero as its file on every release up to 7.3: the
    # pure-anonymous /dev/zero of upstream's test_pure_anon_dev_zero is newer than 7.3
    assert [v.backing for v in _vmas(r)] == ["zero+5", ""]


def _two_opens(rel: Release, r: SeqResult) -> None:
    # a second open() is another struct file: no merge; a dup() shares it: merge
    assert _layout(r) == [(0, 2), (2, 4), (6, 10)]


def _brk(rel: Release, r: SeqResult) -> None:
    # the runner's heap was faulted by its parent before the fork: a brk extension cannot take
    # the forked VMA's anon_vma (both anon rules refuse), so the heap grows as a second VMA
    assert r.steps[1].ret == 1008 and _layout(r, 1) == [(1000, 1004), (1004, 1008)]
    assert r.steps[3].ret == 1003 and _layout(r) == [(1000, 1002), (1002, 1003)]


def _growsdown(rel: Release, r: SeqResult) -> None:
    assert r.steps[-1].errno == 0 and _layout(r) == [(8, 12)]


BEHAVIOURS: dict[str, tuple[tuple[str, ...], Check]] = {
    "dontunmap-source-keeps-or-loses-account": (
        ("mmap 0 4 rw- private,anon,fixed", "touch 0", "mremap 0 4 4 maymove,fixed,dontunmap 10"),
        _dontunmap_account),
    "dontunmap-copy-merges-with-its-source-only-from-6.16-to-7.1": (
        ("mmap 5 2 r-- private,anon,fixed", "mremap 6 1 1 maymove,fixed,dontunmap 7"),
        _dontunmap_copy_vs_source),
    "dontunmap-unlocks-the-whole-locked-source-only-from-6.16-to-7.1": (
        ("mmap 12 2 r-- private,anon,fixed,locked", "mremap 12 1 1 maymove,fixed,dontunmap 14"),
        _dontunmap_locked_source),
    "mremap-overlap-checked-before-lookup": (
        ("mmap 4 1 rw- private,anon,fixed", "mremap 5 3 3 maymove,fixed,dontunmap 5"),
        _lookup_first),
    "mremap-fixed-destination-unmapped-before-source-check-or-multi-vma-move": (
        ("mmap 3 1 rw- private,anon,fixed", "mmap 9 6 rw- private,anon,fixed",
         "mremap 3 4 4 maymove,fixed 11"), _dest_unmapped_first),
    "cow-fault-beyond-eof-still-takes-an-anon-vma": (
        ("open 0 c", "mmap 1 1 rw- private,fixed 0 8", "mmap 2 2 rwx private,fixed 0 9",
         "touch 3", "mprotect 1 3 r--"), _cow_beyond_eof),
    "madv-unmergeable-clears-sealed-on-6.16": (
        ("mmap 5 3 --- private,anon,fixed", "madvise 5 3 mergeable", "mseal 5 3",
         "madvise 5 3 unmergeable"), _unmergeable_sealed),
    "mseal-leaves-the-vma-after-a-merge-apart-from-6.17-until-the-curr-start-fix": (
        ("mmap 0 8 rw- private,anon,fixed", "mseal 2 2", "mseal 0 5"), _mseal_stale_start),
    "map-stack-is-nohugepage": (
        ("mmap 0 2 rw- private,anon,fixed", "mmap 2 2 rw- private,anon,fixed,stack"), _map_stack),
    "map-hugetlb-refused-without-a-pool": (
        ("mmap 0 4 rw- private,anon,fixed,hugetlb", "mmap 0 512 rw- private,anon,hugetlb"),
        _hugetlb),
    "map-shared-validate-refuses-fixed-noreplace": (
        ("open 0 a", "mmap 0 2 rw- validate,noreplace 0 0", "mmap 0 2 rw- validate,fixed 0 0"),
        _validate),
    "madv-remove-needs-shared-writable-file": (
        ("open 0 a", "mmap 0 2 rw- private,fixed 0 0", "madvise 0 2 remove",
         "mmap 2 2 rw- private,anon,fixed", "madvise 2 2 remove", "mmap 4 2 rw- shared,fixed 0 4",
         "madvise 4 2 remove"), _remove),
    "dev-zero-shared-is-a-new-shmem-object": (
        ("zero 0", "mmap 0 2 rw- shared,fixed 0 3"), _zero_shared),
    "dev-zero-private-keeps-its-file": (
        ("zero 0", "mmap 0 2 rw- private,fixed 0 5", "mmap 2 2 rw- private,anon,fixed"),
        _zero_private),
    "second-open-does-not-merge-dup-does": (
        ("open 0 a", "open 1 a", "dup 0 2", "mmap 0 2 rw- shared,fixed 0 0",
         "mmap 2 2 rw- shared,fixed 1 2", "mmap 6 2 rw- shared,fixed 0 6",
         "mmap 8 2 rw- shared,fixed 2 8"), _two_opens),
    "brk-grows-and-shrinks-the-heap-in-place": (
        ("brk 8", "mprotect 1002 1 r--", "brk 3"), _brk),
    "growsdown-vma-grows-on-a-fault-below": (
        ("mmap 10 2 rw- private,anon,fixed,growsdown", "touch 9", "touch 8"), _growsdown),
}
