"""`vmatrace record` options, errors and output safety; --stacks symbolization."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import ROOT, build_c, need, need_bcc, need_root, reap
from tests.record_common import WORKLOADS, record
from vmatrace.base.errors import EXIT_ERROR, EXIT_INCOMPLETE
from vmatrace.base.trace import read_trace


def _vmatrace(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmatrace", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, **kw)  # type: ignore[call-overload]


def test_help_has_examples_and_overhead_without_bcc() -> None:
    p = _vmatrace("record", "--help")
    assert p.returncode == 0
    assert "examples:" in p.stdout and "Overhead" in p.stdout and "-b PAGES" in p.stdout
    assert "--ebpf" not in p.stdout  # hidden
    code = "import sys, collectors.record; assert 'bcc' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_ebpf_prints_the_program() -> None:
    p = _vmatrace("record", "--ebpf", "--stacks", "-b", "64", "--", "true")
    assert p.returncode == 0, p.stderr
    assert "#define RINGBUF_PAGES 64" in p.stdout and "#define WITH_STACKS" in p.stdout
    assert "TRACEPOINT_PROBE(syscalls, sys_enter_exit_group)" in p.stdout


@pytest.mark.parametrize(("args", "message", "code"), [
    (["-p", "4194303"], "no process with PID 4194303", 1),
    (["-p", "999999999"], "not a PID: '999999999'", 2),
    ([], "give either -p PID", 2),
    (["-p", "1", "--", "true"], "give either -p PID", 2),
    (["-b", "1000", "--", "true"], "power of two", 2),
    (["-d", "0", "--", "true"], "not a duration in seconds", 2),
])
def test_user_errors_are_one_line(args: list[str], message: str, code: int, tmp_path: Path) -> None:
    p = _vmatrace("record", "-o", str(tmp_path / "t"), *args)
    assert p.returncode == code
    assert p.stderr.startswith("vmatrace") and "error: " in p.stderr and message in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.live
def test_not_root_names_the_fix() -> None:
    need_root()
    from collectors.record import check_environment
    from vmatrace.base.errors import VmatraceError

    os.seteuid(65534)  # (the venv's interpreter may not be executable by another user: stay in-process)
    try:
        with pytest.raises(VmatraceError) as e:
            check_environment()
    finally:
        os.seteuid(0)
    msg = str(e.value)
    assert "needs root" in msg and "sudo" in msg and "doctor" in msg and "\n" not in msg


@pytest.mark.live
@pytest.mark.bcc
def test_output_safety_and_invoking_user(tmp_path: Path) -> None:
    need_bcc()
    out = tmp_path / "t.vmat"
    env = {"SUDO_UID": "65534", "SUDO_GID": "65534"}
    p = record(out, "--", "/usr/bin/id", "-u", env=env)
    assert p.stdout.strip() == "65534"  # the command ran as the invoking user, not root
    st = out.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (65534, 0o700)
    for f in out.rglob("*"):
        if f.is_file():
            assert (f.stat().st_uid, stat.S_IMODE(f.stat().st_mode)) == (65534, 0o600), f
    # no overwrite without --force
    again = record(out, "--", "/usr/bin/true", check=False)
    assert again.returncode == 1 and "exists (use --force" in again.stderr
    p = record(out, "--force", "--as-root", "--", "/usr/bin/id", "-u", env=env)
    assert p.stdout.strip() == "0"
    # never through a symlink
    link = tmp_path / "link.vmat"
    link.symlink_to(tmp_path / "elsewhere")
    p = record(link, "--", "/usr/bin/true", check=False)
    assert p.returncode == 1 and "symlink" in p.stderr
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.live
@pytest.mark.bcc
def test_command_not_found(tmp_path: Path) -> None:
    need_bcc()
    p = record(tmp_path / "t", "--", "/nonexistent/prog", check=False)
    assert p.returncode == EXIT_INCOMPLETE and "command not found" in p.stderr
    assert not (tmp_path / "t").exists()


@pytest.mark.live
@pytest.mark.bcc
def test_stacks_are_symbolized(tmp_path: Path) -> None:
    exe = build_c(WORKLOADS / "lifecycle.c", tmp_path / "lifecycle", "-pthread", "-fno-omit-frame-pointer")
    out = tmp_path / "t.vmat"
    p = record(out, "--stacks", "--", str(exe), "exit")
    marker = int(p.stdout.split()[2], 16)
    t = read_trace(out)
    assert t.warnings == []
    # the recording kernel's probed behaviour is in the trace, and an offline replay uses it
    from replay.engine import recording_profile
    from replay.live import probe_live

    probe = t.meta["kernel_probe"]
    assert probe["profile"] == probe_live().profile and probe["sticky"] == probe_live().sticky
    prof, how = recording_profile(t.meta)
    assert prof is not None and prof.sticky_flags == probe["sticky"] and how.startswith("probed")
    prof2, how2 = recording_profile({**t.meta, "kernel_probe": None})
    assert how2.startswith("release table") and prof2 is not None
    # a walk that meets a page not yet present (a fault on the stack itself) fails: counted, reported
    assert all("user stacks could not be recorded" in w for w in t.meta["record_warnings"])
    ev = t.events.filter((pl.col("kind") == "mmap") & (pl.col("ret") == marker))
    sid = ev.get_column("stack_id")[0]
    assert sid is not None
    frames = t.stacks.filter((pl.col("stack_id") == sid) & (pl.col("pid") == ev.get_column("pid")[0])).sort("depth")
    syms = frames.get_column("symbol").to_list()
    mods = frames.get_column("module").to_list()
    assert "main" in syms, syms
    assert any(str(m).endswith("/lifecycle") for m in mods)
    assert any("libc" in str(m) for m in mods)  # the mmap wrapper itself
    # faults carry stacks too
    f = t.events.filter(pl.col("kind") == "fault")
    assert f.get_column("stack_id").is_not_null().sum() > 0


@pytest.mark.live
@pytest.mark.bcc
def test_pid_already_traced_is_refused(tmp_path: Path) -> None:
    need_bcc()
    need(shutil.which("strace") is not None, "needs strace")
    exe = build_c(WORKLOADS / "lifecycle.c", tmp_path / "lifecycle", "-pthread")
    st = subprocess.Popen(["strace", "-o", "/dev/null", str(exe), "pause"], stdout=subprocess.PIPE, text=True)
    assert st.stdout is not None
    pid = int(st.stdout.readline().split()[1])  # MARKER <pid> <addr>
    try:
        p = record(tmp_path / "t.vmat", "-p", str(pid), "-d", "1", check=False)
        assert p.returncode == EXIT_ERROR and f"already traced by PID {st.pid} (strace)" in p.stderr
        assert not (tmp_path / "t.vmat").exists()  # nothing half-made
    finally:
        os.kill(pid, signal.SIGKILL)
        reap(st)


@pytest.mark.live
@pytest.mark.bcc
def test_several_pids(tmp_path: Path) -> None:
    exe = build_c(WORKLOADS / "lifecycle.c", tmp_path / "lifecycle", "-pthread")
    targets = [subprocess.Popen([str(exe), "loop", "60"], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        pids = []
        for tp in targets:
            assert tp.stdout is not None
            pids.append(next(int(ln.split()[1]) for ln in tp.stdout if ln.startswith("READY")))
        out = tmp_path / "t.vmat"
        record(out, *(a for pid in pids for a in ("-p", str(pid))), "-d", "1")
        t = read_trace(out)
        assert t.warnings == [] and sorted(t.meta["pids"]) == sorted(pids)
        for pid in pids:
            assert t.events.filter((pl.col("pid") == pid) & (pl.col("kind") == "mmap")).height > 50
            reasons = t.snapshot_index.filter(pl.col("pid") == pid).get_column("reason").to_list()
            assert reasons == ["start", "end"]
    finally:
        for tp in targets:
            reap(tp)
