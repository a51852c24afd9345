"""Replay throughput of the VMA model (replay.AddressSpace).

    .venv/bin/python bench/bench_replay.py [-n 1000000] [--kernel 6.19] [--seed 1] [--big 65530]

(a) replays a generated mixed sequence of N operations on an empty address space;
(b) replays the same operations on address spaces pre-populated with 100 and with --big VMAs
    (placed far below the working window), side by side, and prints the per-op ratio.

Goals (issue #3): (a) >= 300,000 ops/s; (b) big/small per-op time <= 2x.

The mix (per 100 ops): 25 touch (write or read), 20 mprotect, 15 mmap MAP_FIXED, 10 munmap,
10 madvise (flag advice and DONTNEED), 5 mlock/munlock, 5 mremap (move, grow, shrink), 10 mmap
without an address (top-down search) with a later munmap of an older one. All work happens in a
1024-page window; failing calls (ENOMEM, EFAULT...) are part of the workload. fork is left out:
it copies the whole address space (O(VMAs)) and would measure the pre-population, not the ops.
The pre-populated VMAs sit below the window; explanations are off (explain=False); the benchmark
sets vm.max_map_count to 2**31 so that the big address space can still split. The operations are
bound to the address space's methods before the clock starts (a replay decodes its trace once);
the timed loop makes one call per operation and counts the failures.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replay import AddressSpace
from replay.flags import (
    MADV_DODUMP,
    MADV_DONTDUMP,
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_NORESERVE,
    MAP_PRIVATE,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_READ,
    PROT_WRITE,
)

P = 0x1000
WINDOW = 0x600000000000  # working window (4096 pages)
WPAGES = 1024
FILL_BASE = 0x100000000  # pre-populated VMAs live here, far below the window
R, RW = PROT_READ, PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE

Op = tuple[str, tuple[int, ...]]


def generate(n: int, seed: int) -> list[Op]:
    rnd = random.Random(seed)
    ops: list[Op] = []
    floating: list[int] = []  # sizes of non-fixed maps, munmapped later by address order
    advs = (MADV_DONTDUMP, MADV_DODUMP, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_DONTNEED)
    for _ in range(n):
        r = rnd.randrange(100)
        a = WINDOW + rnd.randrange(WPAGES - 64) * P
        ln = rnd.randint(1, 8) * P
        if r < 25:
            ops.append(("touch", (a, rnd.random() < 0.7)))
        elif r < 45:
            ops.append(("mprotect", (a, ln, rnd.choice((R, RW)))))
        elif r < 60:
            ln = rnd.randint(1, 64) * P
            ops.append(("mmap", (a, ln, rnd.choice((R, RW, RW)), ANON | MAP_FIXED)))
        elif r < 70:
            ops.append(("munmap", (a, rnd.randint(1, 4) * P)))
        elif r < 80:
            ops.append(("madvise", (a, ln, rnd.choice(advs))))
        elif r < 85:
            ops.append(("mlock" if rnd.random() < 0.5 else "munlock", (a, ln)))
        elif r < 90:
            k = rnd.randrange(3)
            if k == 0:
                dst = WINDOW + rnd.randrange(WPAGES - 64) * P
                ops.append(("mremap", (a, ln, ln, MREMAP_MAYMOVE | MREMAP_FIXED, dst)))
            elif k == 1:
                ops.append(("mremap", (a, ln, ln + rnd.randint(1, 4) * P, 0, 0)))
            else:
                ops.append(("mremap", (a, ln, max(P, ln - 2 * P), 0, 0)))
        else:
            if floating and rnd.random() < 0.5:
                ops.append(("munmap_floating", (floating.pop(0),)))
            else:
                size = rnd.randint(1, 4) * P
                floating.append(size)
                ops.append(("mmap", (0, size, RW, ANON)))
    return ops


def populate(mm: AddressSpace, count: int) -> None:
    """count single-page VMAs that cannot merge (alternating protections), below the window."""
    for i in range(count):
        mm.mmap(FILL_BASE + i * P, P, R if i % 2 else RW, ANON | MAP_FIXED)
    assert mm.map_count == count


def replay(mm: AddressSpace, ops: list[Op]) -> tuple[float, int, float]:
    """Run ops; returns (wall seconds, failed calls, CPU seconds of this process).

    The operations are first bound to the address space's methods (outside the timing, as a
    replay engine decodes its trace once); the timed loop is one call per operation.
    """
    floating: list[int] = []  # addresses of non-fixed maps, oldest first
    mmap = mm.mmap
    munmap = mm.munmap

    def mmap_floating(*args: int) -> None:
        floating.append(mmap(*args))

    def munmap_floating(size: int) -> None:
        if floating:
            munmap(floating.pop(0), size)

    methods = {name: getattr(mm, name) for name in
               ("touch", "mprotect", "mmap", "munmap", "madvise", "mlock", "munlock", "mremap")}
    methods["munmap_floating"] = munmap_floating
    plan = [(mmap_floating if name == "mmap" and args[0] == 0 else methods[name], args)
            for name, args in ops]
    failed = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    for fn, args in plan:
        try:
            fn(*args)
        except OSError:
            failed += 1
    return time.perf_counter() - t0, failed, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="operations (default 1,000,000)")
    ap.add_argument("--kernel", default="6.19")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--big", type=int, default=65_530, help="VMAs in the big address space")
    ap.add_argument("--small", type=int, default=100, help="VMAs in the small address space")
    ap.add_argument("--explain", action="store_true", help="record explanations (slower)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    ops = generate(args.n, args.seed)
    print(f"generated {len(ops):,} operations in {time.perf_counter() - t0:.1f}s "
          f"(kernel profile {args.kernel}, explain={args.explain})")

    def fresh() -> AddressSpace:
        return AddressSpace(args.kernel, explain=args.explain, max_map_count=2**31)

    mm = fresh()
    secs, failed, cpu = replay(mm, ops)
    rate_a = len(ops) / secs
    print(f"(a) empty start:       {len(ops):,} ops in {secs:.2f}s = {rate_a:,.0f} ops/s "
          f"(CPU time: {len(ops) / cpu:,.0f} ops/s; {failed:,} failed calls, "
          f"{mm.map_count:,} VMAs at the end)  goal >= 300,000: "
          f"{'met' if rate_a >= 300_000 else 'NOT met'}")
    results = {}
    for label, count in (("small", args.small), ("big", args.big)):
        mm = fresh()
        populate(mm, count)
        secs, failed, cpu = replay(mm, ops)
        results[label] = cpu / len(ops)
        print(f"(b) {count:>6,} VMAs first: {len(ops):,} ops in {secs:.2f}s = "
              f"{len(ops) / secs:,.0f} ops/s, CPU {cpu / len(ops) * 1e6:.2f} us/op "
              f"({failed:,} failed, {mm.map_count:,} VMAs at the end)")
    ratio = results["big"] / results["small"]
    print(f"(b) per-op CPU time {args.big:,} vs {args.small:,} VMAs: {ratio:.2f}x  goal <= 2x: "
          f"{'met' if ratio <= 2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
