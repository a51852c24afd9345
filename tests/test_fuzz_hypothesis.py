"""Hypothesis-driven differential fuzzing of the model against the live kernel, with shrinking.

The batched seeded fuzzer (tests/test_fuzz.py) runs thousands of sequences per runner process or
qemu boot. This test complements it: hypothesis builds each sequence from a grammar of the
runner's operations on a small, dense window (few pages, many VMA boundaries), runs it on the
live kernel and on the model under kernel="live", and, on a disagreement, shrinks it to a minimal
sequence that still disagrees, which the failure prints in the runner's syntax
(replayable with bench/fuzz.py or the corpus). Derandomized, so CI runs the same examples.
"""

from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.oracle import compare, run_live, run_model
from replay.oracle.core import Sequence
from tests.conftest import need_cc

PAGES = 12  # dense: ranges inside 12 pages collide constantly
PROTS = ["rw-", "rw-", "r--", "---", "r-x", "rwx"]
FLAG_ADVICE = ["dontfork", "dofork", "dontdump", "dodump", "wipeonfork", "keeponfork", "hugepage",
               "nohugepage", "random", "sequential", "normal"]  # fmt: skip
OTHER_ADVICE = ["guard_install", "guard_remove", "populate_write", "populate_read", "dontneed"]


@functools.cache
def _allow_move() -> bool:
    from replay.live import probe_live

    return bool(probe_live().mremap_faulted_safe)  # never drive L20 where it is unsafe (6.16 .. 6.18.7)


def _range() -> st.SearchStrategy[tuple[int, int]]:
    return st.integers(0, PAGES - 1).flatmap(lambda s: st.tuples(st.just(s), st.integers(1, min(4, PAGES - s))))


@st.composite
def op(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["mmap", "mmap", "munmap", "mprotect", "mprotect", "advice", "advice", "other",
                                 "mlock", "mremap", "mseal", "touch", "touch", "read", "fork"]))
    s, n = draw(_range())
    if kind == "mmap":
        flags = ["private", "anon", draw(st.sampled_from(["fixed", "noreplace"]))]
        if draw(st.booleans()):
            flags.append("noreserve")
        return f"mmap {s} {n} {draw(st.sampled_from(PROTS))} {','.join(flags)}"
    if kind == "munmap":
        return f"munmap {s} {n}"
    if kind == "mprotect":
        return f"mprotect {s} {n} {draw(st.sampled_from(PROTS))}"
    if kind == "advice":
        return f"madvise {s} {n} {draw(st.sampled_from(FLAG_ADVICE))}"
    if kind == "other":
        return f"madvise {s} {n} {draw(st.sampled_from(OTHER_ADVICE))}"
    if kind == "mlock":
        return draw(st.sampled_from([f"mlock {s} {n}", f"mlock2 {s} {n} onfault", f"munlock {s} {n}"]))
    if kind == "mremap":
        new = draw(st.integers(1, 4))
        if _allow_move() and draw(st.booleans()):
            dest = draw(st.integers(0, PAGES - n))
            return f"mremap {s} {n} {n} maymove,fixed {dest}"
        return f"mremap {s} {n} {min(new, PAGES - s)} 0"
    if kind == "mseal":
        return f"mseal {s} {n}"
    if kind == "fork":
        return "fork"
    return f"{kind} {s}"


sequences = st.lists(op(), min_size=1, max_size=10).map(
    lambda ops: Sequence("hyp", ("mmap 0 4 rw- private,anon,fixed", *ops)))


@pytest.mark.live
@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seq=sequences)
def test_model_agrees_with_live_kernel(seq: Sequence) -> None:
    need_cc()
    kernel = run_live([seq])[0]
    model = run_model("live", [seq])[0]
    d = compare(seq, kernel, model, label="live/model:live")
    assert d is None, d.format()
