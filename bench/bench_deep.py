#!/usr/bin/env python3
"""Deep snapshot cost: a 10,000-VMA process, deep snapshot vs reading its /proc/PID/smaps.

    sudo .venv/bin/python bench/bench_deep.py [--vmas N] [--repeat R]

Side by side in one run, interleaved, medians of R rounds (root, bcc, kernel BTF):

* ``deep``: ``DeepCollector.snapshot(pid)`` (what ``snapshot --deep`` does): the BPF task_vma
  iterator's binary records decoded as whole numpy/polars columns, the few VMAs /proc names from
  elsewhere (files, special mappings, [heap], [stack]) asked for with PROCMAP_QUERY;
* ``deep, text names``: the same with the names from /proc/PID/maps text, read and parsed whole
  (the path a process whose VMAs are mostly file mappings takes, or a kernel without
  PROCMAP_QUERY or mm_lock_seq);
* ``iterator``: the iterator's records alone (read and decoded, no frame);
* ``smaps read``: reading /proc/PID/smaps (bytes only, no parsing);
* ``smaps snapshot``: ``read_snapshot(pid, smaps=True)`` (read and parse: what `snapshot` does);
* ``plain``: ``read_snapshot(pid, smaps=False)`` in two helper processes, one that never loaded a
  deep collector and one that did, asked in turn once per round (plain snapshots pay nothing for
  --deep).

Prints one line per measure, the ratio deep / smaps read (goal: <= 1) and the two plain ones.
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


# A helper process: one plain snapshot per line read, its time printed. With "deep" it loads a deep
# collector first; without, it never imports collectors.deep (nor bcc). Two of them, asked in turn,
# compare plain snapshots with and without the deep collector under the same conditions.
PLAIN_HELPER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from collectors.procmaps import read_snapshot
pid, loaded = int(sys.argv[2]), sys.argv[3] == "deep"
if loaded:
    from collectors.deep import DeepCollector
    keep = DeepCollector()
read_snapshot(pid, smaps=False)
print("ready", flush=True)
for _ in sys.stdin:
    t0 = time.perf_counter()
    read_snapshot(pid, smaps=False)
    dt = time.perf_counter() - t0
    assert loaded or ("collectors.deep" not in sys.modules and "bcc" not in sys.modules)
    print(dt, flush=True)
"""


class _Helper:
    def __init__(self, pid: int, mode: str) -> None:
        self.p = subprocess.Popen([sys.executable, "-c", PLAIN_HELPER, str(ROOT), str(pid), mode],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.p.stdout is not None and self.p.stdout.readline().strip() == "ready"

    def plain(self) -> float:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write("\n")
        self.p.stdin.flush()
        return float(self.p.stdout.readline())

    def close(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.close()
        self.p.wait(timeout=30)


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
        never, loaded = _Helper(pid, "plain"), _Helper(pid, "deep")
        import dataclasses

        from collectors.deep import DeepCollector, read_offsets
        from collectors.procmaps import read_snapshot

        deep = DeepCollector()
        snap = deep.snapshot(pid)
        n = snap.frame.height
        # the same program without mm_lock_seq: names from /proc's text
        off = read_offsets()
        deep_text = DeepCollector(offsets=dataclasses.replace(off, mm={k: v for k, v in off.mm.items()
                                                                       if k != "mm_lock_seq"}))
        assert deep_text.snapshot(pid).frame.equals(snap.frame)
        smaps_path = f"/proc/{pid}/smaps"

        def read_smaps() -> None:
            with open(smaps_path, "rb", buffering=0) as f:
                while f.read(1 << 20):
                    pass

        res: dict[str, list[float]] = {"deep": [], "deep, text names": [], "iterator": [], "smaps read": [],
                                       "smaps snapshot": [], "plain (deep loaded)": [], "plain (never loaded)": []}
        for rnd in range(a.repeat):  # interleaved: the same machine state for each measure
            res["deep"] += _time(lambda: deep.snapshot(pid), 1)
            res["deep, text names"] += _time(lambda: deep_text.snapshot(pid), 1)
            res["iterator"] += _time(lambda: deep.read_records(pid), 1)
            res["smaps read"] += _time(read_smaps, 1)
            res["smaps snapshot"] += _time(lambda: read_snapshot(pid, smaps=True), 1)
            for h in ((loaded, never) if rnd % 2 else (never, loaded)):  # each goes first in turn
                res["plain (deep loaded)" if h is loaded else "plain (never loaded)"].append(h.plain())
        deep.close()
        deep_text.close()
        never.close()
        loaded.close()
        med = {k: statistics.median(v) for k, v in res.items()}
        print(f"process with {n} VMAs, medians of {a.repeat} interleaved rounds, load {os.getloadavg()[0]:.1f}")
        for k, v in med.items():
            print(f"  {k:22s} {v * 1e3:8.2f} ms")
        print(f"deep / smaps read = {med['deep'] / med['smaps read']:.2f}  (goal <= 1); with text names "
              f"{med['deep, text names'] / med['smaps read']:.2f}")
        print(f"plain with a deep collector loaded / never loaded = "
              f"{med['plain (deep loaded)'] / med['plain (never loaded)']:.2f}")
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
