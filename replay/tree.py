"""A sorted index of VMAs by start address (the model's stand-in for mm->mm_mt, the maple tree).

A two-level blocked list: ``_firsts`` holds the first start of each block, each block holds up to
``2 * LOAD`` starts and the matching VMA objects. Lookup is two bisects (O(log n)); insert and
remove move at most one block's worth of pointers, so cost does not grow with the number of VMAs
the way a flat list's memmove would. VMAs are also doubly linked (``vma.prev``/``vma.next``) by
the address space, so neighbour access never touches the index.

The index does not own ordering decisions: callers keep VMAs disjoint, and :meth:`rekey` may only
move a start without passing another VMA's start.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import Any

LOAD = 256


class VmaIndex:
    __slots__ = ("_blocks", "_firsts", "_keys", "_len")

    def __init__(self) -> None:
        self._firsts: list[int] = []
        self._keys: list[list[int]] = []
        self._blocks: list[list[Any]] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def floor(self, addr: int) -> Any:
        """The VMA with the greatest start <= addr, or None."""
        firsts = self._firsts
        bi = bisect_right(firsts, addr) - 1
        if bi < 0:
            return None
        keys = self._keys[bi]
        return self._blocks[bi][bisect_right(keys, addr) - 1]

    def first(self) -> Any:
        return self._blocks[0][0] if self._blocks else None

    def last(self) -> Any:
        return self._blocks[-1][-1] if self._blocks else None

    def ceil(self, addr: int) -> Any:
        """The VMA with the smallest start >= addr, or None."""
        firsts = self._firsts
        bi = bisect_right(firsts, addr) - 1
        if bi < 0:
            return self._blocks[0][0] if self._blocks else None
        keys = self._keys[bi]
        i = bisect_left(keys, addr)
        if i < len(keys):
            return self._blocks[bi][i]
        if bi + 1 < len(self._blocks):
            return self._blocks[bi + 1][0]
        return None

    def insert(self, start: int, vma: Any) -> None:
        firsts = self._firsts
        self._len += 1
        if not firsts:
            firsts.append(start)
            self._keys.append([start])
            self._blocks.append([vma])
            return
        bi = bisect_right(firsts, start) - 1
        if bi < 0:
            bi = 0
        keys = self._keys[bi]
        i = bisect_left(keys, start)
        keys.insert(i, start)
        block = self._blocks[bi]
        block.insert(i, vma)
        if i == 0:
            firsts[bi] = start
        if len(keys) > 2 * LOAD:
            self._keys[bi : bi + 1] = [keys[:LOAD], keys[LOAD:]]
            self._blocks[bi : bi + 1] = [block[:LOAD], block[LOAD:]]
            firsts.insert(bi + 1, keys[LOAD])

    def _locate(self, start: int) -> tuple[int, int]:
        """(block, position) of the entry with key ``start``; KeyError if there is none."""
        bi = bisect_right(self._firsts, start) - 1
        keys = self._keys[bi] if bi >= 0 else []
        i = bisect_left(keys, start)
        if i >= len(keys) or keys[i] != start:
            raise KeyError(start)
        return bi, i

    def remove(self, start: int) -> None:
        firsts = self._firsts
        bi, i = self._locate(start)
        keys = self._keys[bi]
        del keys[i]
        del self._blocks[bi][i]
        self._len -= 1
        if not keys:
            del firsts[bi]
            del self._keys[bi]
            del self._blocks[bi]
        elif i == 0:
            firsts[bi] = keys[0]

    def remove_run(self, start: int, count: int) -> None:
        """Remove ``count`` consecutive entries, the first of which has key ``start``."""
        firsts = self._firsts
        bi, i = self._locate(start)
        keys = self._keys[bi]
        n = len(keys)
        if i + count > n:
            # the run crosses into the next block: one entry at a time
            for k in list(self._keys_from(bi, i, count)):
                self.remove(k)
            return
        self._len -= count
        if count == n:
            del firsts[bi]
            del self._keys[bi]
            del self._blocks[bi]
            return
        del keys[i : i + count]
        del self._blocks[bi][i : i + count]
        if i == 0:
            firsts[bi] = keys[0]

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

    def rekey(self, old: int, new: int) -> None:
        """Change a VMA's start in place (order must be preserved)."""
        bi, i = self._locate(old)
        self._keys[bi][i] = new
        if i == 0:
            self._firsts[bi] = new

    def __iter__(self) -> Iterator[Any]:
        for block in self._blocks:
            yield from block

    def keys(self) -> Iterator[int]:
        for keys in self._keys:
            yield from keys

    def clear(self) -> None:
        self._firsts.clear()
        self._keys.clear()
        self._blocks.clear()
        self._len = 0
