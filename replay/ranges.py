"""A set of addresses kept as sorted, disjoint [start, end) ranges (the model's guard markers).

MADV_GUARD_INSTALL marks page table entries, page by page; a per-page set would cost memory and
time proportional to the bytes guarded (a 1 TiB range is 2**28 pages). Ranges keep every
operation O(log n + ranges touched) in the number of separate guarded ranges.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator


class Ranges:
    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends, strict=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ranges) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return "Ranges(" + ", ".join(f"[{s:#x},{e:#x})" for s, e in self) + ")"

    def __contains__(self, addr: int) -> bool:
        i = bisect_right(self._starts, addr) - 1
        return i >= 0 and addr < self._ends[i]

    def size(self) -> int:
        """Bytes covered."""
        return sum(e - s for s, e in self)

    def overlaps(self, start: int, end: int) -> bool:
        """Does any address in [start, end) belong to the set?"""
        i = bisect_right(self._ends, start)  # the first range ending after start
        return start < end and i < len(self._starts) and self._starts[i] < end

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        starts, ends = self._starts, self._ends
        i = bisect_left(ends, start)  # first range that ends at or after start (touching joins)
        j = bisect_right(starts, end)  # ranges [i, j) start at or before end
        if i < j:
            start = min(start, starts[i])
            end = max(end, ends[j - 1])
        starts[i:j] = [start]
        ends[i:j] = [end]

    def remove(self, start: int, end: int) -> None:
        if start >= end:
            return
        starts, ends = self._starts, self._ends
        i = bisect_right(ends, start)  # first range that ends after start
        j = bisect_left(starts, end)  # ranges [i, j) start before end
        if i >= j:
            return
        keep_s: list[int] = []
        keep_e: list[int] = []
        if starts[i] < start:
            keep_s.append(starts[i])
            keep_e.append(start)
        if ends[j - 1] > end:
            keep_s.append(end)
            keep_e.append(ends[j - 1])
        starts[i:j] = keep_s
        ends[i:j] = keep_e

    def within(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of the set inside [start, end)."""
        starts, ends = self._starts, self._ends
        i = bisect_right(ends, start)
        out = []
        while i < len(starts) and starts[i] < end:
            out.append((max(starts[i], start), min(ends[i], end)))
            i += 1
        return out
