"""import-strace: real strace runs of a known workload, real programs, and bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from collectors.strace_import import import_strace, parse_args_text, parse_strace
from tests.conftest import ROOT, build_c, need
from vmatrace.base.errors import VmatraceError
from vmatrace.base.events import EV_POPULATES, EV_RECONSTRUCTED
from vmatrace.base.snapshot import parse_maps_text
from vmatrace.base.trace import read_trace

# arguments strace prints for each kind the workload issues (mremap without MREMAP_FIXED: 4)
NARGS = {"mmap": 6, "munmap": 2, "mprotect": 3, "madvise": 3, "mremap": 4, "mlock2": 3, "brk": 1}
BEGIN, END = 0x4242, 0x4243
U64 = (1 << 64) - 1


def strace_bin() -> str:
    s = shutil.which("strace")
    need(s is not None, "needs strace (scripts/setup.sh installs it)")
    assert s is not None
    return s


def run_strace(tmp: Path, opts: list[str], cmd: list[str], *, name: str = "log") -> tuple[Path, str]:
    log = tmp / name
    p = subprocess.run([strace_bin(), *opts, "-o", str(log), *cmd], capture_output=True, text=True,
                       check=False, timeout=120)
    need(p.returncode == 0 or log.exists(), f"strace failed: {p.stderr[-300:]}")
    return log, p.stdout


WORKLOAD_C = r"""/* Workload for tests/test_strace_import.py: issues a known script of memory syscalls from the
 * main thread, a second thread and a forked child, and prints each one as
 *   CALL <tid> <kind> <a0> <a1> <a2> <a3> <a4> <a5> <ret>   (hex, ret signed decimal)
 * plus "THREAD <tid>" and "FORK <pid>". Each run of calls is bracketed by the markers
 * madvise(NULL, 0, 0x4242) / madvise(NULL, 0, 0x4243) so the test can cut it out of the trace.
 * All calls go through syscall(2) so exactly these argument values reach the kernel. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static long call(const char *kind, long nr, unsigned long a0, unsigned long a1, unsigned long a2,
                 unsigned long a3, unsigned long a4, unsigned long a5) {
    long r = syscall(nr, a0, a1, a2, a3, a4, a5);
    long ret = r == -1 ? -errno : r;
    pthread_mutex_lock(&out_lock);
    printf("CALL %ld %s %lx %lx %lx %lx %lx %lx %ld\n", (long)gettid(), kind, a0, a1, a2, a3, a4, a5, ret);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    return ret;
}
#define MARK(n) syscall(SYS_madvise, 0, 0, (n))

static void script(int who) {
    MARK(0x4242);
    unsigned long p = call("mmap", SYS_mmap, 0, 0x10000, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, (unsigned long)-1, 0);
    call("mprotect", SYS_mprotect, p + 0x4000, 0x2000, PROT_READ, 0, 0, 0);
    call("madvise", SYS_madvise, p, 0x4000, MADV_DONTNEED, 0, 0, 0);
    call("munmap", SYS_munmap, p + 1, 0x1000, 0, 0, 0, 0);             /* EINVAL */
    call("mmap", SYS_mmap, 0, 1UL << 62, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS,
         (unsigned long)-1, 0);                                          /* ENOMEM */
    if (who == 0) {
        unsigned long q = call("mremap", SYS_mremap, p, 0x4000, 0x8000, MREMAP_MAYMOVE, 0, 0);
        call("mmap", SYS_mmap, q, 0x2000, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE, (unsigned long)-1, 0);
        call("mlock2", SYS_mlock2, q, 0x1000, MLOCK_ONFAULT, 0, 0, 0);
        long b = call("brk", SYS_brk, 0, 0, 0, 0, 0, 0);
        call("brk", SYS_brk, (unsigned long)b + 0x21000, 0, 0, 0, 0, 0);
        call("brk", SYS_brk, (unsigned long)b, 0, 0, 0, 0, 0);
        call("mprotect", SYS_mprotect, q, 0x1000, PROT_READ | PROT_WRITE | PROT_EXEC, 0, 0, 0);
        call("munmap", SYS_munmap, q, 0x8000, 0, 0, 0, 0);
        call("munmap", SYS_munmap, p + 0x4000, 0xc000, 0, 0, 0, 0);
    } else {
        call("munmap", SYS_munmap, p, 0x10000, 0, 0, 0, 0);
    }
    MARK(0x4243);
}

