"""The replay engine end to end: real recordings of built workloads, replayed through the model.

Live (bcc, root): the bundled workload is recorded on this kernel and replayed under the
recording kernel's profile (zero unexplained divergences, a fork child whose inherited faulted
VMA refuses a merge) and under the counterfactual without the 6.16 anon-merge fix (the fix
figures equal the count the workload was built to produce). Planted divergences (an event
removed, a snapshot altered, lost events) are found and explained. Bad input gets one line and
the documented exit code.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from replay.engine import ProfileSpec, apply_what_if, default_profiles, replay_trace
from replay.profiles import get_profile
from replay.results import CAUSE_LOST, EXPLAINED, ReplayResult, to_json
from tests.conftest import ROOT
from tests.record_common import attached, record
from vmatrace.base.errors import UsageError
from vmatrace.base.trace import Trace, read_trace

N_CASES = 4


def _vmatrace(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmatrace", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def workload_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay") / "wl.vmat"
    record(out, "-f", "--", sys.executable, "-m", "vmatrace.workloads.fragment",
           "--anon-merge", str(N_CASES), "--fork", "--hold", "0.3")
    return out


def _replay(trace: Trace) -> ReplayResult:
    specs, pair, notes = default_profiles(trace.meta)
    return replay_trace(trace, specs, fix_pair=pair, notes=notes, jobs=1)


def _workload_pids(result: ReplayResult) -> tuple[int, int]:
    """(the workload process, its fork child): the process that forked a child with the fork region."""
    judged = result.profiles[0]
    child = next(p for p in judged.processes if p.seeded_by.startswith("fork of"))
    parent = int(child.seeded_by.split()[2])
    return parent, child.pid


@pytest.mark.live
@pytest.mark.bcc
def test_recording_profile_explains_everything(workload_trace: Path) -> None:
    r = _replay(read_trace(workload_trace))
    judged = r.profiles[0]
    assert "recording kernel" in judged.label
    unexplained = [d for p in judged.processes for d in p.divergences if d.cause not in EXPLAINED]
    assert unexplained == [], unexplained
    assert sum(len(p.mismatches) for p in judged.processes) == 0
    assert r.snapshots_compared >= 3
    assert r.main_pid is not None
    main = r.real_process(r.main_pid)
    assert main is not None and judged.process(r.main_pid).final_vma_count == main.final_vma_count


@pytest.mark.live
@pytest.mark.bcc
def test_fix_figures_equal_the_built_cases(workload_trace: Path) -> None:
    r = _replay(read_trace(workload_trace))
    parent, child = _workload_pids(r)
    fix = {f.pid: f for f in r.fix}
    # the built cases: their last call, mprotect(w, 2 pages, PROT_READ|PROT_WRITE), is the event the
    # fix merges at, once per case (the interpreter's own calls may add a merge of their own)
    ev = read_trace(workload_trace).events
    built = set(ev.filter((pl.col("kind") == "mprotect") & (pl.col("a1") == 2 * 4096) & (pl.col("a2") == 3)
                          & (pl.col("pid") == parent))["seq"].to_list())
    assert len(built) == N_CASES
    assert sorted(e.seq for e in r.fix_events if e.seq in built and e.saved == 1) == sorted(built)
    other = sum(e.saved for e in r.fix_events if e.pid == parent and e.seq not in built)
    assert fix[parent].saved_final == N_CASES + other
    assert fix[parent].events_merged_by_fix == N_CASES + len([e for e in r.fix_events if e.pid == parent
                                                              and e.seq not in built])
    # the same counts under the real pre-6.16 profile
    p615 = r.profile("6.15")
    assert p615 is not None
    judged = r.profiles[0]
    old, new = p615.process(parent).final_vma_count, judged.process(parent).final_vma_count
    assert old is not None and new is not None and old - new == fix[parent].saved_final
    # the fork child: seeded from its parent's model; its inherited faulted VMA refused the
    # child's new neighbour, which the fix does not change
    c = judged.process(child)
    assert c.seeded_by.startswith(f"fork of {parent}")
    assert c.divergences == [] and c.fork_child_boundaries >= 1
    assert fix[child].fork_child_boundaries >= 1


@pytest.mark.live
@pytest.mark.bcc
def test_json_contract(workload_trace: Path) -> None:
    p = _vmatrace("replay", str(workload_trace), "--json")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["format"] == 1
    for key in ("events", "lost_events", "snapshots_compared", "resyncs", "real", "profiles",
                "anon_merge_fix", "processes"):
        assert key in j
    assert set(j["real"]) >= {"final_vma_count", "peak_vma_count"}
    for pr in j["profiles"]:
        assert set(pr) >= {"kernel", "final_vma_count", "peak_vma_count", "divergences"}
        assert set(pr["divergences"]) == {"fragmented", "merged", "other", "anon_vma", "fork_child"}
        # no deep snapshot: the hidden state is never compared, and the summary does not show it
        assert pr["deep_snapshots_compared"] == 0
        assert pr["divergences"]["anon_vma"] == pr["divergences"]["fork_child"] == 0
    assert j["deep_snapshots_compared"] == 0
    assert "anon_vma" not in _vmatrace("replay", str(workload_trace)).stdout
    assert set(j["anon_merge_fix"]) >= {"without_fix", "with_fix", "saved_final", "saved_peak",
                                        "events_merged_by_fix"}
    assert j["anon_merge_fix"]["saved_final"] is not None
    for proc in j["processes"]:
        assert set(proc) >= {"pid", "comm", "profiles", "anon_merge_fix"}
    assert j["events"] == read_trace(workload_trace).events.height


# -- planted divergences ------------------------------------------------------------------------


def _without(trace: Trace, seq: int) -> Trace:
    return dataclasses.replace(trace, events=trace.events.filter(pl.col("seq") != seq))


@pytest.mark.live
@pytest.mark.bcc
def test_a_removed_event_is_found(workload_trace: Path) -> None:
    t = read_trace(workload_trace)
    r0 = _replay(t)
    parent, _ = _workload_pids(r0)
    # the last mprotect of the first built case: both pages read-write (the merge the fix makes)
    fix_seq = min(e.seq for e in r0.fix_events if e.pid == parent)
    r = _replay(_without(t, fix_seq))
    divs = [d for d in r.profiles[0].process(parent).divergences]
    assert divs, "removing an mprotect must leave the model short of the kernel's layout"
    ts_row = t.events.filter(pl.col("seq") == fix_seq).row(0, named=True)
    lo, hi = ts_row["a0"], ts_row["a0"] + ts_row["a1"]
    here = [d for d in divs if d.start < hi and d.end > lo]
    # the model kept [r--][r--] where the kernel has one rw- VMA: the kernel "merged"
    assert [d.kind for d in here] == ["merged"], divs
    assert here[0].events and all(s < fix_seq for s in here[0].events)  # the case's earlier calls
    assert r.profiles[0].process(parent).resyncs >= 1


@pytest.mark.live
@pytest.mark.bcc
def test_an_altered_snapshot_is_found(workload_trace: Path) -> None:
    t = read_trace(workload_trace)
    r0 = _replay(t)
    parent, _ = _workload_pids(r0)
    exit_sid = [s for s in r0.real_process(parent).snapshots if s[1] == "exit"][-1][0]
    snaps = t.snapshots
    rows = snaps.filter((pl.col("snapshot_id") == exit_sid) & (pl.col("end") - pl.col("start") >= 8 * 4096)
                        & pl.col("path").is_null())
    victim = rows.row(0, named=True)
    mid = victim["start"] + 4 * 4096
    left = {**victim, "end": mid}
    right = {**victim, "start": mid}
    keep = snaps.filter(~((pl.col("snapshot_id") == exit_sid) & (pl.col("start") == victim["start"])))
    altered = pl.concat([keep, pl.DataFrame([left, right], schema=snaps.schema)])
    index = t.snapshot_index.with_columns(
        pl.when(pl.col("snapshot_id") == exit_sid).then(pl.col("vma_count") + 1).otherwise(pl.col("vma_count"))
        .cast(pl.UInt32).alias("vma_count"))
    r = _replay(dataclasses.replace(t, snapshots=altered, snapshot_index=index))
    divs = [d for d in r.profiles[0].process(parent).divergences if d.snapshot_id == exit_sid]
    assert [d.kind for d in divs] == ["fragmented"]
    assert divs[0].start <= mid < divs[0].end and f"{mid:#x}" in divs[0].detail


@pytest.mark.live
@pytest.mark.bcc
def test_an_event_made_while_a_snapshot_was_read_explains_its_divergence(workload_trace: Path) -> None:
    """A snapshot stands after the last event made before its read began; an event made while
    it was read (a running process read at attach, --interval or the end of -d) follows it, and
    the snapshot may show its effect. The workload's first fix mprotect is planted inside the
    next snapshot's read: the divergence it leaves is blamed on events during the read and names
    that call (it was blamed on the profile before, the call not looked at)."""
    from replay.results import CAUSE_RACED

    t = read_trace(workload_trace)
    r0 = _replay(t)
    parent, _ = _workload_pids(r0)
    fix_seq = min(e.seq for e in r0.fix_events if e.pid == parent)
    ev = t.events.filter(pl.col("pid") == parent).sort("seq")
    ts_fix = ev.filter(pl.col("seq") == fix_seq)["ts_ns"].item()
    idx = t.snapshot_index.filter((pl.col("pid") == parent) & (pl.col("t_start_ns") > ts_fix)).sort("t_start_ns")
    snap = idx.row(0, named=True)
    # the fix call and every later one of this process before that snapshot: made during its read
    later = ev.filter((pl.col("seq") >= fix_seq) & (pl.col("ts_ns") <= snap["t_start_ns"]))["seq"]
    events = t.events.with_columns(
        pl.when(pl.col("seq").is_in(later.implode())).then(snap["t_start_ns"] + 1).otherwise(pl.col("ts_ns"))
        .alias("ts_ns"))
    index = t.snapshot_index.with_columns(
        pl.when(pl.col("snapshot_id") == snap["snapshot_id"]).then(snap["t_start_ns"] + 2).otherwise(pl.col("t_end_ns"))
        .alias("t_end_ns"))
    r = _replay(dataclasses.replace(t, events=events, snapshot_index=index))
    divs = [d for d in r.profiles[0].process(parent).divergences if d.snapshot_id == snap["snapshot_id"]]
    assert divs and all(d.cause == CAUSE_RACED for d in divs), divs
    assert any(fix_seq in d.events for d in divs), divs


@pytest.mark.live
@pytest.mark.bcc
def test_a_busy_process_attached_and_left_replays_without_divergence(tmp_path: Path) -> None:
    """record -p of a process whose four threads map and unmap without pause, ended by -d while
    it runs on: the recorder stops every thread for the start and the end snapshot, so both are
    states the event stream reaches, and the replay has no divergence. Before, the end snapshot
    was read while the threads ran on, untraced, and a few VMAs differed every time."""
    from tests.conftest import reap

    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "workloads" / "busy_threads.py")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        out = tmp_path / "busy.vmat"
        rec = _vmatrace("record", "-q", "-o", str(out), "-p", str(proc.pid), "-d", "1.5", "-b", "1024")
        assert rec.returncode == 0, rec.stderr
    finally:
        reap(proc)
    t = read_trace(out)
    assert t.snapshot_index["reason"].to_list() == ["start", "end"]
    assert not t.meta.get("record_warnings"), t.meta.get("record_warnings")
    r = _replay(t)
    run = r.profiles[0].process(proc.pid)
    assert run is not None and run.events_applied > 1000
    assert run.divergences == [] and run.mismatches == []


BRK_C = r"""
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
    sbrk(1 << 20);  /* a heap of 1 MiB before the recorder attaches */
    printf("ready\n");
    fflush(stdout);
    char line[8];
    if (!fgets(line, sizeof line, stdin)) return 1;
    for (int i = 0; i < 3; i++) sbrk(64 << 10);
    sbrk(-(32 << 10));
    mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);  /* no file */
    printf("done\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin));
    return 0;
}
"""


@pytest.mark.live
@pytest.mark.bcc
def test_attached_process_with_a_grown_heap_replays_its_brk_calls(tmp_path: Path) -> None:
    """record -p of a process whose heap grew before the attach: /proc gives its start_brk, not
    its brk, so the model takes the break from the end of [heap]; its later brk calls then return
    what the kernel's did (they failed in the model before: it put the break at start_brk); and with
    no file mapped while recorded, replay does not warn that mmap events do not name their files."""
    from tests.conftest import build_c, reap

    exe = build_c(BRK_C, tmp_path / "brk")
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        out = tmp_path / "brk.vmat"
        with attached(out, proc.pid):
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "done"
    finally:
        reap(proc)
    t = read_trace(out)
    assert t.events.filter((pl.col("pid") == proc.pid) & (pl.col("kind") == "brk")).height >= 4
    assert t.events.filter((pl.col("pid") == proc.pid) & (pl.col("kind") == "mmap")).height >= 1
    r = _replay(t)
    run = r.profiles[0].process(proc.pid)
    assert run is not None and run.mismatches == [] and run.divergences == []
    # it mapped memory but no file while recorded: nothing to say about naming open files
    assert not any("do not name their open files" in w for w in r.warnings), r.warnings


@pytest.mark.live
@pytest.mark.bcc
def test_lost_events_explain_divergences(workload_trace: Path) -> None:
    t = read_trace(workload_trace)
    r0 = _replay(t)
    parent, _ = _workload_pids(r0)
    fix_seq = min(e.seq for e in r0.fix_events if e.pid == parent)
    ts = t.events.filter(pl.col("seq") == fix_seq)["ts_ns"].item()
    losses = pl.DataFrame([{"count": 1, "t_from_ns": ts - 1, "t_to_ns": ts + 1}], schema=t.losses.schema)
    r = _replay(dataclasses.replace(_without(t, fix_seq), losses=losses))
    divs = r.profiles[0].process(parent).divergences
    assert divs and all(d.cause == CAUSE_LOST for d in divs)
    assert r.lost_events == 1 and any("lost" in w for w in r.warnings)
    assert to_json(r)["lost_events"] == 1


# -- deep snapshots: the hidden state compared ---------------------------------------------------


@pytest.fixture(scope="module")
def deep_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay") / "deep.vmat"
    record(out, "--deep", "-f", "--", sys.executable, "-m", "vmatrace.workloads.fragment",
           "--anon-merge", str(N_CASES), "--fork", "--hold", "0.3")
    return out


@pytest.mark.live
@pytest.mark.bcc
def test_deep_snapshots_compare_anon_vma_sharing_and_fork_children(deep_trace: Path) -> None:
    """Recorded with --deep: every snapshot after a seed is deep, so anon_vma sharing and fork-child
    status are compared there too; under the recording kernel's profile nothing differs (the fork
    child's inherited VMAs are fork children in the model as in the kernel)."""
    t = read_trace(deep_trace)
    assert set(t.snapshot_index["method"].to_list()) == {"bpf_iter"}
    r = _replay(t)
    _, child = _workload_pids(r)
    judged = r.profiles[0]
    assert r.deep_snapshots_compared >= 3  # the parent's exit, the child's start and exit
    assert judged.process(child).deep_snapshots_compared == 2
    assert [d for p in judged.processes for d in p.divergences] == []
    assert sum(len(p.mismatches) for p in judged.processes) == 0
    j = to_json(r)
    assert j["deep_snapshots_compared"] == r.deep_snapshots_compared
    for pr in j["profiles"]:
        assert set(pr["divergences"]) == {"fragmented", "merged", "other", "anon_vma", "fork_child"}
    assert j["profiles"][0]["divergences"]["anon_vma"] == j["profiles"][0]["divergences"]["fork_child"] == 0
    # the child really has fork children to compare
    exit_child = [s for s in r.real_process(child).snapshots if s[1] == "exit"][-1][0]
    assert t.snapshot(exit_child)["fork_child"].sum() >= 5


