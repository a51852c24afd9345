"""Replay of a recorded trace, against the bare model on the same calls, side by side in one run.

    sudo .venv/bin/python bench/bench_replay_trace.py [-n 1000000] [--trace T.vmat] [--keep]

It records bench/workloads/churn.c making N mixed address-space calls (about N events with its
first write faults) with `vmatrace record`, unless --trace names a trace already recorded, then
measures in one process, in this order:

(a) the bare model: the trace's calls decoded once into bound method calls on a
    replay.AddressSpace of the recording kernel's profile, then applied in a tight loop (what
    bench/bench_replay.py measures, on these calls); and the whole replay (decode, plan, model,
    compare with the snapshots) under that one profile. Goal: replay ops/s >= 0.7x the bare model's.
(b) three profiles (recording kernel, 6.15, the fix counterfactual) one after another (-j 1) and in
    parallel worker processes (-j 3). Goal: parallel time <= 0.6x sequential.
(c) peak memory of `vmatrace report TRACE` (replay of the three profiles in parallel plus the HTML
    report) in a child process: the largest sum, sampled every 50 ms, of the proportional set size
    (PSS) of the command and its worker processes, so that the pages a forked worker shares with
    its parent count once. Goal: <= 1 GiB.

Every figure is a ratio of two runs on this machine in this minute, so machines that differ in
Python speed give comparable figures.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from replay import AddressSpace  # noqa: E402
from replay.engine import default_profiles, replay_trace  # noqa: E402
from vmatrace.base.trace import Trace, read_trace  # noqa: E402
from vmatrace.base.uapi import MAP_FIXED_NOREPLACE  # noqa: E402


def record(n: int, out: Path) -> None:
    exe = out.parent / "churn"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(ROOT / "bench" / "workloads" / "churn.c")], check=True)
    subprocess.run([sys.executable, "-m", "vmatrace", "record", "-q", "-f", "-b", "65536", "-o", str(out),
                    "--", str(exe), str(n)], cwd=ROOT, check=True)


def bound_calls(trace: Trace, mm: AddressSpace) -> list[tuple[Any, tuple[int, ...]]]:
    """The trace's calls as (bound method, args), placed where the kernel placed them."""
    ev = trace.events
    cols = {c: ev[c].to_list() for c in ("kind", "a0", "a1", "a2", "a3", "a4", "ret")}
    out: list[tuple[Any, tuple[int, ...]]] = []
    for k, a0, a1, a2, a3, a4, ret in zip(*cols.values(), strict=True):
        if k == "fault":
            out.append((mm.touch, (a0, bool(a2 & 2))))
        elif k == "mmap":
            addr = ret if ret >= 0 else a0
            out.append((mm.mmap, (addr, a1, a2, a3 | MAP_FIXED_NOREPLACE, -1, 0)))
        elif k == "munmap":
            out.append((mm.munmap, (a0, a1)))
        elif k == "mprotect":
            out.append((mm.mprotect, (a0, a1, a2)))
        elif k == "madvise":
            out.append((mm.madvise, (a0, a1, a2)))
        elif k in ("mlock", "munlock"):
            out.append((getattr(mm, k), (a0, a1)))
        elif k == "mremap":
            out.append((mm.mremap, (a0, a1, a2, a3, a4)))
    return out


def bare(trace: Trace, profile: Any, seed_frame: Any) -> tuple[float, int]:
    mm = AddressSpace.from_snapshot(seed_frame, profile, explain=False, soft_dirty=True)
    calls = bound_calls(trace, mm)
    t0 = time.perf_counter()
    for fn, args in calls:
        with contextlib.suppress(OSError):  # failing calls are part of the workload
            fn(*args)
    return time.perf_counter() - t0, len(calls)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="calls the workload makes (default 1,000,000)")
    ap.add_argument("--trace", type=Path, help="replay this trace instead of recording one")
    ap.add_argument("--keep", action="store_true", help="keep the recorded trace (its path is printed)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vmatrace-bench-"))
    try:
        path = args.trace
        if path is None:
            path = tmp / "churn.vmat"
            t0 = time.perf_counter()
            record(args.n, path)
            print(f"recorded {path} in {time.perf_counter() - t0:.1f} s")
        trace = read_trace(path)
        n = trace.events.height
        specs, pair, _notes = default_profiles(trace.meta)
        first = trace.snapshot_index.sort("snapshot_id").row(0, named=True)["snapshot_id"]
        seed = trace.snapshot(first)
        print(f"{n:,} events, {trace.losses['count'].sum() if trace.losses.height else 0} lost; "
              f"profiles: {', '.join(s.label for s in specs)}")

        # (a) bare model vs whole replay, one profile, alternated twice; the best of each
        bare_t, replay_t = [], []
        ncalls = 0
        for _ in range(2):
            gc.collect()
            bt, ncalls = bare(trace, specs[0].profile, seed)
            bare_t.append(bt)
            gc.collect()
            t0 = time.perf_counter()
            r = replay_trace(trace, specs[:1], jobs=1)
            replay_t.append(time.perf_counter() - t0)
        b_ops = ncalls / min(bare_t)
        r_ops = n / min(replay_t)
        divs = sum(len(p.divergences) for p in r.profiles[0].processes)
        print(f"(a) bare model: {ncalls:,} calls in {min(bare_t):.2f} s = {b_ops:,.0f} ops/s; whole replay "
              f"(decode, model, compare): {n:,} events in {min(replay_t):.2f} s = {r_ops:,.0f} ops/s; "
              f"ratio {r_ops / b_ops:.2f} (goal >= 0.70); {divs} divergences")

        # (b) three profiles, sequential vs parallel
        gc.collect()
        t0 = time.perf_counter()
        replay_trace(trace, specs, fix_pair=pair, jobs=1)
        seq_t = time.perf_counter() - t0
        gc.collect()
        t0 = time.perf_counter()
        replay_trace(trace, specs, fix_pair=pair, jobs=len(specs))
        par_t = time.perf_counter() - t0
        print(f"(b) {len(specs)} profiles: one after another {seq_t:.2f} s, in parallel ({os.cpu_count()} CPUs) "
              f"{par_t:.2f} s; ratio {par_t / seq_t:.2f} (goal <= 0.60)")

        # (c) peak memory of replay + report in a child process: the sum of the PSS of it and its
        # workers (shared pages counted once, split between their sharers), sampled every 50 ms
        import psutil

        html = tmp / "report.html"
        proc = psutil.Popen([sys.executable, "-m", "vmatrace", "report", str(path), "-o", str(html), "-f"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peak_pss = 0
        while proc.poll() is None:
            total = 0
            for q in [proc, *proc.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):  # exited meanwhile
                    total += q.memory_full_info().pss
            peak_pss = max(peak_pss, total)
            time.sleep(0.05)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.returncode not in (0, 3):
            print(f"(c) report failed ({proc.returncode}): {err[-500:]}")
            return 1
        print(f"(c) vmatrace report (replay of {len(specs)} profiles in parallel + HTML): peak memory "
              f"{peak_pss / 2**20:.0f} MiB (sum of PSS of the command and its workers; goal <= 1024 MiB); "
              f"HTML {html.stat().st_size / 1e6:.1f} MB")
    finally:
        if args.keep and args.trace is None:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
