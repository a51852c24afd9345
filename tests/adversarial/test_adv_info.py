"""Adversarial: `vmatrace info` (and `info --snapshot`) on damaged and hostile traces.

Every trace here is a real one written by TraceWriter from a live snapshot, then damaged the way a
disk, a killed writer or a hostile user would: the verb names the damage on stderr, reads what is
readable, and exits with the README's code; it never analyses a damaged snapshot as if it were
whole, never follows a link, never blocks, never reads a huge chunk into memory, never shows a
traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.adversarial.common import EXIT, one_error_line, vm, warnings_of
from tests.conftest import ROOT, write_small_trace


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean trace: two snapshots of this test process and a few events."""
    return write_small_trace(tmp_path_factory.mktemp("info") / "t.vmat")


def _copy(trace: Path, tmp: Path) -> Path:
    dst = tmp / "copy.vmat"
    subprocess.run(["cp", "-a", str(trace), str(dst)], check=True)
    return dst


def test_clean_trace_is_ok(trace: Path) -> None:
    p = vm("info", trace)
    assert p.returncode == EXIT["ok"] and warnings_of(p) == [], p.stderr
    p = vm("info", trace, "--snapshot", "1")
    assert p.returncode == EXIT["ok"] and warnings_of(p) == [], p.stderr


def test_random_bytes_in_a_snapshots_chunk_are_named_not_analysed(trace: Path, tmp_path: Path) -> None:
    t = _copy(trace, tmp_path)
    (t / "snapshots" / "part-000000.parquet").write_bytes(os.urandom(5000))
    p = vm("info", t)
    assert p.returncode == EXIT["damaged"], p.stderr
    assert any("snapshots/part-000000.parquet" in w for w in warnings_of(p))
    p = vm("info", t, "--snapshot", "0")
    one_error_line(p, "damaged", "snapshot 0", "damaged")
    assert "0 VMAs" not in p.stdout
    assert any("snapshots/part-000000.parquet" in w for w in warnings_of(p))  # the damage itself, too
    # the snapshot in the intact chunk is still analysed, with the warnings and the damaged code
    p = vm("info", t, "--snapshot", "1")
    assert p.returncode == EXIT["damaged"] and "VMAs" in p.stdout, p.stderr
    assert warnings_of(p)


def test_wrong_column_type_in_the_index_is_named(trace: Path, tmp_path: Path) -> None:
    t = _copy(trace, tmp_path)
    idx = t / "snapshot_index" / "part-000000.parquet"
    df = pl.read_parquet(idx)
    df.with_columns(pl.col("vma_count").cast(pl.Utf8)).write_parquet(idx)
    p = vm("info", t, "--snapshot", "0")
    err = one_error_line(p, "damaged", "snapshot 0")
    assert "none" not in err.split("(it has")[-1] or "damaged" in err
    assert any("column vma_count is String" in w for w in warnings_of(p)), p.stderr


def test_deeply_nested_meta_json(trace: Path, tmp_path: Path) -> None:
    t = _copy(trace, tmp_path)
    (t / "meta.json").write_text("[" * 2000 + "]" * 2000)
    cases: list[list[str | Path]] = [["info", t], ["info", t, "--snapshot", "0"], ["info", t, "--json"]]
    for args in cases:
        one_error_line(vm(*args), "error", "meta.json")


