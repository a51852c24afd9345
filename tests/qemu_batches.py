"""One qemu boot per pinned kernel (replay/oracle/kernels.py) for the whole suite.

Every boot runs, in this order: the live recipes, a seeded batch of N_QEMU random sequences (file
mappings, brk and the full mmap/madvise vocabulary included), the first AGAIN of them a second
time (the kernel must be deterministic on them), and the regression corpus entries of that
kernel, and the kernel behaviours of tests/kernel_behaviours.py. The boots of all kernels start together on first use, two at a time (this machine has
two cores), so the qemu part of the suite costs about half the sum of the boot times.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from replay.oracle.core import OracleError, SeqResult, Sequence
from replay.oracle.execute import QEMU_KERNELS, GuestInfo, qemu_available, run_qemu_guest
from replay.oracle.fuzz import GenConfig, gen_batch
from replay.oracle.recipes import RECIPES
from tests.conftest import ROOT

SEED = int(os.environ.get("VMATRACE_FUZZ_SEED", "20261127"))
N_QEMU = int(os.environ.get("VMATRACE_FUZZ_QEMU", "500"))
LENGTH = 12  # operations per sequence (the live batch has 16; TCG is ~25x slower)
AGAIN = 50
JOBS = int(os.environ.get("VMATRACE_QEMU_JOBS", "2"))
REGRESSIONS = ROOT / "tests" / "fuzz_regressions.json"


@dataclass
class Boot:
    kernel: str
    guest: GuestInfo | None = None
    error: str = ""
    recipes: dict[str, SeqResult] = field(default_factory=dict)
    fuzz: list[Sequence] = field(default_factory=list)
    fuzz_results: list[SeqResult] = field(default_factory=list)
    again: list[tuple[SeqResult, SeqResult]] = field(default_factory=list)
    regressions: dict[str, SeqResult] = field(default_factory=dict)
    behaviours: dict[str, SeqResult] = field(default_factory=dict)

    @property
    def profile(self) -> str:
        assert self.guest is not None
        return self.guest.upstream

    def options(self) -> dict[str, object]:
        assert self.guest is not None
        return self.guest.model_options()


def regression_entries(kernel: str | None = None) -> list[dict[str, object]]:
    data = json.loads(REGRESSIONS.read_text())
    assert isinstance(data, list)
    return [e for e in data if kernel is None or e["kernel"] == kernel]


def _entry_seq(e: dict[str, object]) -> Sequence:
    ops = e["ops"]
    assert isinstance(ops, list)
    return Sequence(str(e["name"]), tuple(str(o) for o in ops))


def _boot(kernel: str) -> Boot:
    b = Boot(kernel)
    recipes = [x.sequence() for x in RECIPES]
    fuzz = gen_batch(SEED, N_QEMU, GenConfig(length=LENGTH))
    again = [Sequence(s.name + "-again", s.ops) for s in fuzz[:AGAIN]]
    regs = [_entry_seq(e) for e in regression_entries(kernel)]
    from tests.kernel_behaviours import BEHAVIOURS

    beh = [Sequence(name, ops) for name, (ops, _) in BEHAVIOURS.items()]
    try:
        b.guest, res = run_qemu_guest(kernel, [*recipes, *fuzz, *again, *regs, *beh])
    except OracleError as e:
        b.error = str(e)
        return b
    i = 0
    b.recipes = {x.rid: r for x, r in zip(RECIPES, res[: len(recipes)], strict=True)}
    i += len(recipes)
    b.fuzz, b.fuzz_results = fuzz, res[i : i + len(fuzz)]
    i += len(fuzz)
    b.again = list(zip(b.fuzz_results[:AGAIN], res[i : i + len(again)], strict=True))
    i += len(again)
    b.regressions = {s.name: r for s, r in zip(regs, res[i : i + len(regs)], strict=True)}
    i += len(regs)
    b.behaviours = {s.name: r for s, r in zip(beh, res[i:], strict=True)}
    return b


_lock = threading.Lock()


@functools.cache
def _all_boots() -> dict[str, Boot]:
    todo = [k for k in QEMU_KERNELS if qemu_available(k)[0]]
    with ThreadPoolExecutor(max_workers=max(JOBS, 1)) as ex:
        return dict(zip(todo, ex.map(_boot, todo), strict=True))


def boot(kernel: str) -> Boot:
    """The results of `kernel`'s one boot (all kernels boot on the first call)."""
    with _lock:
        boots = _all_boots()
    if kernel not in boots:
        b = Boot(kernel, error=qemu_available(kernel)[1])
        return b
    return boots[kernel]
