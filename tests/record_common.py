"""Helpers shared by the live `vmatrace record` tests (no tests here; the name keeps it among test_record*)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from tests.conftest import ROOT, need_bcc

WORKLOADS = ROOT / "tests" / "workloads"


def record(out: Path, *args: str, timeout: float = 120, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m vmatrace record -o OUT ARGS...` and return the finished process."""
    need_bcc()
    cmd = [sys.executable, "-m", "vmatrace", "record", "-o", str(out), *args]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if check and p.returncode != 0:
        raise AssertionError(f"record failed ({p.returncode}):\n{p.stderr}")
    return p


@contextmanager
def attached(out: Path, pid: int, *args: str) -> Iterator[None]:
    """`vmatrace record -o OUT -p PID ARGS...` running while the block runs (it has said it is
    tracing when the block starts); then Ctrl-C, and the recorder must end with 0."""
    need_bcc()
    rec = subprocess.Popen([sys.executable, "-m", "vmatrace", "record", "-o", str(out), "-p", str(pid), "-d", "60",
                            *args], cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           stdin=subprocess.DEVNULL, text=True)
    try:
        assert rec.stderr is not None
        line = rec.stderr.readline()
        assert line.startswith("Tracing VMA changes"), line + rec.stderr.read()
        yield
    finally:
        rec.send_signal(2)  # Ctrl-C: the end snapshot, then the trace is closed
        _, err = rec.communicate(timeout=60)  # (the attached process does not hold its stderr)
        assert rec.returncode == 0, err


@dataclass
class Call:
    pid: int
    tid: int
    mode: str
    name: str
    args: list[int]
    ret: int


@dataclass
class ScriptOutput:
    calls: list[Call] = field(default_factory=list)
    maps: dict[int, str] = field(default_factory=dict)
    exits: dict[int, int] = field(default_factory=dict)
    forks: list[tuple[int, int]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def parse_script_output(text: str) -> ScriptOutput:
    """Parse the output of tests/workloads/vma_script.c (format documented at its top)."""
    out = ScriptOutput()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        w = lines[i].split()
        i += 1
        if not w:
            continue
        if w[0] == "CALL":
            pid, tid, mode, name, n = int(w[1]), int(w[2]), w[3], w[4], int(w[5])
            args = [int(x, 16) for x in w[6 : 6 + n]]
            assert w[6 + n] == "="
            out.calls.append(Call(pid, tid, mode, name, args, int(w[7 + n])))
        elif w[0] == "MAPS":
            pid, n = int(w[1]), int(w[2])
            out.maps[pid] = "\n".join(lines[i : i + n]) + "\n"
            i += n
        elif w[0] == "EXIT":
            out.exits[int(w[1])] = int(w[2])
        elif w[0] == "FORK":
            out.forks.append((int(w[1]), int(w[2])))
        elif w[0] == "IGNORED":
            out.ignored.append(" ".join(w[2:]))
    return out


def maps_rows(frame: pl.DataFrame) -> list[tuple[object, ...]]:
    """Comparable identity of VMAs: (start, end, perms, offset, inode, path)."""
    return frame.sort("start").select("start", "end", "perms", "offset", "inode", "path").rows()


def final_snapshot(trace: object, pid: int) -> pl.DataFrame:
    idx = trace.snapshot_index.filter((pl.col("pid") == pid) & (pl.col("reason") == "exit"))  # type: ignore[attr-defined]
    assert idx.height == 1, f"expected one exit snapshot of {pid}, got {idx.height}"
    return trace.snapshot(int(idx.get_column("snapshot_id")[0]))  # type: ignore[attr-defined]
