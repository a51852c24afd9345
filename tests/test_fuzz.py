"""Differential fuzzing, model vs real kernels (default run: 2,000 sequences live, 500 on each
pinned kernel under qemu, file mappings included; one runner process / one qemu boot per kernel,
tests/qemu_batches.py), and the regression corpus tests/fuzz_regressions.json.

Where root and bcc are there (always in CI), the live batch runs with a BPF task_vma iterator
handed to the runner, and the model is compared on anon_vma identity classes and fork-child
status after every step too, not only on layouts and flags.

The seed is fixed so CI is reproducible; VMATRACE_FUZZ_SEED=<n> explores other sequences,
VMATRACE_FUZZ_LIVE / VMATRACE_FUZZ_QEMU change the counts. Replay one failing sequence with
`bench/fuzz.py --live --seed S --index I -n 1` (the name fz<S>-<I> gives S and I).
"""

from __future__ import annotations

import collections
import functools
import json
import os
import re
from pathlib import Path

import pytest

from replay.oracle import compare, run_live, run_model
from replay.oracle.compare import Disagreement
from replay.oracle.core import SeqResult, Sequence
from replay.oracle.execute import QEMU_KERNELS
from replay.oracle.fuzz import GenConfig, gen_batch
from tests.conftest import ROOT, need, need_cc
from tests.qemu_batches import LENGTH as QEMU_LENGTH
from tests.qemu_batches import Boot, boot

SEED = int(os.environ.get("VMATRACE_FUZZ_SEED", "20261127"))
N_LIVE = int(os.environ.get("VMATRACE_FUZZ_LIVE", "2000"))
LENGTH = 16
REGRESSIONS = ROOT / "tests" / "fuzz_regressions.json"
DOC = ROOT / "docs" / "fuzz-disagreements.md"
OP_NAMES = ("mmap", "munmap", "mprotect", "madvise", "mlock", "mlock2", "munlock", "mremap",
            "mseal", "touch", "read", "fork", "open", "dup", "memfd", "zero", "close",
            "brk")  # fmt: skip


@functools.cache
def _live_cfg() -> tuple[GenConfig, str]:
    from replay.live import probe_live

    info = probe_live()
    return GenConfig(length=LENGTH, allow_move=info.mremap_faulted_safe), info.profile


AGAIN = 50  # the first AGAIN sequences run a second time in the same batch: determinism check


def _with_repeats(seqs: list[Sequence]) -> list[Sequence]:
    return seqs + [Sequence(s.name + "-again", s.ops) for s in seqs[:AGAIN]]


def _split(seqs: list[Sequence], res: list[SeqResult]) -> tuple[list[Sequence], list[SeqResult]]:
    n = len(seqs)
    again = res[n:]
    for a, b in zip(res[: len(again)], again, strict=True):
        # the kernel is deterministic on these sequences (else the fuzzer would need exclusions)
        assert [(s.errno, s.ret, s.vmas) for s in a.steps] == [(s.errno, s.ret, s.vmas) for s in b.steps], a.name
    return seqs, res[:n]


@functools.cache
def _deep() -> object | None:
    """A loaded task_vma iterator (collectors.deep) when root and bcc are there, else None."""
    if os.geteuid() != 0:
        return None
    try:
        from collectors.deep import DeepCollector

        return DeepCollector()
    except Exception:
        return None


@functools.cache
def _live_batch() -> tuple[list[Sequence], list[SeqResult]]:
    cfg, _ = _live_cfg()
    seqs = gen_batch(SEED, N_LIVE, cfg)
    deep = _deep()
    fd, size = getattr(deep, "prog_fd", None), getattr(deep, "rec_size", 0)
    return _split(seqs, run_live(_with_repeats(seqs), deep_fd=fd, deep_rec_size=size))


def _qemu(kernel: str) -> Boot:
    b = boot(kernel)
    need(not b.error, b.error)
    for first, again in b.again:
        # the kernel is deterministic on these sequences (else the fuzzer would need exclusions)
        assert [(s.errno, s.ret, s.vmas) for s in first.steps] == [
            (s.errno, s.ret, s.vmas) for s in again.steps], first.name
    return b


