#!/usr/bin/env python3
"""Overhead of `vmatrace record` next to strace and perf trace, measured side by side in one run.

Three C loops (built here): N x (mmap 4 KiB + munmap), N x mprotect toggles of one page
(RW -> R -> RW, i.e. 2 calls per "pair"), and N x (mmap of one page of a file + munmap), where the
recorder also names the mapped file (file_id, path, device, inode). Each program times its own loop (CLOCK_MONOTONIC around
the loop only), so tool start-up (bcc compiling for ~0.5 s, strace attaching) is not counted and
every figure is the slowdown the traced program itself sees.

Runs are interleaved (bare, vmatrace, bare, vmatrace, ...) so background load hits both; medians are
reported. strace and perf trace are ~20-50x slower, so they run a smaller N (--slow-pairs) and are
compared with a bare run of that same N.

Also reported for vmatrace: events recorded and lost (the fastest single-producer rate there is:
an unthrottled loop of nothing but these calls), the recorder's own CPU seconds (all its threads,
without the target; and without the one-off BPF compile), and the on-disk bytes per event of the
trace's events table (Parquet, zstd) and of the whole trace directory.

    sudo .venv/bin/python bench/bench_record.py            # 1M pairs, 3 runs each (~4 min)
    sudo .venv/bin/python bench/bench_record.py --quick    # 200k pairs, 1 run each
    sudo .venv/bin/python bench/bench_record.py --variants # also --no-lock-order / --no-faults
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LOAD_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
static double cpu(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}
int main(int argc, char **argv) {
    long n = atol(argv[2]);
    struct timespec a, b;
    char *q = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int fd = open(argv[0], O_RDONLY);  /* (the program's own file, for mmapfile) */
    double c0 = cpu();
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (!strcmp(argv[1], "mmap")) {
        for (long i = 0; i < n; i++) {
            void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            munmap(p, 4096);
        }
    } else if (!strcmp(argv[1], "mmapfile")) {
        for (long i = 0; i < n; i++) {
            void *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
            munmap(p, 4096);
        }
    } else {
        for (long i = 0; i < n; i++) {
            mprotect(q, 4096, PROT_READ);
            mprotect(q, 4096, PROT_READ | PROT_WRITE);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("LOOP %.6f %.6f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9, cpu() - c0);
    return 0;
}
"""

LOOPS = ("mmap", "mprotect", "mmapfile")
TITLES = {"mmap": "mmap+munmap", "mprotect": "mprotect x2", "mmapfile": "file mmap+munmap"}


def loop_times(out: str) -> dict[str, float]:
    """{"wall": s, "cpu": s} of the loop, as the program measured them."""
    for line in out.splitlines():
        if line.startswith("LOOP "):
            w = line.split()
            return {"wall": float(w[1]), "cpu": float(w[2])}
    raise RuntimeError(f"no LOOP line in output:\n{out[-2000:]}")


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def record_once(load: Path, mode: str, n: int, tmp: Path, extra: list[str]) -> dict[str, float]:
    trace = tmp / f"bench-{mode}.vmat"
    p = run([sys.executable, "-m", "vmatrace", "record", "-q", "--force", "-o", str(trace), *extra, "--",
             str(load), mode, str(n)], cwd=ROOT)
    meta = json.loads((trace / "meta.json").read_text())
    ev = meta["event_count"]
    res = {
        **loop_times(p.stdout),
        "events": ev,
        "lost": meta["lost_count"],
        "rec_cpu": meta.get("recorder_cpu_s", float("nan")),
        "rec_cpu_run": meta.get("recorder_cpu_s", float("nan")) - meta.get("bpf_load_cpu_s", 0.0),
        "bytes_events": dir_bytes(trace / "events") / max(ev, 1),
        "bytes_all": dir_bytes(trace) / max(ev, 1),
    }
    shutil.rmtree(trace)
    return res