@pytest.mark.live
@pytest.mark.bcc
def test_deep_replay_of_a_real_program_has_no_hidden_divergence(tmp_path: Path) -> None:
    """python3 recorded with --deep and periodic snapshots: its anon_vma sharing and fork-child
    status at every deep snapshot are the model's (kernel-mode write faults included: reading a
    file into a fresh buffer faults in the kernel, and gives the VMA its anon_vma)."""
    out = tmp_path / "py.vmat"
    record(out, "--deep", "-f", "--interval", "0.2", "--", "/usr/bin/python3", "-c",
           "import mmap, os, json, decimal, sqlite3, time\n"
           "m = mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
           "fd = os.open('/usr/bin/python3', os.O_RDONLY)\n"
           "os.readv(fd, [m])\n"
           "time.sleep(0.5)\n"
           "os._exit(0)\n")
    t = read_trace(out)
    r = _replay(t)
    judged = r.profiles[0]
    assert r.deep_snapshots_compared >= 1  # the exit, and the periodic ones the machine had time for
    assert [d for p in judged.processes for d in p.divergences] == []
    assert sum(len(p.mismatches) for p in judged.processes) == 0
    # the read() into the buffer was seen as write faults taken in kernel mode (error code without U)
    faults = t.events.filter((pl.col("kind") == "fault") & (pl.col("a2") & 4 == 0))
    assert faults.height >= 1


