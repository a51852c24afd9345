"""Deep snapshots (collectors/deep.py): the hidden VMA state read with a BPF task_vma iterator.

Live: root, bcc and kernel BTF (a skip is a failure under VMATRACE_REQUIRE_LIVE=1). The process of
tests/workloads/deep_states.c is built to have known state (its header comment lists it); each
fact is checked on the deep snapshot, and the model seeded from it must predict what the kernel
does next where a model seeded from /proc has to guess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import ROOT, build_c, need, need_bcc, reap
from record_common import attached

pytestmark = [pytest.mark.live, pytest.mark.bcc]

BASE = 0x200000000000
PG = 4096
WORKLOAD = ROOT / "tests" / "workloads" / "deep_states.c"


@pytest.fixture(scope="module")
def collector() -> Iterator[Any]:
    need_bcc()
    need(os.path.exists("/sys/kernel/btf/vmlinux"), "no kernel BTF (/sys/kernel/btf/vmlinux)")
    from collectors.deep import DeepCollector

    c = DeepCollector()
    yield c
    c.close()


class States:
    def __init__(self, proc: subprocess.Popen[str], parent: int, child: int) -> None:
        self.proc = proc
        self.parent = parent
        self.child = child

    def mprotect(self, page: int, n: int, prot: int) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"m {page} {n} {prot}\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().split()
        assert reply[0] == "ok", reply
        return int(reply[1])


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> Iterator[States]:
    exe = build_c(WORKLOAD, tmp_path_factory.mktemp("deep") / "deep_states")
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    head = proc.stdout.readline().split()
    assert head[0] == "parent", head
    yield States(proc, int(head[1]), int(head[3]))
    proc.communicate(timeout=10)  # closes its stdin (the program then ends) and its stdout


def window(frame: pl.DataFrame) -> dict[int, dict[str, Any]]:
    """Window VMAs by first page."""
    return {(r["start"] - BASE) // PG: r for r in frame.iter_rows(named=True)
            if BASE <= r["start"] < BASE + (1 << 20)}


def test_known_state_parent(collector: Any, states: States) -> None:
    from vmatrace.analysis import explain_pair_deep

    snap = collector.snapshot(states.parent)
    assert snap.method == "bpf_iter" and snap.deep
    w = window(snap.frame)
    # two VMAs sharing one anon_vma (one mmap, written, split by mprotect)
    assert (w[0]["end"], w[2]["end"]) == (BASE + 2 * PG, BASE + 4 * PG)
    assert w[0]["anon_vma_id"] is not None and w[0]["anon_vma_id"] == w[2]["anon_vma_id"]
    assert (w[0]["avc"], w[0]["fork_child"]) == (1, False)
    # two VMAs that look identical, with distinct anon_vmas (and contiguous pgoff)
    assert w[8]["end"] == BASE + 9 * PG and w[9]["end"] == BASE + 10 * PG
    assert None not in (w[8]["anon_vma_id"], w[9]["anon_vma_id"])
    assert w[8]["anon_vma_id"] != w[9]["anon_vma_id"]
    assert (w[8]["pgoff"], w[9]["pgoff"]) == ((BASE >> 12) + 8, (BASE >> 12) + 9)
    assert explain_pair_deep(w[8], w[9]).causes == ["distinct anon_vmas"]
    # an unfaulted VMA
    assert (w[16]["anon_vma_id"], w[16]["avc"], w[16]["fork_child"]) == (None, 0, False)
    # a moved unfaulted VMA: its pgoff was reset to the new place; a moved written one keeps its own
    assert w[32]["anon_vma_id"] is None and w[32]["pgoff"] == (BASE >> 12) + 32
    assert w[48]["anon_vma_id"] is not None and w[48]["pgoff"] == (BASE >> 12) + 40
    # a memfd mapped twice through one fd, and through a second open
    assert w[56]["file_id"] is not None and w[56]["file_id"] == w[60]["file_id"]
    assert w[64]["file_id"] not in (None, w[56]["file_id"])
    assert w[56]["inode"] == w[64]["inode"] and w[60]["pgoff"] == 3 and w[64]["pgoff"] == 1
    assert w[68]["file_id"] == w[56]["file_id"] and w[69]["file_id"] == w[64]["file_id"]
    assert explain_pair_deep(w[68], w[69]).causes == ["different open file"]
    assert all(w[p]["anon_vma_id"] is None for p in (56, 60, 64, 68, 69))  # shared: never an anon_vma
    # anon pgoff discontinuity: an unfaulted page next to a written page moved there
    assert w[72]["anon_vma_id"] is None and w[73]["pgoff"] == (BASE >> 12) + 80
    assert explain_pair_deep(w[72], w[73]).causes == ["anon pgoff discontinuity"]
    # vm_ops->close: SysV shm (twice attached: two open files), nothing else in the window
    assert w[130]["close_hook"] and w[131]["close_hook"]
    assert w[130]["file_id"] != w[131]["file_id"]
    assert "close hook" in explain_pair_deep(w[130], w[131]).causes
    assert not any(w[p]["close_hook"] for p in w if p < 130)
    assert not any(w[p]["fork_child"] or w[p]["mempolicy"] or w[p]["uffd"] for p in w)
    # identities are small integers, never kernel pointers
    for col in ("file_id", "anon_vma_id"):
        assert int(snap.frame[col].max() or 0) < 100_000


def test_known_state_fork_child(collector: Any, states: States) -> None:
    from vmatrace.analysis import explain_pair_deep

    parent = window(collector.snapshot(states.parent).frame)
    w = window(collector.snapshot(states.child).frame)
    for p in (0, 2, 8, 9, 48, 73, 121):  # written before the fork
        assert w[p]["fork_child"] and w[p]["avc"] >= 2, (p, w[p]["avc"])
        assert w[p]["anon_vma_id"] != parent[p]["anon_vma_id"]
    assert (w[88]["avc"], w[88]["fork_child"]) == (1, False)  # written in the child after the fork
    assert (w[16]["anon_vma_id"], w[16]["fork_child"]) == (None, False)
    # inherited anon_vma sharing: the child's split pair got one anon_vma each
    assert w[0]["anon_vma_id"] != w[2]["anon_vma_id"]
    # an unfaulted page mapped after the fork next to an inherited written page: only "fork child"
    assert w[121]["end"] == BASE + 122 * PG and w[122]["anon_vma_id"] is None
    assert explain_pair_deep(w[121], w[122]).causes == ["fork child"]


def test_deep_and_smaps_agree_on_the_workload(collector: Any, states: States) -> None:
    from collectors.procmaps import read_snapshot

    _agree(collector, states.parent, read_snapshot)


def _agree(collector: Any, pid: int, read_snapshot: Any) -> None:
    for _ in range(3):
        deep = collector.snapshot(pid).frame
        plain = read_snapshot(pid, smaps=True).frame.filter(pl.col("start") < 1 << 47)
        cols = ["start", "end", "perms", "offset", "dev", "inode", "path", "vmflags"]
        if deep.select(cols).equals(plain.select(cols)):
            break
        time.sleep(0.05)  # the program changed its mappings between the reads
    assert deep.select(cols).to_dicts() == plain.select(cols).to_dicts()
    # file offsets are the real vm_pgoff; anonymous pages mean an anon_vma
    files = deep.filter(pl.col("inode") != 0)
    assert (files["pgoff"] * PG == files["offset"]).all()
    faulted = plain.filter(pl.col("anonymous_kb") > 0)["start"].to_list()
    has_anon = dict(zip(deep["start"].to_list(), deep["anon_vma_id"].to_list(), strict=True))
    assert all(has_anon[s] is not None for s in faulted)


def test_names_without_proc_text(collector: Any, states: States) -> None:
    """Without smaps the layout and names come from the iterator's records and one PROCMAP_QUERY
    per named VMA (file, [vdso]/[vvar], [heap], [stack]), not from /proc's text: they equal the
    text, for the built workload, a python3 and a process of many anonymous VMAs with a heap; a
    process of many VMAs that are mostly files is read through the text (one read beats an ioctl
    per VMA)."""
    from collectors.procmaps import has_procmap_query, read_snapshot

    need(collector.offsets.has_names and has_procmap_query(),
         "needs PROCMAP_QUERY (6.11) and mm_lock_seq (CONFIG_PER_VMA_LOCK)")
    many = subprocess.Popen([sys.executable, "-c",
                             "import mmap, ctypes, sys\n"
                             "libc = ctypes.CDLL(None)\n"
                             "libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]\n"
                             "heap = [bytearray(100) for _ in range(10000)]\n"
                             "m = mmap.mmap(-1, 600 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
                             "base = ctypes.addressof(ctypes.c_char.from_buffer(m))\n"
                             "for i in range(0, 600, 2): libc.mprotect(base + i * 4096, 4096, 1)\n"
                             "print('ready', flush=True); sys.stdin.read()\n"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    py = subprocess.Popen([sys.executable, "-c", "import json, sqlite3, decimal, sys; print('ready', flush=True); "
                           "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for p in (many, py):
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        cols = ["start", "end", "perms", "offset", "dev", "inode", "path"]
        for pid in (states.parent, states.child, many.pid, py.pid):
            named = collector._snapshot_named(pid)
            assert named is not None, pid
            text = read_snapshot(pid, smaps=False, method="text").frame.filter(pl.col("start") < 1 << 47)
            assert named.frame.select(cols).to_dicts() == text.select(cols).to_dicts()
            paths = set(named.frame["path"].to_list())
            assert {"[vdso]", "[stack]"} <= paths and (pid != many.pid or "[heap]" in paths)
            assert named.frame.height > (300 if pid == many.pid else 30)
            _agree(collector, pid, read_snapshot)  # the snapshot() path: equal to smaps, vmflags too
        # a process of many VMAs, most of them files: one text read beats an ioctl per VMA
        this = collector.read_records(os.getpid())
        if int((this["file"] != 0).sum()) > max(64, this.size // 3):
            assert collector._snapshot_named(os.getpid()) is None
    finally:
        for p in (many, py):
            p.communicate(timeout=30)  # closes stdin (it then ends) and its stdout


def test_deep_and_plain_agree_on_real_programs(collector: Any, tmp_path: Path) -> None:
    from collectors.procmaps import read_snapshot

    py = subprocess.Popen([sys.executable, "-c", "import json, sqlite3, decimal, sys; sys.stdin.read()"],
                          stdin=subprocess.PIPE)
    gcc = subprocess.Popen(["gcc", "-x", "c", "-c", "-", "-o", str(tmp_path / "x.o")], stdin=subprocess.PIPE)
    try:
        time.sleep(0.5)
        cc1 = _descendant(gcc.pid, "cc1")
        for pid in (py.pid, cc1, os.getpid()):
            _agree(collector, pid, read_snapshot)
    finally:
        for p in (py, gcc):
            assert p.stdin is not None
            p.stdin.close()
            p.wait(timeout=30)


def _descendant(pid: int, comm: str) -> int:
    for _ in range(50):
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        st = f.read()
                except OSError:
                    continue
                if f"({comm})" in st and int(st[st.rfind(")") + 2:].split()[1]) == pid:
                    return int(d)
        time.sleep(0.05)
    raise AssertionError(f"no {comm} child of {pid}")


def test_model_seeded_exactly(collector: Any, states: States) -> None:
    """A model built from the deep snapshot predicts the next mprotects; a model built from
    /proc guesses a shared anon_vma for the distinct pair and predicts a merge that never happens."""
    from collectors.procmaps import read_snapshot
    from replay import AddressSpace
    from replay.live import live_profile

    deep = collector.snapshot(states.parent).frame
    plain = read_snapshot(states.parent, smaps=True).frame
    exact = AddressSpace.from_deep_snapshot(deep, live_profile())
    guess = AddressSpace.from_snapshot(plain, live_profile())
    assert not any(v.faulted is not True and v.faulted is not False for v in exact.vmas())  # no UNKNOWN
    ops = [(2, 2, 3), (8, 2, 1), (16, 1, 1), (16, 1, 3)]
    for page, n, prot in ops:
        assert states.mprotect(page, n, prot) == 0
        for mm in (exact, guess):
            mm.mprotect(BASE + page * PG, n * PG, prot)
    after = collector.snapshot(states.parent).frame

    def layout(vmas: Any) -> list[tuple[int, int, str]]:
        return [(v.start, v.end, v.perms) for v in vmas if BASE <= v.start < BASE + (1 << 20)]

    live = [(r["start"], r["end"], r["perms"]) for r in after.iter_rows(named=True)
            if BASE <= r["start"] < BASE + (1 << 20)]
    assert layout(exact.vmas()) == live
    assert layout(guess.vmas()) != live  # the /proc model merged [8,10): it guessed one anon_vma
    # anon_vma identity classes and fork-child status agree VMA by VMA
    live_anon = {r["start"]: (r["anon_vma_id"], r["fork_child"]) for r in after.iter_rows(named=True)}
    classes_k: dict[object, set[int]] = {}
    classes_m: dict[object, set[int]] = {}
    for v in exact.vmas():
        if BASE <= v.start < BASE + (1 << 20):
            aid, fork = live_anon[v.start]
            assert fork == (v.forked is True)
            if aid is not None:
                classes_k.setdefault(aid, set()).add(v.start)
            if v.anon_id is not None:
                classes_m.setdefault(v.anon_id, set()).add(v.start)
    assert sorted(map(sorted, classes_k.values())) == sorted(map(sorted, classes_m.values()))
    assert states.mprotect(2, 2, 1) == 0 and states.mprotect(8, 2, 3) == 0  # as before, for later tests


def test_record_attach_seeds_replay_exactly(collector: Any, states: States, tmp_path: Path) -> None:
    """record -p of a process that has run a while (faulted and unfaulted neighbours, a distinct
    anon_vma pair that /proc cannot tell from a shared one): the replay's model starts from the deep
    snapshot's exact state (no unknown anon_vma, the same anon_vma classes, avc and pgoff), and the
    calls made while recording replay without a divergence of any kind, hidden state included. The
    same trace with the deep columns taken away seeds from /proc and gets the pair wrong."""
    import dataclasses

    from replay.engine import _plan, _Replayer, default_profiles, replay_trace
    from vmatrace.base.trace import read_trace

    out = tmp_path / "attach.vmat"
    with attached(out, states.parent, "--deep"):
        for page, n, prot in ((2, 2, 3), (8, 2, 1), (16, 1, 1), (16, 1, 3), (2, 2, 1), (8, 2, 3)):
            assert states.mprotect(page, n, prot) == 0
    t = read_trace(out)
    specs, pair, notes = default_profiles(t.meta)
    # the seed, as the engine builds it (white-box: the engine's own seeding path)
    plan = _plan(t)
    proc = plan.procs[states.parent]
    first = proc.snaps[0]
    assert first.reason == "start" and plan.frames[first.sid].deep
    seed = _Replayer(plan, specs[0])._seed(first)
    frame = t.snapshot(first.sid).filter(pl.col("start") < 1 << 47)
    assert [(v.start, v.end, v.pgoff) for v in seed.vmas()] == frame.select("start", "end", "pgoff").rows()
    assert all(v.faulted is True or v.faulted is False for v in seed.vmas())  # nothing unknown

    def classes(pairs: list[tuple[int, int | None]]) -> list[list[int]]:
        by: dict[int, list[int]] = {}
        for start, ident in pairs:
            if ident is not None:
                by.setdefault(ident, []).append(start)
        return sorted(by.values())

    assert classes([(v.start, v.anon_id) for v in seed.vmas()]) == classes(frame.select("start", "anon_vma_id").rows())
    assert [v.avc for v in seed.vmas()] == frame["avc"].to_list()
    assert [v.forked is True for v in seed.vmas()] == frame["fork_child"].to_list()
    w = window(frame)
    assert w[8]["anon_vma_id"] != w[9]["anon_vma_id"] and w[16]["anon_vma_id"] is None
    # the whole replay: the calls made while recording, compared at the end with the deep snapshot
    r = replay_trace(t, specs, fix_pair=pair, notes=notes, jobs=1)
    run = r.profiles[0].process(states.parent)
    assert run is not None and run.seeded_by.startswith(f"snapshot {first.sid}")
    assert run.events_applied >= 6 and run.deep_snapshots_compared >= 1
    assert run.divergences == [] and run.mismatches == []
    # without the deep columns: seeded from /proc, the distinct pair is guessed to share an anon_vma
    deep_cols = ["vm_flags", "pgoff", "file_id", "anon_vma_id", "avc", "fork_child", "close_hook", "anon_name",
                 "mempolicy", "uffd"]
    plain = dataclasses.replace(t, snapshots=t.snapshots.with_columns(pl.lit(None).cast(t.snapshots.schema[c]).alias(c)
                                                                     for c in deep_cols))
    rp = replay_trace(plain, specs, fix_pair=pair, notes=notes, jobs=1)
    guessed = rp.profiles[0].process(states.parent)
    assert guessed is not None and guessed.deep_snapshots_compared == 0
    assert any(d.start < BASE + 10 * PG and d.end > BASE + 8 * PG for d in guessed.divergences), guessed.divergences


def test_wrong_offsets_are_refused_and_plain_snapshots_still_work(collector: Any, states: States) -> None:
    from collectors.deep import DeepCollector, DeepOffsetsError
    from collectors.procmaps import read_snapshot

    off = collector.offsets
    for bad in ({"vm_flags": off.vma["vm_flags"] + 8}, {"vm_start": off.vma["vm_end"]},
                {"anon_vma": off.vma["vm_ops"]}, {"vm_pgoff": off.vma["vm_pgoff"] + 8}):
        with pytest.raises(DeepOffsetsError) as e:
            DeepCollector(offsets=off.with_changes(**bad))
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith("deep snapshots refused:") and "plain snapshots still work" in msg
    snap = read_snapshot(states.parent, smaps=True)
    assert snap.frame.height > 10 and not snap.deep


def test_cli_snapshot_deep(collector: Any, states: States) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "vmatrace", "snapshot", str(states.child), "--deep", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["method"] == "bpf_iter"
    causes = d["invisible_fragmentation"]["causes"]
    for c in ("fork child", "different open file", "anon pgoff discontinuity", "close hook"):
        assert causes.get(c, 0) >= 1, (c, causes)
    assert "vm_flags" in d["vmas"][0] and "anon_vma_id" in d["vmas"][0]
    text = subprocess.run([sys.executable, "-m", "vmatrace", "snapshot", str(states.parent), "--deep"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "distinct anon_vmas" in text.stdout and "proven causes" in text.stdout
    bad = subprocess.run([sys.executable, "-m", "vmatrace", "snapshot", str(states.parent), "--deep", "--no-smaps"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_record_deep_snapshots(collector: Any, states: States, tmp_path: Path) -> None:
    """record --deep: deep snapshots at start, every --interval and at the end of -p PIDs, and at
    every exit of a traced command; the trace reads back with the deep columns and seeds the
    model exactly."""
    from replay import AddressSpace
    from replay.live import live_profile
    from replay.snapshot import is_deep
    from vmatrace.base.trace import read_trace

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "p.vmat"
    p = subprocess.run([sys.executable, "-m", "vmatrace", "record", "-q", "--deep", "-o", str(out),
                        "-p", str(states.parent), "-p", str(states.child), "-d", "2.5", "--interval", "0.5"],
                       capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    t = read_trace(out)
    assert not t.warnings and t.meta["record_options"]["deep"] is True
    idx = t.snapshot_index
    assert set(idx["method"].to_list()) == {"bpf_iter"}
    assert {"start", "periodic", "end"} <= set(idx["reason"].to_list())
    assert t.deep_vmas is not None and t.deep_vmas.height == int(idx["vma_count"].sum())
    for r in idx.iter_rows(named=True):
        frame = t.snapshot(r["snapshot_id"])
        assert is_deep(frame)
        w = window(frame)
        if r["pid"] == states.child:
            assert w[0]["fork_child"] and not w[88]["fork_child"]
        else:
            assert w[0]["anon_vma_id"] == w[2]["anon_vma_id"] and w[8]["anon_vma_id"] != w[9]["anon_vma_id"]
            mm = AddressSpace.from_snapshot(frame, live_profile())
            got = [(v.start, v.end, v.perms, v.pgoff) for v in mm.vmas()]
            want = [(x["start"], x["end"], x["perms"], x["pgoff"]) for x in frame.iter_rows(named=True)
                    if x["start"] < 1 << 47]
            assert got == want
    # a traced command: deep snapshots at its exec and at each exit, fork child included
    exe = build_c(WORKLOAD, tmp_path / "deep_states")
    out2 = tmp_path / "c.vmat"
    p = subprocess.run([sys.executable, "-m", "vmatrace", "record", "-q", "--deep", "-o", str(out2), "--", str(exe)],
                       capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    t = read_trace(out2)
    exits = t.snapshot_index.filter(pl.col("reason") == "exit")
    assert exits.height == 2 and set(exits["method"].to_list()) == {"bpf_iter"}
    forked = [window(t.snapshot(sid))[0]["fork_child"] for sid in exits["snapshot_id"].to_list()]
    assert sorted(forked) == [False, True]  # the parent's own anon_vma, the child's inherited one


def test_record_attach_names_open_files_once(collector: Any, tmp_path: Path) -> None:
    """record -p --deep of a process that mapped a file before the attach and maps more of it
    after: the deep snapshot and the mmap events number open files in one way (meta
    file_ids_shared), so the replay knows the later mapping of the same open file is the one the
    seed holds, and merges it as the kernel does; a mapping of another open file of the same
    inode stays apart. Without the shared numbering the model kept the first two VMAs apart."""
    from replay.engine import default_profiles, replay_trace
    from vmatrace.base.trace import read_trace

    exe = build_c(ROOT / "tests" / "workloads" / "open_files_attach.c", tmp_path / "open_files_attach")
    proc = subprocess.Popen([str(exe), str(tmp_path / "data")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        head = proc.stdout.readline().split()
        assert head[0] == "window", head
        win = int(head[1], 16)
        out = tmp_path / "files.vmat"
        with attached(out, proc.pid, "--deep"):
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "done"
    finally:
        proc.communicate(timeout=10)
    t = read_trace(out)
    assert t.meta["file_ids_shared"] is True
    mm = t.events.filter((pl.col("kind") == "mmap") & (pl.col("ret") >= win) & (pl.col("ret") < win + 32 * PG))
    a_id, b_id = mm.sort("ret")["file_id"].to_list()
    seed = t.snapshot(int(t.snapshot_index["snapshot_id"][0]))
    assert seed.filter(pl.col("start") == win)["file_id"].to_list() == [a_id] and b_id != a_id
    end = t.snapshot(int(t.snapshot_index["snapshot_id"][-1]))
    got = end.filter((pl.col("start") >= win) & (pl.col("start") < win + 32 * PG)).select("start", "end").rows()
    assert got[:2] == [(win, win + 16 * PG), (win + 16 * PG, win + 24 * PG)]  # the kernel: A merged, B apart
    specs, pair, notes = default_profiles(t.meta)
    r = replay_trace(t, specs, fix_pair=pair, notes=notes, jobs=1)
    run = r.profiles[0].process(proc.pid)
    assert run is not None and run.deep_snapshots_compared >= 1
    assert run.divergences == [] and run.mismatches == []


BUSY = ROOT / "tests" / "workloads" / "busy_threads.py"


def test_record_deep_of_a_process_too_busy_for_deep_snapshots(collector: Any, tmp_path: Path) -> None:
    """record -p --deep --interval of a process whose threads map and unmap without pause. The
    start and end snapshots are deep: the recorder stops every thread while it reads them. A
    periodic snapshot is read while the process runs, and the iterator's walk and the /proc read
    may never agree: that snapshot is then a plain one, read once, named in the warnings, never
    missing. Before, the start snapshot failed alike and the trace had none: replay refused it."""
    from replay.engine import default_profiles, replay_trace
    from vmatrace.base.trace import read_trace

    proc = subprocess.Popen([sys.executable, str(BUSY)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        out = tmp_path / "busy.vmat"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        r = subprocess.run([sys.executable, "-m", "vmatrace", "record", "-q", "--deep", "-o", str(out),
                            "-p", str(proc.pid), "-d", "1.5", "--interval", "0.3", "-b", "1024"],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        reap(proc)
    t = read_trace(out)
    snaps = t.snapshot_index.filter(pl.col("pid") == proc.pid).sort("snapshot_id")
    reasons, methods = snaps["reason"].to_list(), snaps["method"].to_list()
    assert reasons[:1] == ["start"] and reasons[-1:] == ["end"] and "periodic" in reasons, reasons
    assert methods[0] == methods[-1] == "bpf_iter", methods  # read with every thread stopped
    warnings = t.meta.get("record_warnings") or []
    fallback = [w for w in warnings if "a plain snapshot instead" in w]
    assert len(fallback) == methods.count("text") and len(warnings) == len(fallback), (warnings, methods)
    specs, pair, notes = default_profiles(t.meta)
    res = replay_trace(t, specs, fix_pair=pair, notes=notes, jobs=1)
    run = res.profiles[0].process(proc.pid)
    assert run is not None and run.seeded_by.startswith("snapshot")