static void *thread_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&out_lock);
    printf("THREAD %ld\n", (long)gettid());
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    script(1);
    return NULL;
}

int main(void) {
    static char obuf[1 << 16]; /* no malloc (brk/mmap) from stdio inside the markers */
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    FILE *m = fopen("/proc/self/maps", "r"); /* the layout as ld.so left it, for the test */
    char line[512];
    while (m && fgets(line, sizeof line, m))
        printf("MAP %s", line);
    if (m)
        fclose(m);
    script(0);
    pthread_t t;
    pthread_create(&t, NULL, thread_main, NULL);
    pthread_join(t, NULL);
    pid_t c = fork();
    if (c == 0) {
        script(2);
        _exit(7);
    }
    printf("FORK %ld\n", (long)c);
    fflush(stdout);
    int st;
    waitpid(c, &st, 0);
    return 0;
}
"""


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_c(WORKLOAD_C, tmp_path_factory.mktemp("wl") / "strace_workload", "-pthread")


def expected_calls(out: str) -> tuple[dict[int, list[tuple]], int, int]:
    """The workload's own printout: calls per tid, the thread's tid, the child's pid."""
    calls: dict[int, list[tuple]] = defaultdict(list)
    thread = child = -1
    for line in out.splitlines():
        f = line.split()
        if f[0] == "CALL":
            tid, kind = int(f[1]), f[2]
            args = [int(x, 16) for x in f[3:9]][: NARGS[kind]]
            calls[tid].append((kind, *args, int(f[9])))
        elif f[0] == "THREAD":
            thread = int(f[1])
        elif f[0] == "FORK":
            child = int(f[1])
        elif f[0] == "MAP":
            continue
    return calls, thread, child


def pages(frame: pl.DataFrame, path: str) -> set[int]:
    """Page numbers mapped from `path` in a VMA frame."""
    out: set[int] = set()
    for s, e in frame.filter(pl.col("path") == path).select("start", "end").rows():
        out.update(range(s >> 12, e >> 12))
    return out


def traced_calls(ev: pl.DataFrame) -> dict[int, list[tuple]]:
    """Per tid, the events between the workload's begin/end madvise markers."""
    out: dict[int, list[tuple]] = defaultdict(list)
    inside: set[int] = set()
    for r in ev.sort("seq").iter_rows(named=True):
        tid = r["tid"]
        if r["kind"] == "madvise" and r["a0"] == 0 and r["a2"] in (BEGIN, END):
            assert r["ret"] == -22  # EINVAL: the markers are invalid advice on purpose
            (inside.add if r["a2"] == BEGIN else inside.discard)(tid)
            continue
        if tid in inside and r["kind"] in NARGS:
            n = NARGS[r["kind"]]
            out[tid].append((r["kind"], *[r[f"a{i}"] for i in range(n)], r["ret"]))
    return out


