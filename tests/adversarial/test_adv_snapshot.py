"""Adversarial: `vmatrace snapshot PID` with PIDs that are not an ordinary live process.

(`record -p` with the same PIDs is in test_adv_record.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.adversarial.common import EXIT, one_error_line, vm


@pytest.mark.parametrize("pid", ["0", "-1", "4194305", "99999999999", "1x"])
def test_pid_out_of_range_is_a_usage_error(pid: str) -> None:
    p = vm("snapshot", "--", pid)
    assert p.returncode == EXIT["usage"] and "Traceback" not in p.stderr, p.stderr
    assert "not a PID" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_no_such_process() -> None:
    one_error_line(vm("snapshot", "4194304"), "error", "no process with PID 4194304")


def test_kernel_thread() -> None:
    one_error_line(vm("snapshot", "2"), "error", "kernel thread")


def test_zombie() -> None:
    z = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{z.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        one_error_line(vm("snapshot", str(z.pid)), "error", "zombie")
    finally:
        z.wait()


def test_thread_id_gives_its_process_with_a_warning() -> None:
    ev = threading.Event()
    th = threading.Thread(target=ev.wait)
    th.start()
    try:
        p = vm("snapshot", str(th.native_id))
        assert p.returncode == EXIT["ok"], p.stderr
        assert f"is a thread of process {os.getpid()}" in p.stdout + p.stderr
        d = json.loads(vm("snapshot", str(th.native_id), "--json").stdout)  # (--json carries it)
        assert d["pid"] == os.getpid() and any("is a thread of process" in w for w in d["warnings"])
    finally:
        ev.set()
        th.join()