def _plant(t: Trace, sid: int, start: int, **values: object) -> Trace:
    """``t`` with the row of VMA ``start`` in snapshot ``sid`` changed (the deep columns)."""
    snaps = t.snapshots
    hit = (pl.col("snapshot_id") == sid) & (pl.col("start") == start)
    assert snaps.filter(hit).height == 1
    snaps = snaps.with_columns(pl.when(hit).then(pl.lit(v).cast(snaps.schema[k])).otherwise(pl.col(k)).alias(k)
                               for k, v in values.items())
    return dataclasses.replace(t, snapshots=snaps)


@pytest.mark.live
@pytest.mark.bcc
def test_a_planted_anon_vma_change_is_found_where_it_was_planted(deep_trace: Path) -> None:
    t = read_trace(deep_trace)
    r0 = _replay(t)
    parent, _ = _workload_pids(r0)
    sid = [s for s in r0.real_process(parent).snapshots if s[1] == "exit"][-1][0]
    frame = t.snapshot(sid).filter(pl.col("start") < 1 << 47)
    new_id = int(frame["anon_vma_id"].fill_null(0).to_numpy().max()) + 1000
    # 1. a VMA leaves an anon_vma it shared (a built case's split pieces share one): reported at
    # that VMA alone, naming the VMA(s) it shared it with (with two, the first in address order is
    # reported: either could be the wrong one)
    cls = frame.filter(pl.col("anon_vma_id").is_not_null()).group_by("anon_vma_id").len().filter(pl.col("len") >= 2)
    assert cls.height, "the workload has an anon_vma shared by two VMAs"
    members = frame.filter(pl.col("anon_vma_id") == cls["anon_vma_id"][0])["start"].to_list()
    victim = members[0]
    divs = _replay(_plant(t, sid, victim, anon_vma_id=new_id)).profiles[0].process(parent).divergences
    assert [(d.kind, d.start, d.snapshot_id) for d in divs] == [("anon_vma", victim, sid)], divs
    assert "shared with" in divs[0].detail and f"{members[1]:#x}" in divs[0].detail
    # 2. an unfaulted private VMA given an anon_vma
    bare = frame.filter(pl.col("anon_vma_id").is_null() & pl.col("perms").str.ends_with("p")
                        & pl.col("perms").str.contains("w"))["start"].to_list()
    assert bare
    divs = _replay(_plant(t, sid, bare[0], anon_vma_id=new_id)).profiles[0].process(parent).divergences
    assert [(d.kind, d.start) for d in divs] == [("anon_vma", bare[0])], divs
    assert "has none" in divs[0].detail and divs[0].cause in ("no traced event touched it", "a behaviour the profile lacks")
    # 3. a faulted VMA of the parent made a fork child
    faulted = frame.filter(pl.col("anon_vma_id").is_not_null())["start"].to_list()[0]
    divs = _replay(_plant(t, sid, faulted, avc=2, fork_child=True)).profiles[0].process(parent).divergences
    assert [(d.kind, d.start) for d in divs] == [("fork_child", faulted)], divs
    assert "2 entries (a fork child)" in divs[0].detail
    # the summary, --json and the HTML report carry the kinds
    from vmatrace.replay_report import _shown_kinds

    r = _replay(_plant(t, sid, faulted, avc=2, fork_child=True))
    assert to_json(r)["profiles"][0]["divergences"]["fork_child"] == 1
    assert "fork_child" in _shown_kinds(r)