@pytest.mark.parametrize(
    "opts",
    [
        pytest.param(["-f", "-tt", "-X", "raw", "-e", "trace=memory,process"], id="raw-tt-memory"),
        pytest.param(["-f", "-ttt"], id="symbolic-ttt-all"),
    ],
)
def test_workload_sequence_matches_its_printout(tmp_path: Path, workload: Path, opts: list[str]) -> None:
    # GIVEN the workload run under strace
    log, out = run_strace(tmp_path, opts, [str(workload)])
    calls, thread, child = expected_calls(out)
    assert thread > 0 and child > 0 and len(calls) == 3
    # WHEN imported
    meta = import_strace([log], tmp_path / "t.trace")
    t = read_trace(tmp_path / "t.trace")
    assert not t.warnings
    ev = t.events
    # THEN every call the workload made is in the trace, per thread, in order, with args and ret
    got = traced_calls(ev)
    assert dict(got) == dict(calls)
    # errors are -errno
    main = next(c for c in calls if c not in (thread, child))
    assert ("munmap", calls[main][0][-1] + 1, 0x1000, -22) in got[main]
    assert any(c[0] == "mmap" and c[-1] == -12 for c in got[thread])
    # the thread is a thread of the main process, the child its own process
    assert ev.filter(pl.col("tid") == thread)["pid"].unique().to_list() == [main]
    assert ev.filter(pl.col("tid") == child)["pid"].unique().to_list() == [child]
    forks = ev.filter(pl.col("kind") == "fork")
    assert forks.select("pid", "a0", "a1", "a2").rows() == [(main, thread, main, 1), (main, child, child, 0)]
    # the fork precedes everything the child does
    first_child = ev.filter(pl.col("pid") == child)["seq"].min()
    assert forks.filter(pl.col("a0") == child)["seq"].item() < first_child  # type: ignore[operator]
    # exits: the thread (not group-dead), the child with 7, the main process with 0
    ex = ev.filter(pl.col("kind") == "exit").select("tid", "a0", "a1").rows()
    assert (thread, 0, 0) in ex and (child, 7 << 8, 1) in ex and (main, 0, 1) in ex
    # file mmaps name their file when the log has the open calls (fd table followed), else not
    files = ev.filter((pl.col("kind") == "mmap") & (pl.col("a4") != U64) & (pl.col("ret") > 0))["text"]
    if "trace=memory,process" in opts:
        assert files.null_count() == files.len() > 0
    else:
        assert files.null_count() == 0 and any(t.endswith("/libc.so.6") for t in files.to_list())
    # MAP_POPULATE flagged, seq dense and in log order, realtime clock
    pop = ev.filter((pl.col("kind") == "mmap") & (pl.col("a3") & 0x8000 != 0))
    assert pop.height == 1 and pop["flags"].item() & EV_POPULATES
    assert ev["seq"].to_list() == list(range(ev.height))
    assert meta["clock"] == "realtime" and ev["ts_ns"].is_sorted()
    # -tt (time of day) and -ttt (epoch) both become epoch ns of this very run
    assert abs(ev["ts_ns"].min() / 1e9 - time.time()) < 120  # type: ignore[operator]
    # the exec was reconstructed from the ELF headers, with the ASLR bases recovered: the pages
    # of the executable and of ld.so are those the workload's own maps show
    assert t.snapshot_index["reason"].to_list() == ["reconstructed"]
    real = parse_maps_text("".join(ln[4:] + "\n" for ln in out.splitlines() if ln.startswith("MAP ")))
    rec = t.snapshot(0)
    for path in {os.path.realpath(workload), os.path.realpath("/lib64/ld-linux-x86-64.so.2")}:
        assert pages(rec, path) == pages(real, path) != set(), path
    exec_ev = ev.filter(pl.col("kind") == "exec")
    assert exec_ev["flags"].item() & EV_RECONSTRUCTED and exec_ev["text"].item() == str(workload)
    procs = t.procs.sort("pid")
    assert procs.select("pid", "exit_code", "how_ended").rows() == sorted(
        [(main, 0, "exit"), (child, 7, "exit")])


def test_workload_ff_files_and_stderr_prefixes(tmp_path: Path, workload: Path) -> None:
    # -ff -o PREFIX: one file per process, merged by timestamp
    _log, out = run_strace(tmp_path, ["-ff", "-tt"], [str(workload)], name="ff")
    files = sorted(tmp_path.glob("ff.*"))
    assert len(files) == 3
    calls, _, _ = expected_calls(out)
    import_strace(files, tmp_path / "ff.trace")
    assert dict(traced_calls(read_trace(tmp_path / "ff.trace").events)) == dict(calls)
    # -f to stderr: "[pid N]" prefixes, unprefixed lines while one process is traced, and
    # "strace: Process N attached" cutting lines
    p = subprocess.run([strace_bin(), "-f", "-tt", str(workload)], capture_output=True, text=True, check=True)
    (tmp_path / "stderr.log").write_text(p.stderr)
    assert "[pid " in p.stderr
    calls, _, _ = expected_calls(p.stdout)
    import_strace([tmp_path / "stderr.log"], tmp_path / "e.trace")
    assert dict(traced_calls(read_trace(tmp_path / "e.trace").events)) == dict(calls)


