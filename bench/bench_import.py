"""`import-strace` scaling: a 200,000-line log against a 100,000-line one, side by side, and peak memory.

Run: ``.venv/bin/python bench/bench_import.py [--lines 100000] [--repeat 3]``

The logs are synthetic but shaped like ``strace -f -tt -X raw -y -e trace=%memory,%process``
output: a PIE executable (/bin/true) exec'd without its RELRO ``mprotect`` in the
log (so the load-bias search has to look at every ``mprotect(PROT_READ)`` candidate against the
image's mmaps), threads whose calls are cut by ``<unfinished ...>`` / ``<... resumed>``, and
children forked, exec'd and exited all along. Each import runs in its own child process, which
reports its wall time and its peak resident memory (``ru_maxrss``).

Goal (issue 12): time(2N lines) <= 2.2 x time(N lines); peak memory under 300 MB at 2N.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXE = "/bin/true"  # a PIE executable (Debian's coreutils)


def make_log(path: Path, lines: int, seed: int = 1) -> None:
    """Write a synthetic strace -f log of about `lines` lines."""
    rnd = random.Random(seed)
    root = 4000
    out: list[str] = []
    t = [36_000.0]

    def ts() -> str:
        t[0] += 0.000013
        s = t[0]
        return f"{int(s // 3600):02d}:{int(s // 60 % 60):02d}:{s % 60:09.6f}"

    def add(pid: int, text: str) -> None:
        out.append(f"{pid} {ts()} {text}")

    add(root, f'execve("{EXE}", ["python3", "-c", "pass"], 0x7ffd3a1c9e18 /* 20 vars */) = 0')
    add(root, "brk(NULL) = 0x55d0c8a4e000")
    threads = [root + 1 + i for i in range(4)]
    for tid in threads:
        add(root, "clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM|"
                  f"CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID, child_tid=0x7f0, parent_tid=0x7f0, "
                  f"exit_signal=0, stack=0x7f0, stack_size=0x7fff00, tls=0x7f0}} => {{parent_tid=[{tid}]}}, 88) = {tid}")
    next_pid = root + 100
    addr = 0x7F00_0000_0000
    while len(out) < lines:
        r = rnd.random()
        tid = rnd.choice([*threads, root])
        if r < 0.35:
            addr += 0x21000
            add(tid, f"mmap(NULL, 135168, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = {addr:#x}")
        elif r < 0.55:
            # a PROT_READ mprotect that is nobody's RELRO: a candidate the bias search must reject
            add(tid, f"mprotect({addr + 0x1000:#x}, 4096, PROT_READ) = 0")
        elif r < 0.65:
            add(tid, f"munmap({addr:#x}, 135168) = 0")
        elif r < 0.85:
            other = rnd.choice(threads)
            add(other, "mmap(NULL, 65536, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0 <unfinished ...>")
            addr += 0x10000
            add(tid if tid != other else root, "madvise(0x7f0000000000, 4096, MADV_DONTNEED) = 0")
            add(other, f"<... mmap resumed>) = {addr:#x}")
        else:
            child = next_pid
            next_pid += 1
            add(root, "clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, "
                      f"child_tidptr=0x7f0) = {child}")
            add(child, 'execve("/bin/true", ["true"], 0x7ffd3a1c9e18 /* 20 vars */) = 0')
            add(child, "brk(NULL) = 0x5600a0000000")
            add(child, "mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f1000000000")
            add(child, "exit_group(0) = ?")
            add(child, "+++ exited with 0 +++")
    add(root, "exit_group(0) = ?")
    add(root, "+++ exited with 0 +++")
    path.write_text("\n".join(out[: max(lines, 1)]) + "\n")


_CHILD = """
import json, resource, sys, time
from pathlib import Path
from collectors.strace_import import import_strace
t0 = time.perf_counter()
meta = import_strace([Path(sys.argv[1])], Path(sys.argv[2]))
dt = time.perf_counter() - t0
print(json.dumps({"s": dt, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "events": meta["event_count"]}))
"""


def run_import(log: Path, work: Path) -> dict[str, float]:
    out = work / "t.vmat"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", _CHILD, str(log), str(out)], capture_output=True, text=True,
                       env=env, cwd=ROOT, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=100_000, help="N: the small log's lines (the large one has 2N)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each size, alternating (median taken)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as d:
        work = Path(d)
        small, large = work / "small.strace", work / "large.strace"
        make_log(small, a.lines)
        make_log(large, 2 * a.lines)
        res: dict[str, list[dict[str, float]]] = {"small": [], "large": []}
        for _ in range(a.repeat):
            res["small"].append(run_import(small, work))
            res["large"].append(run_import(large, work))
    ts = statistics.median(r["s"] for r in res["small"])
    tl = statistics.median(r["s"] for r in res["large"])
    mem = max(r["maxrss_mb"] for r in res["large"])
    print(f"import-strace, median of {a.repeat} (synthetic -f -tt -X raw logs, PIE exec without RELRO mprotect):")
    print(f"  {a.lines:>9,} lines: {ts:7.2f} s  ({int(res['small'][0]['events']):,} events)")
    print(f"  {2 * a.lines:>9,} lines: {tl:7.2f} s  ({int(res['large'][0]['events']):,} events), "
          f"peak memory {mem:.0f} MB")
    ratio = tl / ts
    print(f"ratio 2N/N: {ratio:.2f} (goal <= 2.2); peak memory at 2N: {mem:.0f} MB (goal < 300 MB)")
    return 0 if ratio <= 2.2 and mem < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
