"""replay.ranges.Ranges against a plain set of addresses, and guard markers over a huge range."""

from __future__ import annotations

import errno
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay import AddressSpace
from replay.flags import (
    MADV_GUARD_INSTALL,
    MADV_GUARD_REMOVE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_NORESERVE,
    MAP_PRIVATE,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_READ,
    PROT_WRITE,
)
from replay.ranges import Ranges

ops = st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 40),
                         st.integers(0, 12)), max_size=60)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(seq=ops)
def test_ranges_match_a_set_of_addresses(seq: list[tuple[str, int, int]]) -> None:
    r = Ranges()
    ref: set[int] = set()
    for kind, start, length in seq:
        end = start + length
        if kind == "add":
            r.add(start, end)
            ref |= set(range(start, end))
        else:
            r.remove(start, end)
            ref -= set(range(start, end))
        pairs = list(r)
        # sorted, disjoint, not touching, non-empty
        assert all(s < e for s, e in pairs)
        assert all(a[1] < b[0] for a, b in itertools.pairwise(pairs))
        assert {a for s, e in pairs for a in range(s, e)} == ref
        assert r.size() == len(ref)
        assert bool(r) == bool(ref)
        for a in range(-1, 56):
            assert (a in r) == (a in ref)
        for s in range(0, 54, 3):
            for e in (s, s + 1, s + 4, s + 13):
                assert r.overlaps(s, e) == any(s <= a < e for a in ref)
                assert {a for x, y in r.within(s, e) for a in range(x, y)} == {
                    a for a in ref if s <= a < e}


P = 0x1000
TiB = 1 << 40


def test_guard_markers_over_a_terabyte_are_ranges_not_pages() -> None:
    """Guarding a 1 TiB NORESERVE mapping (2**28 pages) is one range: install, fault, move and
    remove all stay cheap."""
    mm = AddressSpace("6.19", explain=False)
    base = 0x100000000000
    anon = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED
    mm.mmap(base, TiB, PROT_READ | PROT_WRITE, anon)
    mm.madvise(base + P, TiB - 2 * P, MADV_GUARD_INSTALL)
    assert list(mm.guard_pages) == [(base + P, base + TiB - P)]
    mm.touch(base)
    mm.touch(base + TiB - P)
    with pytest.raises(OSError) as e:
        mm.touch(base + TiB // 2 + 5)
    assert e.value.errno == errno.EFAULT
    # move the last 4 pages (3 guarded, 1 not) elsewhere: their markers travel with them
    dst = 0x200000000000
    mm.mremap(base + TiB - 4 * P, 4 * P, 4 * P, MREMAP_MAYMOVE | MREMAP_FIXED, dst)
    assert list(mm.guard_pages) == [(base + P, base + TiB - 4 * P), (dst, dst + 3 * P)]
    child = mm.fork()
    assert list(child.guard_pages) == list(mm.guard_pages)
    mm.madvise(base, TiB - 4 * P, MADV_GUARD_REMOVE)
    assert list(mm.guard_pages) == [(dst, dst + 3 * P)]
    mm.munmap(dst, 4 * P)
    assert not mm.guard_pages
    mm.check()