def test_hand_written_edge_lines(tmp_path: Path) -> None:
    log = tmp_path / "edge.log"
    log.write_text(
        "[pid  100] 12:00:00.000001 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB|21<<MAP_HUGE_SHIFT, -1, 0 <unfinished ...>\n"
        "[pid  101] 12:00:00.000002 mprotect(0x7f0000000000, 4096, 0x1 /* PROT_READ */) = 0\n"
        "[pid  100] 12:00:00.000003 <... mmap resumed>) = -1 ENOMEM (Cannot allocate memory)\n"
        "[pid  101] 12:00:00.000004 mmap(NULL, 4096, PROT_READ, MAP_SHARED, 3</tmp/x (deleted)>, 0) = 0x7f0000001000 <0.000010>\n"
        "[pid  101] 12:00:00.000005 madvise(0x7f0000001000, 4096, MADV_GUARD_INSTALL) = 0\n"
        "[pid  101] 12:00:00.000006 mlockall(MCL_CURRENT|MCL_ONFAULT) = 0\n"
        "[pid  101] 12:00:00.000007 prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, 0x7f0000001000, 4096, \"my heap\") = 0\n"
        "[pid  101] 12:00:00.000008 frobnicate(1, 2) = 0\n"
        "[pid  101] 12:00:00.000009 --- SIGSEGV {si_signo=SIGSEGV, si_code=SEGV_MAPERR, si_addr=0x10} ---\n"
        "[pid  101] 12:00:00.000010 +++ killed by SIGSEGV (core dumped) +++\n"
        "[pid  100] 12:00:00.000011 mremap(0x7f0000002000, 4096, 8192, MREMAP_MAYMOVE|MREMAP_FIXED, 0x7f0000010000) = 0x7f0000010000\n"
        "[pid  100] 12:00:00.000012 exit_group(3) = ?\n"
        "[pid  100] 12:00:00.000013 +++ exited with 3 +++\n"
    )
    p = parse_strace([log])
    ev = {(e["tid"], e["kind"]): e for e in p.events}
    mm = ev[(100, "mmap")]
    assert mm["ret"] == -12 and mm["a3"] == 0x2 | 0x20 | 0x40000 | (21 << 26) and mm["a4"] == U64
    assert ev[(101, "mprotect")]["a2"] == 1
    shm = ev[(101, "mmap")]
    assert shm["a4"] == 3 and shm["ret"] == 0x7F0000001000 and shm["a3"] == 1
    assert shm["text"] == "/tmp/x (deleted)" and mm["text"] is None  # the -y path of the fd
    assert ev[(101, "madvise")]["a2"] == 102
    assert ev[(101, "mlockall")]["a0"] == 5 and ev[(101, "mlockall")]["flags"] == 0  # ONFAULT: no populate
    pr = ev[(101, "prctl")]
    assert (pr["a0"], pr["a1"], pr["a3"], pr["text"]) == (0x53564D41, 0, 4096, "my heap")
    assert ev[(101, "exit")]["a0"] == 11 | 0x80 and ev[(101, "exit")]["text"] == "killed by SIGSEGV (core dumped)"
    assert (p.procs[101].exit_code, p.procs[101].how_ended) == (-11, "signal SIGSEGV (core dumped)")
    assert ev[(100, "mremap")]["a4"] == 0x7F0000010000
    assert ev[(100, "exit")]["a0"] == 3 << 8 and ev[(100, "exit_group")]["a0"] == 3
    assert (p.procs[100].exit_code, p.procs[100].how_ended) == (3, "exit")
    assert p.signals == {"SIGSEGV": 1} and p.other_syscalls == 1 and p.strace_lines == 13
    assert len(p.warnings) == 1 and "no successful execve" in p.warnings[0]
    # mmap completes after pid 101's mprotect: events are placed where calls complete
    kinds = [(e["tid"], e["kind"]) for e in p.events]
    assert kinds.index((101, "mprotect")) < kinds.index((100, "mmap"))
    # argument splitting keeps quoted commas and nested structures together
    args = parse_args_text('"a, b", {x=1, y=[2, 3]}, 0x10|0x1')
    assert [a.value for a in args] == [None, None, 0x11]


