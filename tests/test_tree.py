"""replay.tree.VmaIndex against a plain sorted list, with tiny blocks so that block splits,
empty blocks and stale separators all happen."""

from __future__ import annotations

from bisect import bisect_left, bisect_right

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.tree import VmaIndex


class Node:
    """A VMA stand-in: start, end and the next link that find_vma() follows."""

    __slots__ = ("end", "next", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.next: Node | None = None


def relink(nodes: list[Node]) -> None:
    for i, a in enumerate(nodes):
        a.next = nodes[i + 1] if i + 1 < len(nodes) else None


def check(idx: VmaIndex, ref: list[Node], probes: list[int]) -> None:
    starts = [n.start for n in ref]
    assert len(idx) == len(ref)
    assert list(idx) == ref
    assert list(idx.keys()) == starts
    assert idx.first() is (ref[0] if ref else None)
    assert idx.last() is (ref[-1] if ref else None)
    # the separators' invariant: every start of block b-1 < seps[b] <= every start of block b
    keys, seps = idx._keys, idx._seps
    for b in range(1, len(seps)):
        assert all(k < seps[b] for k in keys[b - 1]) and all(k >= seps[b] for k in keys[b]), b
    for a in probes:
        i = bisect_right(starts, a) - 1
        assert idx.floor(a) is (ref[i] if i >= 0 else None), a
        want = next((n for n in ref if n.end > a), None)
        assert idx.find_vma(a) is want, a


# an operation: (kind, slot, delta); slots are 10-unit cells, a node covers [s, s + 5)
ops = st.lists(st.tuples(st.sampled_from(["insert", "remove", "run", "down", "up", "below"]),
                         st.integers(0, 60), st.integers(1, 4)), max_size=120)


@pytest.mark.parametrize("load", [1, 2, 3])
@settings(max_examples=150, deadline=None, derandomize=True)
@given(seq=ops)
def test_index_matches_a_sorted_list(load: int, seq: list[tuple[str, int, int]]) -> None:
    idx = VmaIndex(load=load)
    ref: list[Node] = []
    probes = [-(1 << 63), -4096, *range(-1, 640, 3)]
    for kind, slot, delta in seq:
        starts = [n.start for n in ref]
        if kind == "insert":
            s = slot * 10
            i = bisect_left(starts, s)
            if (i < len(ref) and ref[i].start < s + 10) or (i and ref[i - 1].end > s):
                continue
            node = Node(s, s + 5)
            ref.insert(i, node)
            idx.insert(s, node)
        elif not ref:
            continue
        elif kind == "remove":
            node = ref.pop(slot % len(ref))
            idx.remove(node.start)
        elif kind == "run":
            i = slot % len(ref)
            count = min(delta, len(ref) - i)
            idx.remove_run(ref[i].start, count)
            del ref[i:i + count]
        elif kind == "below":
            # split_below: a node is cut; a new node takes the part below, the node keeps the
            # part above (its start moves up), as __split_vma(new_below) does. The cut may reach
            # just below the next start (the node grows to it first), so that a block's last
            # start passes the next block's stale separator, as with "up"
            i = slot % len(ref)
            node = ref[i]
            ceiling = ref[i + 1].start - 1 if i + 1 < len(ref) else node.start + 40
            cut = min(ceiling, node.start + 4 * delta)
            if cut <= node.start:
                continue
            node.end = max(node.end, cut + 1)
            lower = Node(node.start, cut)
            idx.split_below(node.start, cut, lower)
            node.start = cut
            ref.insert(i, lower)
        else:
            # rekey: move a start down (into the gap below) or up, never past a neighbour's start
            i = slot % len(ref)
            node = ref[i]
            if kind == "down":
                floor = ref[i - 1].end if i else 0
                new = max(floor, node.start - delta)
            else:
                # up to just below the next start (a trimmed head), so that a block's last start
                # can pass the next block's stale separator
                ceiling = ref[i + 1].start - 1 if i + 1 < len(ref) else node.start + 40
                new = min(ceiling, node.start + 4 * delta)
                node.end = max(node.end, new + 1)
            idx.rekey(node.start, new)
            node.start = new
        relink(ref)
        check(idx, ref, probes)
    idx.clear()
    check(idx, [], probes)


def test_rekey_and_remove_of_a_missing_key_raise() -> None:
    idx = VmaIndex(load=1)
    for s in (0, 10, 20, 30):
        idx.insert(s, Node(s, s + 5))
    with pytest.raises(KeyError):
        idx.remove(15)
    with pytest.raises(KeyError):
        idx.rekey(5, 6)


def test_a_start_moved_past_a_stale_separator_keeps_the_order() -> None:
    """Blocks [0] [10] [20 30]; removing 20 leaves block 3's separator at 20; moving 10 up to 25
    must move that separator, or a later insert of 22 would land after 25."""
    idx = VmaIndex(load=1)
    nodes = {s: Node(s, s + 5) for s in (0, 10, 20, 30)}
    for s, n in nodes.items():
        idx.insert(s, n)
    idx.remove(20)
    idx.rekey(10, 25)
    nodes[10].start = 25
    idx.insert(22, Node(22, 23))
    assert list(idx.keys()) == [0, 22, 25, 30]
    assert idx.floor(24).start == 22 and idx.floor(27).start == 25


def test_a_split_below_past_a_stale_separator_keeps_the_order() -> None:
    """As above, through split_below(): cutting [10, 29) at 25 moves its start past the stale
    separator 20; the entry must still be found, and a later insert of 22 land before 25."""
    idx = VmaIndex(load=1)
    nodes = {s: Node(s, s + 5) for s in (0, 10, 20, 30)}
    for s, n in nodes.items():
        idx.insert(s, n)
    idx.remove(20)
    lower = Node(10, 25)
    idx.split_below(10, 25, lower)
    nodes[10].start = 25
    idx.remove(25)  # found where it is
    idx.insert(25, nodes[10])
    idx.insert(22, Node(22, 23))
    assert list(idx.keys()) == [0, 10, 22, 25, 30]
    assert list(idx)[1] is lower
