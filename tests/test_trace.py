"""Trace format v1: round trip, damage of every kind, safe creation."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from collectors.procmaps import read_snapshot
from vmatrace.base.errors import VmatraceError
from vmatrace.base.trace import EVENT_SCHEMA, TraceError, TraceWriter, read_trace
from vmatrace.cli import main

U64_MAX = 2**64 - 1


def _events(n: int, base: int = 0) -> pl.DataFrame:
    return pl.DataFrame({
        "seq": list(range(base, base + n)), "ts_ns": [1000 + i for i in range(base, base + n)],
        "pid": [42] * n, "tid": [43] * n, "kind": ["mmap", "munmap"] * (n // 2) + ["mmap"] * (n % 2),
        "a0": [0xFFFFFFFFFF600000 + i for i in range(n)], "a1": [U64_MAX] * n, "ret": [-12] * n,
        "flags": [0] * n,
    })


def test_round_trip_keeps_u64_and_everything(tmp_path: Path) -> None:
    t = tmp_path / "t.vmat"
    snap = read_snapshot(os.getpid())
    with TraceWriter(t, {"collector": "test", "pids": [42]}) as w:
        w.add_events(_events(1001))
        sid = w.add_snapshot(snap, "start")
        w.note_lost(7, 1000, 2000)
        w.add_procs(pl.DataFrame({"pid": [42], "ppid": [1], "comm": ["x"], "cmdline": ["x -y"], "start_ns": [1]}))
    tr = read_trace(t)
    assert tr.warnings == []
    assert tr.meta["complete"] and tr.meta["event_count"] == 1001 and tr.meta["lost_count"] == 7
    assert dict(tr.events.schema) == EVENT_SCHEMA
    assert tr.events["a1"].to_list() == [U64_MAX] * 1001  # 64-bit addresses stay unsigned 64-bit
    assert tr.events["a0"].max() == 0xFFFFFFFFFF600000 + 1000
    assert tr.events["ret"][0] == -12
    back = tr.snapshot(sid)
    assert back.equals(snap.frame)
    assert tr.snapshot_index.row(0, named=True)["reason"] == "start"
    assert tr.losses.row(0, named=True) == {"count": 7, "t_from_ns": 1000, "t_to_ns": 2000}
    # readable without vmatrace: plain polars over the chunk files
    assert pl.scan_parquet(str(t / "events" / "*.parquet")).select(pl.len()).collect().item() == 1001


def test_files_are_private_and_not_overwritten(tmp_path: Path) -> None:
    t = tmp_path / "t"
    TraceWriter(t, {}).close()
    assert stat.S_IMODE(os.stat(t).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(t / "meta.json").st_mode) == 0o600
    with pytest.raises(VmatraceError, match="exists"):
        TraceWriter(t, {})
    TraceWriter(t, {}, force=True).close()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(VmatraceError, match="symlink"):
        TraceWriter(link, {}, force=True)
    assert not (tmp_path / "elsewhere").exists()


def test_owned_by_invoking_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("ownership hand-over is a root feature")  # not a live capability: nothing to require
    monkeypatch.setenv("SUDO_UID", "65534")
    monkeypatch.setenv("SUDO_GID", "65534")
    t = tmp_path / "t"
    with TraceWriter(t, {}) as w:
        w.add_events(_events(3))
    for p in (t, t / "meta.json", t / "events", next((t / "events").iterdir())):
        st = os.stat(p)
        assert (st.st_uid, st.st_gid) == (65534, 65534), p


def test_truncated_chunk_rest_still_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = tmp_path / "t"
    w = TraceWriter(t, {})
    for i in range(3):
        w.add_events(_events(100, base=i * 100))
        w.flush()
    w.close()
    part = t / "events" / "part-000001.parquet"
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    tr = read_trace(t)
    assert tr.events.height == 200 and tr.events["seq"].to_list() == list(range(100)) + list(range(200, 300))
    assert any("part-000001" in w and "damaged" in w for w in tr.warnings)
    assert main(["info", str(t)]) == 3  # EXIT_DAMAGED
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("vmatrace: warning:") for line in err)
    assert "part-000001" in err[0] and "damaged" in err[0]


WRITER = """
import sys, polars as pl, time
from vmatrace.base.trace import TraceWriter
w = TraceWriter(sys.argv[1], {"collector": "killtest"}, flush_interval_s=0.2)
i = 0
while True:
    w.add_events(pl.DataFrame({"seq": [i], "ts_ns": [time.monotonic_ns()], "pid": [1], "tid": [1], "kind": ["mmap"],
                               "ret": [0], "flags": [0]}))
    i += 1
    if i == 50:
        print("ready", flush=True)
    time.sleep(0.001)
