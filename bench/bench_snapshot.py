"""Snapshot speed, side by side in one run, against the tools a user would otherwise run.

    .venv/bin/python bench/bench_snapshot.py [--vmas 20000] [--all-vmas 30000] [--repeat 7]

Two processes of the bundled workload (``vmatrace.workloads.fragment --many N``) hold --vmas and
--all-vmas VMAs. Each measurement is the median of --repeat runs, the runs of the things compared
interleaved (so that a busy machine slows both sides alike); commands run as fresh processes with
their output to /dev/null, ``vmatrace`` as the venv's console script with the project's byte-code
written first (as ``scripts/setup.sh`` does); ``read_snapshot()`` runs in this process. Goals
(issues 11 and 12):

* ``vmatrace snapshot PID --json``          <= 0.5x ``pmap -X PID``        (--vmas process)
* ``read_snapshot(PID)`` (smaps)            <= 1.5x ``cat /proc/PID/smaps`` (--vmas process)
* ``vmatrace --help``                       <= 2x   ``python3 -c "import polars"``
* ``vmatrace snapshot PID --all``           <= 1x   ``pmap -X PID``        (--all-vmas process)

The goals are on wall time. Where the machine has two CPUs or more, smaps is read through a helper
process whose reading overlaps the parse (``collectors.procmaps``), so the table also gives CPU time
(user + system, children included): what the snapshot costs in all, whatever the overlap saves.

Then, for the record, the readers on their own: PROCMAP_QUERY, maps text, smaps text (read here,
and through the helper), and the smaps parse alone (of a text read once).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collectors.procmaps import has_procmap_query, read_snapshot
from vmatrace.base.snapshot import parse_smaps_columns

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent


def _spawn(n: int) -> subprocess.Popen[str]:
    p = subprocess.Popen([PY, "-m", "vmatrace.workloads.fragment", "--many", str(n)], cwd=ROOT,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    json.loads(p.stdout.readline())
    return p


def _cmd(*argv: str) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                       check=False)
    return run


CPU: dict[str, float] = {}  # median CPU time (user + system, this process and its children)


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _medians(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median wall time of each; the median CPU time goes to CPU."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            c0 = _cpu()
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(_cpu() - c0)
    CPU.update({k: statistics.median(v) for k, v in cpu.items()})
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vmas", type=int, default=20000)
    ap.add_argument("--all-vmas", type=int, default=30000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    pmap = shutil.which("pmap")
    if pmap is None:
        print("pmap (Debian's procps) is needed for the comparison", file=sys.stderr)
        return 1
    # the command as a user runs it: the venv's console script, with the project's byte-code
    # written as scripts/setup.sh writes it (Python would otherwise compile every module of the
    # project on each start where PYTHONDONTWRITEBYTECODE is set)
    script = Path(PY).with_name("vmatrace")
    vm = [str(script)] if script.exists() else [PY, "-m", "vmatrace"]
    subprocess.run([PY, "-m", "compileall", "-q", "vmatrace", "collectors", "replay"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    rows: list[tuple[str, float, str, float, float]] = []  # what, ms, against, ratio, goal
    p = _spawn(a.vmas)
    q = _spawn(a.all_vmas)
    try:
        pid, big = str(p.pid), str(q.pid)
        n = read_snapshot(p.pid, smaps=False).frame.height
        nb = read_snapshot(q.pid, smaps=False).frame.height
        m = _medians({
            "pmap": _cmd(pmap, "-X", pid),
            "json": _cmd(*vm, "snapshot", pid, "--json"),
            "cat": _cmd("cat", f"/proc/{pid}/smaps"),
            "read": lambda: read_snapshot(p.pid),
            "import polars": _cmd(PY, "-c", "import polars"),
            "help": _cmd(*vm, "--help"),
            "pmap big": _cmd(pmap, "-X", big),
            "all": _cmd(*vm, "snapshot", big, "--all"),
        }, a.repeat)
        rows.append((f"vmatrace snapshot PID --json ({n} VMAs)", m["json"], "pmap -X PID",
                     m["json"] / m["pmap"], 0.5))
        rows.append((f"read_snapshot(PID) with smaps ({n} VMAs)", m["read"],
                     "cat /proc/PID/smaps", m["read"] / m["cat"], 1.5))
        rows.append(("vmatrace --help", m["help"], 'python3 -c "import polars"',
                     m["help"] / m["import polars"], 2.0))
        rows.append((f"vmatrace snapshot PID --all ({nb} VMAs)", m["all"], "pmap -X PID",
                     m["all"] / m["pmap big"], 1.0))
        keys = [("json", "pmap"), ("read", "cat"), ("help", "import polars"), ("all", "pmap big")]
        print(f"median of {a.repeat} interleaved runs each (load {os.getloadavg()[0]:.1f}, "
              f"{os.cpu_count()} CPUs); the goal is on wall time; CPU time (user + system, "
              "children included) for the record:")
        print(f"  {'what':44s} {'ms':>8}  {'against':28s} {'ms':>8} {'ratio':>6}  goal"
              f"{'':14s}{'CPU ratio':>9}")
        for (what, t, vs, ratio, goal), (mine, theirs) in zip(rows, keys, strict=True):
            base = m[theirs]
            cpu = CPU[mine] / CPU[theirs] if CPU[theirs] else float("nan")
            print(f"  {what:44s} {t * 1000:8.1f}  {vs:28s} {base * 1000:8.1f} {ratio:5.2f}x  "
                  f"<= {goal}x {'met    ' if ratio <= goal else 'NOT met'} {cpu:8.2f}x")
        modes: list[tuple[str, dict[str, object]]] = [
            ("maps text", {"smaps": False, "method": "text"}),
            ("smaps here", {"smaps": True, "helper": False}), ("smaps helper", {"smaps": True})]
        if has_procmap_query():
            modes.insert(0, ("PROCMAP_QUERY", {"smaps": False, "method": "procmap_query"}))
        fns: dict[str, Callable[[], object]] = {
            name: (lambda kw=kw: read_snapshot(p.pid, **kw)) for name, kw in modes}  # type: ignore[misc]
        with open(f"/proc/{p.pid}/smaps") as f:
            text = f.read()
        fns["smaps parse"] = lambda: parse_smaps_columns(text)  # the parse alone, of the text read once
        r = _medians(fns, a.repeat)
        print(f"the readers alone, {n} VMAs:")
        for name, t in r.items():
            print(f"  {name:14s} {t * 1000:8.1f} ms  {t / n * 1e6:6.2f} us/VMA")
    finally:
        for x in (p, q):
            x.kill()
            x.wait()
    return 0 if all(ratio <= goal for _, _, _, ratio, goal in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
