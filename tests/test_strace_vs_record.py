"""Two independent collectors agree: strace import and bcc record of the same known workload.

The workload is the record engineer's tests/workloads/vma_script.c: every address-space syscall
of issue #4, successes and errors, from 4 threads and a forked child, each printed with its raw
arguments and result. Each collector's trace must equal the workload's own printout; the two
printouts (two runs, so other addresses) must then be the same script.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import polars as pl
import pytest

from collectors.strace_import import import_strace
from tests.conftest import build_c, need
from tests.record_common import WORKLOADS, Call, parse_script_output, record
from vmatrace.base.trace import read_trace

# arguments strace cannot show as values (it prints what they point to)
POINTER_ARGS = {"execve": {0}, "process_madvise": {1}, "prctl": {4}}
BEGIN, END = 9999, 9998


def _mask(name: str, args: list[int]) -> tuple[object, ...]:
    return tuple(None if i in POINTER_ARGS.get(name, ()) else a for i, a in enumerate(args))


def _windows(ev: pl.DataFrame, calls: list[Call]) -> dict[int, list[dict[str, object]]]:
    """Per tid, the events of the scripted window (main: between the madvise markers)."""
    main = calls[0].pid
    kinds = {c.name for c in calls}
    out: dict[int, list[dict[str, object]]] = defaultdict(list)
    inside = False
    for r in ev.sort("seq").iter_rows(named=True):
        if r["pid"] == main and r["kind"] == "madvise" and r["a2"] in (BEGIN, END):
            inside = r["a2"] == BEGIN
            out[r["tid"]].append(r)  # the markers are scripted calls too
            continue
        if r["kind"] in kinds and (inside or r["pid"] != main):
            out[r["tid"]].append(r)
    return out


def assert_trace_equals_script(ev: pl.DataFrame, calls: list[Call]) -> None:
    got = _windows(ev, calls)
    for tid in {c.tid for c in calls}:
        want = [(c.name, *_mask(c.name, c.args), c.ret) for c in calls if c.tid == tid]
        rows = got[tid]
        have = [(r["kind"], *_mask(str(r["kind"]), [int(r[f"a{i}"]) for i in range(len(c.args))]), r["ret"])  # type: ignore[call-overload]
                for r, c in zip(rows, [c for c in calls if c.tid == tid], strict=False)]
        assert have == want, f"tid {tid}"
        assert len(rows) == len(want), f"tid {tid}: {len(rows)} events, the script made {len(want)}"
    # calls of serialized sections keep their order across threads
    serial = [(c.tid, c.name, _mask(c.name, c.args[:1])) for c in calls if c.mode == "S"]
    flat = sorted((r for rs in got.values() for r in rs), key=lambda r: int(r["seq"]))  # type: ignore[call-overload]
    keys = [(r["tid"], r["kind"], _mask(str(r["kind"]), [int(r["a0"])])) for r in flat]  # type: ignore[call-overload]
    have_serial = [k for k in keys if k in set(serial)]
    assert have_serial == serial


def shape(calls: list[Call]) -> tuple[Counter[tuple[object, ...]], list[tuple[object, ...]]]:
    """What does not depend on addresses or ids: per process role, (call, nargs, ok or errno)."""
    main = calls[0].pid
    def key(c: Call) -> tuple[object, ...]:
        return ("main" if c.pid == main else "child", c.name, len(c.args), c.ret if c.ret < 0 else "ok")
    return Counter(key(c) for c in calls), [key(c) for c in calls if c.mode == "S"]


@pytest.fixture(scope="module")
def script_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_c(WORKLOADS / "vma_script.c", tmp_path_factory.mktemp("vs") / "vma_script", "-pthread")


def strace_run(tmp: Path, exe: Path) -> tuple[Path, list[Call]]:
    strace = shutil.which("strace")
    need(strace is not None, "needs strace")
    assert strace is not None
    out, log = tmp / "out.txt", tmp / "strace.log"
    subprocess.run([strace, "-f", "-tt", "-X", "raw", "-o", str(log), str(exe), str(out)], check=True,
                   capture_output=True, timeout=120)
    trace = tmp / "s.trace"
    import_strace([log], trace)
    return trace, parse_script_output(out.read_text()).calls


def test_strace_import_equals_the_script(script_exe: Path, tmp_path: Path) -> None:
    trace, calls = strace_run(tmp_path, script_exe)
    t = read_trace(trace)
    assert not t.warnings and not t.meta["warnings"], t.meta["warnings"]
    assert_trace_equals_script(t.events, calls)
    script = parse_script_output((tmp_path / "out.txt").read_text())
    # process structure: 3 threads and one child; exits with the script's codes
    ev = t.events
    main = calls[0].pid
    (parent, child), = script.forks
    forks = ev.filter(pl.col("kind") == "fork")
    assert forks.filter(pl.col("a2") == 1).height == 3
    assert forks.filter(pl.col("a2") == 0).select("pid", "a0", "a1").rows() == [(parent, child, child)]
    exits = ev.filter((pl.col("kind") == "exit") & (pl.col("a1") == 1))
    assert {(p, a0 >> 8) for p, a0 in exits.select("pid", "a0").rows()} == set(script.exits.items())
    got = {r["pid"]: (r["exit_code"], r["how_ended"]) for r in t.procs.iter_rows(named=True)}
    assert got == {main: (0, "exit"), child: (3, "exit")}
    # prctl(PR_GET_DUMPABLE) is not a VMA event (IGNORED by the script)
    assert script.ignored and ev.filter((pl.col("kind") == "prctl") & (pl.col("a0") == 3)).height == 0


@pytest.mark.live
@pytest.mark.bcc
def test_strace_and_bcc_record_agree(script_exe: Path, tmp_path: Path) -> None:
    # GIVEN the same workload traced by both collectors (two runs)
    s_trace, s_calls = strace_run(tmp_path, script_exe)
    b_out, b_trace = tmp_path / "b_out.txt", tmp_path / "b.vmat"
    record(b_trace, "--", str(script_exe), str(b_out))
    b_calls = parse_script_output(b_out.read_text()).calls
    s, b = read_trace(s_trace), read_trace(b_trace)
    # THEN each equals its run's printout, call for call
    assert_trace_equals_script(s.events, s_calls)
    assert_trace_equals_script(b.events, b_calls)
    # and the two runs made the same script, so the two collectors saw the same calls
    assert shape(s_calls) == shape(b_calls)
    # the same process events (forks: 3 threads, 1 child; exit statuses)
    for t in (s, b):
        f = t.events.filter(pl.col("kind") == "fork")
        assert sorted(f["a2"].to_list()) == [0, 1, 1, 1]
    def statuses(t: object) -> list[int]:
        ev = t.events  # type: ignore[attr-defined]
        return sorted(ev.filter((pl.col("kind") == "exit") & (pl.col("a1") == 1))["a0"].to_list())
    assert statuses(s) == statuses(b) == [0, 3 << 8]