"""


def test_writer_killed_mid_write_leaves_readable_trace(tmp_path: Path) -> None:
    t = tmp_path / "t"
    with subprocess.Popen([sys.executable, "-c", WRITER, str(t)], stdout=subprocess.PIPE,
                          text=True) as p:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        # kill once it has written two more chunks since "ready" (the second holds every event up
        # to then), right after the second: waiting for the chunks, not sleeping, keeps this
        # independent of how fast a loaded machine lets the writer run
        chunks = lambda: len(list((t / "events").glob("part-*.parquet")))  # noqa: E731
        deadline = time.monotonic() + 60  # (a real hang only: a chunk comes every 0.2 s)
        want = chunks() + 2
        while chunks() < want:
            assert time.monotonic() < deadline, "the writer wrote no chunks"
            time.sleep(0.005)
        p.send_signal(signal.SIGKILL)
        p.wait()
    t_kill = time.monotonic_ns()
    tr = read_trace(t)
    assert not tr.meta["complete"]
    assert any("not finalized" in w for w in tr.warnings)
    n = tr.events.height
    assert n > 50  # the 50 events before "ready", and more
    seqs = tr.events["seq"].to_list()
    assert seqs == list(range(n))  # a gap-free prefix
    # what is lost is what the writer had buffered: less than its 0.2 s flush interval, well within a second
    newest = tr.events["ts_ns"].max()
    assert isinstance(newest, int) and t_kill - newest < 1_000_000_000
    assert tr.meta["event_count"] <= n


def test_random_bytes_foreign_and_wrong_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rnd = tmp_path / "rnd"
    rnd.write_bytes(os.urandom(4096))
    with pytest.raises(TraceError, match="not a vmatrace trace"):
        read_trace(rnd)
    d = tmp_path / "d"
    d.mkdir()
    (d / "meta.json").write_bytes(os.urandom(512))
    with pytest.raises(TraceError, match="damaged"):
        read_trace(d)
    (d / "meta.json").write_text(json.dumps({"format": "perf.data"}))
    with pytest.raises(TraceError, match="not a vmatrace trace"):
        read_trace(d)
    (d / "meta.json").write_text(json.dumps({"format": "vmatrace-trace", "format_version": 99}))
    with pytest.raises(TraceError, match="version 99"):
        read_trace(d)
    for bad, code in ((rnd, 1), (d, 1), (tmp_path / "missing", 1)):
        assert main(["info", str(bad)]) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("vmatrace: error:"), err
    # a chunk with random bytes is named and skipped; the rest is read
    t = tmp_path / "t"
    with TraceWriter(t, {}) as w:
        w.add_events(_events(10))
    (t / "events" / "part-000001.parquet").write_bytes(os.urandom(300))
    tr = read_trace(t)
    assert tr.events.height == 10 and any("part-000001" in x for x in tr.warnings)


def test_info_analyses_a_recorded_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with subprocess.Popen([sys.executable, "-m", "vmatrace.workloads.fragment"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout is not None
            info = json.loads(p.stdout.readline())
            t = tmp_path / "t"
            with TraceWriter(t, {}) as w:
                sid = w.add_snapshot(read_snapshot(p.pid), "exit")
        finally:
            p.kill()
    assert main(["info", str(t), "--snapshot", str(sid), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["reason"] == "exit" and d["pid"] == info["pid"]
    lo, hi = info["locked"]
    splits = [s for r in d["invisible_fragmentation"]["runs"] for s in r["splits"] if lo < s["addr"] < hi]
    assert len(splits) == 2 and all(s["reason"] == "vmflags" for s in splits)
    assert main(["info", str(t), "--snapshot", "7"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"vmatrace: error: {t} has no snapshot 7 (it has: 0)"]


def test_force_replaces_only_a_trace(tmp_path: Path) -> None:
    victim = tmp_path / "thesis"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    with pytest.raises(VmatraceError, match="not a vmatrace trace"):
        TraceWriter(victim, {}, force=True)
    assert (victim / "thesis.tex").read_text() == "years of work"
    t = tmp_path / "t"
    with TraceWriter(t, {}) as w:
        w.add_events(_events(5))
    (t / "events" / "notes.txt").write_text("mine")
    with pytest.raises(VmatraceError, match=r"notes\.txt"):
        TraceWriter(t, {}, force=True)
    assert (t / "events" / "notes.txt").exists()
    (t / "events" / "notes.txt").unlink()
    with TraceWriter(t, {}, force=True) as w:
        w.add_events(_events(2))
    assert read_trace(t).events.height == 2


def test_snapshot_output_never_writes_through_fifo_or_hard_link(tmp_path: Path) -> None:
    from vmatrace.base.safeio import safe_create

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(VmatraceError, match=r"FIFO|regular"):
        safe_create(fifo, force=True)  # must not block
    orig = tmp_path / "orig"
    orig.write_text("keep")
    link = tmp_path / "hard"
    os.link(orig, link)
    with pytest.raises(VmatraceError, match="hard link"):
        safe_create(link, force=True)
    assert orig.read_text() == "keep"


def test_reader_never_follows_or_blocks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = tmp_path / "t"
    with TraceWriter(t, {}) as w:
        w.add_events(_events(4))
    secret = tmp_path / "secret"
    secret.write_text("root only")
    (t / "events" / "part-000001.parquet").symlink_to(secret)
    os.mkfifo(t / "events" / "part-000002.parquet")
    tr = read_trace(t)
    assert tr.events.height == 4
    assert any("part-000001" in x and "unreadable" in x for x in tr.warnings)
    assert any("part-000002" in x and "unreadable" in x for x in tr.warnings)
    (t / "meta.json").unlink()
    (t / "meta.json").symlink_to(secret)
    with pytest.raises(TraceError, match="symlink"):
        read_trace(t)
    for bad in (str(tmp_path / ("x" * 5000)), "/proc/self/cwd/nonexistent", str(secret)):
        assert main(["info", bad]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("vmatrace: error:"), err


def test_chunks_without_the_added_columns_still_read(tmp_path: Path) -> None:
    """A trace written before file_* and start_brk/brk existed reads with nulls there; a newer
    writer's extra column is ignored; a column of another type is damage (chunk skipped)."""
    from vmatrace.base.trace import ADDED_COLUMNS, SNAPSHOT_INDEX_SCHEMA

    t = tmp_path / "old.vmat"
    with TraceWriter(t, {"collector": "test", "pids": [42]}) as w:
        w.add_events(_events(10))
        w.add_snapshot(read_snapshot(os.getpid()), "start")
    # rewrite the chunks as the first v1 writer wrote them (the schema of that release)
    for table in ("events", "snapshot_index"):
        part = t / table / "part-000000.parquet"
        df = pl.read_parquet(part)
        old = df.drop(sorted(ADDED_COLUMNS[table]))
        assert old.width == df.width - len(ADDED_COLUMNS[table])
        old.write_parquet(part)
    # a second events chunk from a "newer" writer with a column this reader does not know
    pl.read_parquet(t / "events" / "part-000000.parquet").with_columns(
        (pl.col("seq") + 10).alias("seq"), pl.lit("x").alias("from_the_future")
    ).write_parquet(t / "events" / "part-000001.parquet")
    meta = json.loads((t / "meta.json").read_text())
    meta["event_count"] = 20
    (t / "meta.json").write_text(json.dumps(meta))
    tr = read_trace(t)
    assert tr.warnings == []
    assert dict(tr.events.schema) == EVENT_SCHEMA and tr.events.height == 20
    assert tr.events.select("file_dev", "file_ino", "file_path", "file_id").null_count().row(0) == (20, 20, 20, 20)
    assert dict(tr.snapshot_index.schema) == SNAPSHOT_INDEX_SCHEMA
    assert tr.snapshot_index.row(0, named=True)["start_brk"] is None
    # an original column missing, or of another type: that chunk is skipped with a warning
    pl.read_parquet(t / "events" / "part-000001.parquet").drop("ret").write_parquet(t / "events" / "part-000001.parquet")
    (t / "snapshot_index" / "part-000000.parquet").unlink()
    bad = pl.read_parquet(t / "events" / "part-000000.parquet").with_columns(pl.lit("7").alias("file_id"))
    bad.write_parquet(t / "events" / "part-000002.parquet")
    tr = read_trace(t)
    assert tr.events.height == 10
    assert any("part-000001.parquet: schema differs from format v1 (no column ret)" in w for w in tr.warnings)
    assert any("part-000002.parquet: schema differs from format v1 (column file_id is String" in w for w in tr.warnings)