def _check_sane(seqs: list[Sequence], res: list[SeqResult], kernel: str = "live",
                length: int = LENGTH) -> None:
    assert len(res) == len(seqs)
    bad = [r.name + ":" + r.status for r in res if r.status != "ok" or len(r.steps) != length + 1]
    assert not bad, bad[:10]
    ok_ops = collections.Counter(s.op.split()[0] for r in res for s in r.steps[1:] if s.errno == 0)
    # the batch really exercises every operation kind successfully, and real merges/splits
    for name in OP_NAMES:
        if name == "mseal" and kernel == "6.1":
            assert ok_ops[name] == 0  # ENOSYS before 6.10
            continue
        assert ok_ops[name] > 0, f"no successful {name} in the batch"
    # file-backed VMAs of every kind appear: regular files, a memfd, shared /dev/zero
    names = {v.backing.split("+")[0] for r in res for st in r.steps for v in st.vmas}
    assert {"a", "memfd:m_(deleted)", "zero_(deleted)"} <= names, names
    counts = collections.Counter(len(r.steps[-1].vmas) for r in res)
    assert counts[1] > 0 and sum(v for k, v in counts.items() if k >= 3) > 0


def _report(ds: list[Disagreement], n: int) -> str:
    by = collections.Counter((d.seq.ops[d.step - 1].split()[0] if d.step else "start") + ":" + "+".join(d.kinds)
                             for d in ds)
    head = f"{len(ds)} of {n} sequences disagree; by op:kind {dict(by.most_common())}\n\n"
    return head + "\n\n".join(d.format() for d in ds[:3])


@pytest.mark.live
def test_fuzz_live_runner_sane() -> None:
    need_cc()
    _check_sane(*_live_batch())


@pytest.mark.live
def test_fuzz_live_vs_model() -> None:
    need_cc()
    seqs, kres = _live_batch()
    _, detected = _live_cfg()
    mres = run_model("live", seqs)
    anon = _deep() is not None
    ds = [d for s, k, m in zip(seqs, kres, mres, strict=True)
          if (d := compare(s, k, m, label=f"live(detected {detected})/model:live", anon=anon))]  # fmt: skip
    if ds:
        pytest.fail(_report(ds, len(seqs)), pytrace=False)


@pytest.mark.live
@pytest.mark.bcc
def test_fuzz_live_batch_carries_anon_vma_state() -> None:
    """The live batch was compared on hidden state: every VMA of every step has its anon_vma
    identity, and the batch has shared anon_vmas, distinct ones and fork children."""
    need_cc()
    need(os.geteuid() == 0 and _deep() is not None, "needs root and bcc (a BPF task_vma iterator)")
    _, kres = _live_batch()
    vmas = [v for r in kres for st in r.steps for v in st.vmas]
    assert vmas and all(v.anon is not None and v.avc is not None for v in vmas)
    shared = sum(1 for r in kres for st in r.steps
                 if len([v.anon for v in st.vmas if v.anon]) > len({v.anon for v in st.vmas if v.anon}))
    assert shared > 100
    assert sum(v.fork_child for v in vmas) > 100
    assert sum(1 for v in vmas if v.anon == 0) > 1000


@pytest.mark.live
def test_fuzz_live_vs_the_release_table_profile() -> None:
    """The profile the release table gives for this kernel's `uname -r` (with the stable
    backports it knows) agrees with the live kernel as the probed profile does: on 6.18.44 that
    is the sticky-flag profile, which a trace replayed offline without a probe falls back to."""
    import platform

    from replay.live import live_options
    from replay.profiles import get_profile

    need_cc()
    seqs, kres = _live_batch()
    profile = get_profile(platform.release()).name
    mres = run_model(profile, seqs, options=live_options())
    ds = [d for s, k, m in zip(seqs, kres, mres, strict=True)
          if (d := compare(s, k, m, label=f"live/model:{profile} (release table)"))]  # fmt: skip
    if ds:
        pytest.fail(_report(ds, len(seqs)), pytrace=False)


@pytest.mark.qemu
@pytest.mark.parametrize("kernel", QEMU_KERNELS)
def test_fuzz_qemu_runner_sane(kernel: str) -> None:
    b = _qemu(kernel)
    _check_sane(b.fuzz, b.fuzz_results, kernel, QEMU_LENGTH)


@pytest.mark.qemu
@pytest.mark.parametrize("kernel", QEMU_KERNELS)
def test_fuzz_qemu_vs_model(kernel: str) -> None:
    """The model, with the profile the guest's release picks and the configuration the guest
    reports, agrees with the kernel on every step of every sequence."""
    b = _qemu(kernel)
    mres = run_model(b.profile, b.fuzz, options=b.options())
    label = f"qemu-{kernel}/model:{b.profile}"
    ds = [d for s, k, m in zip(b.fuzz, b.fuzz_results, mres, strict=True)
          if (d := compare(s, k, m, label=label))]  # fmt: skip
    if ds:
        pytest.fail(_report(ds, len(b.fuzz)), pytrace=False)


