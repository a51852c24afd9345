"""The README's two commands as root, with or without sudo: scripts/root.sh (sourced by demo.sh,
setup.sh and test.sh) does nothing for root, re-runs the script through sudo for a user when sudo
is installed, and stops with one line when it is not. demo.sh itself runs as root without sudo in
tests/test_demo.py (this machine has no sudo).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, need, need_root

SCRIPT = """#!/usr/bin/env bash
set -euo pipefail
. "$(dirname "$0")/root.sh"
as_root "$(readlink -f "$0")" "$@"
echo "ran as $(id -u): $*"
"""

# A stand-in for sudo, which this machine does not have (a mock of what cannot run here): it
# prints how it was called, so the test sees the re-run and the settings it keeps.
FAKE_SUDO = """#!/bin/sh
echo "sudo $*"
"""


def _setup(tmp: Path) -> tuple[Path, Path]:
    scripts = tmp / "scripts"
    scripts.mkdir()
    shutil.copy(ROOT / "scripts" / "root.sh", scripts / "root.sh")
    t = scripts / "t.sh"
    t.write_text(SCRIPT)
    bin_ = tmp / "bin"
    bin_.mkdir()
    (bin_ / "sudo").write_text(FAKE_SUDO)
    for p in (tmp, scripts, bin_, t, bin_ / "sudo"):
        p.chmod(0o755)  # the unprivileged user runs them
    return t, bin_


@pytest.fixture
def tmp() -> Iterator[Path]:
    """A directory the unprivileged user can reach (pytest's own is root's, 0700)."""
    with tempfile.TemporaryDirectory(prefix="vmatrace-scripts-") as d:
        yield Path(d)


def _as_nobody(t: Path, path: str) -> subprocess.CompletedProcess[str]:
    setpriv = shutil.which("setpriv")
    need(setpriv is not None, "needs setpriv (util-linux) to drop privileges")
    assert setpriv is not None
    return subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "env",
                           f"PATH={path}", "VMATRACE_REQUIRE_LIVE=1", str(t), "a", "b"],
                          capture_output=True, text=True, timeout=60)


def test_root_runs_the_script_itself(tmp: Path) -> None:
    need_root()
    t, bin_ = _setup(tmp)
    for path in ("/usr/bin:/bin", f"{bin_}:/usr/bin:/bin"):  # without and with sudo installed
        p = subprocess.run([str(t), "a", "b"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PATH": path})
        assert (p.returncode, p.stdout, p.stderr) == (0, "ran as 0: a b\n", "")


def test_user_without_sudo_gets_one_line(tmp: Path) -> None:
    need_root()
    t, _ = _setup(tmp)
    p = _as_nobody(t, "/usr/bin:/bin")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr == "t.sh: needs root and sudo is not installed: run it from a root shell\n"


def test_user_with_sudo_reruns_through_it(tmp: Path) -> None:
    need_root()
    t, bin_ = _setup(tmp)
    p = _as_nobody(t, f"{bin_}:/usr/bin:/bin")
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout == (f"sudo --preserve-env=VMATRACE_REQUIRE_LIVE,VMATRACE_DEMO_OUT,"
                        f"VMATRACE_KERNELS,PYTHON -- {t} a b\n")
