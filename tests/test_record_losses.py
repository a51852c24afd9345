"""Live: when the ring buffer overflows, the trace says how many events were lost and when.

A one-page ring (42 records) cannot hold a tight mmap/munmap loop between two drains, so reserves
fail. Every failed reserve is counted in the BPF program and consumed a sequence number, so the
gaps in `seq` must add up to `lost_count`, and every gap must fall inside a recorded loss window.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.record_common import record
from vmatrace.base.trace import read_trace

pytestmark = [pytest.mark.live, pytest.mark.bcc]

SRC = r"""
#include <sys/mman.h>
int main(void) {
    for (int i = 0; i < 200000; i++) {
        void *p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        munmap(p, 4096);
    }
    return 0;
}
"""


def test_losses_are_counted_and_located(tmp_path: Path, cbuild: object) -> None:
    exe = cbuild(SRC, "burst")  # type: ignore[operator]
    out = tmp_path / "t.vmat"
    p = record(out, "-b", "1", "--no-faults", "--", str(exe))
    t = read_trace(out)
    lost = t.meta["lost_count"]
    assert lost > 0
    assert f"{lost} lost" in p.stderr and "raise -b" in p.stderr
    assert t.losses.get_column("count").sum() == lost
    ev = t.events.sort("seq")
    seq = ev.get_column("seq")
    gaps = ev.with_columns(gap=seq.diff().fill_null(1) - 1, prev_ts=pl.col("ts_ns").shift(1)).filter(pl.col("gap") > 0)
    # every sequence number issued is either in the trace or lost: the gaps (plus a lost tail after
    # the last event kept) add up to the lost count
    tail = t.meta["seq_issued"] - 1 - seq.max()
    assert gaps.get_column("gap").sum() + tail == lost
    assert t.meta["seq_issued"] - seq.min() == t.meta["event_count"] + lost
    windows = t.losses.select("t_from_ns", "t_to_ns").rows()
    for prev_ts, ts in gaps.select("prev_ts", "ts_ns").iter_rows():
        # the lost events happened between their neighbours: some window overlaps that interval
        assert any(lo <= ts and prev_ts <= hi for lo, hi in windows), (prev_ts, ts)
    # what was kept is still exact: calls of the loop alternate mmap/munmap in seq order where no gap is
    mm = ev.filter(pl.col("kind").is_in(["mmap", "munmap"]) & (pl.col("a1") == 4096))
    assert mm.height + lost >= 400_000
