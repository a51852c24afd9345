"""Live: the open file of every mapping and the brk base, as replay needs them.

tests/workloads/fileid.c maps one file through two opens side by side, through dup'd fds, an fd
inherited by a fork child, and shmem/memfd/SysV/deleted/tmpfs files; its `MAP tag pid addr` lines
say where. The recorded events must tell the two opens apart and the dups not, and every file
column must equal what /proc showed for that VMA at exit. python3's start-up must name
/etc/ld.so.cache, which ld.so maps and unmaps before any snapshot could see it. The strace import
of the same program must group the mappings into the same open files with the same paths.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

from collectors.record import ANON_INODE_FS_MAGIC, F_DELETED, F_DNAME, F_TRUNCATED, path_of
from collectors.strace_import import import_strace
from tests.conftest import build_c, need
from tests.record_common import WORKLOADS, record
from vmatrace.base.trace import Trace, read_trace

PAGE = 4096
# the command line docs/strace-import.md recommends
STRACE_OPTS = ["-f", "-y", "-tt", "-X", "raw", "-e", "trace=%memory,%process,%file,%desc,%ipc"]


def _maps(stdout: str) -> dict[str, tuple[int, int]]:
    """tag -> (pid, address) from the workload's MAP lines."""
    out = {}
    for line in stdout.splitlines():
        w = line.split()
        if len(w) == 4 and w[0] == "MAP":
            out[w[1]] = (int(w[2]), int(w[3], 16))
    return out


def _mmaps(t: Trace) -> pl.DataFrame:
    return t.events.filter(pl.col("kind").is_in(["mmap", "shmat"]) & ~pl.col("ret").is_between(-4095, -1)).sort("seq")


def _event(ev: pl.DataFrame, pid: int, addr: int) -> dict[str, object]:
    """The last mapping event of `pid` that returned `addr`."""
    rows = ev.filter((pl.col("pid") == pid) & (pl.col("ret") == addr))
    assert rows.height, (pid, hex(addr))
    return rows.row(rows.height - 1, named=True)


def _ids(t: Trace, maps: dict[str, tuple[int, int]]) -> dict[str, int | None]:
    """tag (and tag+ for the second page of the side-by-side pairs) -> file_id."""
    ev = _mmaps(t)
    ids: dict[str, int | None] = {}
    for tag, (pid, addr) in maps.items():
        ids[tag] = _event(ev, pid, addr)["file_id"]  # type: ignore[assignment]
        if tag in ("twice", "dup"):
            ids[tag + "+"] = _event(ev, pid, addr + PAGE)["file_id"]  # type: ignore[assignment]
    return ids


def _snapshot(t: Trace, pid: int, reason: str, which: int = -1) -> tuple[pl.DataFrame, dict[str, object]]:
    idx = t.snapshot_index.filter((pl.col("pid") == pid) & (pl.col("reason") == reason)).sort("snapshot_id")
    assert idx.height, (pid, reason)
    row = idx.row(which, named=True)
    return t.snapshot(int(row["snapshot_id"])), row  # type: ignore[arg-type]


def _grouping(ids: list[int | None]) -> list[int | None]:
    """Ids renumbered by first appearance: equal lists = the same partition into open files."""
    seen: dict[int, int] = {}
    return [None if i is None else seen.setdefault(i, len(seen)) for i in ids]


@pytest.fixture(scope="module")
def fileid_prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fileid")
    return build_c(WORKLOADS / "fileid.c", d / "fileid")


def _files_dir(tmp_path: Path) -> Path:
    d = tmp_path / "files"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, fileid_prog: Path) -> tuple[Path, Path, dict[str, tuple[int, int]]]:
    """(trace, directory of the workload's files, its MAP lines) of one recording of fileid.c."""
    tmp = tmp_path_factory.mktemp("rec")
    out = tmp / "t.vmat"
    p = record(out, "--as-root", "--", str(fileid_prog), str(_files_dir(tmp)))
    return out, tmp / "files", _maps(p.stdout)


