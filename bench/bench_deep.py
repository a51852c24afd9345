#!/usr/bin/env python3
"""Deep snapshot cost: a 10,000-VMA process, deep snapshot vs reading its /proc/PID/smaps.

    sudo .venv/bin/python bench/bench_deep.py [--vmas N] [--repeat R]

Side by side in one run, interleaved, medians of R rounds (root, bcc, kernel BTF):

* ``deep``: ``DeepCollector.snapshot(pid)``: the BPF task_vma iterator (binary records) plus the
  names from /proc/PID/maps (PROCMAP_QUERY where available), joined and checked;
* ``iterator``: the iterator's records alone;
* ``smaps read``: reading /proc/PID/smaps (bytes only, no parsing);
* ``smaps snapshot``: ``read_snapshot(pid, smaps=True)`` (read and parse: what `snapshot` does);
* ``plain``: ``read_snapshot(pid, smaps=False)`` in a process where no deep collector was ever
  loaded, and again after one was loaded (plain snapshots pay nothing for --deep).

Prints one line per measure and the ratio deep / smaps read (goal: <= 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# A process with N more VMAs: one anonymous region of N pages, every page written (so smaps has
# pages to count), every other page made read-only.
TARGET = r"""
import mmap, ctypes, sys
n = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
m = mmap.mmap(-1, n * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(n):
    m[i * 4096] = 1
base = ctypes.addressof(ctypes.c_char.from_buffer(m))
for i in range(0, n, 2):
    assert libc.mprotect(base + i * 4096, 4096, 1) == 0
print("ready", flush=True)
sys.stdin.read()
"""


def _time(fn: object, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - t0)
    return out


def _plain_fresh(pid: int, repeat: int) -> float:
    """Median plain snapshot time in a fresh interpreter that never loads collectors.deep."""
    code = (
        "import sys, time, statistics\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from collectors.procmaps import read_snapshot\n"
        f"ts = []\nfor _ in range({repeat}):\n"
        f"    t0 = time.perf_counter(); read_snapshot({pid}, smaps=False); ts.append(time.perf_counter() - t0)\n"
        "assert 'collectors.deep' not in sys.modules and 'bcc' not in sys.modules\n"
        "print(statistics.median(ts))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(p.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vmas", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=15)
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_deep: needs root (BPF)", file=sys.stderr)
        return 1
    proc = subprocess.Popen([sys.executable, "-c", TARGET, str(a.vmas)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        pid = proc.pid
        plain_before = _plain_fresh(pid, a.repeat)
        from collectors.deep import DeepCollector
        from collectors.procmaps import read_snapshot

        deep = DeepCollector()
        n = deep.snapshot(pid).frame.height
        smaps_path = f"/proc/{pid}/smaps"

        def read_smaps() -> None:
            with open(smaps_path, "rb", buffering=0) as f:
                while f.read(1 << 20):
                    pass

        res: dict[str, list[float]] = {"deep": [], "iterator": [], "smaps read": [], "smaps snapshot": [],
                                       "plain (deep loaded)": []}
        for _ in range(a.repeat):  # interleaved: the same machine state for each measure
            res["deep"] += _time(lambda: deep.snapshot(pid), 1)
            res["iterator"] += _time(lambda: deep.read_records(pid), 1)
            res["smaps read"] += _time(read_smaps, 1)
            res["smaps snapshot"] += _time(lambda: read_snapshot(pid, smaps=True), 1)
            res["plain (deep loaded)"] += _time(lambda: read_snapshot(pid, smaps=False), 1)
        deep.close()
        med = {k: statistics.median(v) for k, v in res.items()}
        med["plain (never loaded)"] = plain_before
        print(f"process with {n} VMAs, medians of {a.repeat} interleaved rounds")
        for k, v in med.items():
            print(f"  {k:22s} {v * 1e3:8.2f} ms")
        print(f"deep / smaps read = {med['deep'] / med['smaps read']:.2f}  (goal <= 1)")
        print(f"plain with a deep collector loaded / never loaded = "
              f"{med['plain (deep loaded)'] / med['plain (never loaded)']:.2f}")
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
