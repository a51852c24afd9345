"""Adversarial: `vmatrace record`'s life cycle: commands that cannot start, signals to the recorder
and to the target, many children, two recorders at once; and the PIDs `record -p` must refuse.

Every case must end on its own (a timeout here is the failure), say what happened in one line,
and exit with the README's code. Live: root and bcc.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from tests.adversarial.common import EXIT, one_error_line, vm
from tests.conftest import ROOT, need_bcc
from vmatrace.base.trace import read_trace

pytestmark = [pytest.mark.live, pytest.mark.bcc]
NOBODY = "65534"


def _leftovers(d: Path) -> list[str]:
    """Hidden staging directories left next to an output."""
    return [x.name for x in d.iterdir() if x.name.startswith(".") and ".tmp-" in x.name]


def _make(tmp: Path, kind: str) -> tuple[list[str], str, dict[str, str]]:
    """(command, words of the expected error, extra environment) for one way of failing to exec."""
    if kind == "no-exec-bit":
        f = tmp / "script.sh"
        f.write_text("#!/bin/sh\necho hi\n")
        f.chmod(0o644)
        return [str(f)], "Permission denied", {}
    if kind == "bad-interpreter":
        f = tmp / "bad.sh"
        f.write_text("#!/no/such/interpreter\n")
        f.chmod(0o755)
        return [str(f)], "'/no/such/interpreter' on its #! line", {}
    if kind == "0700-after-privilege-drop":
        d = tmp / "priv"
        d.mkdir()
        d.chmod(0o755)
        f = d / "true"
        shutil.copy("/bin/true", f)
        f.chmod(0o700)  # root's own: the command runs as the invoking user (SUDO_UID), who cannot exec it
        tmp.chmod(0o755)
        return [str(f)], "Permission denied", {"SUDO_UID": NOBODY, "SUDO_GID": NOBODY}
    if kind == "exec-format":
        f = tmp / "empty"
        f.write_bytes(b"\x00\x01garbage")
        f.chmod(0o755)
        return [str(f)], "Exec format error", {}
    if kind == "directory":
        return [str(tmp)], "is a directory", {}
    return [str(tmp / "nope")], "command not found", {}


@pytest.mark.parametrize("kind", ["no-exec-bit", "bad-interpreter", "0700-after-privilege-drop", "exec-format",
                                  "directory", "not-found"])
def test_exec_failure_never_hangs_and_leaves_nothing(tmp_path: Path, kind: str) -> None:
    need_bcc()
    cmd, words, env = _make(tmp_path, kind)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "t.vmat"
    p = vm("record", "-o", out, "--", *cmd, timeout=60, env=env)  # (a hang is a TimeoutExpired)
    one_error_line(p, "target", words)
    assert not out.exists() and _leftovers(out_dir) == []


def test_failed_command_with_force_keeps_the_old_trace(tmp_path: Path) -> None:
    need_bcc()
    out = tmp_path / "t.vmat"
    assert vm("record", "-q", "-o", out, "--", "/bin/true").returncode == 0
    before = {f.relative_to(out): f.read_bytes() for f in out.rglob("*") if f.is_file()}
    cmd, words, _ = _make(tmp_path, "no-exec-bit")
    p = vm("record", "-o", out, "--force", "--", *cmd, timeout=60)
    one_error_line(p, "target", words)
    after = {f.relative_to(out): f.read_bytes() for f in out.rglob("*") if f.is_file()}
    assert after == before and _leftovers(tmp_path) == []
    # and a command that runs does replace it
    assert vm("record", "-q", "-o", out, "--force", "--", "/bin/true").returncode == 0
    assert read_trace(out).meta["start_ns"] != read_trace_meta_start(before)


def read_trace_meta_start(files: dict[Path, bytes]) -> int:
    import json

    return int(json.loads(files[Path("meta.json")])["start_ns"])


class _Recorder:
    """A recorder running in the background; its output goes to a file (a command it lets go
    keeps the recorder's stdout and stderr open, so a pipe would never see EOF)."""

    def __init__(self, out: Path, *args: str) -> None:
        need_bcc()
        self.log = out.with_name(out.name + ".stderr")
        with open(self.log, "w") as f:
            self.p = subprocess.Popen([sys.executable, "-m", "vmatrace", "record", "-o", str(out), *args], cwd=ROOT,
                                      stdout=f, stderr=f, text=True)
        self.pid = self.p.pid

    def poll(self) -> int | None:
        return self.p.poll()

    def send_signal(self, sig: int) -> None:
        self.p.send_signal(sig)

    def finish(self, timeout: float) -> str:
        """Wait for the end (a hang is the failure) and return what it printed."""
        self.p.wait(timeout=timeout)
        return self.log.read_text()


def _recorder(out: Path, *args: str) -> _Recorder:
    return _Recorder(out, *args)


def _wait_for_child_of(rec: _Recorder, comm: str, timeout: float = 60) -> int:
    """The pid of the recorder's traced command, once it runs `comm`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                st = (d / "stat").read_text()
            except OSError:
                continue
            name, rest = st.split("(", 1)[1].rsplit(")", 1)
            if name == comm and int(rest.split()[1]) == rec.pid:
                time.sleep(0.3)  # past its start snapshot
                return int(d.name)
        assert rec.poll() is None, rec.finish(1)
        time.sleep(0.05)
    raise AssertionError(f"{comm} never started under the recorder")


@pytest.mark.parametrize(("sig", "stopped"), [(signal.SIGINT, False), (signal.SIGTERM, False),
                                               (signal.SIGTERM, True)])
def test_signal_ends_recording_and_says_what_still_runs(tmp_path: Path, sig: int, stopped: bool) -> None:
    out = tmp_path / "t.vmat"
    rec = _recorder(out, "--", "sleep", "60")
    pid = _wait_for_child_of(rec, "sleep")
    try:
        if stopped:  # a target in group-stop must not keep the recorder from ending
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.2)
        rec.send_signal(sig)
        err = rec.finish(30)
        assert rec.p.returncode == EXIT["ok"], err
        assert f"still running, no longer traced: 1 process: PID {pid} (sleep)" in err
        assert os.path.exists(f"/proc/{pid}")  # let go, not killed
        t = read_trace(out)
        assert t.warnings == [] and t.meta["complete"]
        assert t.procs.filter(pl.col("pid") == pid).get_column("how_ended").to_list() == ["still running (detached)"]
    finally:
        os.kill(pid, signal.SIGKILL)
        if stopped:
            os.kill(pid, signal.SIGCONT)


def test_recorder_sigkill_keeps_a_readable_trace_and_the_target(tmp_path: Path) -> None:
    out = tmp_path / "t.vmat"
    rec = _recorder(out, "--", "sleep", "60")
    pid = _wait_for_child_of(rec, "sleep")
    try:
        time.sleep(1.5)  # past a flush
        rec.send_signal(signal.SIGKILL)
        rec.finish(30)
        assert os.path.exists(f"/proc/{pid}") and "T" not in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
        p = vm("info", out)
        assert p.returncode == EXIT["damaged"], p.stderr
        assert "not finalized" in p.stderr
    finally:
        os.kill(pid, signal.SIGKILL)


def test_target_sigkill_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "t.vmat"
    rec = _recorder(out, "--", "sleep", "60")
    pid = _wait_for_child_of(rec, "sleep")
    os.kill(pid, signal.SIGKILL)
    err = rec.finish(60)
    assert rec.p.returncode == EXIT["ok"], err
    t = read_trace(out)
    assert t.warnings == []
    assert t.procs.filter(pl.col("pid") == pid).get_column("how_ended").to_list() == ["killed (SIGKILL)"]


def test_fifty_forking_children(tmp_path: Path) -> None:
    need_bcc()
    out = tmp_path / "t.vmat"
    script = "for i in $(seq 50); do /bin/true & done; wait"
    p = vm("record", "-o", out, "--", "sh", "-c", script, timeout=120)
    assert p.returncode == EXIT["ok"], p.stderr
    t = read_trace(out)
    assert t.warnings == [] and t.meta["lost_count"] == 0
    trues = t.procs.filter(pl.col("comm") == "true")
    assert trues.height == 50 and trues.get_column("how_ended").to_list() == ["exit"] * 50
    # each has a start snapshot after its exec and an exit snapshot
    reasons = t.snapshot_index.filter(pl.col("pid").is_in(trues.get_column("pid").implode()))
    assert reasons.filter(pl.col("reason") == "exit").height == 50
    # the summary counts what the trace holds (not the faults of the recorder's own forked copy)
    m = re.search(r"(\d+) events \((\d+) first write faults\)", p.stderr)
    assert m is not None, p.stderr
    assert (int(m.group(1)), int(m.group(2))) == (t.events.height,
                                                  t.events.filter(pl.col("kind") == "fault").height)


def test_two_recorders_at_once(tmp_path: Path) -> None:
    need_bcc()
    results: dict[int, subprocess.CompletedProcess[str]] = {}

    def one(i: int) -> None:
        results[i] = vm("record", "-o", tmp_path / f"t{i}.vmat", "--", "sh", "-c", f"exec /bin/echo rec{i}",
                        timeout=120)

    ths = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    pids = []
    for i in range(2):
        assert results[i].returncode == EXIT["ok"], results[i].stderr
        t = read_trace(tmp_path / f"t{i}.vmat")
        assert t.warnings == []
        pids.append(set(t.events.get_column("pid").unique().to_list()))
        assert f"rec{i}" in t.meta["cmdline"]
    assert not (pids[0] & pids[1])  # each recorder sees only its own tree


# -- record -p: PIDs it must refuse in one line (no BPF program is built for these) ----------


def test_pid_out_of_range_is_a_usage_error() -> None:
    for pid in ("0", "-1", "4194305", "99999999999", "12abc"):  # (PID_MAX_LIMIT is 4194304)
        p = vm("record", "-p", pid, "-d", "1", timeout=30)
        assert p.returncode == EXIT["usage"] and "not a PID" in p.stderr, p.stderr


def test_pid_kernel_thread_zombie_and_thread_are_named(tmp_path: Path) -> None:
    need_bcc()
    one_error_line(vm("record", "-p", "2", "-d", "1", timeout=30), "error", "kernel thread")
    z = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{z.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        one_error_line(vm("record", "-p", str(z.pid), "-d", "1", timeout=30), "error", "zombie")
    finally:
        z.wait()
    ev = threading.Event()
    th = threading.Thread(target=ev.wait)
    th.start()
    try:
        tid = th.native_id
        assert tid is not None
        one_error_line(vm("record", "-p", str(tid), "-d", "1", timeout=30), "error", "is a thread", str(os.getpid()))
    finally:
        ev.set()
        th.join()
    one_error_line(vm("record", "-p", "4194304", "-d", "1", timeout=30), "error", "no process with PID")


def test_pid_that_exits_while_being_attached(tmp_path: Path) -> None:
    need_bcc()
    # exits as soon as a tracer attaches (TracerPid becomes non-zero): during the seize or the
    # start snapshot
    code = ("import time\nwhile True:\n  s = open('/proc/self/status').read()\n"
            "  if '\\nTracerPid:\\t0\\n' not in s: break\n  time.sleep(0.001)\n")
    target = subprocess.Popen([sys.executable, "-c", code])
    try:
        out = tmp_path / "t.vmat"
        p = vm("record", "-o", out, "-p", str(target.pid), "-d", "5", timeout=60)
        assert "Traceback" not in p.stderr
        assert p.returncode in (EXIT["ok"], EXIT["error"]), p.stderr
        if p.returncode == EXIT["ok"]:
            t = read_trace(out)
            assert t.procs.filter(pl.col("pid") == target.pid).get_column("how_ended").to_list() == ["exit"]
        else:
            assert not out.exists()
    finally:
        target.kill()
        target.wait()


def _loading_bpf(pid: int) -> bool:
    try:
        return "libbcc" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_interrupted_before_the_command_starts(tmp_path: Path) -> None:
    # Ctrl-C while the BPF program is being built: nothing is recorded, nothing is left
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "t.vmat"
    rec = _recorder(out, "--", "/bin/true")
    deadline = time.monotonic() + 30
    while not _loading_bpf(rec.pid):  # (bcc is loaded: the program is being built, nothing launched yet)
        assert rec.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    rec.send_signal(signal.SIGINT)
    err = rec.finish(30)
    assert rec.p.returncode == EXIT["interrupted"], err
    assert "Traceback" not in err
    assert not out.exists() and _leftovers(out_dir) == []


def test_second_recorder_on_a_traced_process_names_the_first(tmp_path: Path) -> None:
    rec = _recorder(tmp_path / "a.vmat", "--", "sleep", "60")
    pid = _wait_for_child_of(rec, "sleep")
    try:
        p = vm("record", "-o", tmp_path / "b.vmat", "-p", str(pid), "-d", "1", timeout=60)
        one_error_line(p, "error", f"already traced by PID {rec.pid}")
        assert not (tmp_path / "b.vmat").exists()
        rec.send_signal(signal.SIGINT)
        assert rec.finish(30) and rec.p.returncode == EXIT["ok"]
    finally:
        os.kill(pid, signal.SIGKILL)
