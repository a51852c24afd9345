"""Live: every way a traced process (or the recorder) can end leaves a readable trace that says so.

Also the page-fault events (first write to each page, once) and the populating-call flags.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import ROOT, build_c, need_bcc, reap
from tests.record_common import WORKLOADS, final_snapshot, record
from vmatrace.base.events import EV_POPULATES, EV_RACED_SNAPSHOT
from vmatrace.base.trace import read_trace

pytestmark = [pytest.mark.live, pytest.mark.bcc]
PAGE = 4096


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_c(WORKLOADS / "lifecycle.c", tmp_path_factory.mktemp("lc") / "lifecycle", "-pthread")


def _markers(text: str) -> dict[int, int]:
    return {int(w[1]): int(w[2], 16) for w in (ln.split() for ln in text.splitlines()) if w and w[0] == "MARKER"}


def _has_marker(snap: pl.DataFrame, addr: int) -> bool:
    """The 7-page marker is mapped (it may have merged with a neighbouring anonymous VMA)."""
    return snap.filter((pl.col("start") <= addr) & (pl.col("end") >= addr + 7 * PAGE)
                       & pl.col("perms").str.starts_with("rw")).height == 1


def _proc(trace: object, pid: int) -> dict[str, object]:
    rows = trace.procs.filter(pl.col("pid") == pid).rows(named=True)  # type: ignore[attr-defined]
    assert len(rows) == 1, f"no procs row for {pid}"
    return rows[0]


def _start_recorder(out: Path, *args: str) -> subprocess.Popen[str]:
    need_bcc()
    return subprocess.Popen([sys.executable, "-m", "vmatrace", "record", "-o", str(out), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_ready(p: subprocess.Popen[str]) -> int:
    assert p.stdout is not None
    for line in p.stdout:
        if line.startswith("READY"):
            return int(line.split()[1])
    raise AssertionError(f"workload never became ready: {p.stderr.read() if p.stderr else ''}")


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@pytest.mark.parametrize("mode", ["exit", "segv", "threadexit"])
def test_final_snapshot_for_each_way_of_ending(lifecycle: Path, tmp_path: Path, mode: str) -> None:
    out = tmp_path / "t.vmat"
    p = record(out, "--", str(lifecycle), mode)
    (pid, addr), = _markers(p.stdout).items()
    t = read_trace(out)
    assert t.warnings == [] and t.meta["complete"] and t.meta["lost_count"] == 0
    assert _has_marker(final_snapshot(t, pid), addr)
    info = _proc(t, pid)
    expect = {"exit": (0, "exit"), "segv": (-11, "signal SIGSEGV"), "threadexit": (5, "exit")}[mode]
    assert (info["exit_code"], str(info["how_ended"]).split(" (core")[0]) == expect
    exits = t.events.filter((pl.col("kind") == "exit") & (pl.col("pid") == pid))
    assert exits.height == (5 if mode == "threadexit" else 1)
    assert exits.filter(pl.col("a1") == 1).height == 1  # one group_dead
    # the mmap-lock ordering program is attached only for processes with threads
    assert (t.meta["lock_order_since_ns"] is not None) == (mode == "threadexit")
    if mode == "segv":
        assert "SIGSEGV" in p.stderr  # the summary says what happened
    if mode == "threadexit":
        eg = t.events.filter(pl.col("kind") == "exit_group")
        assert eg.select("a0").rows() == [(5,)] and eg.get_column("tid")[0] != pid


@pytest.fixture(scope="module")
def exit_race(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_c(WORKLOADS / "exit_race.c", tmp_path_factory.mktemp("er") / "exit_race", "-pthread")


@pytest.mark.parametrize(("mode", "code"), [("thread", 7), ("leader", 6)])
def test_exit_snapshot_when_a_thread_skips_its_exit_stop(exit_race: Path, tmp_path: Path, mode: str,
                                                         code: int) -> None:
    """A thread sits in its exit stop, not yet waited for (the recorder is busy with a child's start
    snapshot), when another thread kills the group: it is woken and never reports the stop. The
    exit snapshot is still taken, at the last stop the kernel gives, and holds the mapping made
    just before exit_group; with the leader gone first it is read through a thread that is not it."""
    for attempt in range(3):  # (a machine too busy may wait for the stop before the kill: again)
        out = tmp_path / f"t{attempt}.vmat"
        p = record(out, "--", str(exit_race), mode, "20000")
        if "HELD" in p.stdout.splitlines():  # the thread was seen in its unattended exit stop
            break
    else:
        pytest.fail(f"the exiting thread was never seen in an unattended exit stop: {p.stdout}")
    (pid, addr), = _markers(p.stdout).items()
    late = next(int(w[2], 16) for w in (ln.split() for ln in p.stdout.splitlines()) if w and w[0] == "LATE")
    t = read_trace(out)
    assert t.warnings == [] and t.meta["complete"]
    assert not t.meta.get("exit_snapshot_missing") and not t.meta.get("record_warnings")
    reasons = t.snapshot_index.filter(pl.col("pid") == pid).sort("snapshot_id").get_column("reason").to_list()
    assert reasons == ["start", "exit"]  # (no second life for the process from a late thread)
    snap = final_snapshot(t, pid)
    assert _has_marker(snap, addr)
    assert snap.filter((pl.col("start") <= late) & (pl.col("end") >= late + 3 * PAGE)).height == 1
    info = _proc(t, pid)
    assert (info["exit_code"], info["how_ended"]) == (code, "exit")


def test_info_and_replay_name_a_process_without_exit_snapshot(tmp_path: Path) -> None:
    """A process the recorder flagged in meta.exit_snapshot_missing: info lists it, replay warns that
    its layout after its last snapshot (here a periodic one) is not compared with anything."""
    from collectors.procmaps import read_snapshot
    from replay.engine import default_profiles, replay_trace
    from vmatrace.base.trace import TraceWriter

    out, pid = tmp_path / "t.vmat", os.getpid()
    with TraceWriter(out, {"collector": "test", "pids": [pid]}) as w:
        w.add_snapshot(read_snapshot(pid), "start")
        w.add_events(pl.DataFrame({"seq": [0, 1], "ts_ns": [1, 2], "pid": [pid] * 2, "tid": [pid] * 2,
                                   "kind": ["mmap", "munmap"]}))
        w.flush()
        w.add_snapshot(read_snapshot(pid), "periodic")
        w.update_meta(exit_snapshot_missing=[pid])
    info = subprocess.run([sys.executable, "-m", "vmatrace", "info", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    assert f"PID {pid}: no exit snapshot" in " ".join(info.stdout.split())
    t = read_trace(out)
    specs, pair, notes = default_profiles(t.meta, [], [])
    result = replay_trace(t, specs, fix_pair=pair, notes=notes, jobs=1)
    assert [w for w in result.warnings if w.startswith(f"PID {pid}:")] == [
        f"PID {pid}: it ended without an exit snapshot (the recorder could not take one): its layout after "
        "snapshot 1 (periodic) is the model's alone, nothing compares it"]


def test_target_killed_with_sigkill(lifecycle: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.vmat"
    rec = _start_recorder(out, "--", str(lifecycle), "pause")
    pid = _wait_ready(rec)
    os.kill(pid, signal.SIGKILL)
    _out, err = rec.communicate(timeout=60)
    assert rec.returncode == 0, err
    t = read_trace(out)
    assert t.warnings == []
    info = _proc(t, pid)
    assert info["how_ended"] == "killed (SIGKILL)" and info["exit_code"] == -9
    snap = final_snapshot(t, pid)
    assert snap.height > 5 and snap.filter(pl.col("path") == "[stack]").height == 1


def test_parent_exits_before_its_child(lifecycle: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.vmat"
    p = record(out, "--", str(lifecycle), "forkexit")
    markers = _markers(p.stdout)
    child = next(int(ln.split()[1]) for ln in p.stdout.splitlines() if ln.startswith("CHILD"))
    parent = next(pid for pid in markers if pid != child)
    t = read_trace(out)
    assert t.warnings == [] and t.meta["complete"]
    assert _proc(t, parent)["exit_code"] == 0 and _proc(t, child)["exit_code"] == 4
    assert _has_marker(final_snapshot(t, child), markers[child])
    assert _has_marker(final_snapshot(t, parent), markers[parent])
    # the child outlived its parent and was still traced: its late mmap is in the trace
    mm = t.events.filter((pl.col("pid") == child) & (pl.col("kind") == "mmap") & (pl.col("ret") == markers[child]))
    assert mm.height == 1
    parent_exit = t.events.filter((pl.col("pid") == parent) & (pl.col("kind") == "exit")).get_column("ts_ns")[0]
    assert mm.get_column("ts_ns")[0] > parent_exit


def _event_chunks(trace: Path) -> int:
    return len(list((trace / "events").glob("part-*.parquet")))


def test_recorder_killed_with_sigkill(lifecycle: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.vmat"
    rec = _start_recorder(out, "--", str(lifecycle), "loop", "30")
    pid = _wait_ready(rec)
    try:
        # Kill once the recorder has written events chunks while recording (a writer that wrote
        # only at the end, or only once, never gets here) and right after it wrote one more: a
        # fixed sleep instead made the test depend on when a loaded machine let the writer run.
        deadline = time.monotonic() + 60  # (a real hang only: a chunk comes about every second)
        while _event_chunks(out) < 2:
            assert time.monotonic() < deadline and rec.poll() is None, "no periodic events chunks"
            time.sleep(0.01)
        n = _event_chunks(out)
        while _event_chunks(out) == n:
            assert time.monotonic() < deadline and rec.poll() is None, "no periodic events chunks"
            time.sleep(0.01)
        killed_ns = time.monotonic_ns()
        reap(rec)
        time.sleep(0.2)
        # the target is left running, untraced (not stopped in a ptrace stop)
        assert _state(pid) in ("S", "R")
        assert "TracerPid:\t0" in Path(f"/proc/{pid}/status").read_text()
    finally:
        os.kill(pid, signal.SIGKILL)
    t = read_trace(out)
    assert not t.meta["complete"]
    assert any("not finalized" in w for w in t.warnings)
    mm = t.events.filter((pl.col("pid") == pid) & (pl.col("kind") == "mmap"))
    assert mm.height > 50  # about one every 2 ms for the two seconds or more before the kill
    # every chunk written before the kill is read back, and the last one holds what the target
    # did up to the moment it was written (the writer writes what it has, not an older part)
    last_ts = int(t.events.get_column("ts_ns").max())  # type: ignore[arg-type]
    assert killed_ns - last_ts < 2_000_000_000
    assert t.snapshot_index.filter(pl.col("reason") == "start").height == 1


def test_recorder_killed_keeps_ended_processes(lifecycle: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.vmat"
    # a shell whose first child exits at once, then a long loop: kill the recorder during the loop
    script = f"{lifecycle} exit; exec {lifecycle} loop 30"
    rec = _start_recorder(out, "--", "/bin/sh", "-c", script)
    pid = _wait_ready(rec)
    try:
        time.sleep(1.5)
        reap(rec)
    finally:
        os.kill(pid, signal.SIGKILL)
    t = read_trace(out)
    assert not t.meta["complete"]
    ended = t.procs.filter(pl.col("how_ended") == "exit")
    assert ended.height == 1 and ended.get_column("comm")[0] == "lifecycle"  # the child that exited
    assert t.snapshot_index.filter(pl.col("reason") == "exit").height == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_finalizes_and_leaves_target_running(lifecycle: Path, tmp_path: Path, sig: int) -> None:
    out = tmp_path / "t.vmat"
    rec = _start_recorder(out, "--", str(lifecycle), "pause")
    pid = _wait_ready(rec)
    try:
        rec.send_signal(sig)
        rc = rec.wait(timeout=60)  # (communicate would wait for the target, which holds stdout)
        time.sleep(0.1)
        assert _state(pid) == "S"  # detached, still sleeping in pause()
    finally:
        os.kill(pid, signal.SIGKILL)
    _o, err = rec.communicate(timeout=60)
    assert rc == 0, err
    assert "Recording ended" in err
    t = read_trace(out)
    assert t.warnings == [] and t.meta["complete"]
    assert t.meta["ended_by"] == ("Ctrl-C" if sig == signal.SIGINT else "signal SIGTERM")
    reasons = t.snapshot_index.filter(pl.col("pid") == pid).get_column("reason").to_list()
    assert reasons == ["start", "end"]  # after exec, and the end-of-recording one
    assert _proc(t, pid)["how_ended"] == "still running (detached)"


def test_attach_to_running_pid_with_duration(lifecycle: Path, tmp_path: Path) -> None:
    target = subprocess.Popen([str(lifecycle), "loop", "60"], stdout=subprocess.PIPE, text=True)
    try:
        pid = _wait_ready(target)
        out = tmp_path / "t.vmat"
        p = record(out, "-p", str(pid), "-d", "1.5", "--interval", "0.4")
        assert "PID " + str(pid) in p.stderr
        time.sleep(0.1)
        assert _state(pid) in ("S", "R")  # detached and running on
        assert "TracerPid:\t0" in Path(f"/proc/{pid}/status").read_text()
    finally:
        reap(target)
    t = read_trace(out)
    assert t.warnings == [] and t.meta["complete"] and t.meta["ended_by"] == "-d 1.5 s elapsed"
    idx = t.snapshot_index.sort("snapshot_id")
    reasons = idx.get_column("reason").to_list()
    assert reasons[0] == "start" and reasons.count("periodic") >= 2 and reasons[-1] == "end"
    assert "exit" not in reasons
    ev = t.events.filter(pl.col("pid") == pid)
    assert ev.filter(pl.col("kind") == "mmap").height > 100
    # events that completed before the start snapshot finished are marked as racing with it
    t_end = idx.get_column("t_end_ns")[0]
    raced = (ev.get_column("flags") & EV_RACED_SNAPSHOT) != 0
    assert (raced == (ev.get_column("ts_ns") <= t_end)).all()


def test_interval_snapshots(lifecycle: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.vmat"
    record(out, "--interval", "0.25", "--", str(lifecycle), "loop", "1.2")
    t = read_trace(out)
    reasons = t.snapshot_index.get_column("reason").to_list()
    assert reasons[0] == "start" and reasons[-1] == "exit" and reasons.count("periodic") >= 3


def test_first_write_faults(lifecycle: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.vmat"
    p = record(out, "--", str(lifecycle), "faults")
    regions = {w[1]: (int(w[2], 16), int(w[3])) for w in (ln.split() for ln in p.stdout.splitlines())
               if w and w[0] == "REGION"}
    child = next(int(ln.split()[1]) for ln in p.stdout.splitlines() if ln.startswith("CHILD"))
    t = read_trace(out)
    assert t.warnings == [] and t.meta["lost_count"] == 0
    faults = t.events.filter(pl.col("kind") == "fault")
    parent = t.meta["pids"][0]

    def pages(name: str, pid: int) -> list[int]:
        start, n = regions[name]
        f = faults.filter((pl.col("pid") == pid) & pl.col("a0").is_between(start, start + n * PAGE - 1))
        return sorted((a - start) // PAGE for a in f.get_column("a0").to_list())

    # 4 threads write 256 fresh pages at once: each page recorded exactly once
    assert pages("threads", parent) == list(range(256))
    # read first (zero page), then write: one write fault per page (P|W|U)
    assert pages("readfirst", parent) == list(range(32))
    rf_start, _ = regions["readfirst"]
    codes = faults.filter(pl.col("a0").is_between(rf_start, rf_start + 32 * PAGE - 1)).get_column("a2")
    assert set(codes.to_list()) == {7}
    # pre-faulted memory: no faults, and the call that populated it is flagged
    for name in ("populate", "mlock", "popwrite"):
        assert pages(name, parent) == [], name
    ev = t.events.filter(pl.col("pid") == parent)
    pop = ev.filter((pl.col("flags") & EV_POPULATES) != 0)
    assert set(pop.get_column("kind").to_list()) == {"mmap", "mlock", "madvise"}
    assert pop.filter(pl.col("kind") == "mmap").get_column("ret").to_list() == [regions["populate"][0]]
    assert pop.filter(pl.col("kind") == "mlock").get_column("a0").to_list() == [regions["mlock"][0]]
    assert pop.filter(pl.col("kind") == "madvise").get_column("a0").to_list() == [regions["popwrite"][0]]
    # copy-on-write after fork: the parent's first writes, then the child's own
    assert pages("forked", parent) == list(range(16))
    assert pages("forked", child) == list(range(16))
