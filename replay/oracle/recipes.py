"""The live-kernel recipes (docs/oracle.md, "Recipes") as data.

Each recipe follows the harness rules: a 40-page PROT_NONE carveout C at window page 0,
B = C + 1 page, test VMAs mapped MAP_FIXED inside C. Pages in the recipe builders below are
relative to B; the generated op lines are relative to the window (B = 1).
Expected layouts list the non-PROT_NONE VMAs of the final state as (start, end, perms) relative
to B; the carveout's leftover "---p" pieces are not part of the expectation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .core import SeqResult, Sequence

B = 1  # window page of B
Layout = list[tuple[int, int, str]]


def M(a: int, b: int, prot: str = "rw-", flags: str = "private,anon,fixed,noreserve") -> str:
    return f"mmap {a + B} {b - a} {prot} {flags}"


def MP(a: int, b: int, prot: str) -> str:
    return f"mprotect {a + B} {b - a} {prot}"


def W(k: int) -> str:
    return f"touch {k + B}"


def MA(a: int, b: int, advice: str) -> str:
    return f"madvise {a + B} {b - a} {advice}"


def MR(a: int, old: int, new: int, flags: str = "0", dest: int | None = None) -> str:
    return f"mremap {a + B} {old} {new} {flags}" + ("" if dest is None else f" {dest + B}")


CARVEOUT = "mmap 0 40 --- private,anon,fixed"
RW_NOACCT = "private,anon,fixed"


@dataclass(frozen=True)
class Recipe:
    rid: str
    purpose: str
    ops: tuple[str, ...]  # without the carveout
    new: Layout  # 6.16+ ("New" column; the live kernel)
    old: Layout  # <= 6.15 ("Old" column, as the model's 6.15 profile should give)
    by_kernel: dict[str, Layout] = field(default_factory=dict)  # era overrides: "6.1", "6.12", "6.15"
    unsafe_before_6188: bool = False  # L20: never run on 6.16 .. 6.18.7 (a use-after-free there)
    # (start, end) relative to B -> VmFlags that must be present / absent in the final state,
    # checked on kernels that have the feature ("new" = live only).
    flags_present: dict[tuple[int, int], frozenset[str]] = field(default_factory=dict)
    flags_absent: dict[tuple[int, int], frozenset[str]] = field(default_factory=dict)

    def sequence(self, suffix: str = "") -> Sequence:
        return Sequence(self.rid + suffix, (CARVEOUT, *self.ops))

    def expected(self, era: str) -> Layout:
        """era: "new" (live, 6.16+), or an old kernel/profile "6.1", "6.12", "6.15" (Old column)."""
        if era == "new":
            return self.new
        return self.by_kernel.get(era, self.old)


def r(a: int, b: int, p: str = "rw-p") -> tuple[int, int, str]:
    return (a, b, p)


def _l20(rid: str, purpose: str, forked: bool, variant: str) -> Recipe:
    # A is 3 pages at B+3P, faulted, moved to B+19P; neighbour(s) mapped; A moved back with
    # MAYMOVE|FIXED|DONTUNMAP (which leaves [19,22) mapped and unfaulted, without ac/lo).
    ops = [M(3, 6), W(3)]
    if forked:
        ops.append("fork")
    ops.append(MR(3, 3, 3, "maymove,fixed", 19))
    if variant == "prev":
        ops.append(M(0, 3))
        new = [r(0, 3), r(3, 6), r(19, 22)] if forked else [r(0, 6), r(19, 22)]
        old = [r(0, 3), r(3, 6), r(19, 22)]
    else:  # next
        ops.append(M(6, 9))
        new = [r(3, 6), r(6, 9), r(19, 22)] if forked else [r(3, 9), r(19, 22)]
        old = [r(3, 6), r(6, 9), r(19, 22)]
    ops.append(MR(19, 3, 3, "maymove,fixed,dontunmap", 3))
    return Recipe(rid, purpose, tuple(ops), new, old, unsafe_before_6188=True)


RECIPES: list[Recipe] = [
    Recipe("L1", "unfaulted prev + faulted middle (anon-merge fix diagram 1)",
           (M(0, 10), MP(0, 5, "r--"), W(5), MP(5, 10, "r--")),
           [r(0, 10, "r--p")], [r(0, 5, "r--p"), r(5, 10, "r--p")]),
    Recipe("L1acct", "L1 without MAP_NORESERVE: the unfaulted half loses VM_ACCOUNT (6.7+)",
           (M(0, 10, flags=RW_NOACCT), MP(0, 5, "r--"), W(5), MP(5, 10, "r--")),
           [r(0, 5, "r--p"), r(5, 10, "r--p")], [r(0, 5, "r--p"), r(5, 10, "r--p")]),
    Recipe("L2", "faulted middle + unfaulted next (diagram 2)",
           (M(0, 10), MP(5, 10, "r--"), W(0), MP(0, 5, "r--")),
           [r(0, 10, "r--p")], [r(0, 5, "r--p"), r(5, 10, "r--p")]),
    Recipe("L3", "3-way (diagram 3)",
           (M(1, 10), MP(1, 4, "r--"), MP(7, 10, "r--"), W(4), MP(4, 7, "r--")),
           [r(1, 10, "r--p")], [r(1, 4, "r--p"), r(4, 7, "r--p"), r(7, 10, "r--p")]),
    Recipe("L4", "faulted prev, unfaulted next",
           (M(1, 10), MP(7, 10, "r--"), W(1), MP(1, 4, "r--"), MP(4, 7, "r--")),
           [r(1, 10, "r--p")], [r(1, 7, "r--p"), r(7, 10, "r--p")]),
    Recipe("L5", "unfaulted prev, faulted next",
           (M(1, 10), MP(1, 4, "r--"), W(4), MP(7, 10, "r--"), MP(4, 7, "r--")),
           [r(1, 10, "r--p")], [r(1, 4, "r--p"), r(4, 10, "r--p")]),
    Recipe("L6", "new mapping next to a forked faulted VMA (child)",
           (M(0, 5, flags=RW_NOACCT), W(0), "fork", *(W(k) for k in range(5)), M(5, 10, flags=RW_NOACCT)),
           [r(0, 5), r(5, 10)], [r(0, 5), r(5, 10)]),
    Recipe("L6p", "L6 control: the parent after the child exits",
           (M(0, 5, flags=RW_NOACCT), W(0), "forkp", *(W(k) for k in range(5)), M(5, 10, flags=RW_NOACCT)),
           [r(0, 10)], [r(0, 10)]),
    Recipe("L7", "mprotect a forked faulted VMA to match an unfaulted neighbour",
           (M(0, 5), W(0), "fork", *(W(k) for k in range(5)), M(5, 10, "rwx"), MP(0, 5, "rwx")),
           [r(0, 5, "rwxp"), r(5, 10, "rwxp")], [r(0, 5, "rwxp"), r(5, 10, "rwxp")]),
    Recipe("L9", "reuse of a neighbour's anon_vma enables a later merge",
           (M(0, 10), MP(5, 10, "rwx"), W(0), W(5), MP(5, 10, "rw-")),
           [r(0, 10)], [r(0, 10)]),
    Recipe("L10", "mmap next to a faulted non-forked VMA",
           (M(0, 5), W(0), M(5, 10)), [r(0, 10)], [r(0, 10)]),
    Recipe("L11", "hole refill",
           (M(0, 15), W(0), "munmap 6 5", M(5, 10)), [r(0, 15)], [r(0, 15)]),
    Recipe("L12", "MAP_FIXED over the middle",
           (M(0, 15), W(0), M(5, 10)), [r(0, 15)], [r(0, 15)]),
    Recipe("L12r", "MAP_FIXED over the middle with different protection",
           (M(0, 15), W(0), M(5, 10, "r--")),
           [r(0, 5), r(5, 10, "r--p"), r(10, 15)], [r(0, 5), r(5, 10, "r--p"), r(10, 15)]),
    Recipe("L13a", "hidden VM_ACCOUNT",
           (M(0, 5, "r--", RW_NOACCT), M(5, 10, "rw-", RW_NOACCT), W(5), MP(5, 10, "r--")),
           [r(0, 5, "r--p"), r(5, 10, "r--p")], [r(0, 5, "r--p"), r(5, 10, "r--p")],
           flags_present={(5, 10): frozenset({"ac"})}, flags_absent={(0, 5): frozenset({"ac"})}),
    Recipe("L13b", "VM_ACCOUNT dropped for an unfaulted anon VMA made read-only (~6.7+)",
           (M(0, 5, "r--", RW_NOACCT), M(5, 10, "rw-", RW_NOACCT), MP(5, 10, "r--")),
           [r(0, 10, "r--p")], [r(0, 10, "r--p")], by_kernel={"6.1": [r(0, 5, "r--p"), r(5, 10, "r--p")]}),
    Recipe("L13c", "NORESERVE mismatch",
           (M(0, 5), M(5, 10, flags=RW_NOACCT)), [r(0, 5), r(5, 10)], [r(0, 5), r(5, 10)],
           flags_present={(0, 5): frozenset({"nr"}), (5, 10): frozenset({"ac"})}),
    Recipe("L15", "MADV_POPULATE_WRITE variant of L1",
           (M(0, 10), MP(0, 5, "r--"), MA(5, 10, "populate_write"), MP(5, 10, "r--")),
           [r(0, 10, "r--p")], [r(0, 5, "r--p"), r(5, 10, "r--p")]),
    Recipe("L16", "read faults do not assign an anon_vma",
           (M(0, 10), MP(0, 5, "r--"), MA(5, 10, "populate_read"), f"read {6 + B}", MP(5, 10, "r--")),
           [r(0, 10, "r--p")], [r(0, 10, "r--p")]),
    Recipe("L17", "mremap in-place expand absorbs next",
           (M(0, 2), "munmap 3 3", M(5, 8), MR(0, 2, 5)), [r(0, 8)], [r(0, 8)]),
    Recipe("L17f", "faulted variant of L17: distinct anon_vmas",
           (M(0, 2), "munmap 3 3", M(5, 8), W(0), W(5), MR(0, 2, 5)),
           [r(0, 5), r(5, 8)], [r(0, 5), r(5, 8)]),
    Recipe("L19", "mremap an unfaulted VMA next to a faulted one",
           (M(0, 5), M(6, 11), MR(6, 5, 5, "maymove,fixed", 49), W(0), MR(49, 5, 5, "maymove,fixed", 5)),
           [r(0, 10)], [r(0, 10)]),
    _l20("L20prev", "faulted VMA moved back next to an unfaulted prev (UAF fix)", False, "prev"),
    _l20("L20next", "faulted VMA moved back next to an unfaulted next (UAF fix)", False, "next"),
    _l20("L20fprev", "forked variant of L20prev: the fork check refuses", True, "prev"),
    Recipe("L21", "mseal split/merge",
           (M(0, 10), "mseal 1 5", "mseal 6 5"), [r(0, 10)], [r(0, 10)],
           flags_present={(0, 10): frozenset({"sl"})}),
    Recipe("L25", "guard install assigns an anon_vma (and sets gu on 6.19)",
           (M(0, 10), MP(5, 10, "r--"), MA(0, 1, "guard_install"), MP(0, 5, "r--")),
           [r(0, 10, "r--p")], [r(0, 5, "r--p"), r(5, 10, "r--p")],
           by_kernel={"6.1": [r(0, 10, "r--p")], "6.12": [r(0, 10, "r--p")]},
           flags_present={(0, 10): frozenset({"gu"})}),
]  # fmt: skip

BY_ID = {x.rid: x for x in RECIPES}


def final_layout(res: SeqResult) -> Layout:
    """Final non-PROT_NONE layout relative to B."""
    if not res.steps:
        return []
    return [(v.start - B, v.end - B, v.perms) for v in res.steps[-1].vmas if v.perms != "---p"]


def final_flags(res: SeqResult) -> dict[tuple[int, int], frozenset[str]]:
    if not res.steps:
        return {}
    return {(v.start - B, v.end - B): v.flags for v in res.steps[-1].vmas}
