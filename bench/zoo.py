"""The workload zoo: real programs recorded here and replayed; writes docs/fix-figures.md.

    sudo .venv/bin/python bench/zoo.py [--out docs/fix-figures.md] [--only NAME ...] [--keep DIR]

Each workload is recorded with `vmatrace record --stacks` (the programs run as the invoking user)
and replayed under the recording kernel's profile (judged), 6.15 and the recording kernel's
profile without the 6.16 anon-merge fix (879bca0a2c4f). python3 start-up is also replayed with the
documented what-if `merge_ignores_account=true`. The table gives, over all processes of each
workload, the VMAs of the real kernel and of each profile at each process's last snapshot, what
the fix saves at the end and at the peak, the events at which it merged, the fork-child boundaries
it cannot merge, and the judged profile's divergences by cause.

The programs come from Debian (python3, gcc, git, sqlite3, openjdk) and the machine's Node.js;
a workload whose program is missing is reported as such, not silently left out.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from replay.engine import default_profiles, replay_trace  # noqa: E402
from replay.results import CAUSES, ReplayResult  # noqa: E402
from vmatrace.base.trace import read_trace  # noqa: E402

THREADS_PY = """
import threading
def work(n):
    keep = []
    for i in range(20000):
        keep.append(bytearray(64 + (i % 4096)))
        if len(keep) > 500:
            keep = keep[250:]
ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
for t in ts: t.start()
for t in ts: t.join()
"""
C_SRC = """
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
struct node { struct node *next; char name[32]; int v; };
static int cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }
int main(int argc, char **argv) {
    struct node *head = NULL;
    for (int i = 0; i < argc * 1000; i++) {
        struct node *n = malloc(sizeof *n);
        snprintf(n->name, sizeof n->name, "n%d", i);
        n->v = i * 7 % 13; n->next = head; head = n;
    }
    int vals[64]; for (int i = 0; i < 64; i++) vals[i] = (i * 37) % 64;
    qsort(vals, 64, sizeof vals[0], cmp);
    printf("%d %s\\n", vals[3], head->name);
    return 0;
}
"""


def workloads(tmp: Path) -> list[tuple[str, list[str], str]]:
    src = tmp / "zoo.c"
    src.write_text(C_SRC)
    return [
        ("python3 start-up", ["/usr/bin/python3", "-c", "import json, decimal"], "/usr/bin/python3"),
        ("python3, 8 threads", ["/usr/bin/python3", "-c", THREADS_PY], "/usr/bin/python3"),
        ("gcc -O2 -c", ["/usr/bin/gcc", "-O2", "-c", str(src), "-o", str(tmp / "zoo.o")], "/usr/bin/gcc"),
        ("node", ["/usr/bin/node", "-e", "let a=[];for(let i=0;i<200000;i++)a.push({i,s:'x'+i});console.log(a.length)"],
         "/usr/bin/node"),
        ("java -version (JVM start-up)", ["/usr/bin/java", "-Xmx256m", "-version"], "/usr/bin/java"),
        ("sqlite3 (100k rows in memory)", ["/usr/bin/sqlite3", ":memory:",
                                           "create table t(x, y); with recursive c(x) as (select 1 union all "
                                           "select x+1 from c limit 100000) insert into t select x, hex(randomblob(16)) "
                                           "from c; create index i on t(y); select count(*) from t;"], "/usr/bin/sqlite3"),
        ("git log", ["/usr/bin/git", "-C", str(ROOT), "log", "--stat", "-n", "200"], "/usr/bin/git"),
    ]


def record(cmd: list[str], out: Path) -> tuple[bool, str]:
    p = subprocess.run([sys.executable, "-m", "vmatrace", "record", "-q", "-f", "--stacks", "-b", "16384",
                        "-o", str(out), "--", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=600)
    return p.returncode == 0, p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""


def totals(r: ReplayResult) -> dict[str, Any]:
    judged = r.profiles[0]
    p615 = r.profile("6.15")
    real_final = sum(x.final_vma_count or 0 for x in r.real)
    fix = [f for f in r.fix]
    causes = judged.cause_counts()
    return {
        "processes": len(r.real),
        "events": r.events,
        "lost": r.lost_events,
        "real": real_final,
        "judged": sum(p.final_vma_count or 0 for p in judged.processes),
        "6.15": sum(p.final_vma_count or 0 for p in p615.processes) if p615 else None,
        "without": sum(f.without_fix or 0 for f in fix),
        "with": sum(f.with_fix or 0 for f in fix),
        "saved_final": sum(f.saved_final or 0 for f in fix),
        "saved_peak": sum(f.saved_peak for f in fix),
        "merged_events": sum(f.events_merged_by_fix for f in fix),
        "fork_child": sum(f.fork_child_boundaries for f in fix),
        "divergences": sum(causes.values()),
        "causes": {k: v for k, v in causes.items() if v},
        "mismatches": sum(len(p.mismatches) for p in judged.processes),
        "judged_label": judged.label,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "fix-figures.md")
    ap.add_argument("--only", action="append", default=[], help="run only workloads whose name starts with this")
    ap.add_argument("--keep", type=Path, help="keep the traces in this directory")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vmatrace-zoo-"))
    keep = args.keep or tmp
    keep.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, dict[str, Any] | str]] = []
    whatif: str | None = None
    try:
        for name, cmd, exe in workloads(tmp):
            if args.only and not any(name.startswith(o) for o in args.only):
                continue
            if not Path(exe).exists():
                rows.append((name, f"not run: {exe} is not installed"))
                continue
            out = keep / (name.split()[0].replace("/", "_") + f"-{len(rows)}.vmat")
            t0 = time.perf_counter()
            ok, msg = record(cmd, out)
            if not ok:
                rows.append((name, f"recording failed: {msg}"))
                continue
            trace = read_trace(out)
            specs, pair, notes = default_profiles(trace.meta)
            r = replay_trace(trace, specs, fix_pair=pair, notes=notes)
            row = totals(r)
            rows.append((name, row))
            print(f"{name}: {row} ({time.perf_counter() - t0:.1f} s)", flush=True)
            if name == "python3 start-up":
                wspecs, wpair, _ = default_profiles(trace.meta, what_if=["merge_ignores_account=true"])
                wr = replay_trace(trace, wspecs, fix_pair=wpair)
                base = sum(p.final_vma_count or 0 for p in wr.profiles[0].processes)
                what = next(p for p in wr.profiles if "what-if" in p.label)
                alt = sum(p.final_vma_count or 0 for p in what.processes)
                whatif = (f"python3 start-up under `--what-if merge_ignores_account=true`: {alt} VMAs instead of "
                          f"{base} over its {len(wr.real)} processes ({base - alt} fewer): the RELRO pieces that "
                          "keep `ac` merge with the read-only segment before them.")
                print(whatif, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    write_doc(args.out, rows, whatif)
    print(f"wrote {args.out}")
    return 0


def write_doc(path: Path, rows: list[tuple[str, dict[str, Any] | str]], whatif: str | None) -> None:
    import platform

    lines = [
        "# What the 6.16 anon-merge fix saves on real programs",
        "",
        "Written by `sudo .venv/bin/python bench/zoo.py` (do not edit by hand) on "
        f"{time.strftime('%Y-%m-%d')}, kernel {platform.release()}. Each program was recorded with "
        "`vmatrace record --stacks` and replayed under the recording kernel's profile (judged: "
        "resynced at every snapshot), 6.15, and the recording kernel's profile without commit "
        "879bca0a2c4f (docs/replay.md says how).",
        "",
        "VMA counts are summed over every process of the workload, each at its last snapshot. "
        "*saved* is what the fix saves (without minus with); *merged events* are the calls after "
        "which the fix merged what the old rule kept apart; *fork-child* counts adjacent VMAs that "
        "stay apart only because one is a faulted fork child, which the fix does not help.",
        "",
        "| workload | processes | events | lost | real VMAs | recording profile | 6.15 | without fix | "
        "with fix | saved (final) | saved (peak) | merged events | fork-child | divergences (by cause) | "
        "result mismatches |",
        "|---|" + "---:|" * 14 + "---:|",
    ]
    for name, row in rows:
        if isinstance(row, str):
            lines.append(f"| {name} | {row} |" + " |" * 14)
            continue
        causes = ", ".join(f"{v} {k}" for k, v in row["causes"].items()) or "none"
        lines.append(
            f"| {name} | {row['processes']} | {row['events']:,} | {row['lost']} | {row['real']} | {row['judged']} | "
            f"{row['6.15']} | {row['without']} | {row['with']} | {row['saved_final']} | {row['saved_peak']} | "
            f"{row['merged_events']} | {row['fork_child']} | {row['divergences']} ({causes}) | {row['mismatches']} |")
    lines += ["", "Causes are those of docs/replay.md: " + "; ".join(CAUSES) + ".", ""]
    if whatif:
        lines += ["## What-if: the RELRO piece's VM_ACCOUNT", "", whatif, ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
