"""The README's main command runs end to end on the bundled workload."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, need_root
from vmatrace.base.trace import read_trace


@pytest.mark.live
@pytest.mark.bcc
def test_demo_script_records_and_analyses(tmp_path: Path) -> None:
    need_root()
    env = dict(os.environ, VMATRACE_DEMO_OUT=str(tmp_path / "out"), COLUMNS="200")
    p = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    for section in ("== vmatrace doctor", "== vmatrace record", "== vmatrace info", "== vmatrace report",
                    "== vmatrace snapshot", "== vmatrace top"):
        assert section in out
    assert "record can work here" in out
    assert "invisible fragmentation:" in out and "right has lo" in out
    # the replay's fix table names the 8 built cases for the workload process
    assert "the 6.16 anon-merge fix" in out
    assert (tmp_path / "out" / "report.html").stat().st_size > 1_000_000  # plotly inlined
    t = read_trace(tmp_path / "out" / "fragment.vmat")
    assert t.warnings == [] and t.meta["complete"] and t.meta["collector"] == "bcc"
    assert t.events.filter(t.events["kind"] == "fork").height >= 1
    assert set(t.snapshot_index["reason"]) >= {"start", "exit"}
