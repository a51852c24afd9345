"""How often does `vmatrace record` of a multi-threaded python3 program miss its exit snapshot?

    sudo .venv/bin/python bench/exit_snapshots.py [ROUNDS] [--kinds join,daemon,...]

Records ROUNDS (default 200) short python3 programs, in turn of kind and thread count (1, 2, 4, 8),
and counts the traces whose traced process does not have exactly one exit snapshot, and how many
of those say so (meta.exit_snapshot_missing). The kinds end their threads in the ways that make a
thread skip its exit stop (docs/recording.md, "Which exit stop is the last"):

    join       threads map and unmap, are joined, the main thread returns
    daemon     daemon threads still mapping when the main thread returns (exit_group kills them)
    osexit     a thread calls os._exit while the others map
    mainfirst  the main thread leaves first (pthread_exit): the threads map on, the last ends it all
    nojoin     short threads not joined (Python joins them at shutdown, as the main thread exits)

A reliability check, not a timed one: the figure is a count, printed every 20 rounds and at the end.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEAD = "import threading, mmap, os, time, ctypes\n"


def _mapper(n: int) -> str:
    return ("def w(k):\n"
            f"    for i in range({n}):\n"
            "        m = mmap.mmap(-1, 4096 * (1 + (i + k) % 7)); m[0] = 1; m.close()\n")


def _start(n: int, daemon: bool = False, extra: str = "") -> str:
    return (f"ts = [threading.Thread(target=w, args=(k,), daemon={daemon}) for k in range({n})]{extra}\n"
            "[t.start() for t in ts]\n")


PROGRAMS = {
    "join": lambda n: HEAD + _mapper(200) + _start(n) + "[t.join() for t in ts]\n",
    "daemon": lambda n: HEAD + "def w(k):\n    while True:\n        m = mmap.mmap(-1, 4096 * (1 + k % 7)); m[0] = 1; m.close()\n"
              + _start(n, daemon=True) + "time.sleep(0.05)\n",
    "osexit": lambda n: HEAD + _mapper(100000) + "def x():\n    time.sleep(0.05); os._exit(3)\n"
              + _start(n, extra=" + [threading.Thread(target=x)]") + "[t.join() for t in ts]\n",
    "mainfirst": lambda n: HEAD + _mapper(300) + _start(n) + "ctypes.CDLL(None).pthread_exit(None)\n",
    "nojoin": lambda n: HEAD + _mapper(20) + _start(n),
}


def main() -> int:
    import polars as pl

    from vmatrace.base.trace import read_trace

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rounds", type=int, nargs="?", default=200)
    ap.add_argument("--kinds", default=",".join(PROGRAMS), help="comma-separated kinds (default: all)")
    a = ap.parse_args()
    kinds = a.kinds.split(",")
    if unknown := [k for k in kinds if k not in PROGRAMS]:
        print(f"unknown kinds: {', '.join(unknown)} (known: {', '.join(PROGRAMS)})", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="exit-snapshots-"))
    bad: collections.Counter[str] = collections.Counter()
    flagged: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    try:
        for r in range(a.rounds):
            kind, n = kinds[r % len(kinds)], (1, 2, 4, 8)[(r // len(kinds)) % 4]
            out = tmp / f"t{r}"
            p = subprocess.run([sys.executable, "-m", "vmatrace", "record", "-q", "-o", str(out), "--",
                                "python3", "-c", PROGRAMS[kind](n)], cwd=ROOT, capture_output=True, text=True,
                               timeout=300)
            total[kind] += 1
            if p.returncode != 0:
                print(f"round {r} {kind} n={n}: record failed ({p.returncode}): {p.stderr.strip()[-300:]}")
                bad[kind] += 1
                continue
            t = read_trace(out)
            pid = t.meta["pids"][0]
            exits = t.snapshot_index.filter((pl.col("pid") == pid) & (pl.col("reason") == "exit")).height
            if exits != 1:
                bad[kind] += 1
                said = pid in (t.meta.get("exit_snapshot_missing") or [])
                flagged[kind] += said
                how = t.procs.filter(pl.col("pid") == pid).get_column("how_ended").to_list()
                print(f"round {r} {kind} n={n}: {exits} exit snapshots of PID {pid} (ended: {how}; "
                      f"said in the trace: {said})", flush=True)
            shutil.rmtree(out, ignore_errors=True)
            if (r + 1) % 20 == 0:
                print(f"after {r + 1} rounds: {sum(bad.values())} without exactly one exit snapshot", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"without exactly one exit snapshot: {sum(bad.values())} of {sum(total.values())} "
          f"(by kind: {dict(bad)} of {dict(total)}); of those said in the trace: {sum(flagged.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