@pytest.mark.live
@pytest.mark.bcc
def test_a_resync_from_a_deep_snapshot_takes_its_exact_state(deep_trace: Path) -> None:
    """_carry_over after a resync at a deep snapshot: the old model's anon_vma identity, fork-child
    status and open file are never kept; the snapshot's are. Old models that differ from the
    snapshot in each of the three (made from the snapshot itself, then changed as a replay could
    have changed them) give way to it."""
    from replay import AddressSpace
    from replay.engine import _carry_over
    from replay.mm_types import AnonVma, OpenFile

    t = read_trace(deep_trace)
    r0 = _replay(t)
    _, child = _workload_pids(r0)
    sid = [s for s in r0.real_process(child).snapshots if s[1] == "exit"][-1][0]
    frame = t.snapshot(sid)
    profile = default_profiles(t.meta)[0][0].profile

    def hidden(mm: AddressSpace) -> list[tuple[int, int, bool, int | None]]:
        vs = mm.raw_vmas()
        first: dict[int, int] = {}
        return [(v.start, v.avc, v.forked is True,
                 None if v.anon_vma is None else first.setdefault(v.anon_vma.id, v.start)) for v in vs]

    def files(mm: AddressSpace) -> list[int | None]:
        first: dict[int, int] = {}
        return [None if v.file is None else first.setdefault(v.file.id, v.start) for v in mm.raw_vmas()]

    exact = AddressSpace.from_deep_snapshot(frame, profile)
    old = AddressSpace.from_deep_snapshot(frame, profile)
    vs = old.raw_vmas()
    forked = [v for v in vs if v.anon_vma is not None and v.avc > 1]
    plain = [v for v in vs if v.anon_vma is not None and v.avc == 1]
    with_file = [v for v in vs if v.file is not None]
    assert forked and plain and len(with_file) >= 2
    forked[0].avc = 1  # the old model lost a fork child
    plain[0].avc = 3  # ... and made one up
    shared = AnonVma()
    for v in (forked[-1], plain[-1]):  # ... and put two VMAs on one anon_vma
        v.anon_vma = shared
    with_file[0].file = OpenFile("/elsewhere")  # ... and took another open file
    assert hidden(old) != hidden(exact) and files(old) != files(exact)
    for exact_state in (False, True):
        fresh = AddressSpace.from_deep_snapshot(frame, profile)
        _carry_over(old, fresh, exact=exact_state)
        if exact_state:
            assert hidden(fresh) == hidden(exact) and files(fresh) == files(exact)
        else:  # what a resync from a plain snapshot keeps: the old model's state where bounds agree
            assert hidden(fresh) != hidden(exact)