def test_real_programs_python_and_gcc(tmp_path: Path) -> None:
    cc = shutil.which("gcc")
    need(cc is not None, "needs gcc")
    assert cc is not None
    # python3 with a thread and a fork
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    log, _ = run_strace(tmp_path, ["-f"], [py, "-c",
                        "import os,threading; t=threading.Thread(target=lambda: bytearray(1<<22)); "
                        "t.start(); t.join(); pid=os.fork(); os._exit(0) if pid==0 else os.waitpid(pid,0)"],
                        name="py.log")
    import_strace([log], tmp_path / "py.trace")
    t = read_trace(tmp_path / "py.trace")
    assert not t.warnings and not t.meta["warnings"], (t.warnings, t.meta["warnings"])
    kinds = set(t.events["kind"].to_list())
    assert {"mmap", "munmap", "mprotect", "brk", "fork", "exec", "exit"} <= kinds
    forks = t.events.filter(pl.col("kind") == "fork")
    assert forks["a2"].to_list() == [1, 0], forks
    assert t.meta["clock"] == "none" and t.snapshot_index.height == 1, t.snapshot_index
    # a gcc compile: gcc forks cc1, as, collect2, ld
    src = tmp_path / "hello.c"
    src.write_text("int main(void) { return 0; }\n")
    log, _ = run_strace(tmp_path, ["-f", "-ttt", "-e", "trace=%memory,%process"],
                        [cc, "-O1", "-o", str(tmp_path / "hello"), str(src)], name="gcc.log")
    import_strace([log], tmp_path / "gcc.trace")
    t = read_trace(tmp_path / "gcc.trace")
    assert not t.warnings and not t.meta["warnings"], (t.warnings, t.meta["warnings"])
    comms = set(t.procs["comm"].to_list())
    assert {"gcc", "cc1", "as", "collect2", "ld"} <= comms, comms
    execs = t.events.filter(pl.col("kind") == "exec")
    # one reconstructed layout per successful exec of an ELF file
    assert t.snapshot_index.filter(pl.col("reason") == "reconstructed").height == execs.height, execs
    assert t.procs.filter(pl.col("comm") == "cc1")["ppid"].item() in t.procs["pid"].to_list()
    assert (t.procs["how_ended"] == "exit").all(), t.procs


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(VmatraceError, match="no such file"):
        import_strace([tmp_path / "missing"], tmp_path / "o1")
    (tmp_path / "rand").write_bytes(os.urandom(4096))
    with pytest.raises(VmatraceError, match="binary data, not strace output"):
        import_strace([tmp_path / "rand"], tmp_path / "o2")
    (tmp_path / "text").write_text((ROOT / "pyproject.toml").read_text())
    with pytest.raises(VmatraceError, match=r"not strace output \(line 1"):
        import_strace([tmp_path / "text"], tmp_path / "o3")
    (tmp_path / "empty").write_text("")
    with pytest.raises(VmatraceError, match="empty"):
        import_strace([tmp_path / "empty"], tmp_path / "o4")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))
    # a bad --maps file: named in the one-line error, nothing written
    log = tmp_path / "ok.log"
    log.write_text("1 brk(NULL) = 0x1000\n")
    with pytest.raises(VmatraceError, match=r"--maps 7:.*nomaps: no such file"):
        import_strace([log], tmp_path / "o5", maps=[f"7:{tmp_path / 'nomaps'}"])
    (tmp_path / "badmaps").write_text("hello world\n")
    with pytest.raises(VmatraceError, match=r"--maps .*badmaps: line 1 is not a /proc/PID/maps line"):
        import_strace([log], tmp_path / "o6", maps=[str(tmp_path / "badmaps")])
    assert not (tmp_path / "o5").exists() and not (tmp_path / "o6").exists()


def test_truncated_log_imports_readable_part(tmp_path: Path, workload: Path) -> None:
    log, _ = run_strace(tmp_path, ["-f", "-tt"], [str(workload)])
    text = log.read_text()
    lines = text.splitlines()
    cut = next(i for i in range(len(lines) - 1, 0, -1) if "mmap(" in lines[i] and "= " in lines[i])
    short = tmp_path / "short.log"
    short.write_text("\n".join(lines[:cut]) + "\n" + lines[cut][: lines[cut].index("mmap(") + 12])
    meta = import_strace([short], tmp_path / "s.trace")
    t = read_trace(tmp_path / "s.trace")
    assert t.events.height > 20
    assert any(f":{cut + 1}:" in w and "incomplete" in w for w in meta["warnings"]), meta["warnings"]


