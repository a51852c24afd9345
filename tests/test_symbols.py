"""symbolize(): ips a real program reports about itself resolve to the right functions."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import polars as pl
import pytest

from collectors.procmaps import read_snapshot
from collectors.symbols import symbolize
from tests.conftest import reap
from vmatrace.base.trace import STACK_SCHEMA

# level1 -> level2 -> level3, which calls mmap and backtrace(3); each level records its return
# address. The program prints the addresses, an anonymous "JIT" region, then stops itself.
PROG = r"""
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#define NI __attribute__((noinline))
static void *ra3, *ra2, *bt[16], *jit;
static int nbt;
NI void level3(void) {
    ra3 = __builtin_return_address(0);
    jit = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    nbt = backtrace(bt, 16);
    __asm__ volatile("" ::: "memory");
}
NI void level2(void) { ra2 = __builtin_return_address(0); level3(); __asm__ volatile("" ::: "memory"); }
NI void level1(void) { level2(); __asm__ volatile("" ::: "memory"); }
int main(void) {
    level1();
    memset(jit, 0xc3, 4096);
    printf("level1 %p\nlevel2 %p\nlevel3 %p\nmmap %p\nmain %p\nra3 %p\nra2 %p\njit %p\n",
           (void *)level1, (void *)level2, (void *)level3, (void *)mmap, (void *)main, ra3, ra2, jit);
    for (int i = 0; i < nbt; i++) printf("bt %p\n", bt[i]);
    printf("end 0\n");
    fflush(stdout);
    raise(SIGSTOP);
    return 0;
}
"""


def run_stopped(binary: Path) -> tuple[int, dict[str, list[int]], subprocess.Popen[str]]:
    p = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    vals: dict[str, list[int]] = {}
    for line in p.stdout:
        k, v = line.split()
        if k == "end":
            break
        vals.setdefault(k, []).append(int(v, 16))
    # wait for the SIGSTOP so the maps are final
    for _ in range(200):
        if Path(f"/proc/{p.pid}/stat").read_text().split(") ")[1].startswith("T"):
            break
        os.sched_yield()
    return p.pid, vals, p


@pytest.mark.parametrize("flags", [("-pie", "-fPIE"), ("-no-pie",)], ids=["pie", "no-pie"])
def test_symbolize_own_functions(cbuild, flags: tuple[str, ...], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    binary = cbuild(PROG, "prog", *flags)
    pid, v, proc = run_stopped(binary)
    try:
        snap = read_snapshot(pid)
        perf_map = Path(f"/tmp/perf-{pid}.map")
        perf_map.write_text(f"{v['jit'][0]:x} 40 jitted_fn\n")
        try:
            stacks = {
                1: [v["level1"][0]], 2: [v["level2"][0]], 3: [v["level3"][0]], 4: [v["mmap"][0]],
                5: [v["level3"][0] + 1, v["ra3"][0], v["ra2"][0]],  # a call chain of return addresses
                6: v["bt"],
                7: [v["jit"][0] + 0x10, v["jit"][0] + 0x800],
                8: [0x10],
            }
            df = symbolize(pid, snap.frame, stacks)
        finally:
            perf_map.unlink()
    finally:
        reap(proc)
    assert dict(df.schema) == STACK_SCHEMA
    sym = {(r["stack_id"], r["depth"]): r for r in df.iter_rows(named=True)}
    exe = os.path.realpath(binary)
    for sid, name in ((1, "level1"), (2, "level2"), (3, "level3")):
        assert (sym[(sid, 0)]["symbol"], sym[(sid, 0)]["module"], sym[(sid, 0)]["offset"]) == (name, exe, 0)
    assert sym[(4, 0)]["symbol"] == "mmap" and sym[(4, 0)]["module"].endswith("libc.so.6")
    assert [sym[(5, d)]["symbol"] for d in range(3)] == ["level3", "level2", "level1"]
    assert sym[(5, 0)]["offset"] == 1 and sym[(5, 1)]["offset"] > 0
    # backtrace(3): level3 (after the call to backtrace), level2, level1, main, libc start code
    bt = df.filter(pl.col("stack_id") == 6).sort("depth")["symbol"].to_list()
    assert bt[:4] == ["level3", "level2", "level1", "main"], bt
    assert all(s != "[unknown]" for s in bt[:-1]), bt
    # JIT code through /tmp/perf-PID.map; outside the entry: unknown in an anonymous VMA
    assert (sym[(7, 0)]["symbol"], sym[(7, 0)]["offset"]) == ("jitted_fn", 0x10)
    assert sym[(7, 0)]["module"] == f"/tmp/perf-{pid}.map"
    assert (sym[(7, 1)]["symbol"], sym[(7, 1)]["module"]) == ("[unknown]", "[anon]")
    assert (sym[(8, 0)]["symbol"], sym[(8, 0)]["module"]) == ("[unknown]", "[unknown]")


def test_symbolize_empty() -> None:
    from vmatrace.base.snapshot import VMA_SCHEMA

    df = symbolize(1, pl.DataFrame(schema=VMA_SCHEMA), {})
    assert df.height == 0 and dict(df.schema) == STACK_SCHEMA


def test_symbolize_a_replaced_binary(cbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # GIVEN a running program whose file is then replaced by another ELF (a rebuild)
    from tests.conftest import need_root

    need_root()  # /proc/PID/map_files is root-only
    binary = cbuild(PROG, "prog", "-pie", "-fPIE")
    pid, v, proc = run_stopped(binary)
    try:
        binary.unlink()
        binary.write_bytes(Path("/usr/bin/true").read_bytes())
        snap = read_snapshot(pid)
        paths = set(snap.frame["path"].drop_nulls().to_list())
        assert f"{binary} (deleted)" in paths
        # WHEN symbolized
        df = symbolize(pid, snap.frame, {1: [v["level2"][0]]})
    finally:
        reap(proc)
    # THEN the mapped (old) file is read through /proc/PID/map_files, not the new one at the path
    assert (df["symbol"].item(), df["module"].item(), df["offset"].item()) == ("level2", f"{binary} (deleted)", 0)


# an untyped assembly label in .text (like ld.so's _start/_dl_start_user) and one in .data
ASM_PROG = r"""
__asm__(".text\n.globl entry_label\nentry_label:\n nop\n nop\n ret\n"
        ".data\n.globl data_label\ndata_label:\n .quad 0\n");
extern char entry_label[], data_label[];
#include <stdio.h>
int main(void) { printf("%p %p\n", (void *)entry_label, (void *)data_label); return 0; }
"""


def test_untyped_code_labels_resolve_and_data_labels_do_not(cbuild) -> None:  # type: ignore[no-untyped-def]
    from collectors.symbols import load_symbols

    binary = cbuild(ASM_PROG, "asmprog", "-no-pie")
    code, data = (int(x, 16) for x in subprocess.check_output([str(binary)], text=True).split())
    table = load_symbols(str(binary))
    assert table is not None
    assert table.lookup(code + 1) == ("entry_label", code)
    assert data not in table.starts
    assert "data_label" not in table.names
