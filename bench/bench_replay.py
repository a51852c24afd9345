"""Replay throughput of the VMA model (replay.AddressSpace).

    .venv/bin/python bench/bench_replay.py [-n 1000000] [--kernel 6.19] [--seed 1] [--big 65530]
    .venv/bin/python bench/bench_replay.py --against REV [--rounds 3]   # before/after, one run
    .venv/bin/python bench/bench_replay.py --against REV --instructions [-n 100000]

(a) replays a generated mixed sequence of N operations on an empty address space;
(b) replays the same operations on address spaces pre-populated with 100 and with --big VMAs
    (placed far below the working window), side by side, and prints the per-op ratio.

Goals (issue #3): (a) >= 300,000 ops/s; (b) big/small per-op time <= 2x.

``--against REV`` measures the model of git revision REV (checked out in a temporary worktree)
and this tree's model side by side: the same benchmark in fresh processes, alternating, --rounds
times each, and prints the medians and their ratio (a refactoring's gate: no loss beyond noise).
With ``--instructions`` it counts, instead, the instructions of (a) under valgrind's cachegrind
(a run of N operations minus a run that only sets them up, so start-up is not counted; a fixed
PYTHONHASHSEED): a figure that other jobs
on a shared machine do not disturb.

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
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# --against runs this file with the model of another tree first on the path
sys.path.insert(0, os.environ.get("VMATRACE_BENCH_TREE") or str(Path(__file__).resolve().parent.parent))

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

ROOT = Path(__file__).resolve().parent.parent
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
    ap.add_argument("--against", metavar="REV", help="compare with the model of git revision REV")
    ap.add_argument("--rounds", type=int, default=3, help="runs per side with --against (3)")
    ap.add_argument("--instructions", action="store_true",
                    help="with --against: count instructions per op of (a) under cachegrind")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--only", choices=("a", "generate"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.only:  # the runs --instructions counts: (a) and nothing else, and its set-up alone
        mm = AddressSpace(args.kernel, explain=args.explain, max_map_count=2**31)
        ops = generate(args.n, args.seed)
        if args.only == "a":
            replay(mm, ops)
        return 0
    if args.against:
        return against(args, argv if argv is not None else sys.argv[1:])

    t0 = time.perf_counter()
    ops = generate(args.n, args.seed)
    print(f"generated {len(ops):,} operations in {time.perf_counter() - t0:.1f}s "
          f"(kernel profile {args.kernel}, explain={args.explain})")

    def fresh() -> AddressSpace:
        return AddressSpace(args.kernel, explain=args.explain, max_map_count=2**31)

    mm = fresh()
    secs, failed, cpu_a = replay(mm, ops)
    rate_a = len(ops) / secs
    print(f"(a) empty start:       {len(ops):,} ops in {secs:.2f}s = {rate_a:,.0f} ops/s "
          f"(CPU time: {len(ops) / cpu_a:,.0f} ops/s; {failed:,} failed calls, "
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
    if args.json:
        print(json.dumps({"a": len(ops) / cpu_a, "small": results["small"], "big": results["big"]}))
    return 0


def against(args: argparse.Namespace, argv: list[str]) -> int:
    """Alternate fresh runs of this benchmark on REV's model and on this tree's."""
    rest: list[str] = []
    skip = False
    for x in argv:  # the same options, without --against/--rounds
        if skip:
            skip = False
        elif x in ("--against", "--rounds", "-n"):
            skip = True
        elif x != "--instructions" and not x.startswith(("--against=", "--rounds=", "-n=")):
            rest.append(x)
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        old = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old),
                        args.against], check=True)
        try:
            if args.instructions:
                return _instructions(args, rest, old)
            rest += ["-n", str(args.n)]
            runs: dict[str, list[dict[str, float]]] = {args.against: [], "this tree": []}
            for i in range(args.rounds):
                for label, tree in ((args.against, old), ("this tree", ROOT)):
                    out = subprocess.run(
                        [sys.executable, str(Path(__file__).resolve()), *rest, "--json"],
                        env={**os.environ, "VMATRACE_BENCH_TREE": str(tree)}, check=True,
                        capture_output=True, text=True).stdout
                    r = json.loads(out.strip().splitlines()[-1])
                    runs[label].append(r)
                    print(f"round {i + 1} {label:>12}: (a) {r['a']:,.0f} ops/s of CPU time, "
                          f"(b) {r['small'] * 1e6:.2f} / {r['big'] * 1e6:.2f} us/op", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
                           check=False)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("a", "small", "big")}
           for k, v in runs.items()}
    b, n = med[args.against], med["this tree"]
    print(f"medians of {args.rounds} (CPU time): {'(a) ops/s':>7} {'(b) small us/op':>16} "
          f"{'(b) big us/op':>14}")
    for label, m in ((args.against, b), ("this tree", n)):
        print(f"  {label:>16}: {m['a']:>12,.0f} {m['small'] * 1e6:>16.2f} {m['big'] * 1e6:>14.2f}")
    print(f"  this tree / {args.against}: (a) {n['a'] / b['a']:.3f}x throughput, (b) "
          f"{n['small'] / b['small']:.3f}x / {n['big'] / b['big']:.3f}x time per op")
    return 0


def _instructions(args: argparse.Namespace, rest: list[str], old: Path) -> int:
    per_op = {}
    for label, tree in ((args.against, old), ("this tree", ROOT)):
        counts = []
        for only in ("a", "generate"):
            r = subprocess.run(
                ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                 sys.executable, str(Path(__file__).resolve()), *rest, "-n", str(args.n), "--only", only],
                env={**os.environ, "VMATRACE_BENCH_TREE": str(tree), "PYTHONHASHSEED": "0"}, check=True,
                capture_output=True, text=True)
            line = next(x for x in r.stderr.splitlines() if "I" in x and "refs:" in x)
            counts.append(int(line.split("refs:")[1].replace(",", "")))
        per_op[label] = (counts[0] - counts[1]) / args.n
        print(f"  {label:>16}: {per_op[label]:,.0f} instructions per operation "
              f"({args.n:,} operations of (a), start-up subtracted)", flush=True)
    print(f"  this tree / {args.against}: {per_op['this tree'] / per_op[args.against]:.4f}x "
          "instructions per operation")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
