"""Shared test helpers.

Live tests need root, bcc, qemu or a kernel feature. On a user's machine they skip with a reason;
in CI (VMATRACE_REQUIRE_LIVE=1) a skip of a live test is turned into a failure, so a missing
capability can never hide behind a green run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRE_LIVE = os.environ.get("VMATRACE_REQUIRE_LIVE") == "1"
ROOT = Path(__file__).resolve().parent.parent


def need(condition: bool, reason: str) -> None:
    """Skip (or, under VMATRACE_REQUIRE_LIVE=1, fail) unless `condition` holds."""
    if condition:
        return
    if REQUIRE_LIVE:
        pytest.fail(f"live requirement missing (VMATRACE_REQUIRE_LIVE=1): {reason}", pytrace=False)
    pytest.skip(reason)


def reap(p: subprocess.Popen[Any]) -> None:
    """Kill p, wait for it and close its pipes (an unclosed pipe is a ResourceWarning, which the
    suite turns into an error). Its output is not read: a grandchild may still hold the pipe."""
    p.kill()
    p.wait()
    for f in (p.stdout, p.stderr, p.stdin):
        if f is not None:
            with contextlib.suppress(OSError):  # flushing stdin into a dead process
                f.close()


def write_small_trace(t: Path) -> Path:
    """A real trace at ``t``: two snapshots of this test process around two events."""
    import polars as pl

    from collectors.procmaps import read_snapshot
    from vmatrace.base.trace import TraceWriter

    with TraceWriter(t, {"collector": "test", "pids": [os.getpid()]}) as w:
        w.add_snapshot(read_snapshot(os.getpid()), "start")
        w.add_events(pl.DataFrame({"seq": [0, 1], "ts_ns": [1, 2], "pid": [os.getpid()] * 2,
                                   "tid": [os.getpid()] * 2, "kind": ["mmap", "munmap"]}))
        w.flush()
        w.add_snapshot(read_snapshot(os.getpid()), "exit")
    return t


def need_root() -> None:
    need(os.geteuid() == 0, "needs root")


def need_bcc() -> None:
    need_root()
    try:
        import bcc  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the machine
        need(False, f"bcc is not importable ({e}); run scripts/setup.sh")
    need(
        os.path.isdir("/sys/kernel/tracing/events") or os.path.isdir("/sys/kernel/debug/tracing/events"),
        "tracefs is not mounted",
    )


def need_cc() -> str:
    cc = shutil.which("gcc") or shutil.which("cc")
    need(cc is not None, "needs a C compiler")
    assert cc is not None
    return cc


def build_c(src: str | Path, out: Path, *extra: str) -> Path:
    """Compile a C file (or source text) with gcc; returns the binary path."""
    cc = need_cc()
    if isinstance(src, str) and "\n" in src:
        c = out.with_suffix(".c")
        c.write_text(src)
        src = c
    subprocess.run([cc, "-O1", "-g", "-o", str(out), str(src), *extra], check=True)
    return out


@pytest.fixture
def cbuild(tmp_path: Path):
    """Fixture: cbuild(source_text_or_path, name="prog", *flags) -> Path of the binary."""

    def _build(src: str | Path, name: str = "prog", *extra: str) -> Path:
        return build_c(src, tmp_path / name, *extra)

    return _build


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """Under VMATRACE_REQUIRE_LIVE=1, a skipped test marked live/bcc/qemu is reported as a failure."""
    outcome: Any = yield
    rep = outcome.get_result()
    if REQUIRE_LIVE and rep.skipped and any(item.get_closest_marker(m) for m in ("live", "bcc", "qemu")):
        rep.outcome = "failed"
        rep.longrepr = f"live test skipped under VMATRACE_REQUIRE_LIVE=1: {rep.longrepr}"