def test_sparse_900_mb_chunk_is_not_read_into_memory(trace: Path, tmp_path: Path) -> None:
    t = _copy(trace, tmp_path)
    with open(t / "events" / "part-000007.parquet", "wb") as f:
        f.truncate(900 << 20)
    code = ("import resource, sys\nfrom vmatrace.base.trace import read_trace\nt = read_trace(sys.argv[1])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, len(t.warnings))")
    r = subprocess.run([sys.executable, "-c", code, str(t)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       check=True)
    rss_mb, n_warn = map(int, r.stdout.split())
    assert rss_mb < 400 and n_warn == 1, r.stdout
    p = vm("info", t)
    assert p.returncode == EXIT["damaged"] and any("sparse" in w for w in warnings_of(p)), p.stderr


def test_links_fifos_and_unfinished_chunks(trace: Path, tmp_path: Path) -> None:
    t = _copy(trace, tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("root only")
    (t / "events" / "part-000001.parquet").symlink_to(secret)
    os.mkfifo(t / "events" / "part-000002.parquet")
    (t / "events" / ".part-000003.parquet.tmp").write_bytes(b"PAR1")
    p = vm("info", t, timeout=30)  # (a FIFO must not block it)
    assert p.returncode == EXIT["damaged"], p.stderr
    w = " ".join(warnings_of(p))
    assert "part-000001" in w and "part-000002" in w and "unfinished chunk" in w


@pytest.mark.parametrize("what", ["missing", "file", "no-meta", "foreign", "version", "not-json"])
def test_unreadable_traces_are_one_line(tmp_path: Path, what: str) -> None:
    t = tmp_path / "t.vmat"
    if what == "file":
        t.write_bytes(os.urandom(100))
    elif what != "missing":
        t.mkdir()
        meta = {"no-meta": None, "foreign": {"format": "perf.data"},
                "version": {"format": "vmatrace-trace", "format_version": 99}, "not-json": "x"}[what]
        if meta == "x":
            (t / "meta.json").write_bytes(b"\xff{")
        elif meta is not None:
            (t / "meta.json").write_text(json.dumps(meta))
    one_error_line(vm("info", t), "error")


def test_missing_snapshot_id_in_a_clean_trace(trace: Path) -> None:
    one_error_line(vm("info", trace, "--snapshot", "7"), "error", "has no snapshot 7", "it has: 0, 1")
    p = vm("info", trace, "--snapshot", "-1")
    assert p.returncode == EXIT["usage"], p.stderr


# -- the other verbs that read a trace: replay and report --------------------------------------


@pytest.mark.parametrize("verb", ["replay", "report"])
def test_replay_and_report_show_the_damage(trace: Path, tmp_path: Path, verb: str) -> None:
    extra: list[str | Path] = ["--json"]
    # a snapshot whose rows are lost is not used as a state; the damage is shown, exit 3
    t = _copy(trace, tmp_path)
    (t / "snapshots" / "part-000000.parquet").write_bytes(os.urandom(5000))
    p = vm(verb, t, *extra, timeout=120)
    assert p.returncode == EXIT["damaged"] and "Traceback" not in p.stderr, p.stderr
    assert any("snapshots/part-000000.parquet" in w for w in warnings_of(p))
    # an index chunk of the wrong type: the error says the trace is damaged, and the warnings why
    t2 = tmp_path / "t2.vmat"
    subprocess.run(["cp", "-a", str(trace), str(t2)], check=True)
    idx = t2 / "snapshot_index" / "part-000000.parquet"
    pl.read_parquet(idx).with_columns(pl.col("vma_count").cast(pl.Utf8)).write_parquet(idx)
    p = vm(verb, t2, *extra, timeout=120)
    assert p.returncode == EXIT["damaged"] and "Traceback" not in p.stderr, p.stderr
    assert any("column vma_count is String" in w for w in warnings_of(p))
    # ... and when no snapshot is left to start from, the error says the trace is damaged
    for part in (t2 / "snapshot_index").iterdir():
        pl.read_parquet(part).with_columns(pl.col("vma_count").cast(pl.Utf8)).write_parquet(part)
    one_error_line(vm(verb, t2, *extra, timeout=120), "damaged", "the trace is damaged")
    # unreadable metadata: one line, exit 1
    (t2 / "meta.json").write_text("[" * 2000 + "]" * 2000)
    one_error_line(vm(verb, t2, *extra, timeout=120), "error", "meta.json")