def test_cli_import_refuses_overwrite_and_reports(tmp_path: Path, workload: Path) -> None:
    log, _ = run_strace(tmp_path, ["-f", "-tt", "-X", "raw"], [str(workload)])
    maps = tmp_path / "maps.txt"
    maps.write_text(Path("/proc/self/maps").read_text())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "vmatrace", "import-strace", str(log), "-o", str(tmp_path / "c.trace"),
           "--maps", f"4242:{maps}"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert p.returncode == 0, p.stderr
    assert "imported" in p.stderr
    t = read_trace(tmp_path / "c.trace")
    idx = t.snapshot_index.sort("snapshot_id")
    assert idx.select("pid", "reason").rows()[0] == (4242, "periodic")
    assert t.snapshot(int(idx["snapshot_id"][0])).height == len(maps.read_text().splitlines())
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert p.returncode == 1 and "--force" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([*cmd[:-2], "--force"], capture_output=True, text=True, env=env, check=False)
    assert p.returncode == 0
    p = subprocess.run([*cmd[:4], str(tmp_path / "nope"), "-o", str(tmp_path / "d")], capture_output=True,
                       text=True, env=env, check=False)
    assert p.returncode == 1 and p.stderr.strip().endswith("no such file") and "Traceback" not in p.stderr


NESTED = r"""
#include <sys/mman.h>
#define NI __attribute__((noinline))
NI void *level3(void) { void *p = mmap(0, 7 * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                        __asm__ volatile("" ::: "memory"); return p; }
NI void *level2(void) { void *p = level3(); __asm__ volatile("" ::: "memory"); return p; }
NI void *level1(void) { void *p = level2(); __asm__ volatile("" ::: "memory"); return p; }
int main(void) { return level1() == MAP_FAILED; }
"""


def test_strace_k_stacks_are_symbolized(tmp_path: Path, cbuild) -> None:  # type: ignore[no-untyped-def]
    prog = cbuild(NESTED, "nested")
    log = tmp_path / "k.log"
    p = subprocess.run([strace_bin(), "-f", "-k", "-e", "trace=%memory,%process", "-o", str(log), str(prog)],
                       capture_output=True, text=True, check=False)
    need(p.returncode == 0 and " > " in log.read_text(), f"this strace has no -k support: {p.stderr[-200:]}")
    meta = import_strace([log], tmp_path / "k.trace")
    t = read_trace(tmp_path / "k.trace")
    assert not t.warnings and meta["stack_ip"]
    ev = t.events.filter((pl.col("kind") == "mmap") & (pl.col("a1") == 7 * 4096) & (pl.col("a3") == 0x22))
    assert ev.height == 1 and ev["stack_id"].item() is not None
    st = t.stacks.filter(pl.col("stack_id") == ev["stack_id"].item()).sort("depth")
    syms = st["symbol"].to_list()
    assert syms[1:5] == ["level3", "level2", "level1", "main"], syms
    assert st["module"][1] == str(prog) and st["depth"].to_list() == list(range(st.height))
    # every event with a stack points at rows that exist
    ids = set(t.events["stack_id"].drop_nulls().to_list())
    assert ids == set(t.stacks["stack_id"].to_list())


def test_child_lines_before_the_clone_returns(tmp_path: Path) -> None:
    # strace often prints a new thread's first calls before the parent's "<... clone3 resumed>"
    log = tmp_path / "race.log"
    log.write_text(
        "200 execve(\"/bin/true\", [\"true\"], 0x7ffd /* 1 var */) = 0\n"
        "200 clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM, "
        "exit_signal=0, stack=0x7f0000000000, stack_size=0x7fff80} <unfinished ...>\n"
        "201 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000100000\n"
        "200 <... clone3 resumed> => {parent_tid=[201]}, 88) = 201\n"
        "200 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD <unfinished ...>\n"
        "202 munmap(0x7f0000100000, 4096) = 0\n"
        "200 <... clone resumed>, child_tidptr=0x7f00) = 202\n"
        "202 +++ exited with 1 +++\n"
        "201 +++ exited with 0 +++\n"
        "200 +++ exited with 0 +++\n"
    )
    p = parse_strace([log])
    rows = [(e["kind"], e["pid"], e["tid"]) for e in p.events]
    assert rows == [("execve", 200, 200), ("exec", 200, 200), ("fork", 200, 200), ("mmap", 200, 201),
                    ("fork", 200, 200), ("munmap", 202, 202), ("exit", 202, 202), ("exit", 200, 201),
                    ("exit", 200, 200)]
    assert sorted(p.procs) == [200, 202] and p.procs[202].ppid == 200
    exits = [(e["tid"], e["a1"]) for e in p.events if e["kind"] == "exit"]
    assert exits == [(202, 1), (201, 0), (200, 1)]  # group_dead only for the last thread


