"""Helpers of the adversarial suite (tests/adversarial/): run the CLI as a user would, check the
one-line error and the documented exit code (README.md, "Exit codes")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

# The README's exit-code table, by meaning.
EXIT = {"ok": 0, "error": 1, "usage": 2, "damaged": 3, "target": 4, "interrupted": 130}


def vm(*args: str | Path, timeout: float = 120, env: dict[str, str] | None = None,
       stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    """`python -m vmatrace ARGS`, finished, with its output."""
    return subprocess.run([sys.executable, "-m", "vmatrace", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})}, stdin=stdin)


def one_error_line(p: subprocess.CompletedProcess[str], code: str, *needles: str) -> str:
    """Assert: exit code EXIT[code], stderr ends with one `vmatrace: error:` line holding every needle,
    and no traceback anywhere."""
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == EXIT[code], f"exit {p.returncode}, wanted {EXIT[code]} ({code}):\n{p.stderr}"
    errs = [ln for ln in p.stderr.splitlines() if ln.startswith("vmatrace: error: ")]
    assert len(errs) == 1, p.stderr
    for n in needles:
        assert n in errs[0], f"{n!r} not in {errs[0]!r}"
    return errs[0]


def warnings_of(p: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in p.stderr.splitlines() if ln.startswith("vmatrace: warning: ")]
