"""Snapshots of real processes equal /proc/PID/maps line for line; PROCMAP_QUERY and text agree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.procmaps import SnapshotError, has_procmap_query, read_snapshot
from tests.conftest import need, reap
from vmatrace.analysis import REASON_ANON, REASON_FLAGS, invisible_fragmentation
from vmatrace.base.errors import NoSuchProcess
from vmatrace.base.snapshot import parse_maps_text, parse_smaps_text

MAPPINGS_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>
#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif
int main(int argc, char **argv) {
    long pg = sysconf(_SC_PAGESIZE);
    int fd = open(argv[1], O_RDWR | O_CREAT, 0600);
    ftruncate(fd, 8 * pg);
    char *f = mmap(NULL, 2 * pg, PROT_READ, MAP_PRIVATE, fd, 3 * pg);          /* file, offset 3 pages */
    char *s = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);  /* shared file */
    unlink(argv[1]);                                                          /* shows " (deleted)" */
    char *n = mmap(NULL, 3 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int named = prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, n, 3 * pg, "vmatrace test") == 0; /* CONFIG_ANON_VMA_NAME */
    char *g = mmap(NULL, 4 * pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *l = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mlock(l, pg);
    char *sh = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memset(l, 1, 2 * pg); sh[0] = 1; s[0] = 1;
    printf("%p %p %p %p %p %p %d\n", f, s, n, g, l, sh, named);
    fflush(stdout);
    raise(SIGSTOP);
    return 0;
}
"""


