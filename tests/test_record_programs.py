"""Live: real programs recorded end to end (python3, a gcc compile, a multi-threaded program).

Each trace must validate, lose nothing, and hold a start and a final (exit) snapshot for every process
of the tree, with the final snapshot taken before the address space was torn down.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import need, need_cc
from tests.record_common import record
from vmatrace.base.trace import read_trace

pytestmark = [pytest.mark.live, pytest.mark.bcc]

THREADS_PY = """
import threading, subprocess
def work(n):
    bufs = [bytearray(300_000 + 4096 * i) for i in range(20)]   # large: malloc uses mmap
    del bufs[::2]
threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
subprocess.run(["true"])
"""


def _check_tree(out: Path, *, min_procs: int) -> object:
    t = read_trace(out)
    assert t.warnings == [], t.warnings
    assert t.meta["complete"] and t.meta["lost_count"] == 0
    procs = t.procs
    assert procs.height >= min_procs
    idx = t.snapshot_index
    pids_with_events = set(t.events.get_column("pid").unique().to_list())
    for pid in procs.get_column("pid").to_list():
        reasons = idx.filter(pl.col("pid") == pid).get_column("reason").to_list()
        assert reasons.count("exit") == 1, (pid, reasons)
        assert reasons[0] == "start", (pid, reasons)
        final = t.snapshot(int(idx.filter((pl.col("pid") == pid) & (pl.col("reason") == "exit"))
                               .get_column("snapshot_id")[0]))
        assert final.filter(pl.col("path") == "[stack]").height == 1  # a full address space
    # every process that produced an event is accounted for in procs
    assert pids_with_events <= set(procs.get_column("pid").to_list())
    ended = procs.get_column("how_ended").to_list()
    assert all(h == "exit" for h in ended), ended
    return t


def test_python3(tmp_path: Path) -> None:
    py = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else shutil.which("python3")
    need(py is not None, "needs python3")
    out = tmp_path / "t.vmat"
    record(out, "--", str(py), "-c", THREADS_PY)
    t = _check_tree(out, min_procs=2)  # python3 and `true`
    ev = t.events  # type: ignore[attr-defined]
    main = t.procs.sort("start_ns").get_column("pid")[0]  # type: ignore[attr-defined]
    threads = ev.filter((pl.col("kind") == "fork") & (pl.col("pid") == main) & (pl.col("a2") == 1))
    assert threads.height >= 4
    # the big bytearrays were mmapped from several threads
    tids = ev.filter((pl.col("pid") == main) & (pl.col("kind") == "mmap")).get_column("tid").unique()
    assert tids.len() >= 3
    execs = ev.filter(pl.col("kind") == "exec").get_column("text").to_list()
    assert execs[-1].endswith("/true") and any("python3" in x for x in execs)


def test_gcc_compile(tmp_path: Path) -> None:
    cc = need_cc()
    src = tmp_path / "x.c"
    src.write_text("#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n")
    out = tmp_path / "t.vmat"
    record(out, "--", cc, "-O2", "-o", str(tmp_path / "x"), str(src))
    assert (tmp_path / "x").exists()
    t = _check_tree(out, min_procs=3)  # gcc, cc1, as, collect2, ld
    comms = set(t.procs.get_column("comm").to_list())  # type: ignore[attr-defined]
    assert {"cc1", "as"} <= comms, comms


def test_multithreaded_c(tmp_path: Path, cbuild: object) -> None:
    src = """
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
static void *work(void *a) {
    for (int i = 0; i < 200; i++) {
        char *p = mmap(0, 65536, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
        p[0] = 1; mprotect(p, 4096, PROT_READ); munmap(p, 65536);
    }
    return a;
}
int main(void) {
    pthread_t t[8];
    for (int i = 0; i < 8; i++) pthread_create(&t[i], 0, work, 0);
    for (int i = 0; i < 8; i++) pthread_join(t[i], 0);
    return 0;
}
"""
    exe = cbuild(src, "mt", "-pthread")  # type: ignore[operator]
    out = tmp_path / "t.vmat"
    record(out, "--", str(exe))
    t = _check_tree(out, min_procs=1)
    ev = t.events  # type: ignore[attr-defined]
    for kind in ("mmap", "mprotect", "munmap"):
        n = ev.filter((pl.col("kind") == kind) & (pl.col("a1") == (65536 if kind != "mprotect" else 4096))
                      & (pl.col("ret") >= 0)).height
        assert n >= 1600, (kind, n)
    # per thread, each region is mapped, then protected, then unmapped, in that order
    for tid, g in ev.filter(pl.col("kind").is_in(["mmap", "mprotect", "munmap"]) & (pl.col("a1") != 8392704)
                            ).group_by("tid"):
        kinds = g.sort("seq").get_column("kind").to_list()
        if len(kinds) == 600:
            assert kinds == ["mmap", "mprotect", "munmap"] * 200, tid