# -- what-if ------------------------------------------------------------------------------------


def test_what_if_changes_one_field_and_refuses_unknown_ones() -> None:
    p = apply_what_if(get_profile("6.19"), ["anon_rule=old", "mseal_available=false"])
    assert p.anon_rule.value == "old" and p.mseal_available is False and "what-if" in p.name
    with pytest.raises(UsageError, match="not a profile field"):
        apply_what_if(get_profile("6.19"), ["no_such_field=1"])
    with pytest.raises(UsageError, match="expected true or false"):
        apply_what_if(get_profile("6.19"), ["mseal_available=maybe"])
    specs, pair, _ = default_profiles({"kernel_release": "6.12.3"})
    assert specs[0].judged and not any(s.judged for s in specs[1:])
    assert pair[1].startswith("6.12") and "with the fix" in pair[1]
    assert isinstance(specs[0], ProfileSpec)


# -- bad input ----------------------------------------------------------------------------------


def test_bad_input_is_one_line_with_its_exit_code(tmp_path: Path) -> None:
    from vmatrace.base.trace import TraceWriter

    empty = tmp_path / "nosnap.vmat"
    TraceWriter(empty, {"collector": "test"}).close()
    p = _vmatrace("replay", str(empty))
    assert p.returncode == 1 and p.stderr.startswith("vmatrace: error: ") and "no snapshot" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1

    newer = tmp_path / "newer.vmat"
    TraceWriter(newer, {"collector": "test"}).close()
    meta = json.loads((newer / "meta.json").read_text())
    meta["format_version"] = 99
    (newer / "meta.json").write_text(json.dumps(meta))
    p = _vmatrace("replay", str(newer))
    assert p.returncode == 1 and "version 99" in p.stderr and len(p.stderr.strip().splitlines()) == 1

    p = _vmatrace("replay", str(tmp_path / "missing.vmat"))
    assert p.returncode == 1 and "no such trace" in p.stderr

    for args, needle in ((["--kernel", "5.4"], "predates"), (["--kernel", "banana"], "not a kernel version"),
                         (["--what-if", "bogus=1"], "not a profile field")):
        p = _vmatrace("replay", str(empty), *args)
        assert p.returncode == 2, (args, p.stderr)
        assert needle in p.stderr and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.live