# ---- regression corpus ------------------------------------------------------------------------


def documented_divergences(path: Path = DOC) -> dict[str, str]:
    """Entry name -> reason, from the table rows "| `name` | kernel | step | reason |"."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        m = re.match(r"^\|\s*`([^`]+)`\s*\|(.*)\|\s*$", line)
        if m:
            out[m.group(1)] = m.group(2).split("|")[-1].strip()
    return out


def load_entries() -> list[dict[str, object]]:
    data = json.loads(REGRESSIONS.read_text())
    assert isinstance(data, list)
    return data


def test_regression_corpus_is_well_formed() -> None:
    entries = load_entries()
    names = [str(e["name"]) for e in entries]
    assert len(names) == len(set(names)), "duplicate regression names"
    for e in entries:
        assert e["kernel"] == "live" or e["kernel"] in QEMU_KERNELS, e
        ops = e["ops"]
        assert isinstance(ops, list) and ops, e
        Sequence(str(e["name"]), tuple(str(o) for o in ops))  # valid sequence
    for name, reason in documented_divergences().items():
        assert name in names, f"docs/fuzz-disagreements.md lists {name}, which is not in the corpus"
        assert len(reason) > 10, f"{name}: the documented reason is missing"


@pytest.mark.live
@pytest.mark.qemu
def test_regressions_agree_or_documented() -> None:
    entries = load_entries()
    documented = documented_divergences()
    by_kernel: dict[str, list[dict[str, object]]] = collections.defaultdict(list)
    for e in entries:
        by_kernel[str(e["kernel"])].append(e)
    problems: list[str] = []
    checked = 0
    for kernel, group in sorted(by_kernel.items()):
        seqs = [Sequence(str(e["name"]), tuple(str(o) for o in e["ops"])) for e in group]  # type: ignore[attr-defined]
        if kernel == "live":
            need_cc()
            kres = run_live(seqs)
            options: dict[str, object] | None = None
        else:
            b = _qemu(kernel)
            kres = [b.regressions[s.name] for s in seqs]
            options = b.options()
        for e, s, k in zip(group, seqs, kres, strict=True):
            profile = str(e.get("profile", kernel if kernel == "live" else b.profile))
            (m,) = run_model(profile, [s], options=options)
            d = compare(s, k, m, label=f"{kernel}/model:{profile}")
            checked += 1
            if s.name in documented:
                if d is None:
                    problems.append(f"{s.name}: documented divergence no longer holds (model and kernel "
                                    "agree now): remove it from docs/fuzz-disagreements.md")
            elif d is not None:
                problems.append(d.format())
    assert checked == len(entries)
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.mark.live
@pytest.mark.bcc
def test_fuzz_live_anon_comparison_catches_a_planted_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that gives the VMA a split creates its own anon_vma (the kernel shares it) keeps
    every layout and flag right at first, and only the anon_vma comparison sees it at once."""
    need_cc()
    need(os.geteuid() == 0 and _deep() is not None, "needs root and bcc (a BPF task_vma iterator)")
    import replay.mm as M

    seqs, kres = _live_batch()
    seqs, kres = seqs[:200], kres[:200]
    real_split = M.AddressSpace._split

    def split(self: M.AddressSpace, v: M.Vma, addr: int, *, new_below: bool = False,
              check_count: bool = True) -> M.Vma:
        new = real_split(self, v, addr, new_below=new_below, check_count=check_count)
        if isinstance(new.anon_vma, M.AnonVma):
            new.anon_vma = M.AnonVma()
        return new

    monkeypatch.setattr(M.AddressSpace, "_split", split)
    mres = run_model("live", seqs)
    ds = [d for s, k, m in zip(seqs, kres, mres, strict=True) if (d := compare(s, k, m, anon=True))]
    layout_only = [d for s, k, m in zip(seqs, kres, mres, strict=True) if (d := compare(s, k, m))]
    assert len(ds) > 10 and all("anon_vma" in d.kinds for d in ds), collections.Counter(
        k for d in ds for k in d.kinds)
    assert len(layout_only) < len(ds)  # most of them never show in layouts and flags