def _stopped(cmd: list[str]) -> Iterator[subprocess.Popen[str]]:
    """Start cmd, wait until it has stopped itself (SIGSTOP) or, for python, stop it."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        yield p
    finally:
        reap(p)


def _wait_stopped(pid: int) -> None:
    for _ in range(500):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.01)
    raise AssertionError("process did not stop")


def _maps_lines(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as f:
        return f.read().splitlines()


@pytest.fixture
def mappings_proc(cbuild, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    exe = cbuild(MAPPINGS_C, "mappings")
    yield from _stopped([str(exe), str(tmp_path / "data.bin")])


def test_c_program_text_and_ioctl_equal_proc_maps(mappings_proc: subprocess.Popen[str]) -> None:
    assert mappings_proc.stdout is not None
    named = mappings_proc.stdout.readline().split()[-1] == "1"
    _wait_stopped(mappings_proc.pid)
    want = _maps_lines(mappings_proc.pid)
    text = read_snapshot(mappings_proc.pid, smaps=False, method="text")
    assert text.method == "text"
    assert text.maps_lines() == want
    smaps = read_snapshot(mappings_proc.pid, smaps=True)
    assert smaps.maps_lines() == want
    paths = set(smaps.frame["path"].drop_nulls().to_list())
    # anonymous VMA names need CONFIG_ANON_VMA_NAME (not set on every kernel)
    assert ("[anon:vmatrace test]" in paths) == named
    assert any(p.endswith("data.bin (deleted)") for p in paths)
    # the mlock'ed page shows `lo` in VmFlags and is a VMA of its own
    assert smaps.frame.filter(smaps.frame["vmflags"].str.contains(r"\blo\b")).height == 1
    need(has_procmap_query(), "PROCMAP_QUERY needs Linux 6.11+")
    ioctl = read_snapshot(mappings_proc.pid, smaps=False, method="procmap_query")
    assert ioctl.method == "procmap_query"
    assert ioctl.maps_lines() == want
    assert ioctl.frame.equals(text.frame)


def test_spawned_python_equals_proc_maps() -> None:
    p = subprocess.Popen([sys.executable, "-c", "import json, os, signal; os.kill(os.getpid(), signal.SIGSTOP)"])
    try:
        _wait_stopped(p.pid)
        want = _maps_lines(p.pid)
        assert read_snapshot(p.pid, smaps=True).maps_lines() == want
        assert read_snapshot(p.pid, smaps=False, method="text").maps_lines() == want
        if has_procmap_query():
            assert read_snapshot(p.pid, smaps=False, method="procmap_query").maps_lines() == want
    finally:
        reap(p)


def test_this_test_process_text_and_ioctl_agree() -> None:
    need(has_procmap_query(), "PROCMAP_QUERY needs Linux 6.11+")
    # our own address space may change between two reads (allocations): retry until two reads agree
    for _ in range(5):
        a = read_snapshot(os.getpid(), smaps=False, method="procmap_query")
        b = read_snapshot(os.getpid(), smaps=False, method="text")
        if a.frame.equals(b.frame):
            break
    assert a.frame.equals(b.frame)
    assert a.frame.height > 10


def test_ten_thousand_vmas_both_methods_agree() -> None:
    p = subprocess.Popen([sys.executable, "-m", "vmatrace.workloads.fragment", "--many", "10000"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        info = json.loads(p.stdout.readline())
        text = read_snapshot(p.pid, smaps=False, method="text")
        assert text.frame.height >= 10000
        lo, hi = info["many"]
        many = text.frame.filter((text.frame["start"] >= lo) & (text.frame["end"] <= hi))
        assert many.height == 10000
        if has_procmap_query():
            assert read_snapshot(p.pid, smaps=False, method="procmap_query").frame.equals(text.frame)
        sm = read_snapshot(p.pid, smaps=True)
        assert sm.frame.select("start", "end", "perms").equals(text.frame.select("start", "end", "perms"))
    finally:
        reap(p)


def test_invisible_fragmentation_found_and_explained() -> None:
    p = subprocess.Popen([sys.executable, "-m", "vmatrace.workloads.fragment", "--fork"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        info = json.loads(p.stdout.readline())
        runs = invisible_fragmentation(read_snapshot(p.pid).frame)

        def run_at(region: str) -> list[str]:
            """The explained splits strictly inside a region (its neighbours may touch it)."""
            lo, hi = info[region]
            found = [r for r in runs if r.start <= lo and r.end >= hi]
            assert found, f"no invisible-fragmentation run covers region {region}"
            return [f"{s.reason}:{s.detail}" for s in found[0].splits if lo < s.addr < hi]

        ac = run_at("ac")
        assert len(ac) == 1 and ac[0].startswith(REASON_FLAGS) and "right has ac" in ac[0]
        locked = run_at("locked")
        assert len(locked) == 2 and all(s.startswith(REASON_FLAGS) and " lo" in s for s in locked)
        dd = run_at("dontdump")
        assert len(dd) == 1 and "right has dd" in dd[0]
        anon = run_at("anon")
        assert len(anon) == 1 and anon[0].startswith(REASON_ANON) and "both sides have anonymous pages" in anon[0]
        # the fork child: its own mapping next to an inherited faulted VMA stays separate
        child_runs = invisible_fragmentation(read_snapshot(info["child_pid"]).frame)
        lo, hi = info["fork"]
        mid = lo + (hi - lo) // 2
        fork = [s for r in child_runs for s in r.splits if s.addr == mid]
        assert fork and fork[0].reason == REASON_ANON
        # ... while the parent, which never mapped the second half, has one VMA there
        assert not [r for r in runs if r.start <= lo < r.end]
    finally:
        reap(p)


def test_missing_pid_and_kernel_thread_errors() -> None:
    with pytest.raises(NoSuchProcess, match="no process with PID"):
        read_snapshot(2**22 + 12345)
    with pytest.raises(SnapshotError, match="kernel thread"):
        read_snapshot(2)  # kthreadd


def test_process_exiting_before_read_gives_clear_result() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a reaped process: gone
    with pytest.raises(NoSuchProcess):
        read_snapshot(p.pid)
    z = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, z.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    with pytest.raises(SnapshotError, match="zombie"):
        read_snapshot(z.pid)
    z.wait()


THREADS_C = r"""
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
static void *worker(void *a) {
    printf("%ld\n", (long)syscall(SYS_gettid)); fflush(stdout);
    for (;;) pause();
    return a;
}
int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    sleep(1);
    pthread_exit(NULL);   /* the group leader exits; the worker keeps the address space alive */
}
"""


def test_thread_id_and_exited_group_leader(cbuild) -> None:  # type: ignore[no-untyped-def]
    exe = cbuild(THREADS_C, "threads", "-pthread")
    p = subprocess.Popen([str(exe)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        tid = int(p.stdout.readline())
        s = read_snapshot(tid)  # a thread id: the snapshot is of its process
        assert s.pid == p.pid and any(f"thread of process {p.pid}" in w for w in s.warnings)
        assert s.frame.height > 5
        for _ in range(300):  # wait until the leader has exited (state Z) while the worker runs
            if _status_state(p.pid) == "Z":
                break
            time.sleep(0.01)
        assert _status_state(p.pid) == "Z"
        with open(f"/proc/{p.pid}/maps") as f:
            assert f.read() == ""  # what a naive reader sees
        s2 = read_snapshot(p.pid)
        assert s2.frame.height > 5 and s2.complete
        assert s2.maps_lines() == _maps_lines_of(f"/proc/{p.pid}/task/{tid}/maps")
    finally:
        reap(p)


def _status_state(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1] for line in f if line.startswith("State:"))


def _maps_lines_of(path: str) -> list[str]:
    with open(path, "rb") as f:  # binary: text mode would also split on "\r"
        return f.read().decode("utf-8", "backslashreplace").split("\n")[:-1]


NAMES_C = r"""
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_RDWR | O_CREAT, 0600);
        ftruncate(fd, 4096);
        mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
    }
    printf("ready\n"); fflush(stdout);
    raise(SIGSTOP);
    return 0;
}
"""


def test_odd_file_names(cbuild, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    exe = cbuild(NAMES_C, "names")
    names = [b"sp ace", b"bad\xffname", b"cr\rx\xe2\x80\xa8y", b"new\nline", b"rich[/]markup[bold]", b"tab\tx"]
    (tmp_path / "rich[").mkdir()  # "rich[/]markup[bold]" is the file "]markup[bold]" in the directory "rich["
    paths = [os.path.join(os.fsencode(tmp_path), n) for n in names]
    p = subprocess.Popen([str(exe), *paths], stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == b"ready\n"
        _wait_stopped(p.pid)
        want = _maps_lines_of(f"/proc/{p.pid}/maps")
        assert read_snapshot(p.pid, smaps=False, method="text").maps_lines() == want
        sm = read_snapshot(p.pid)
        assert sm.maps_lines() == want
        got = set(sm.frame["path"].drop_nulls().to_list())
        assert any(x.endswith("bad\\xffname") for x in got)  # non-UTF-8 bytes as \xNN
        assert any(x.endswith("new\\012line") for x in got)  # the kernel's own escape
        if has_procmap_query():
            assert read_snapshot(p.pid, smaps=False, method="procmap_query").maps_lines() == want
        env = dict(os.environ, COLUMNS="300")
        for extra in ([], ["--json"], ["--no-smaps"]):
            r = subprocess.run([sys.executable, "-m", "vmatrace", "snapshot", str(p.pid), *extra],
                               capture_output=True, text=True, env=env)
            assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
            assert "rich[/]markup[bold]" in r.stdout
    finally:
        reap(p)


def test_parsers_drop_a_vma_printed_twice_and_reject_garbage() -> None:
    text = ("00400000-00401000 r--p 00000000 08:01 12 /bin/x\n"
            "00401000-00403000 rw-p 00000000 00:00 0 \n"
            "00402000-00403000 rw-p 00000000 00:00 0 \n"   # seq_file restart printed an overlapping VMA again
            "00500000-00501000 rw-p 00000000 00:00 0                          [heap]\n")
    w: list[str] = []
    f = parse_maps_text(text, w)
    assert f.height == 3 and w and "printed twice" in w[0]
    assert f["path"].to_list() == ["/bin/x", None, "[heap]"]
    with pytest.raises(SnapshotError, match="line 1"):
        parse_maps_text("hello world\n")
    sm = parse_smaps_text("00400000-00401000 rw-p 00000000 00:00 0\nRss:  8 kB\nAnonymous: 4 kB\nVmFlags: rd wr mr\n")
    assert sm.row(0, named=True)["rss_kb"] == 8 and sm.row(0, named=True)["vmflags"] == "rd wr mr"


def test_smaps_of_stopped_process_sizes(mappings_proc: subprocess.Popen[str]) -> None:
    assert mappings_proc.stdout is not None
    addrs = [int(x, 16) for x in mappings_proc.stdout.readline().split()[:6]]
    _wait_stopped(mappings_proc.pid)
    fr = read_snapshot(mappings_proc.pid).frame
    locked = fr.filter(fr["start"] == addrs[4]).row(0, named=True)
    assert locked["anonymous_kb"] == os.sysconf("SC_PAGE_SIZE") // 1024
    assert "lo" in locked["vmflags"].split()
    os.kill(mappings_proc.pid, signal.SIGCONT)


def _line_parsed(text: str) -> dict[str, list[object]]:
    from vmatrace.base.snapshot import SmapsParser

    p = SmapsParser()
    p._layout = None  # no fast path: every line parsed
    p.feed(text)
    return p.finish()


def test_fast_smaps_parser_equals_the_line_parser() -> None:
    """The fast path (the fields at the offsets the first block shows, read in bulk) gives the
    line parser's columns on real smaps of 10,000 VMAs, whole or fed in pieces of any size; text
    of another shape (a VMA without its Rss line, sizes of 8 digits or more in the first block and
    in the middle) is read line by line where it must be and still parses the same."""
    from vmatrace.base.snapshot import parse_smaps_columns

    p = subprocess.Popen([sys.executable, "-m", "vmatrace.workloads.fragment", "--many", "10000"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        json.loads(p.stdout.readline())
        with open(f"/proc/{p.pid}/smaps", "rb") as f:
            raw = f.read()
    finally:
        reap(p)
    text = raw.decode()
    fast = parse_smaps_columns(raw)
    assert len(fast["start"]) > 10000
    assert fast == _line_parsed(text)
    for size in (1, 700, 4096, 65536):
        assert parse_smaps_columns(text[i:i + size] for i in range(0, len(text), size)) == fast
    assert parse_smaps_columns(text.rstrip("\n")) == fast  # the last VmFlags line unended
    # an error names its line, in a block read in bulk as in one read line by line
    lines = text.split("\n")
    heads = [i for i, ln in enumerate(lines) if ln[:1] in "0123456789abcdef" and "-" in ln[:17]]
    bad = list(lines)
    bad[heads[9000]] = "zz" + bad[heads[9000]][2:]
    with pytest.raises(SnapshotError, match=f"^line {heads[9000] + 1} is not a /proc/PID/smaps line"):
        parse_smaps_columns("\n".join(bad))
    for name in ("Rss:", "Swap:"):
        at = next(i for i in range(heads[8000], len(lines)) if lines[i].startswith(name))
        bad = list(lines)
        bad[at] = bad[at][:-4] + "x kB"  # the same width: the block is still read in bulk
        with pytest.raises(SnapshotError, match=f"^line {at + 1}: {name} without a number"):
            parse_smaps_columns("\n".join(bad))
    odd = text.replace("\nRss:", "\nRssX:", 1)  # one VMA lacks its Rss line
    slow = parse_smaps_columns(odd)
    assert slow["rss_kb"][0] == 0 and slow["start"] == fast["start"]
    assert {k: v for k, v in slow.items() if k != "rss_kb"} == {k: v for k, v in fast.items() if k != "rss_kb"}
    # sizes of 9 digits (a 128 GiB reservation): in the first block, and in a block in the middle
    lines = text.split("\n")
    mid = next(i for i in range(len(lines) // 2, len(lines)) if lines[i].startswith("Swap:"))
    for at in (next(i for i, ln in enumerate(lines) if ln.startswith("Size:")), mid):
        wide = list(lines)
        wide[at] = wide[at].split(":")[0] + ":" + " " * 10 + "134217728 kB"
        got = parse_smaps_columns("\n".join(wide))
        assert got == _line_parsed("\n".join(wide))
        if at == mid:
            assert 134217728 in got["swap_kb"]


def test_lived_through_the_read() -> None:
    """A snapshot is complete only if the process has the same start time afterwards and is not a
    zombie (issue: a process that exits mid-read must not give a count as if it were whole)."""
    from collectors.procmaps import _lived_through, _start_time

    p = subprocess.Popen(["sleep", "60"])
    base = f"/proc/{p.pid}"
    started = _start_time(base)
    assert started is not None and _lived_through(base, started)
    assert not _lived_through(base, started + 1)  # another process under a reused PID
    p.kill()
    deadline = time.monotonic() + 10
    while _status_state(p.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _lived_through(base, started)  # a zombie: its address space is gone
    p.wait()
    assert not _lived_through(base, started)  # reaped
    snap = read_snapshot(os.getpid())
    assert snap.complete and not any("incomplete" in w for w in snap.warnings)


def test_smaps_through_the_helper_process_equals_reading_it_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """smaps read through the helper process (``cat`` into a pipe, parsed as it arrives) gives the
    same VMAs as reading it in this process, for a stopped process of 3,000 VMAs; a helper that
    fails (here /bin/false in its place) is noticed and the file is read again here."""
    from collectors import procmaps

    p = subprocess.Popen([sys.executable, "-m", "vmatrace.workloads.fragment", "--many", "3000"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        json.loads(p.stdout.readline())
        os.kill(p.pid, signal.SIGSTOP)
        _wait_stopped(p.pid)
        here = read_snapshot(p.pid, helper=False).columns
        no_pss = lambda c: {k: v for k, v in c.items() if k != "pss_kb"}  # noqa: E731 (others' maps move Pss)
        monkeypatch.setattr(procmaps, "_use_helper", lambda: True)  # also on a one-CPU machine
        fed: list[int] = []
        real = procmaps._parse_smaps_overlapped

        def spy(path: str, parser: procmaps.SmapsParser) -> bool:
            ok = real(path, parser)
            fed.append(len(parser.cols["start"]))
            return ok
        monkeypatch.setattr(procmaps, "_parse_smaps_overlapped", spy)
        assert no_pss(read_snapshot(p.pid).columns) == no_pss(here)
        assert fed and fed[0] > 3000  # the helper's path was taken and read it all
        monkeypatch.setattr(procmaps, "_cat", lambda: "/bin/false")
        snap = read_snapshot(p.pid)
        assert no_pss(snap.columns) == no_pss(here) and snap.complete
    finally:
        reap(p)


def test_helper_reaped_by_another_thread_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread of ours that reaps every child (waitpid(-1), as a ptrace loop does) can take the
    helper's exit status first: the snapshot then reads the file again here and is still whole
    (the recorder passes helper=False so that this never costs it a second read)."""
    import contextlib
    import threading

    from collectors import procmaps

    monkeypatch.setattr(procmaps, "_use_helper", lambda: True)  # also on a one-CPU machine
    here = read_snapshot(os.getpid(), helper=False)
    stop = threading.Event()

    def reaper() -> None:
        while not stop.is_set():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(-1, os.WNOHANG)
            time.sleep(0.0005)

    th = threading.Thread(target=reaper)
    th.start()
    try:
        for _ in range(5):
            snap = read_snapshot(os.getpid())
            assert snap.complete and snap.columns["start"][:5] == here.columns["start"][:5]
    finally:
        stop.set()
        th.join()