@pytest.mark.bcc
def test_a_corrupt_chunk_is_damage_not_a_crash(workload_trace: Path, tmp_path: Path) -> None:
    import shutil

    t = tmp_path / "corrupt.vmat"
    shutil.copytree(workload_trace, t)
    chunk = sorted((t / "events").glob("part-*.parquet"))[-1]
    chunk.write_bytes(b"not parquet at all" * 10)
    p = _vmatrace("replay", str(t), "--json")
    assert p.returncode == 3, p.stderr  # damaged input, read as far as it goes
    assert "damaged chunk" in p.stderr and "Traceback" not in p.stderr
    json.loads(p.stdout)


# -- the HTML report in a real browser ----------------------------------------------------------

_PROBE_HEAD = """<script>
window.__errs = [];
window.addEventListener('error', e => window.__errs.push(String(e.message)));
(function () { const oe = console.error; console.error = (...a) => { window.__errs.push(a.join(' ')); oe(...a); }; })();
</script>"""
_PROBE_TAIL = """<script>
document.body.setAttribute('data-probe', JSON.stringify({
  errors: window.__errs,
  resources: performance.getEntriesByType('resource').map(r => r.name),
  plots: document.querySelectorAll('.js-plotly-plot .main-svg').length,
  divs: document.querySelectorAll('.js-plotly-plot').length}));
</script>"""


