"""A sorted index of VMAs by start address (the model's stand-in for mm->mm_mt, the maple tree).

A two-level blocked list: each block holds up to ``2 * load`` starts (``_keys[b]``) and the
matching VMA objects (``_blocks[b]``); ``_seps[b]`` is a separator below block b: every start in
block b-1 is < ``_seps[b]`` <= every start in block b, and ``_seps[0]`` is below every address
(``-2**64``, so that even a negative probe lands in block 0). Lookup is two
bisects (O(log n)); insert and remove move at most one block's worth of pointers, so cost does not
grow with the number of VMAs the way a flat list's memmove would. A separator is only a bound,
not necessarily a block's first start, so removing a block's first VMA leaves it alone. VMAs are
also doubly linked (``vma.prev``/``vma.next``) by the address space, so neighbour access never
touches the index, and :meth:`find_vma` uses the link to step past a VMA that ends at or below the
address.

The index does not own ordering decisions: callers keep VMAs disjoint, and :meth:`rekey` may only
move a start without passing another VMA's start. There is always at least one block (the empty
index has one empty block), which keeps the hot paths free of emptiness checks.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import Any

LOAD = 256
_BELOW_ALL = -(1 << 64)  # _seps[0]: below any address, signed or unsigned


class VmaIndex:
    __slots__ = ("_blocks", "_keys", "_load", "_max", "_seps")

    def __init__(self, load: int = LOAD) -> None:
        self._load = load
        self._max = 2 * load  # a block that grows past this is split in two
        self._seps: list[int] = [_BELOW_ALL]
        self._keys: list[list[int]] = [[]]
        self._blocks: list[list[Any]] = [[]]

    def __len__(self) -> int:
        return sum(map(len, self._keys))

    def floor(self, addr: int) -> Any:
        """The VMA with the greatest start <= addr, or None."""
        bi = bisect_right(self._seps, addr) - 1
        i = bisect_right(self._keys[bi], addr) - 1
        if i >= 0:
            return self._blocks[bi][i]
        # addr lies between block bi's separator and its first start
        return self._blocks[bi - 1][-1] if bi > 0 else None

    def find_vma(self, addr: int) -> Any:
        """find_vma(): the first VMA with end > addr (the one containing addr, else the next)."""
        bi = bisect_right(self._seps, addr) - 1
        i = bisect_right(self._keys[bi], addr) - 1
        if i >= 0:
            v = self._blocks[bi][i]
        elif bi > 0:
            v = self._blocks[bi - 1][-1]
        else:
            block = self._blocks[0]
            return block[0] if block else None
        return v if v.end > addr else v.next

    def first(self) -> Any:
        block = self._blocks[0]
        return block[0] if block else None

    def last(self) -> Any:
        block = self._blocks[-1]
        return block[-1] if block else None

    def insert(self, start: int, vma: Any) -> None:
        bi = bisect_right(self._seps, start) - 1
        keys = self._keys[bi]
        i = bisect_left(keys, start)
        keys.insert(i, start)
        block = self._blocks[bi]
        block.insert(i, vma)
        if len(keys) > self._max:
            load = self._load
            self._keys[bi : bi + 1] = [keys[:load], keys[load:]]
            self._blocks[bi : bi + 1] = [block[:load], block[load:]]
            self._seps.insert(bi + 1, keys[load])

    def _drop_block(self, bi: int) -> None:
        """Remove the now empty block bi (the last block stays, empty)."""
        if len(self._blocks) == 1:
            return
        del self._seps[bi]
        del self._keys[bi]
        del self._blocks[bi]
        self._seps[0] = _BELOW_ALL

    def _locate(self, start: int) -> tuple[int, int]:
        """(block, position) of the entry with key ``start``; KeyError if there is none."""
        bi = bisect_right(self._seps, start) - 1
        keys = self._keys[bi]
        i = bisect_left(keys, start)
        if i >= len(keys) or keys[i] != start:
            raise KeyError(start)
        return bi, i

    def remove(self, start: int) -> None:
        self.remove_run(start, 1)

    def remove_run(self, start: int, count: int) -> None:
        """Remove ``count`` consecutive entries, the first of which has key ``start``."""
        bi, i = self._locate(start)
        keys = self._keys[bi]
        if i + count > len(keys):
            # the run crosses into the next block: one entry at a time
            for k in list(self._keys_from(bi, i, count)):
                self.remove(k)
            return
        del keys[i : i + count]
        del self._blocks[bi][i : i + count]
        if not keys:
            self._drop_block(bi)

    def _keys_from(self, bi: int, i: int, count: int) -> Iterator[int]:
        """``count`` keys starting at position i of block bi (following blocks as needed)."""
        all_keys = self._keys
        while count > 0:
            keys = all_keys[bi]
            take = keys[i : i + count]
            yield from take
            count -= len(take)
            bi += 1
            i = 0

    def split_below(self, old: int, new: int, lower: Any) -> None:
        """__split_vma() with new_below in one lookup: the entry at ``old`` moves up to ``new``
        (not past the next start) and ``lower`` takes key ``old`` just before it."""
        bi, i = self._locate(old)
        keys = self._keys[bi]
        seps = self._seps
        if bi + 1 < len(seps) and new >= seps[bi + 1]:
            seps[bi + 1] = self._keys[bi + 1][0]  # moved up past the next block's separator
        keys[i] = new
        keys.insert(i, old)
        block = self._blocks[bi]
        block.insert(i, lower)
        if len(keys) > self._max:
            load = self._load
            self._keys[bi : bi + 1] = [keys[:load], keys[load:]]
            self._blocks[bi : bi + 1] = [block[:load], block[load:]]
            self._seps.insert(bi + 1, keys[load])

    def rekey(self, old: int, new: int) -> None:
        """Change a VMA's start in place (order must be preserved)."""
        bi, i = self._locate(old)
        self._keys[bi][i] = new
        seps = self._seps
        if new < seps[bi]:
            seps[bi] = new  # moved down past its block's separator (never block 0's)
        elif bi + 1 < len(seps) and new >= seps[bi + 1]:
            seps[bi + 1] = self._keys[bi + 1][0]  # moved up past the next block's separator

    def __iter__(self) -> Iterator[Any]:
        for block in self._blocks:
            yield from block

    def keys(self) -> Iterator[int]:
        for keys in self._keys:
            yield from keys

    def clear(self) -> None:
        self._seps[:] = [_BELOW_ALL]
        self._keys[:] = [[]]
        self._blocks[:] = [[]]
