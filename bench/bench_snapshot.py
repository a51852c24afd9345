"""Snapshot cost for a process with N VMAs: PROCMAP_QUERY vs maps text vs smaps text, side by side.

Run: ``.venv/bin/python bench/bench_snapshot.py [--vmas 10000] [--repeat 20]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from collectors.procmaps import has_procmap_query, read_snapshot


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vmas", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    p = subprocess.Popen([sys.executable, "-m", "vmatrace.workloads.fragment", "--many", str(a.vmas)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        json.loads(p.stdout.readline())
        modes = [("maps text", {"smaps": False, "method": "text"}), ("smaps text", {"smaps": True})]
        if has_procmap_query():
            modes.insert(0, ("PROCMAP_QUERY", {"smaps": False, "method": "procmap_query"}))
        res = {}
        for name, kw in modes:
            times = []
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                s = read_snapshot(p.pid, **kw)  # type: ignore[arg-type]
                times.append(time.perf_counter() - t0)
            res[name] = (statistics.median(times), s.frame.height)
        base = res["maps text"][0]
        print(f"snapshot of a process with {res['maps text'][1]} VMAs, median of {a.repeat}:")
        for name, (t, n) in res.items():
            print(f"  {name:14s} {t * 1000:8.1f} ms  {t / n * 1e6:6.2f} us/VMA  {t / base:5.2f}x maps text")
    finally:
        p.kill()
        p.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