def test_children_that_end_or_open_files_before_the_clone_returns(tmp_path: Path) -> None:
    # On a loaded machine strace can print a whole short thread, or a whole child process,
    # before the parent's "<... clone resumed>" line (the parent is not scheduled meanwhile).
    log = tmp_path / "race.log"
    log.write_text(
        '200 1700000000.000001 execve("/bin/true", ["true"], 0x7ffd /* 1 var */) = 0\n'
        '200 1700000000.000002 openat(AT_FDCWD, "/etc/hosts", O_RDONLY) = 3\n'
        "200 1700000000.000003 clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|"
        "CLONE_SYSVSEM, exit_signal=0, stack=0x7f0000000000, stack_size=0x7fff80} <unfinished ...>\n"
        "201 1700000000.000004 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000100000\n"
        "201 1700000000.000005 exit(0) = ?\n"
        "201 1700000000.000006 +++ exited with 0 +++\n"
        "200 1700000000.000007 <... clone3 resumed> => {parent_tid=[0]}, 88) = 201\n"
        "200 1700000000.000008 clone(child_stack=NULL, flags=SIGCHLD <unfinished ...>\n"
        "202 1700000000.000009 munmap(0x7f0000100000, 4096) = 0\n"
        "202 1700000000.000010 exit_group(7) = ?\n"
        "202 1700000000.000011 +++ exited with 7 +++\n"
        "200 1700000000.000012 <... clone resumed>) = 202\n"
        "200 1700000000.000013 clone(child_stack=NULL, flags=SIGCHLD <unfinished ...>\n"
        '203 1700000000.000014 openat(AT_FDCWD, "/etc/passwd", O_RDONLY) = 4\n'
        "200 1700000000.000015 <... clone resumed>) = 203\n"
        "203 1700000000.000016 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, 4, 0) = 0x7f0000200000\n"
        "203 1700000000.000017 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, 3, 0) = 0x7f0000300000\n"
        "203 1700000000.000018 exit_group(0) = ?\n"
        "203 1700000000.000019 +++ exited with 0 +++\n"
        "200 1700000000.000020 exit_group(0) = ?\n"
        "200 1700000000.000021 +++ exited with 0 +++\n"
    )
    p = parse_strace([log])
    assert p.warnings == []
    # the thread's exit is not the group's end (its creator was in clone3); the child's is, and
    # neither comes back to life at the clone's return: the main thread's exit ends the group
    exits = [(e["pid"], e["tid"], e["a0"], e["a1"]) for e in p.events if e["kind"] == "exit"]
    assert exits == [(200, 201, 0, 0), (202, 202, 7 << 8, 1), (203, 203, 0, 1), (200, 200, 0, 1)]
    assert {pid: (pr.exit_code, pr.how_ended, pr.ppid) for pid, pr in p.procs.items()} == {
        200: (0, "exit", 0), 202: (7, "exit", 200), 203: (0, "exit", 200)}
    # a child process starts at its fork (the clone's first line), not at its own first line
    assert (p.procs[202].start_ns, p.procs[203].start_ns) == (1_700_000_000_000_008_000, 1_700_000_000_000_013_000)
    # the fd the child opened before the clone returned is still its own, beside the inherited one
    texts = [e["text"] for e in p.events if e["kind"] == "mmap" and e["pid"] == 203]
    assert texts == ["/etc/passwd", "/etc/hosts"]


def test_damaged_logs_never_crash(tmp_path: Path, workload: Path) -> None:
    """Seeded mutations of a real log: each imports (with warnings) or fails with one line."""
    import random

    log, _ = run_strace(tmp_path, ["-f", "-ttt", "-X", "raw"], [str(workload)])
    src = log.read_text().splitlines(keepends=True)
    junk = ["(", ")", '"', "{", "<", "= ", "\\", "[pid ", "+++", "---", "<... ", " <unfinished ...>", "\x00",
            "9999999999", "09", "0x", "-", "[pid 99999999999] ", "clone(", "--- SIG"]
    rng = random.Random(4)
    outcomes: Counter[str] = Counter()
    for i in range(60):
        lines = list(src)
        for _ in range(rng.randint(1, 12)):
            j = rng.randrange(len(lines))
            k = rng.randrange(len(lines[j]) + 1)
            op = rng.random()
            if op < 0.3:
                lines[j] = lines[j][:k]
            elif op < 0.7:
                lines[j] = lines[j][:k] + rng.choice(junk) + lines[j][k:]
            else:
                del lines[j]
        bad = tmp_path / f"bad{i}.log"
        bad.write_text("".join(lines))
        try:
            import_strace([bad], tmp_path / f"bad{i}.trace")
        except VmatraceError as e:
            assert "\n" not in str(e)
            outcomes["error"] += 1
            continue
        t = read_trace(tmp_path / f"bad{i}.trace")
        assert not t.warnings and t.events["seq"].to_list() == list(range(t.events.height))
        outcomes["imported"] += 1
    assert outcomes["imported"] > 30