def test_deep_snapshots_are_an_additive_table(tmp_path: Path) -> None:
    """A deep snapshot's /proc columns go to `snapshots` unchanged (readers that do not know deep
    snapshots read every snapshot); its hidden state goes to `deep_vmas` and comes back joined."""

    from replay.snapshot import is_deep
    from vmatrace.base.snapshot import DEEP_SCHEMA, Snapshot
    from vmatrace.base.trace import SNAPSHOT_SCHEMA

    plain = read_snapshot(os.getpid(), smaps=False)
    n = plain.frame.height
    hidden = pl.DataFrame({
        "vm_flags": [0x73] * n, "pgoff": list(range(n)), "file_id": [None] * n, "anon_vma_id": [1] * n,
        "avc": [2] * n, "fork_child": [True] * n, "close_hook": [False] * n, "anon_name": [None] * n,
        "mempolicy": [False] * n, "uffd": [False] * n,
    }, schema=DEEP_SCHEMA)
    deep = Snapshot(plain.pid, plain.t_start_ns, plain.t_end_ns, "bpf_iter",
                    pl.concat([plain.frame, hidden], how="horizontal"), plain.warnings)
    assert deep.deep and not plain.deep
    t = tmp_path / "t.vmat"
    with TraceWriter(t, {"collector": "test", "pids": [42]}) as w:
        s_plain = w.add_snapshot(plain, "start")
        s_deep = w.add_snapshot(deep, "periodic")
    assert dict(pl.read_parquet(t / "snapshots" / "part-000000.parquet").schema) == SNAPSHOT_SCHEMA
    r = read_trace(t)
    assert not r.warnings and r.deep_vmas is not None and r.deep_vmas.height == n
    got = r.snapshot(s_deep)
    assert is_deep(got) and got["pgoff"].to_list() == list(range(n)) and got["fork_child"].all()
    assert got.select(plain.frame.columns).equals(plain.frame.sort("start"))
    assert "vm_flags" not in r.snapshot(s_plain).columns