def _chromium() -> str:
    import shutil

    from tests.conftest import need

    exe = shutil.which("chromium")
    need(exe is not None, "needs Debian's chromium (scripts/setup.sh installs it)")
    assert exe is not None
    return exe


@pytest.mark.live
@pytest.mark.bcc
def test_html_report_opens_offline_with_its_plots(workload_trace: Path, tmp_path: Path) -> None:
    exe = _chromium()
    out = tmp_path / "report.html"
    p = _vmatrace("report", str(workload_trace), "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert "anon-merge fix" in p.stdout and out.stat().st_mode & 0o077 == 0
    page = out.read_text()
    # self-contained: no tag loads anything from elsewhere (plotly's bundle holds links as strings)
    import re

    assert not re.search(r"<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)=[\"']?(?:https?:)?//", page)
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + _PROBE_HEAD, 1).replace("</body>", _PROBE_TAIL + "</body>", 1))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=8000"]
    dom = subprocess.run([exe, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    import html as _html

    m = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert m, "the page did not finish loading"
    info = json.loads(_html.unescape(m.group(1)))
    assert info["errors"] == []
    assert [u for u in info["resources"] if not u.startswith(("file:", "data:", "blob:"))] == []
    assert info["divs"] >= 2 and info["plots"] >= info["divs"]  # every plot drew its SVG
    shot = tmp_path / "shot.png"
    subprocess.run([exe, *flags, "--window-size=1200,1600", f"--screenshot={shot}", out.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 50_000  # a page of plots and tables, not a blank one


@pytest.mark.live
@pytest.mark.bcc
def test_relro_what_if_on_python_start_up(tmp_path: Path) -> None:
    """The documented what-if: ignoring VM_ACCOUNT in the merge check merges the RELRO pieces
    that keep `ac` with the read-only segment before them, on a real python3 start-up."""
    from vmatrace.replay_report import attribute

    out = tmp_path / "py.vmat"
    record(out, "-f", "--", "/usr/bin/python3", "-c", "import json, decimal")
    t = read_trace(out)
    specs, pair, _ = default_profiles(t.meta, what_if=["merge_ignores_account=true"])
    r = replay_trace(t, specs, fix_pair=pair, jobs=1)
    judged = r.profiles[0]
    what = next(p for p in r.profiles if "what-if" in p.label)
    assert not what.judged and what.fields["merge_ignores_account"] is True
    base = judged.process(r.main_pid).final_vma_count  # type: ignore[arg-type]
    alt = what.process(r.main_pid).final_vma_count  # type: ignore[arg-type]
    att = attribute(t, r)
    assert base is not None and alt is not None
    assert att.relro_pairs >= 1 and base - alt >= 1
    assert all(d.kind == "fragmented" for p in what.processes for d in p.divergences)


def test_explain_diagram_draws_a_merge() -> None:
    from replay import AddressSpace
    from replay.engine import explain_diagram

    P = 4096
    mm = AddressSpace("6.19", explain=False)
    base = 0x10000000
    mm.mmap(base, 8 * P, 1, 0x22 | 0x10)  # PROT_READ, private anonymous, fixed
    mm.mprotect(base + 3 * P, 2 * P, 3)  # [PPP][**][NNN]
    before = mm.vmas()
    mm.mprotect(base + 3 * P, 2 * P, 1)  # back: one VMA again
    pic = explain_diagram(before, mm.vmas(), base + 3 * P, base + 5 * P)
    assert pic == "PPP|**|NNN -> PPPPPPPP", pic


@pytest.mark.live
@pytest.mark.bcc
def test_explain_prints_paths_and_diagrams(workload_trace: Path) -> None:
    p = _vmatrace("replay", str(workload_trace), "--explain")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert any(ln.startswith("[pid ") and "mprotect(" in ln for ln in lines)
    assert any(" -> " in ln and "*" in ln for ln in lines)  # page diagrams


@pytest.mark.live
@pytest.mark.bcc
def test_fork_then_exec_children_start_again_from_their_exec(tmp_path: Path) -> None:
    """A shell forks and execs two programs: each child is seeded from its parent at the fork,
    then from its post-exec snapshot; no profile-state leaks across the exec."""
    out = tmp_path / "sh.vmat"
    record(out, "-f", "--", "/bin/sh", "-c", "/bin/true; /usr/bin/env true")
    r = _replay(read_trace(out))
    judged = r.profiles[0]
    children = [p for p in judged.processes if p.seeded_by.startswith("fork of")]
    assert len(children) >= 2
    for p in judged.processes:
        assert p.divergences == [], (p.pid, p.divergences)
        assert p.mismatches == []
    assert all(c.events_applied > 0 and c.snapshots_compared >= 1 for c in children)


@pytest.mark.live
@pytest.mark.bcc
@pytest.mark.parametrize("name", ["python3", "gcc", "workload"])
def test_strace_import_gives_the_bcc_figures(name: str, tmp_path: Path) -> None:
    """The same program recorded with bcc and with strace (imported): the same processes and the
    same fix figures for the real programs (the import has no exit snapshots, so it is the models
    that are compared). strace sees no page faults: on the bundled workload, whose fix cases need a
    faulted page, the import's figures are a lower bound, and the replay says so."""
    import shutil

    from collectors.strace_import import import_strace
    from tests.conftest import need

    strace = shutil.which("strace")
    need(strace is not None, "needs strace")
    assert strace is not None
    src = tmp_path / "z.c"
    src.write_text("int main(void) { return 0; }\n")
    cmd = {"workload": ["/usr/bin/python3", "-m", "vmatrace.workloads.fragment", "--anon-merge", "3", "--hold", "0"],
           "python3": ["/usr/bin/python3", "-c", "import json, decimal"],
           "gcc": ["/usr/bin/gcc", "-O2", "-c", str(src), "-o", str(tmp_path / "z.o")]}[name]
    bcc = tmp_path / "b.vmat"
    record(bcc, "-f", "--", *cmd)
    log = tmp_path / "s.log"
    subprocess.run([strace, "-f", "-y", "-tt", "-X", "raw", "-e", "trace=%memory,%process,%file,%desc,%ipc",
                    "-o", str(log), *cmd], cwd=ROOT, capture_output=True, check=True, timeout=120,
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    imp = tmp_path / "i.vmat"
    import_strace([log], imp)
    rb, ri = _replay(read_trace(bcc)), _replay(read_trace(imp))
    assert len(rb.real) == len(ri.real)
    fb, fi = to_json(rb)["anon_merge_fix"]["all_processes"], to_json(ri)["anon_merge_fix"]["all_processes"]
    assert any("no page faults" in w for w in ri.warnings)
    assert not any("no page faults" in w for w in rb.warnings)
    if name == "workload":
        assert fb["saved_final"] == 3 and fi["saved_final"] == 0
    else:
        for key in ("saved_final", "saved_peak", "events_merged_by_fix", "fork_child_boundaries"):
            assert fb[key] == fi[key], (key, fb, fi)
    assert sum(len(p.mismatches) for p in ri.profiles[0].processes) == 0