def test_time_of_day_stamps_cross_midnight(tmp_path: Path) -> None:
    log = tmp_path / "night.log"
    log.write_text("10 23:59:59.900000 brk(NULL) = 0x1000\n10 00:00:00.100000 brk(NULL) = 0x1000\n")
    # the log was last written at 00:00:01 local time on some day: it began the day before
    day = datetime(2026, 3, 2, 0, 0, 1).timestamp()
    os.utime(log, (day, day))
    p = parse_strace([log])
    a, b = (e["ts_ns"] for e in p.events)
    assert b - a == 200_000_000
    assert a == int(datetime(2026, 3, 1, 23, 59, 59).timestamp()) * 10**9 + 900_000_000


THREAD_EXEC = r"""
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
static void *t(void *a) {
    (void)a;
    printf("EXECTID %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    char *argv[] = {"/usr/bin/true", 0};
    execv(argv[0], argv);
    return 0;
}
int main(void) { pthread_t th; pthread_create(&th, 0, t, 0); pause(); return 0; }
"""


def test_exec_by_a_non_leader_thread(tmp_path: Path, cbuild) -> None:  # type: ignore[no-untyped-def]
    # strace: "[leader] +++ superseded by execve in pid T +++", then "[leader] <... execve resumed>"
    prog = cbuild(THREAD_EXEC, "texec", "-pthread")
    log, out = run_strace(tmp_path, ["-f", "-tt"], [str(prog)])
    assert "superseded by execve" in log.read_text()
    tid = int(out.split()[1])
    meta = import_strace([log], tmp_path / "x.trace")
    t = read_trace(tmp_path / "x.trace")
    assert not meta["warnings"]
    execs = t.events.filter(pl.col("kind") == "exec").select("pid", "tid", "a0", "text").rows()
    leader = execs[0][0]
    assert execs == [(leader, leader, leader, str(prog)), (leader, leader, tid, "/usr/bin/true")]
    assert t.events.filter(pl.col("kind") == "execve")["ret"].to_list() == [0, 0]
    assert t.snapshot_index["reason"].to_list() == ["reconstructed", "reconstructed"]
    assert t.procs.select("pid", "comm", "how_ended").rows() == [(leader, "true", "exit")]


def test_a_vfork_child_that_execs_before_vfork_returns_keeps_its_name(tmp_path: Path) -> None:
    """strace -f often prints a vfork child's execve before the parent's `<... vfork resumed>`
    (the parent is suspended until the child execs): the fork must not rename the child back."""
    log = tmp_path / "vfork.log"
    log.write_text(
        '100 execve("/usr/bin/gcc", ["gcc", "x.c"], 0x1 /* 1 var */) = 0\n'
        "100 vfork( <unfinished ...>\n"
        '101 execve("/usr/local/bin/as", ["as", "x.s"], 0x1 /* 1 var */) = -1 ENOENT (No such file or directory)\n'
        '101 execve("/usr/bin/as", ["as", "--64", "x.s"], 0x1 /* 1 var */) = 0\n'
        "101 brk(NULL) = 0x55dd7faa1000\n"
        "100 <... vfork resumed>) = 101\n"
        "101 exit_group(0) = ?\n"
        "101 +++ exited with 0 +++\n"
        "100 exit_group(0) = ?\n"
        "100 +++ exited with 0 +++\n"
    )
    p = parse_strace([log])
    assert (p.procs[100].comm, p.procs[101].comm) == ("gcc", "as")
    assert p.procs[101].ppid == 100
    assert p.procs[101].cmdline == "as --64 x.s"