class AttachedElsewhere:
    """`vmatrace record -p <an idle process>`: the tracepoints are attached, but the load is filtered out."""

    def __init__(self, tmp: Path, extra: list[str]) -> None:
        self.idle = subprocess.Popen(["sleep", "3600"])
        self.rec = subprocess.Popen([sys.executable, "-m", "vmatrace", "record", "--force", "-o",
                                     str(tmp / "idle.vmat"), *extra, "-p", str(self.idle.pid)],
                                    cwd=ROOT, stderr=subprocess.PIPE, text=True)
        assert self.rec.stderr is not None
        for line in self.rec.stderr:
            if line.startswith("Tracing"):
                break

    def close(self) -> None:
        self.rec.send_signal(2)
        self.rec.communicate(timeout=60)
        self.idle.kill()
        self.idle.wait()


def perf_trace_works() -> bool:
    perf = shutil.which("perf")
    if not perf:
        return False
    p = subprocess.run([perf, "trace", "-e", "mmap", "-o", "/dev/null", "--", "true"], capture_output=True)
    return p.returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--slow-pairs", type=int, default=200_000, help="N for strace and perf trace")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="--pairs 200000 --slow-pairs 20000 --repeat 1")
    ap.add_argument("--variants", action="store_true", help="also vmatrace --no-lock-order and --no-faults")
    ap.add_argument("--no-slow", action="store_true", help="skip strace and perf trace")
    ap.add_argument("-b", "--buffer-pages", type=int, help="ring size passed to vmatrace record")
    a = ap.parse_args()
    if a.quick:
        a.pairs, a.slow_pairs, a.repeat = 200_000, 20_000, 1
    if os.geteuid() != 0:
        print("bench_record: run as root (sudo): vmatrace record needs it", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="vmatrace-bench-"))
    load = tmp / "load"
    (tmp / "load.c").write_text(LOAD_C)
    run(["gcc", "-O2", "-o", str(load), str(tmp / "load.c")])
    extra = ["-b", str(a.buffer_pages)] if a.buffer_pages else []
    setups: list[tuple[str, list[str]]] = [("vmatrace record", extra)]
    if a.variants:
        setups += [("vmatrace --no-lock-order", [*extra, "--no-lock-order"]),
                   ("vmatrace --no-faults --no-lock-order", [*extra, "--no-faults", "--no-lock-order"])]
    ATT = "attached, load filtered out (no events)"

    res: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(a.repeat):
        for mode in LOOPS:
            res.setdefault(("bare", mode), []).append(loop_times(run([str(load), mode, str(a.pairs)]).stdout))
            for name, ex in setups:
                res.setdefault((name, mode), []).append(record_once(load, mode, a.pairs, tmp, ex))
            print(f"  run {r + 1}/{a.repeat} {mode}: bare {res[('bare', mode)][-1]['wall']:.3f} s, vmatrace "
                  f"{res[('vmatrace record', mode)][-1]['wall']:.3f} s", file=sys.stderr, flush=True)
        att = AttachedElsewhere(tmp, extra)
        try:
            for mode in LOOPS:
                res.setdefault((ATT, mode), []).append(loop_times(run([str(load), mode, str(a.pairs)]).stdout))
        finally:
            att.close()

    slow: dict[tuple[str, str], dict[str, float]] = {}
    tools: list[tuple[str, list[str]]] = []
    if not a.no_slow:
        if shutil.which("strace"):
            tools.append(("strace -f -e trace=memory", ["strace", "-f", "-e", "trace=memory", "-o", "/dev/null"]))
        if perf_trace_works():
            tools.append(("perf trace -e mmap,munmap,mprotect",
                          ["perf", "trace", "-e", "mmap,munmap,mprotect", "-o", "/dev/null", "--"]))
        for mode in LOOPS:
            for _ in range(3 if tools else 0):
                x = loop_times(run([str(load), mode, str(a.slow_pairs)]).stdout)
                slow.setdefault(("bare", mode), {"wall": 0.0, "cpu": 0.0, "n": 0})
                for k in ("wall", "cpu"):
                    slow[("bare", mode)][k] += x[k] / 3
            for name, pre in tools:
                slow[(name, mode)] = loop_times(run([*pre, str(load), mode, str(a.slow_pairs)]).stdout)
                print(f"  {name} {mode}: {slow[(name, mode)]['wall']:.3f} s", file=sys.stderr, flush=True)

    def med(xs: list[dict[str, float]], k: str) -> float:
        return statistics.median(x[k] for x in xs)

    bm = {(m, k): med(res[("bare", m)], k) for m in LOOPS for k in ("wall", "cpu")}
    print(f"\nvmatrace record overhead: kernel {os.uname().release}, {os.cpu_count()} CPUs, {a.pairs:,} pairs per "
          f"loop, median of {a.repeat} interleaved runs.")
    print("Loop time as the traced program measured it (wall; and its own CPU time, which background load on the")
    print("machine disturbs much less). x = ratio to bare at the same N.")
    print(f"{'setup':46} " + "   ".join(f"{TITLES[m] + ' wall':>21} {'x':>6} {'cpu x':>6}" for m in LOOPS))

    def row(name: str, w: dict[str, float], base: dict[str, float], scale: float = 1.0) -> None:
        cells = []
        for m in LOOPS:
            cells.append(f"{w[m + 'wall'] * scale:20.3f}s {w[m + 'wall'] / base[m + 'wall']:6.2f} "
                         f"{w[m + 'cpu'] / base[m + 'cpu']:6.2f}")
        print(f"{name:46} " + "   ".join(cells))

    for name in ["bare", ATT, *(n for n, _ in setups)]:
        w = {m + k: med(res[(name, m)], k) for m in LOOPS for k in ("wall", "cpu")}
        row(name, w, {m + k: bm[(m, k)] for m in LOOPS for k in ("wall", "cpu")})
    if tools:
        sb = {m + k: slow[("bare", m)][k] for m in LOOPS for k in ("wall", "cpu")}
        for name, _ in tools:
            w = {m + k: slow[(name, m)][k] for m in LOOPS for k in ("wall", "cpu")}
            row(f"{name} ({a.slow_pairs // 1000}k, time x{a.pairs / a.slow_pairs:g})", w, sb, a.pairs / a.slow_pairs)
        print(f"(strace/perf ratios are against bare at {a.slow_pairs:,} pairs: "
              + ", ".join(f"{sb[m + 'wall']:.3f} s" for m in LOOPS) + ")")

    print(f"\n{'vmatrace setup / loop':46} {'events':>9} {'lost':>5} {'events/s':>10} {'rec CPU s':>9} "
          f"{'w/o BPF load':>12} {'B/ev events':>11} {'B/ev trace':>10}")
    for name, _ in setups:
        for m in LOOPS:
            xs = res[(name, m)]
            ev, lost = med(xs, "events"), max(x["lost"] for x in xs)
            print(f"{name + ' / ' + m:46} {ev:9.0f} {lost:5.0f} {ev / med(xs, 'wall'):10,.0f} {med(xs, 'rec_cpu'):9.2f} "
                  f"{med(xs, 'rec_cpu_run'):12.2f} {med(xs, 'bytes_events'):11.2f} {med(xs, 'bytes_all'):10.2f}")
    gx = {k: max(med(res[("vmatrace record", m)], k) / bm[(m, k)] for m in LOOPS) for k in ("wall", "cpu")}
    glost = max(x["lost"] for m in LOOPS for x in res[("vmatrace record", m)])
    gb = max(med(res[("vmatrace record", m)], "bytes_events") for m in LOOPS)
    print(f"\ngoals: <= 1.40x bare (worse loop): wall {gx['wall']:.2f}x, cpu {gx['cpu']:.2f}x "
          f"{'OK' if gx['wall'] <= 1.4 else 'MISSED'}; 0 lost: {glost:.0f} {'OK' if glost == 0 else 'MISSED'}; "
          f"<= 16 B/event on disk: {gb:.2f} {'OK' if gb <= 16 else 'MISSED'}")
    la = os.getloadavg()
    print(f"(load average at the end: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}; other work on the machine inflates wall ratios)")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
