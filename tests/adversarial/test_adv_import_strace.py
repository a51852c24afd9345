"""Adversarial: `vmatrace import-strace` on logs a user (or an attacker) might hand it.

Real strace runs where the case is about strace's output (no -f, a pipe); hand-written lines
where the case is a damaged log no strace would write on purpose (a truncation, a lost resume).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.adversarial.common import EXIT, one_error_line, vm, warnings_of
from tests.conftest import ROOT, need
from vmatrace.base.trace import read_trace

MMAP = "mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0"


def _strace() -> str:
    s = shutil.which("strace")
    need(s is not None, "needs strace (scripts/setup.sh installs it)")
    assert s is not None
    return s


def _real_log(tmp: Path, *opts: str) -> Path:
    """strace of a shell that forks three children, with the given options."""
    log = tmp / "real.strace"
    subprocess.run([_strace(), *opts, "-tt", "-X", "raw", "-e", "trace=%memory,%process", "-o", str(log),
                    "sh", "-c", "/bin/true; /bin/true; ls / >/dev/null"], check=True, timeout=60)
    return log


def _write(tmp: Path, lines: list[str], name: str = "log.strace") -> Path:
    p = tmp / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_many_unfinished_calls_of_one_thread_are_all_kept(tmp_path: Path) -> None:
    # 236 calls started on one tid before any of them resumes (a log of several processes without
    # -f shares one pid): every one becomes an event, paired by name, newest first
    n = 236
    lines = [f"100 {MMAP} <unfinished ...>" for _ in range(n)]
    lines += [f"100 <... mmap resumed>) = {0x7F0000000000 + i * 4096:#x}" for i in range(n)]
    lines += ["100 +++ exited with 0 +++"]
    out = tmp_path / "t.vmat"
    p = vm("import-strace", _write(tmp_path, lines), "-o", out)
    assert p.returncode == EXIT["ok"], p.stderr
    t = read_trace(out)
    assert t.events.filter(t.events["kind"] == "mmap").height == n
    assert t.meta["strace"]["unpaired_calls"] == 0


def test_unfinished_without_resumed_is_counted_not_dropped_silently(tmp_path: Path) -> None:
    lines = [f"100 {MMAP}) = 0x7f0000000000"]
    lines += [f"100 {MMAP} <unfinished ...>" for _ in range(5)]
    lines += ["101 <... munmap resumed>) = 0", "100 +++ exited with 0 +++"]
    out = tmp_path / "t.vmat"
    p = vm("import-strace", _write(tmp_path, lines), "-o", out)
    assert p.returncode == EXIT["damaged"], p.stderr
    w = " ".join(warnings_of(p))
    assert "6 unfinished calls could not be paired" in w  # 5 never resumed + 1 resumed without a start
    t = read_trace(out)
    assert t.meta["strace"]["unpaired_calls"] == 6
    assert t.events.filter(t.events["kind"] == "mmap").height == 1


def test_truncated_log_keeps_what_it_holds(tmp_path: Path) -> None:
    full = [f"100 {MMAP}) = {0x7F0000000000 + i * 4096:#x}" for i in range(50)]
    text = "\n".join(full)
    log = tmp_path / "cut.strace"
    log.write_text(text[: len(text) - 30])  # cut inside the last line
    out = tmp_path / "t.vmat"
    p = vm("import-strace", log, "-o", out)
    assert p.returncode == EXIT["damaged"], p.stderr
    assert any("truncated line" in w for w in warnings_of(p))
    assert read_trace(out).events.height == 49


def test_non_utf8_bytes_and_escaped_paths(tmp_path: Path) -> None:
    # raw invalid UTF-8 in the log, and strace's octal escapes of a UTF-8 path and of an invalid byte
    raw = (b'100 execve("/tmp/caf\\303\\251/x\\377", ["caf\\303\\251", "-c", "0123456789abcdef"..., ...], '
           b'0x7ffd /* 3 vars */) = 0\n'
           b'100 ' + MMAP.encode() + b') = 0x7f0000000000 \xff\xfe garbage\n'
           b'100 +++ exited with 0 +++\n')
    log = tmp_path / "nonutf8.strace"
    log.write_bytes(raw)
    out = tmp_path / "t.vmat"
    p = vm("import-strace", log, "-o", out)
    assert "Traceback" not in p.stderr and p.returncode == EXIT["ok"], p.stderr
    t = read_trace(out)
    assert t.meta["cmdline"] == "café -c 0123456789abcdef... ..."  # strace's cuts kept
    exec_text = t.events.filter(t.events["kind"] == "exec").get_column("text").to_list()
    assert exec_text == ["/tmp/café/x\\xff"]


@pytest.mark.parametrize("what", ["binary", "empty", "directory", "device", "missing", "not-strace"])
def test_unreadable_inputs_are_one_line(tmp_path: Path, what: str) -> None:
    path: Path | str
    if what == "binary":
        path = tmp_path / "bin.log"
        path.write_bytes(os.urandom(50_000))
        needle = "binary data"
    elif what == "empty":
        path = tmp_path / "empty.log"
        path.write_bytes(b"")
        needle = "is empty"
    elif what == "directory":
        path, needle = tmp_path, "is a directory"
    elif what == "device":
        path, needle = "/dev/zero", "is a device"
    elif what == "missing":
        path, needle = tmp_path / "nope", "no such file"
    else:
        path = tmp_path / "words.log"
        path.write_text("hello world\n" * 100)
        needle = "not strace output"
    out = tmp_path / "t.vmat"
    p = vm("import-strace", path, "-o", out, timeout=30)
    one_error_line(p, "error", needle)
    assert not out.exists()


def test_overlong_line_is_skipped_not_held(tmp_path: Path) -> None:
    log = tmp_path / "long.strace"
    with open(log, "w") as f:
        f.write(f"100 {MMAP}) = 0x7f0000000000\n")
        f.write("100 mmap(" + "A" * (3 << 20) + "\n")
        f.write(f"100 {MMAP}) = 0x7f0000001000\n")
    out = tmp_path / "t.vmat"
    p = vm("import-strace", log, "-o", out)
    assert p.returncode == EXIT["damaged"], p.stderr
    assert any("more than 1 Mi characters" in w for w in warnings_of(p))
    assert read_trace(out).events.height == 2


def test_log_without_f_warns_and_invents_no_process(tmp_path: Path) -> None:
    log = _real_log(tmp_path)
    out = tmp_path / "t.vmat"
    p = vm("import-strace", log, "-o", out)
    assert p.returncode == EXIT["ok"], p.stderr
    assert any("strace without -f" in w for w in warnings_of(p))
    t = read_trace(out)
    assert t.procs.height == 1 and len(t.meta["pids"]) == 1
    assert t.meta["strace"]["unfollowed_children"] == 3
    assert t.meta["cmdline"].startswith("sh -c /bin/true; /bin/true;")  # strace cut it at 32 bytes
    assert t.meta["cmdline"].endswith("...")


def test_process_substitution_and_fifo_paths(tmp_path: Path) -> None:
    log = _real_log(tmp_path, "-f")
    ref = tmp_path / "ref.vmat"
    assert vm("import-strace", log, "-o", ref).returncode == EXIT["ok"]
    n = read_trace(ref).events.height
    # `<(cat log)`: a pipe, as bash hands it
    out = tmp_path / "ps.vmat"
    cmd = f"{sys.executable} -m vmatrace import-strace <(cat {log}) -o {out}"
    p = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == EXIT["ok"], p.stderr
    assert read_trace(out).events.height == n
    # a named FIFO the user gives explicitly
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(log.read_bytes()))
    writer.start()
    out2 = tmp_path / "fifo.vmat"
    p = vm("import-strace", fifo, "-o", out2, timeout=60)
    writer.join(timeout=30)
    assert p.returncode == EXIT["ok"], p.stderr
    assert read_trace(out2).events.height == n


def test_failed_import_leaves_the_old_trace(tmp_path: Path) -> None:
    good = _write(tmp_path, [f"100 {MMAP}) = 0x7f0000000000", "100 +++ exited with 0 +++"])
    out = tmp_path / "t.vmat"
    assert vm("import-strace", good, "-o", out).returncode == EXIT["ok"]
    before = (out / "meta.json").read_bytes()
    bad = tmp_path / "bad.log"
    bad.write_bytes(os.urandom(4096))
    one_error_line(vm("import-strace", bad, "-o", out, "--force"), "error", "binary data")
    assert (out / "meta.json").read_bytes() == before
    assert [x.name for x in tmp_path.iterdir() if x.name.startswith(".t.vmat")] == []


def test_exec_of_a_fifo_or_device_named_in_the_log_never_blocks(tmp_path: Path) -> None:
    # the layout reconstruction opens the executables a log names: a FIFO there (or a device)
    # must be refused, not opened for ever
    fifo = tmp_path / "exe.fifo"
    os.mkfifo(fifo)
    log = _write(tmp_path, [f'100 execve("{fifo}", ["x"], 0x7ffd /* 1 vars */) = 0',
                            f"100 {MMAP}) = 0x7f0000000000",
                            '100 execve("/dev/zero", ["z"], 0x7ffd /* 1 vars */) = 0',
                            "100 +++ exited with 0 +++"])
    out = tmp_path / "t.vmat"
    p = vm("import-strace", log, "-o", out, timeout=30)
    assert p.returncode == EXIT["ok"], p.stderr
    w = warnings_of(p)
    assert sum("not a regular file" in x for x in w) == 2, w
