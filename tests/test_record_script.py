"""Live: the recorder sees exactly the calls a known C script makes, and its final maps.

The workload (tests/workloads/vma_script.c) makes every syscall of issue #4 item 2, successes and
errors, from 4 threads and a forked child, and prints each call's raw arguments and result plus its
own /proc/self/maps just before exit_group.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest

from tests.record_common import (
    WORKLOADS,
    Call,
    ScriptOutput,
    final_snapshot,
    maps_rows,
    parse_script_output,
    record,
)
from vmatrace.base.events import EV_POPULATES, SYSCALL_KINDS
from vmatrace.base.snapshot import parse_maps_text
from vmatrace.base.trace import Trace, read_trace

pytestmark = [pytest.mark.live, pytest.mark.bcc]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trace, ScriptOutput]:
    from tests.conftest import build_c

    d = tmp_path_factory.mktemp("script")
    exe = build_c(WORKLOADS / "vma_script.c", d / "vma_script", "-pthread")
    out = d / "out.txt"
    trace = d / "t.vmat"
    p = record(trace, "--", str(exe), str(out))
    assert "0 lost" in p.stderr
    return read_trace(trace), parse_script_output(out.read_text())


def _windows(ev: pl.DataFrame, script: ScriptOutput) -> dict[int, pl.DataFrame]:
    """Per process: its syscall events between its BEGIN and END (main: the madvise markers)."""
    calls = script.calls
    main = calls[0].pid
    sys_ev = ev.filter(pl.col("kind").is_in(SYSCALL_KINDS) & (pl.col("kind") != "exit_group"))
    out = {}
    for pid in {c.pid for c in calls}:
        e = sys_ev.filter(pl.col("pid") == pid)
        if pid == main:
            marks = e.filter((pl.col("kind") == "madvise") & pl.col("a2").is_in([9999, 9998]))
            assert marks.height == 2
            lo, hi = marks.get_column("seq").to_list()
            e = e.filter(pl.col("seq").is_between(lo, hi))
        out[pid] = e
    return out


def _key(name: str, args: list[int], ret: int, tid: int) -> tuple[object, ...]:
    return (tid, name, *args, ret)


def test_exactly_the_scripted_calls(recorded: tuple[Trace, ScriptOutput]) -> None:
    trace, script = recorded
    ev = trace.events
    windows = _windows(ev, script)
    by_pid: dict[int, list[Call]] = defaultdict(list)
    for c in script.calls:
        by_pid[c.pid].append(c)
    assert len(by_pid) == 2  # the main process and the forked child
    for pid, calls in by_pid.items():
        got = windows[pid]
        # same calls, per thread in the same order, with the same arguments and results
        for tid in {c.tid for c in calls}:
            want = [_key(c.name, c.args, c.ret, c.tid) for c in calls if c.tid == tid]
            rows = got.filter(pl.col("tid") == tid)
            have = [
                _key(r["kind"], [r[f"a{i}"] for i in range(len(c.args))], r["ret"], r["tid"])
                for r, c in zip(rows.iter_rows(named=True), [c for c in calls if c.tid == tid], strict=False)
            ]
            assert rows.height == len(want), f"tid {tid}: {rows.height} events, script made {len(want)}"
            assert have == want
        assert got.height == len(calls)
        # calls made in serialized sections: their recorded order across threads is the real one
        serial = [(c.tid, c.name, c.args[0]) for c in calls if c.mode == "S"]
        have_serial = [(r["tid"], r["kind"], r["a0"]) for r in got.iter_rows(named=True)
                       if (r["tid"], r["kind"], r["a0"]) in set(serial)]
        assert have_serial == serial


def test_nothing_lost_and_trace_valid(recorded: tuple[Trace, ScriptOutput]) -> None:
    trace, _script = recorded
    assert trace.warnings == []
    assert trace.meta["complete"] is True
    assert trace.meta["lost_count"] == 0
    assert trace.losses.height == 0
    seq = trace.events.get_column("seq")
    assert seq.is_unique().all()
    # every sequence number taken was emitted: no gap means nothing dropped anywhere
    assert int(seq.max()) - int(seq.min()) + 1 == seq.len()  # type: ignore[arg-type]


def test_lock_order_engaged_with_threads(recorded: tuple[Trace, ScriptOutput]) -> None:
    trace, script = recorded
    since = trace.meta["lock_order_since_ns"]
    assert since is not None
    # attached while the first thread was being created: before any scripted call
    first = _windows(trace.events, script)[script.calls[0].pid].get_column("ts_ns").min()
    assert since < first


def test_process_events(recorded: tuple[Trace, ScriptOutput]) -> None:
    trace, script = recorded
    ev = trace.events
    main = script.calls[0].pid
    (parent, child), = script.forks
    forks = ev.filter(pl.col("kind") == "fork")
    threads = forks.filter((pl.col("pid") == main) & (pl.col("a2") == 1))
    assert threads.height == 3
    assert set(threads.get_column("a1").to_list()) == {main}
    procs = forks.filter(pl.col("a2") == 0)
    assert procs.select("pid", "a0", "a1").rows() == [(parent, child, child)]
    eg = ev.filter(pl.col("kind") == "exit_group").select("pid", "a0").rows()
    assert sorted(eg) == sorted(script.exits.items())
    exits = ev.filter((pl.col("kind") == "exit") & (pl.col("a1") == 1))  # group_dead
    assert {(r[0], r[1] >> 8) for r in exits.select("pid", "a0").rows()} == set(script.exits.items())
    execs = ev.filter(pl.col("kind") == "exec")
    assert execs.height == 1 and execs.get_column("text")[0].endswith("/vma_script")
    procs_t = trace.procs
    got = {r["pid"]: (r["exit_code"], r["how_ended"]) for r in procs_t.iter_rows(named=True)}
    assert got == {main: (0, "exit"), child: (3, "exit")}


def test_populating_calls_are_flagged(recorded: tuple[Trace, ScriptOutput]) -> None:
    trace, script = recorded
    ev = _windows(trace.events, script)[script.calls[0].pid]
    flagged = ev.filter((pl.col("flags") & EV_POPULATES) != 0)
    kinds = flagged.select("kind", "a2", "a3").rows()
    # MAP_POPULATE mmap, MADV_POPULATE_WRITE, mlock; not mlock2(ONFAULT), mlockall(ONFAULT), errors
    assert sorted(k for k, *_ in kinds) == ["madvise", "mlock", "mmap"]
    assert (ev.filter(pl.col("kind") == "mmap").filter((pl.col("a3") & 0x8000) != 0)
            .get_column("flags").to_list() == [EV_POPULATES])


def test_final_snapshots_equal_the_workloads_own_maps(recorded: tuple[Trace, ScriptOutput]) -> None:
    trace, script = recorded
    assert len(script.maps) == 2
    for pid, text in script.maps.items():
        snap = final_snapshot(trace, pid)
        assert maps_rows(snap) == maps_rows(parse_maps_text(text))
        # the start snapshot (after exec) exists too for the main process
    idx = trace.snapshot_index
    assert set(idx.get_column("reason").to_list()) == {"start", "exit"}


def test_faults_of_the_script(recorded: tuple[Trace, ScriptOutput]) -> None:
    trace, script = recorded
    ev = trace.events
    main = script.calls[0].pid
    region = next(c.ret for c in script.calls if c.name == "mmap" and c.args[1] == 16 * 4096)
    f = ev.filter((pl.col("kind") == "fault") & (pl.col("pid") == main)
                  & pl.col("a0").is_between(region, region + 4 * 4096 - 1))
    pages = sorted(a >> 12 for a in f.get_column("a0").to_list())
    assert pages == [(region >> 12) + i for i in range(4)]
    assert all(code & 2 for code in f.get_column("a2").to_list())


def test_workload_source_documents_its_format() -> None:
    head = Path(WORKLOADS / "vma_script.c").read_text()[:3000]
    assert "CALL <pid> <tid> <S|C> <name> <nargs>" in head