@pytest.mark.live
@pytest.mark.bcc
def test_record_file_identity(recorded: tuple[Path, Path, dict[str, tuple[int, int]]]) -> None:
    out, files, maps = recorded
    assert len(maps) == 11, maps
    t = read_trace(out)
    assert t.warnings == [] and t.meta["lost_count"] == 0
    assert not t.meta.get("record_warnings"), t.meta["record_warnings"]
    ids = _ids(t, maps)
    a = ids["twice"]
    assert a is not None
    # two opens of one file: two open files; dup, dup2, fcntl(F_DUPFD), fork: the same one
    assert ids["twice+"] not in (None, a)
    assert ids["dup"] == ids["dup+"] == ids["dup2"] == ids["fcntl"] == ids["child-a"] == a
    # every other mapping has an open file of its own
    own = [ids[k] for k in ("twice+", "shanon", "memfd", "deleted", "devshm", "sysv", "child-open")]
    assert None not in own and len({*own, a}) == len(own) + 1
    # the kernel agrees: the two opens stay two VMAs, the dup'd pair merged into one
    parent, child = maps["twice"][0], maps["child-a"][0]
    final = {parent: _snapshot(t, parent, "exit")[0], child: _snapshot(t, child, "exit")[0]}
    starts = set(final[parent]["start"].to_list())
    x, y = maps["twice"][1], maps["dup"][1]
    assert {x, x + PAGE} <= starts and y in starts and y + PAGE not in starts
    # every file column is what /proc showed for that VMA at exit
    ev = _mmaps(t)
    expect = {"shanon": "/dev/zero (deleted)", "memfd": "/memfd:vmat-fileid (deleted)",
              "sysv": "/SYSV00000000 (deleted)", "deleted": f"{files}/gone.bin (deleted)",
              "devshm": f"/dev/shm/vmat-fileid-{parent}", "twice": f"{files}/data.bin"}
    for tag, (pid, addr) in maps.items():
        e = _event(ev, pid, addr)
        vma = final[pid].filter((pl.col("start") <= addr) & (pl.col("end") > addr)).row(0, named=True)
        # (the workload unlinks its /dev/shm file before it exits: the path at the call had no suffix)
        late = " (deleted)" if tag == "devshm" else ""
        assert (f"{e['file_path']}{late}", e["file_dev"], e["file_ino"]) == (vma["path"], vma["dev"], vma["inode"]), tag
        if tag in expect:
            assert e["file_path"] == expect[tag]
    anon = ev.filter((pl.col("kind") == "mmap") & ((pl.col("a3") & 0x21) == 0x20))  # private anonymous
    assert anon.height and anon["file_id"].null_count() == anon["file_path"].null_count() == anon.height
    # brk: equal after exec; at exit the heap runs from start_brk to the page-aligned break
    snap, row = _snapshot(t, parent, "start", 0)
    assert row["start_brk"] == row["brk"] and row["start_brk"]
    snap, row = _snapshot(t, parent, "exit")
    heap = snap.filter(pl.col("path") == "[heap]")
    assert heap.height == 1 and heap["start"].item() == row["start_brk"]
    brk = row["brk"]
    assert isinstance(brk, int) and heap["end"].item() == -(-brk // PAGE) * PAGE
    # the fork child's own start snapshot carries the break it inherited
    _, crow = _snapshot(t, child, "start", 0)
    assert crow["start_brk"] == row["start_brk"]


@pytest.mark.live
@pytest.mark.bcc
def test_record_python3_ld_so_cache(tmp_path: Path) -> None:
    py = "/usr/bin/python3"
    need(os.path.exists(py) and os.path.exists("/etc/ld.so.cache"), "needs /usr/bin/python3 and /etc/ld.so.cache")
    out = tmp_path / "t.vmat"
    record(out, "--", py, "-c", "import json")
    t = read_trace(out)
    assert t.warnings == [] and not t.meta.get("record_warnings")
    pid = t.meta["pids"][0]
    ev = _mmaps(t)
    cache = ev.filter(pl.col("file_path") == "/etc/ld.so.cache")
    st = os.stat("/etc/ld.so.cache")
    assert cache.height >= 1
    assert cache["file_ino"].to_list()[0] == st.st_ino
    assert cache["file_dev"].to_list()[0] == f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    assert t.snapshots.filter(pl.col("path") == "/etc/ld.so.cache").height == 0  # no snapshot saw it
    # each file mapping that is still there at exit names the file /proc showed there
    final, row = _snapshot(t, pid, "exit")
    last = ev.filter(pl.col("pid") == pid).unique("ret", keep="last")
    checked = 0
    for e in last.iter_rows(named=True):
        vma = final.filter((pl.col("start") == e["ret"]) & (pl.col("offset") == e["a5"]))
        if vma.height and vma["inode"].item():
            assert (e["file_path"], e["file_dev"], e["file_ino"]) == \
                (vma["path"].item(), vma["dev"].item(), vma["inode"].item())
            checked += 1
    assert checked >= 10
    # the brk base is the [heap] start
    heap = final.filter(pl.col("path") == "[heap]")
    assert heap.height == 1 and heap["start"].item() == row["start_brk"] < row["brk"]  # type: ignore[operator]


@pytest.mark.live
@pytest.mark.bcc
def test_strace_import_groups_like_record(tmp_path: Path, fileid_prog: Path,
                                         recorded: tuple[Path, Path, dict[str, tuple[int, int]]]) -> None:
    strace = shutil.which("strace")
    need(strace is not None, "needs strace")
    assert strace is not None
    rec, rec_files, rec_maps = recorded
    log = tmp_path / "s.log"
    s = subprocess.run([strace, *STRACE_OPTS, "-o", str(log), str(fileid_prog), str(_files_dir(tmp_path))],
                       capture_output=True, text=True, check=True, timeout=60)
    imp = tmp_path / "i.vmat"
    import_strace([log], imp)
    imp_maps = _maps(s.stdout)

    def seq(t: Trace, maps: dict[str, tuple[int, int]], root: Path) -> list[tuple[str | None, int | None]]:
        # every successful mapping, parent then child, in order: (path with run-specific parts
        # made equal, file_id)
        parent, child = maps["twice"][0], maps["child-a"][0]
        ev = _mmaps(t)
        rows = [r for pid in (parent, child) for r in ev.filter(pl.col("pid") == pid).iter_rows(named=True)]
        norm = [None if r["file_path"] is None else
                re.sub(r"vmat-fileid-\d+", "vmat-fileid-PID", r["file_path"].replace(str(root), "DIR"))
                for r in rows]
        return list(zip(norm, _grouping([r["file_id"] for r in rows]), strict=True))

    got_rec = seq(read_trace(rec), rec_maps, rec_files)
    got_imp = seq(read_trace(imp), imp_maps, tmp_path / "files")
    assert got_imp == got_rec
    assert ("/etc/ld.so.cache", 0) in got_imp and any(p == "DIR/gone.bin (deleted)" for p, _ in got_imp)
    assert _grouping(list(_ids(read_trace(imp), imp_maps).values())) == \
        _grouping(list(_ids(read_trace(rec), rec_maps).values()))


def test_path_of() -> None:
    # names leaf first, NUL-terminated, as the BPF dentry walk writes them
    assert path_of(b"libc.so.6\0lib\0usr\0", 0, 0) == "/usr/lib/libc.so.6"
    assert path_of(b"x\0tmp\0", F_DELETED, 0) == "/tmp/x (deleted)"
    assert path_of(b"dev/zero\0", F_DNAME, 0x01021994) == "/dev/zero (deleted)"
    assert path_of(b"[io_uring]\0", F_DNAME, ANON_INODE_FS_MAGIC) == "anon_inode:[io_uring]"
    assert path_of(b"a\nb\0\xff\0", 0, 0) == "/\\xff/a\\012b"  # as /proc prints such names
    assert path_of(b"", 0, 0) == "/"
    assert path_of(b"x\0", F_TRUNCATED, 0) is None


def test_strace_import_fd_tables(tmp_path: Path) -> None:
    """Hand-written -y log: which open file each mmap maps, through every fd call the importer follows."""
    log = tmp_path / "fd.log"
    m = "mmap(NULL, 4096, 0x1, 0x2, {fd}, 0) = 0x7f00000{n:02x}000\n"
    log.write_text(
        "100 openat(AT_FDCWD</w>, \"a\", O_RDONLY|O_CLOEXEC) = 3</w/a>\n"
        "100 openat(AT_FDCWD</w>, \"a\", O_RDONLY) = 4</w/a>\n"
        + "100 " + m.format(fd="3</w/a>", n=1)            # A
        + "100 " + m.format(fd="4</w/a>", n=2)            # B: a second open of the same file
        + "100 dup(3</w/a>) = 5</w/a>\n"
        + "100 " + m.format(fd="5</w/a>", n=3)            # A
        + "100 fcntl(4</w/a>, 0x406, 10) = 10</w/a>\n"    # F_DUPFD_CLOEXEC
        + "100 " + m.format(fd="10</w/a>", n=4)           # B
        + "100 close(3</w/a>) = 0\n"
        + "100 openat(AT_FDCWD</w>, \"b\", O_RDONLY) = 3</w/b>\n"
        + "100 " + m.format(fd="3</w/b>", n=5)            # C: fd 3 reused
        + "100 " + m.format(fd="7</w/gone>(deleted)", n=6)  # D: an fd the log never opened
        + "100 " + m.format(fd="7</w/gone>(deleted)", n=7)  # D again
        + "100 mmap(NULL, 4096, 0x3, 0x21, -1, 0) = 0x7f0000008000\n"  # shared anonymous: E
        + "100 mmap(NULL, 4096, 0x3, 0x22, -1, 0) = 0x7f0000009000\n"  # private anonymous: none
        + "100 shmget(0x2a, 4096, 0600|IPC_CREAT) = 65538\n"
        + "100 shmat(65538, NULL, 0) = 0x7f000000a000\n"  # F
        + "100 clone(child_stack=NULL, flags=0x1200011, child_tidptr=0x7f) = 101\n"
        + "101 " + m.format(fd="5</w/a>", n=11)           # A, inherited
        + "101 execve(\"/nonexistent\", [\"x\"], 0x0 /* 0 vars */) = 0\n"
        + "101 " + m.format(fd="4</w/a>", n=12)           # B survives exec (no O_CLOEXEC)
        + "101 " + m.format(fd="10</w/a>", n=13)          # 10 was close-on-exec: a new file G
        + "100 +++ exited with 0 +++\n101 +++ exited with 0 +++\n")
    out = tmp_path / "t.vmat"
    import_strace([log], out)
    ev = _mmaps(read_trace(out)).filter(pl.col("kind").is_in(["mmap", "shmat"]))
    got = list(zip(ev["file_path"].to_list(), _grouping(ev["file_id"].to_list()), strict=True))
    A, B, C, D, E, F, G = range(7)
    assert got == [("/w/a", A), ("/w/a", B), ("/w/a", A), ("/w/a", B), ("/w/b", C),
                   ("/w/gone (deleted)", D), ("/w/gone (deleted)", D), ("/dev/zero (deleted)", E),
                   (None, None), ("/SYSV0000002a (deleted)", F), ("/w/a", A), ("/w/a", B), ("/w/a", G)]


MANY_VMAS = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
int main(int argc, char **argv) {
    int fd = open(argv[0], O_RDONLY);
    for (int i = 0; i < 20000; i++) {  /* 20,000 VMAs that cannot merge: a maple tree 4 levels deep */
        mmap(NULL, 4096, i % 2 ? PROT_READ : PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (i % 400 == 0)
            mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    }
    return 0;
}
"""


@pytest.mark.live
@pytest.mark.bcc
def test_record_file_identity_in_a_deep_tree(tmp_path: Path) -> None:
    """The BPF maple-tree walk finds the new VMA among 20,000 (internal arange nodes, several levels)."""
    prog = build_c(MANY_VMAS, tmp_path / "many")
    out = tmp_path / "t.vmat"
    record(out, "--no-faults", "--no-smaps", "--", str(prog))
    t = read_trace(out)
    assert t.warnings == [] and not t.meta.get("record_warnings"), t.meta.get("record_warnings")
    ev = _mmaps(t).filter((pl.col("a4") == 3) & (pl.col("a3") == 2) & (pl.col("a1") == 4096))  # (not ld.so's)
    assert ev.height == 50
    assert ev["file_path"].unique().to_list() == [str(prog)] and ev["file_id"].n_unique() == 1
    final, _ = _snapshot(t, t.meta["pids"][0], "exit")
    assert final.height > 20000


@pytest.mark.live
@pytest.mark.bcc
def test_replay_tells_two_opens_from_a_dup(recorded: tuple[Path, Path, dict[str, tuple[int, int]]]) -> None:
    """Replay: two opens of one file side by side stay two VMAs, a dup'd fd merges, as the kernel
    did; without the file identity columns the model cannot tell, and the comparison says so."""
    import dataclasses

    from replay.engine import default_profiles, replay_trace

    rec, _files, maps = recorded
    t = read_trace(rec)
    specs, _pair, _ = default_profiles(t.meta)
    r = replay_trace(t, specs[:1], jobs=1)
    judged = r.profiles[0]
    # SysV shmat is not replayed (its segment size is not traced): its VMA is the one divergence,
    # explained as such
    divs = [d for p in judged.processes for d in p.divergences]
    snap_paths = {r["start"]: r["path"] for r in t.snapshots.iter_rows(named=True)}
    assert all(d.cause == "a call the model does not cover" for d in divs), \
        [(d, snap_paths.get(d.start)) for d in divs]
    assert all(any(d.start <= a < d.end for a in [maps["sysv"][1]]) for d in divs), divs
    assert sum(len(p.mismatches) for p in judged.processes) == 0
    # the same calls told apart by fd number only (an older recorder's trace)
    blind = t.events.with_columns(pl.lit(None, pl.UInt32).alias("file_id"))
    rb = replay_trace(dataclasses.replace(t, events=blind), specs[:1], jobs=1)
    parent, dup_addr = maps["dup"]
    divs = [d for p in rb.profiles[0].processes if p.pid == parent for d in p.divergences]
    here = [d for d in divs if d.start <= dup_addr < d.end]
    assert [d.kind for d in here] == ["merged"]  # the kernel merged A and dup(A); fd numbers differ
    assert any("do not name their open files" in w for w in rb.warnings)
