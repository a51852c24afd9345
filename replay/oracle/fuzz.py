"""Differential fuzzing of the model against real kernels: a seeded sequence generator, batched
execution, comparison and a batched delta-debugging minimizer.

Why a seeded generator and not hypothesis: execution is batched (one runner process, or one qemu
boot, for hundreds of sequences), which rules out hypothesis' one-example-at-a-time execution and
its shrinking. Sequence i of seed S is generated from its own `random.Random(f"{S}:{i}")`, so it
is reproducible from (S, i) alone, whatever the batch size, and the minimizer below replaces
shrinking (it runs every candidate of a round in one batch).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from .compare import DEFAULT_IGNORE, Disagreement, compare
from .core import WINDOW_PAGES, SeqResult, Sequence

Runner = Callable[[Seq[Sequence]], list[SeqResult]]

HOT = 24  # most operations start in window pages [0, HOT): dense interaction
PROTS = ["rw-"] * 12 + ["r--"] * 6 + ["---"] * 2 + ["rwx"] * 2 + ["r-x"] * 2 + ["--x", "-w-"]
INVERSE = {
    "dontfork": "dofork", "dontdump": "dodump", "wipeonfork": "keeponfork", "hugepage": "nohugepage",
    "nohugepage": "hugepage", "mergeable": "unmergeable", "random": "normal", "sequential": "normal",
    "dofork": "dontfork", "dodump": "dontdump", "keeponfork": "wipeonfork", "unmergeable": "mergeable",
    "normal": "random",
}  # fmt: skip
FLAG_ADVICE = [
    "dontfork", "dofork", "dontdump", "dodump", "wipeonfork", "keeponfork", "hugepage",
    "nohugepage", "mergeable", "unmergeable", "random", "sequential", "normal",
]  # fmt: skip


@dataclass
class GenConfig:
    length: int = 12  # operations per sequence
    allow_move: bool = True  # mremap MAYMOVE|FIXED moves (False on kernels where L20 is unsafe)
    allow_mseal: bool = True
    allow_fork: bool = True
    dense: float = 0.3  # share of sequences confined to 12 pages with ranges of 1..4 pages
    files: bool = True  # file-backed mappings (open/dup/memfd/zero slots; the C runner only)
    brk: bool = True  # brk and operations on heap pages (the C runner only)


@dataclass
class _State:
    rng: random.Random
    points: list[int] = field(default_factory=list)
    forks: int = 0
    advices: list[str] = field(default_factory=list)  # flag advices used so far (undo them later)
    hot: int = HOT
    maxlen: int = 8
    # rough shadow of the mapped window pages (errors ignored): biases ranges towards VMAs
    mapped: set[int] = field(default_factory=set)
    # ranges mapped so far (mmap, mremap destinations): exact-extent operations and moves to
    # exactly adjacent positions are what merges need
    segs: list[tuple[int, int]] = field(default_factory=list)
    # open fd slots -> the file they name ("a", "b", "c", "memfd", "zero"; a dup names the same
    # open file description as its source, written "a'" for a second open of a)
    slots: dict[int, str] = field(default_factory=dict)
    fsegs: list[tuple[int, int, int, int]] = field(default_factory=list)  # start, end, slot, pgoff
    growsdown: list[int] = field(default_factory=list)  # starts of GROWSDOWN mappings
    heap: int = 0  # heap pages after the last brk (0: brk not called yet)

    def pos(self, hi: int | None = None) -> int:
        hi = hi or self.hot
        x = self.rng.random()
        if self.mapped and x < 0.4:
            return self.rng.choice(sorted(self.mapped))
        if self.points and x < 0.8:
            return min(self.rng.choice(self.points), WINDOW_PAGES - 1)
        return self.rng.randrange(0, hi)

    def map(self, s: int, n: int, on: bool = True) -> None:
        for p in range(s, s + n):
            if on:
                self.mapped.add(p)
            else:
                self.mapped.discard(p)

    def rng_range(self, maxlen: int = 8) -> tuple[int, int]:
        maxlen = min(maxlen, self.maxlen)
        s = self.pos()
        if self.rng.random() < 0.01:
            return s, 0  # zero length: errno corner cases (EINVAL for mmap/munmap, 0 for others)
        if self.segs and self.rng.random() < 0.25:
            a, b = self.rng.choice(self.segs)
            y = self.rng.random()
            if y < 0.5 or b - a < 2:
                return a, b - a  # exactly one earlier mapping
            k = self.rng.randrange(a + 1, b)
            return (a, k - a) if y < 0.75 else (k, b - k)  # its prefix or suffix
        cands = [p for p in self.points if s < p <= s + maxlen]
        if cands and self.rng.random() < 0.5:
            e = self.rng.choice(cands)
        else:
            e = s + self.rng.randint(1, maxlen)
        e = min(e, WINDOW_PAGES)
        if e <= s:
            s, e = WINDOW_PAGES - 1, WINDOW_PAGES
        self.note(s, e)
        return s, e - s

    def note(self, *ps: int) -> None:
        for p in ps:
            if p not in self.points:
                self.points.append(p)


def _mmap(st: _State) -> str:
    r = st.rng
    s, n = st.rng_range()
    prot = r.choice(PROTS)
    if st.slots and r.random() < 0.45:
        return _mmap_file(st, s, n, prot)
    flags = ["shared" if r.random() < 0.05 else "private", "anon"]
    flags.append("noreplace" if r.random() < 0.15 else "fixed")
    if r.random() < 0.5:
        flags.append("noreserve")
    if r.random() < 0.05:
        flags.append("populate")
    if r.random() < 0.04:
        flags.append("locked")
    if r.random() < 0.03:
        flags.append("growsdown")
        st.growsdown.append(s)
    if r.random() < 0.08:
        flags.append("stack")
    if r.random() < 0.01:
        flags.append("hugetlb")
    st.map(s, n)
    if n:
        st.segs.append((s, s + n))
    return f"mmap {s} {n} {prot} {','.join(flags)}"


def _mmap_file(st: _State, s: int, n: int, prot: str) -> str:
    r = st.rng
    slot = r.choice(sorted(st.slots))
    y = r.random()
    kind = "private" if y < 0.5 else ("shared" if y < 0.9 else "validate")
    if st.slots[slot] == "zero":
        # MAP_SHARED of /dev/zero only: MAP_PRIVATE of /dev/zero (an anonymous VMA that keeps
        # the file) is out of the model's scope (docs/model.md, "Out of scope")
        kind = "shared"
    same = [f for f in st.fsegs if st.slots.get(f[2], "?").rstrip("'") == st.slots[slot].rstrip("'")]
    if same and r.random() < 0.6:
        # the page offset that continues (or overlaps) an earlier mapping of the same file
        a, _, _, off = r.choice(same)
        pgoff = max(0, off + (s - a))
    else:
        pgoff = r.randrange(0, 18)
    flags = [kind, "noreplace" if r.random() < 0.1 else "fixed"]
    if r.random() < 0.15:
        flags.append("noreserve")
    if r.random() < 0.05:
        flags.append("populate")
    if r.random() < 0.03:
        flags.append("locked")
    st.map(s, n)
    if n:
        st.segs.append((s, s + n))
        st.fsegs.append((s, s + n, slot, pgoff))
    return f"mmap {s} {n} {prot} {','.join(flags)} {slot} {pgoff}"


def _files_prologue(st: _State) -> list[str]:
    """Open one to three fd slots: a file, a second open of it or a dup, a memfd, /dev/zero."""
    r = st.rng
    ops = []
    first = r.choice(["a", "a", "b", "c", "memfd", "zero"])
    ops.append(f"open 0 {first}" if first in "abc" else f"{first} 0")
    st.slots[0] = first
    if first in "abc" and r.random() < 0.6:
        if r.random() < 0.5:
            ops.append("dup 0 1")
            st.slots[1] = first
        else:
            ops.append(f"open 1 {first}" + (" ro" if r.random() < 0.2 else ""))
            st.slots[1] = first + "'"
    if r.random() < 0.3:
        other = r.choice(["memfd", "zero", "b"])
        ops.append(f"open 2 {other}" if other == "b" else f"{other} 2")
        st.slots[2] = other
    return ops


def _heap_op(st: _State) -> str:
    r = st.rng
    if not st.heap or r.random() < 0.5:
        st.heap = r.randint(1, 12)  # page 0 of the heap holds the runner's TLS block
        return f"brk {st.heap}"
    # a range of heap pages from page 1 on
    hs = r.randint(1, max(1, st.heap - 1))
    hn = r.randint(1, max(1, st.heap - hs))
    y = r.random()
    if y < 0.4:
        return f"mprotect {1000 + hs} {hn} {r.choice(['r--', 'rw-', 'rw-'])}"
    if y < 0.7:
        return f"madvise {1000 + hs} {hn} {r.choice(FLAG_ADVICE)}"
    return f"touch {1000 + hs}"


def _mremap(st: _State, cfg: GenConfig) -> str:
    r = st.rng
    s, n = st.rng_range(6)
    kind = r.random()
    if not cfg.allow_move or kind < 0.35:
        # in place: shrink or expand (no MAYMOVE: never leaves the window)
        new = r.randint(1, 10)
        new = min(new, WINDOW_PAGES - s)
        st.note(s + new)
        if new < n:
            st.map(s + new, n - new, False)
        return f"mremap {s} {n} {new} 0"
    dest = r.choice([p for p in st.points if p + n <= WINDOW_PAGES] or [0]) if r.random() < 0.5 else r.randrange(0, 48)
    new = n if r.random() < 0.6 else r.randint(1, 8)
    if st.segs and r.random() < 0.35:
        a, b = r.choice(st.segs)  # land exactly after or before an earlier mapping
        dest = b if r.random() < 0.5 or a < new else a - new
    dest = max(0, min(dest, WINDOW_PAGES - 1))
    if kind < 0.8:
        new = min(new, WINDOW_PAGES - dest)
        st.note(dest, dest + new)
        st.map(s, n, False)
        st.map(dest, new)
        st.segs.append((dest, dest + new))
        return f"mremap {s} {n} {new} maymove,fixed {dest}"
    dest = min(dest, WINDOW_PAGES - n)
    st.note(dest, dest + n)
    st.map(dest, n)
    if n:
        st.segs.append((dest, dest + n))
    return f"mremap {s} {n} {n} maymove,fixed,dontunmap {dest}"


def gen_op(st: _State, cfg: GenConfig) -> str:
    r = st.rng
    x = r.random()
    if x < 0.16:
        return _mmap(st)
    if x < 0.22:
        s, n = st.rng_range()
        st.map(s, n, False)
        return f"munmap {s} {n}"
    if x < 0.38:
        s, n = st.rng_range()
        return f"mprotect {s} {n} {r.choice(PROTS)}"
    if x < 0.52:
        s, n = st.rng_range()
        # undoing an earlier advice on a neighbouring/overlapping range is what makes flag
        # changes merge again; pure random advice rarely does
        if st.advices and r.random() < 0.5:
            adv = INVERSE[r.choice(st.advices)]
        else:
            adv = r.choice(FLAG_ADVICE)
        st.advices.append(adv)
        return f"madvise {s} {n} {adv}"
    if x < 0.56:
        s, n = st.rng_range()
        adv = r.choice(["guard_install", "guard_install", "populate_write", "populate_write",
                        "populate_read", "dontneed", "guard_remove", "free", "cold", "pageout",
                        "willneed", "remove", "dontneed_locked"])
        return f"madvise {s} {n} {adv}"
    if x < 0.62:
        s, n = st.rng_range()
        y = r.random()
        if y < 0.3:
            return f"mlock {s} {n}"
        if y < 0.5:
            return f"mlock2 {s} {n} onfault"
        return f"munlock {s} {n}"
    if x < 0.70:
        return _mremap(st, cfg)
    if x < 0.72 and cfg.allow_mseal:
        s, n = st.rng_range(4)
        return f"mseal {s} {n}"
    if x < 0.75 and cfg.allow_fork and st.forks < 2:
        st.forks += 1
        return "fork" if r.random() < 0.75 else "forkp"
    if x < 0.78 and cfg.brk:
        return _heap_op(st)
    if x < 0.79 and st.slots:
        slot = r.choice(sorted(st.slots))
        del st.slots[slot]
        return f"close {slot}"  # the mappings keep the file
    if st.growsdown and r.random() < 0.25:
        return f"touch {r.choice(st.growsdown) - r.randint(1, 3)}"  # stack growth
    p = r.choice(sorted(st.mapped)) if st.mapped and r.random() < 0.6 else st.pos()
    return f"{'touch' if r.random() < 0.75 else 'read'} {p}"


def gen_sequence(seed: int, index: int, cfg: GenConfig | None = None) -> Sequence:
    cfg = cfg or GenConfig()
    st = _State(random.Random(f"{seed}:{index}"))
    if st.rng.random() < cfg.dense:
        st.hot, st.maxlen = 12, 4  # few pages, many boundaries: deep anon_vma/merge interplay
    ops = _files_prologue(st) if cfg.files and st.rng.random() < 0.5 else []
    ops.append(_mmap(st))
    if st.rng.random() < 0.6:
        ops.append(_mmap(st))
    while len(ops) < cfg.length:
        ops.append(gen_op(st, cfg))
    return Sequence(f"fz{seed}-{index}", tuple(ops[: cfg.length]))


def gen_batch(seed: int, n: int, cfg: GenConfig | None = None, start: int = 0) -> list[Sequence]:
    return [gen_sequence(seed, i, cfg) for i in range(start, start + n)]


# ---- differential run and minimization ---------------------------------------------------------


def differential(
    seqs: Seq[Sequence],
    run_kernel: Runner,
    run_model: Runner,
    label: str = "",
    ignore: frozenset[str] = DEFAULT_IGNORE,
    anon: bool = False,
) -> tuple[list[SeqResult], list[Disagreement]]:
    kres = run_kernel(seqs)
    mres = run_model(seqs)
    out = []
    for s, k, m in zip(seqs, kres, mres, strict=True):
        d = compare(s, k, m, ignore, label, anon)
        if d is not None:
            out.append(d)
    return kres, out


def _same_bug(a: Disagreement, b: Disagreement) -> bool:
    if "oracle" in b.kinds:
        return False
    op_a = a.seq.ops[a.step - 1].split()[0] if a.step >= 1 else ""
    op_b = b.seq.ops[b.step - 1].split()[0] if b.step >= 1 else ""
    return op_a == op_b and bool(set(a.kinds) & set(b.kinds))


def minimize(
    found: list[Disagreement],
    run_kernel: Runner,
    run_model: Runner,
    label: str = "",
    ignore: frozenset[str] = DEFAULT_IGNORE,
    max_rounds: int = 30,
    anon: bool = False,
) -> list[Disagreement]:
    """Shrink every disagreement: cut after the differing step, then remove single operations
    while the same kind of disagreement (same op name, overlapping kinds) persists. Each round
    runs all candidates of all sequences in one batch."""
    cur: list[Disagreement] = []
    for d in found:
        cut = Sequence(d.seq.name + "-min", d.seq.ops[: max(d.step, 1)])
        cur.append(Disagreement(cut, d.step, d.kinds, d.kernel, d.model, d.before, d.label, d.details))
    # nothing to shrink when the model fails before the first operation, or the runner failed
    done = [d.step == 0 or "oracle" in d.kinds for d in cur]
    for _ in range(max_rounds):
        batch: list[Sequence] = []
        owners: list[int] = []
        for j, d in enumerate(cur):
            if done[j]:
                continue
            for i in range(len(d.seq.ops)):
                ops = d.seq.ops[:i] + d.seq.ops[i + 1 :]
                if ops:
                    batch.append(Sequence(f"{d.seq.name}~{len(batch)}", ops))
                    owners.append(j)
        if not batch:
            break
        _, ds = differential(batch, run_kernel, run_model, label, ignore, anon)
        by_name = {d.seq.name: d for d in ds}
        progressed = [False] * len(cur)
        for s, j in zip(batch, owners, strict=True):
            if progressed[j]:
                continue
            nd = by_name.get(s.name)
            if nd is not None and _same_bug(cur[j], nd):
                nd.seq = Sequence(cur[j].seq.name, nd.seq.ops[: max(nd.step, 1)])
                cur[j] = nd
                progressed[j] = True
        for j in range(len(cur)):
            if not progressed[j]:
                done[j] = True
        if all(done):
            break
    return cur