def _kernel_header(start: int, end: int, perms: str, off: int, dev: tuple[int, int], ino: int, name: str | None,
                   width: int = 72) -> str:
    """A header line as show_map_vma() prints it: the fields, a space, and for a named VMA spaces
    up to ``width`` (seq_setwidth(), 72 on a 64-bit kernel, 48 on a 32-bit one), a space, the name."""
    prefix = f"{start:08x}-{end:08x} {perms} {off:08x} {dev[0]:02x}:{dev[1]:02x} {ino} "
    return prefix if name is None else prefix + " " * max(0, width - len(prefix)) + " " + name


def test_header_columns_equal_the_line_parser() -> None:
    """The header lines are parsed all at once (the fields before the name column split as one
    text, the hex numbers of one width decoded together); every line shape the kernel prints gives
    what the line-by-line parser gives: addresses of 8, 12 and 16 digits mixed, names with spaces,
    headers too wide for the pad (a 16-digit offset, a 20-digit inode), a 32-bit kernel's pad."""
    import random

    from vmatrace.base.snapshot import _header, parse_maps_columns

    rng = random.Random(1203)
    names = [None, None, "/usr/lib/libc.so.6", "[heap]", "[anon:two  spaces]", "/tmp/a  b  c"]

    def lines(n: int, width: int = 72, digits: tuple[int, ...] = (12,), wide: float = 0.0) -> list[str]:
        starts = sorted({rng.randrange(16 ** (d - 1), 16 ** d - 0x10000) >> 16 << 16
                         for d in (rng.choice(digits) for _ in range(n))})
        return [_kernel_header(s, s + 0x1000 * rng.randrange(1, 9), rng.choice(["r--p", "rw-s", "---p"]),
                               rng.randrange(1 << 64) if rng.random() < wide else rng.randrange(1 << 20) << 12,
                               (rng.randrange(1, 300), rng.randrange(1 << 12)),
                               rng.randrange(10 ** 19, 10 ** 20) if rng.random() < wide else rng.randrange(1 << 20),
                               rng.choice(names), width) for s in starts]

    batches = {
        "12 digits": lines(500),
        "8/12/16 digits": lines(500, digits=(8, 12, 16)),
        "some too wide": lines(500, wide=0.1),
        "32-bit kernel": lines(500, width=48, digits=(8,)),
    }
    # offsets of 12, 8 and 16 digits in turn: as many digits in all as if all had 12
    batches["offsets of three widths"] = [
        _kernel_header(0x7F0000000000 + i * 0x10000, 0x7F0000001000 + i * 0x10000, "r--p", off, (8, 1), 12, "/x")
        for i, off in enumerate([0x123456789000, 0x1000, 0xFEDCBA9876543000] * 167)]
    for what, batch in batches.items():
        want: dict[str, list[object]] = {k: [] for k in ("start", "end", "perms", "offset", "dev", "inode", "path")}
        for ln in batch:
            for k, v in zip(want, _header(ln), strict=True):
                want[k].append(v)
        got = parse_maps_columns("\n".join(batch) + "\n")
        assert {k: got[k] for k in want} == want, what
    bad = [*batches["12 digits"][:10], "7f00-7f01-7f02 r--p 00000000 00:00 0 ", *batches["12 digits"][10:20]]
    with pytest.raises(SnapshotError, match="line 11"):
        parse_maps_columns("\n".join(bad))
    with pytest.raises(SnapshotError, match="line 3"):
        parse_maps_columns("\n".join([*batches["12 digits"][:2], "7f00x-7f01 r--p 00000000 00:00 0 "]))


def test_ranges_of_mixed_widths_are_not_decoded_as_one_width() -> None:
    """A start of 8 digits and an end of 16 make a range as long as one of 12 and 12: the ranges
    are decoded all at once only when every "-" stands where the first range's does."""
    from vmatrace.base.snapshot import _range_columns

    ranges = ["7f0000001000-7f0000002000", "00400000-00007f0000003000", "7f0000004000-7f0000005000"]
    assert _range_columns(ranges) == ([0x7F0000001000, 0x400000, 0x7F0000004000],
                                      [0x7F0000002000, 0x7F0000003000, 0x7F0000005000])
