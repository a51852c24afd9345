"""AddressSpace.from_snapshot(): anon_vma state is UNKNOWN, the model says so, and narrows it."""

from __future__ import annotations

import polars as pl
import pytest

from replay import UNKNOWN, AddressSpace, SnapshotError
from tests.kernels import ALL

P = 0x1000
B = 0x7F0000000000
SCHEMA = {
    "start": pl.UInt64, "end": pl.UInt64, "perms": pl.Utf8, "offset": pl.UInt64,
    "dev": pl.Utf8, "inode": pl.UInt64, "path": pl.Utf8, "rss_kb": pl.UInt64,
    "anonymous_kb": pl.UInt64, "vmflags": pl.Utf8,
}


def frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


ANON_RW = "rd wr mr mw me ac"
ANON_R = "rd mr mw me"


def base_rows() -> list[tuple]:
    return [
        (0x555555554000, 0x555555556000, "r--p", 0, "fe:00", 42, "/usr/bin/app", 8, 0,
         "rd mr mw me"),
        (0x555555556000, 0x555555558000, "r-xp", 0x2000, "fe:00", 42, "/usr/bin/app", 8, 0,
         "rd ex mr mw me"),
        (0x555555600000, 0x555555621000, "rw-p", 0, "00:00", 0, "[heap]", 12, 12, ANON_RW),
        (B, B + 5 * P, "r--p", 0, "00:00", 0, None, 0, 0, ANON_R),  # unknown
        (B + 5 * P, B + 10 * P, "rw-p", 0, "00:00", 0, None, 20, 20, ANON_RW),  # faulted
        (B + 20 * P, B + 22 * P, "rw-s", 0, "00:01", 1025, "/dev/zero (deleted)", 0, 0,
         "rd wr sh mr mw me ms"),
        (B + 30 * P, B + 32 * P, "rw-p", 0, "00:00", 0, "[anon:arena]", 0, None, ANON_RW),
        (0x7FFFFFFDE000, 0x7FFFFFFFF000, "rw-p", 0, "00:00", 0, "[stack]", 16, 16,
         "rd wr mr mw me gd ac"),
        (0xFFFFFFFFFF600000, 0xFFFFFFFFFF601000, "--xp", 0, "00:00", 0, "[vsyscall]", 0, 0,
         None),
    ]


@pytest.mark.parametrize("kernel", ALL)
def test_from_snapshot_states(kernel: str) -> None:
    mm = AddressSpace.from_snapshot(frame(base_rows()), kernel=kernel)
    mm.check()
    views = {v.start: v for v in mm.vmas()}
    assert len(views) == 8  # [vsyscall] is not in the mm's tree
    assert views[B].faulted is UNKNOWN
    assert views[B + 5 * P].faulted is True
    assert views[B + 20 * P].faulted is False  # shared: never an anon_vma
    assert views[0x555555600000].faulted is True
    assert views[0x555555600000].path == "[heap]"
    assert views[0x7FFFFFFDE000].path == "[stack]"
    assert views[B + 30 * P].path == "[anon:arena]"
    assert views[0x555555556000].path == "/usr/bin/app"
    assert views[0x555555556000].offset == 0x2000
    # the two ELF segments share one struct file (same dev/inode) and contiguous pgoff
    assert views[0x555555554000].file_id == views[0x555555556000].file_id
    assert views[B].vmflags == frozenset(ANON_R.split())


def test_missing_column_is_a_clear_error() -> None:
    with pytest.raises(SnapshotError, match="path"):
        AddressSpace.from_snapshot(frame(base_rows()).drop("path"), kernel="6.19")


def test_decision_on_unknown_state_is_flagged() -> None:
    # OLD rule: whether the faulted [5,10) may join the unfaulted-or-not [0,5) depends on it
    mm = AddressSpace.from_snapshot(frame(base_rows()), kernel="6.15")
    mm.mprotect(B + 5 * P, 5 * P, 1)
    expl = mm.last_explanation
    assert any(f"[{B:#x},{B + 5 * P:#x})" in u for u in expl.unknown)
    assert "depends on unknown anon_vma" in str(expl)
    mm.check()


def test_fault_narrows_unknown() -> None:
    mm = AddressSpace.from_snapshot(frame(base_rows()), kernel="6.19")
    mm.mprotect(B, 5 * P, 3)
    mm.touch(B)
    assert mm.vma_lookup(B).faulted is True
    mm.check()


def test_narrow_from_a_later_snapshot() -> None:
    mm = AddressSpace.from_snapshot(frame(base_rows()), kernel="6.19")
    later = base_rows()
    later[3] = (B, B + 5 * P, "r--p", 0, "00:00", 0, None, 4, 4, ANON_R)  # now has pages
    resolved, problems = mm.narrow_from_snapshot(frame(later))
    assert [v.start for v in resolved] == [B]
    assert mm.vma_lookup(B).faulted is True
    assert problems == []
    mm.check()


def test_narrow_merges_when_the_kernel_evidently_merged() -> None:
    # OLD rule: a faulted middle may not merge into an unfaulted prev. [0,5) is UNKNOWN, so the
    # model assumes unfaulted and refuses; the kernel (where [0,5) shared the anon_vma) merged.
    rows = base_rows()
    rows[3] = (B, B + 5 * P, "r--p", 0, "00:00", 0, None, 0, 0, ANON_R)
    rows[4] = (B + 5 * P, B + 10 * P, "rw-p", 0, "00:00", 0, None, 20, 20, "rd wr mr mw me")
    mm = AddressSpace.from_snapshot(frame(rows), kernel="6.15")
    mm.mprotect(B + 5 * P, 5 * P, 1)
    assert [(v.start, v.end) for v in mm.vmas() if B <= v.start < B + 10 * P] == [
        (B, B + 5 * P), (B + 5 * P, B + 10 * P)]
    assert mm.last_explanation.unknown
    later = [r for r in rows if r[0] not in (B, B + 5 * P)] + [
        (B, B + 10 * P, "r--p", 0, "00:00", 0, None, 20, 20, ANON_R)]
    resolved, problems = mm.narrow_from_snapshot(frame(later))
    assert problems == []
    assert [(v.start, v.end) for v in resolved] == [(B, B + 10 * P)]
    v = mm.vma_lookup(B)
    assert (v.start, v.end) == (B, B + 10 * P) and v.faulted is True
    mm.check()


def test_narrow_reports_what_it_cannot_explain() -> None:
    mm = AddressSpace.from_snapshot(frame(base_rows()), kernel="6.19")
    later = [r for r in base_rows() if r[0] != B + 20 * P]  # shared mapping vanished
    later.append((B + 40 * P, B + 41 * P, "rw-p", 0, "00:00", 0, None, 0, 0, ANON_RW))
    later[4] = (B + 5 * P, B + 10 * P, "rw-p", 0, "00:00", 0, None, 20, 20, "rd wr mr mw me")
    _resolved, problems = mm.narrow_from_snapshot(frame(later))
    text = "\n".join(problems)
    assert "in the model, not in the snapshot" in text
    assert "in the snapshot, not in the model" in text
    assert "VmFlags differ" in text
