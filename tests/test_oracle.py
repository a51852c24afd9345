"""The oracle harness on its own (no model needed): runner build, parsing, live and qemu runs,
comparison, minimizer, generator and the op -> public API translation."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from collections.abc import Sequence as Seq
from pathlib import Path
from typing import Any

import pytest

from replay.oracle import compare, run_live, run_qemu, seq
from replay.oracle.core import WINDOW_BASE, SeqResult, Sequence, StepResult, VmaRow, parse_output
from replay.oracle.execute import build_runner, qemu_available
from replay.oracle.fuzz import GenConfig, gen_batch, gen_sequence, minimize
from replay.oracle.kernels import BY_LABEL
from replay.oracle.model import apply_op
from replay.profiles import get_profile
from tests.conftest import need, need_cc
from tests.kernels import QEMU_OLD_ANON

NR = "private,anon,fixed,noreserve"


def need_live() -> None:
    need_cc()
    with open("/proc/sys/vm/overcommit_memory") as f:
        need(f.read().strip() != "2", "vm.overcommit_memory=2 makes MAP_NORESERVE a no-op")


def need_qemu(kernel: str) -> None:
    ok, why = qemu_available(kernel)
    need(ok, why)


# ---- pure parts -------------------------------------------------------------------------------


def test_parse_output_tolerates_cr_and_console_noise() -> None:
    s = seq("a", "mmap 0 2 rw- private,anon,fixed", "touch 9")
    text = (
        "#runner base=100000001000 pages=64\r\n[    1.0] random: crng init done\r\n"
        "#seq a\r\n@ 0 0 -\r\n@ 1 0 0\r\n0 2 rw-p rd wr mr mw me ac\r\n@ 2 14 -\r\n"
        "0 2 rw-p rd wr mr mw me ac\r\n#end a ok\r\n#done\r\n"
    )
    (r,) = parse_output(text, [s])
    assert r.status == "ok"
    assert [st.errno for st in r.steps] == [0, 0, errno.EFAULT]
    assert r.steps[1].ret == 0 and r.steps[2].ret is None
    assert r.steps[1].op == "mmap 0 2 rw- private,anon,fixed"
    assert r.steps[2].vmas == (VmaRow(0, 2, "rw-p", frozenset(["rd", "wr", "mr", "mw", "me", "ac"])),)


def test_parse_output_marks_missing_and_crashed() -> None:
    a, b = seq("a", "touch 0"), seq("b", "touch 0")
    (ra, rb) = parse_output("#seq a\n@ 0 0 -\n#end a signal:11\n", [a, b])
    assert ra.status == "signal:11"
    assert rb.status == "missing"


def test_sequence_rejects_bad_lines() -> None:
    with pytest.raises(ValueError):
        Sequence("two words", ("touch 0",))
    with pytest.raises(ValueError):
        Sequence("x", ("touch 0\nend",))


def _res(name: str, steps: list[list[VmaRow]], errnos: list[int] | None = None) -> SeqResult:
    errnos = errnos or [0] * len(steps)
    return SeqResult(name, [StepResult(i, "", e, None, tuple(v)) for i, (v, e) in enumerate(zip(steps, errnos, strict=True))])


def test_compare_names_first_differing_step_and_flags() -> None:
    s = seq("c", "mmap 0 4 rw- private,anon,fixed", "mprotect 0 2 r--")
    v = VmaRow(0, 4, "rw-p", frozenset({"rd", "wr", "ac"}))
    k = _res("c", [[], [v], [VmaRow(0, 2, "r--p", frozenset({"rd", "ac"})), VmaRow(2, 4, "rw-p", v.flags)]])
    assert compare(s, k, k) is None
    m = _res("c", [[], [VmaRow(0, 4, "rw-p", frozenset({"rd", "wr"}))], list(k.steps[2].vmas)])
    d = compare(s, k, m, label="t")
    assert d is not None and d.step == 1 and d.kinds == ["vmflags"]
    assert "kernel only {ac}" in d.format() and ">>  1 mmap 0 4" in d.format()
    assert compare(s, k, m, ignore={"ac"}) is None
    m2 = _res("c", [[], [v], [v]], [0, 0, 12])
    d2 = compare(s, k, m2)
    assert d2 is not None and d2.step == 2 and d2.kinds == ["errno", "layout"]


def test_compare_reports_runner_failure_as_oracle() -> None:
    s = seq("c", "touch 0")
    k = SeqResult("c", [StepResult(0, "", 0, None, ())], "signal:11")
    d = compare(s, k, k)
    assert d is not None and d.kinds == ["oracle"]


def test_generator_is_reproducible_and_batch_independent() -> None:
    a = gen_batch(7, 30)
    assert a == gen_batch(7, 30)
    assert gen_batch(7, 10, start=20) == a[20:]
    assert gen_sequence(7, 5) == a[5]
    assert a != gen_batch(8, 30)
    assert all(len(s.ops) == 12 for s in a)
    cfg = GenConfig(length=40, allow_move=False)
    ops = [op for s in gen_batch(3, 200, cfg) for op in s.ops]
    assert not any("maymove" in op for op in ops)
    names = {op.split()[0] for s in gen_batch(3, 300) for op in s.ops}
    assert {"mmap", "munmap", "mprotect", "madvise", "mlock", "mlock2", "munlock", "mremap",
            "mseal", "touch", "read", "fork", "open", "dup", "memfd", "zero", "close",
            "brk"} <= names  # fmt: skip
    plain = {op.split()[0] for s in gen_batch(3, 300, GenConfig(files=False, brk=False))
             for op in s.ops}
    assert not plain & {"open", "dup", "memfd", "zero", "close", "brk"}
    flags = {f for s in gen_batch(3, 300) for op in s.ops if op.startswith("mmap ")
             for f in op.split()[4].split(",")}
    assert {"stack", "hugetlb", "growsdown", "populate", "locked", "noreserve", "shared",
            "private", "validate"} <= flags  # fmt: skip


class Recorder:
    """A stand-in for replay.AddressSpace that records the public-API calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        def f(*args: Any, **kw: Any) -> Any:
            self.calls.append((name, *args, *sorted(kw.items())))
            if name == "fork":
                return self
            return args[0] if name == "mmap" else (args[4] if name == "mremap" else 0)

        return f


def test_apply_op_translates_to_raw_linux_constants() -> None:
    mm = Recorder()
    P, B = 4096, WINDOW_BASE
    _, ret = apply_op(mm, "mmap 3 2 rw- private,anon,fixed,noreserve")
    assert mm.calls[-1] == ("mmap", B + 3 * P, 2 * P, 3, 0x02 | 0x20 | 0x10 | 0x4000, -1, 0) and ret == 3
    apply_op(mm, "mmap 1 1 r-x shared,anon,noreplace,populate,locked")
    assert mm.calls[-1][3:5] == (5, 0x01 | 0x20 | 0x100000 | 0x8000 | 0x2000)
    apply_op(mm, "madvise 1 2 guard_install")
    assert mm.calls[-1] == ("madvise", B + P, 2 * P, 102)
    apply_op(mm, "guard 1 2")
    assert mm.calls[-1] == ("madvise", B + P, 2 * P, 102)
    apply_op(mm, "madvise 1 2 wipeonfork")
    assert mm.calls[-1][3] == 18
    apply_op(mm, "mlock2 1 2 onfault")
    assert mm.calls[-1] == ("mlock", B + P, 2 * P, 1)
    _, ret = apply_op(mm, "mremap 1 2 3 maymove,fixed,dontunmap 9")
    assert mm.calls[-1] == ("mremap", B + P, 2 * P, 3 * P, 7, B + 9 * P) and ret == 9
    apply_op(mm, "read 4")
    assert mm.calls[-1] == ("touch", B + 4 * P, ("write", False))
    apply_op(mm, "mseal 0 1")
    assert mm.calls[-1] == ("mseal", B, P)
    apply_op(mm, "open 2 a ro")
    assert mm.calls[-1] == ("open_file", "/oracle/a", ("dev", "00:1f"), ("shmem", True), ("size", 16),
                            ("writable", False))
    apply_op(mm, "mmap 4 2 r-- shared,fixed 2 5")  # slot 2 holds the fd open_file returned
    assert mm.calls[-1] == ("mmap", B + 4 * P, 2 * P, 1, 0x01 | 0x10, 0, 5 * P)
    apply_op(mm, "mmap 6 1 rw- private,anon,fixed,stack")
    assert mm.calls[-1][4] == 0x02 | 0x20 | 0x10 | 0x20000
    _, ret = apply_op(mm, "brk 3")
    assert mm.calls[-1] == ("brk", B + 1003 * P) and ret == "x0"
    for s in gen_batch(11, 300):  # every generated op translates
        rec: Any = Recorder()
        for op in s.ops:
            rec, _ = apply_op(rec, op)


def test_minimizer_shrinks_to_the_culprit() -> None:
    # fake kernel/model: the model "forgets" every madvise dontdump; disagreement shows at that step
    def fake(seqs: Seq[Sequence], broken: bool) -> list[SeqResult]:
        out = []
        for s in seqs:
            r = SeqResult(s.name, [StepResult(0, "", 0, None, ())])
            dd = False
            for i, op in enumerate(s.ops, 1):
                if "dontdump" in op and not broken:
                    dd = True
                vma = VmaRow(0, 1, "rw-p", frozenset({"dd"} if dd else set()))
                r.steps.append(StepResult(i, op, 0, None, (vma,)))
            out.append(r)
        return out

    s = seq("x", "touch 1", "mprotect 0 1 r--", "madvise 0 1 dontdump", "touch 2", "fork")
    k, m = fake([s], False), fake([s], True)
    d = compare(s, k[0], m[0])
    assert d is not None and d.step == 3
    (mini,) = minimize([d], lambda q: fake(q, False), lambda q: fake(q, True))
    assert mini.seq.ops == ("madvise 0 1 dontdump",) and mini.kinds == ["vmflags"]


# ---- live kernel ------------------------------------------------------------------------------


@pytest.mark.live
def test_runner_builds_once() -> None:
    need_cc()
    a = build_runner()
    assert a.exists() and os.access(a, os.X_OK)
    assert build_runner() == a


@pytest.mark.live
def test_live_runner_basic_semantics() -> None:
    need_live()
    s1 = seq(
        "basic",
        f"mmap 0 10 rw- {NR}",
        "mprotect 2 3 r--",
        "munmap 0 0",  # EINVAL
        "touch 2",  # read-only: SIGSEGV -> EFAULT
        "read 30",  # unmapped: EFAULT
        "touch 0",
        "mseal 5 5",
        "munmap 6 1",  # sealed: EPERM
        "mremap 0 2 2 maymove,fixed 40",
        "fork",
        "mprotect 5 1 r--",  # sealed, in the child too
    )
    s2 = seq("isolated", "touch 0")  # a fresh child: nothing leaks from s1
    r1, r2 = run_live([s1, s2])
    assert r1.status == "ok" and len(r1.steps) == len(s1.ops) + 1
    assert r1.steps[0].vmas == ()
    assert [v.key() for v in r1.steps[2].vmas] == [(0, 2, "rw-p"), (2, 5, "r--p"), (5, 10, "rw-p")]
    assert [st.errno for st in r1.steps[1:]] == [0, 0, errno.EINVAL, errno.EFAULT, errno.EFAULT, 0, 0,
                                                  errno.EPERM, 0, 0, errno.EPERM]  # fmt: skip
    assert r1.steps[1].ret == 0 and r1.steps[9].ret == 40
    assert "sl" in r1.steps[7].vmas[-1].flags and "nr" in r1.steps[1].vmas[0].flags
    assert [v.key() for v in r1.steps[9].vmas][-1] == (40, 42, "rw-p")
    assert r2.status == "ok" and r2.steps[1].errno == errno.EFAULT and r2.steps[1].vmas == ()


@pytest.mark.live
def test_live_fork_semantics() -> None:
    need_live()
    s = seq("fk", f"mmap 0 4 rw- {NR}", "madvise 0 1 dontfork", "madvise 3 1 wipeonfork", "fork")
    p = seq("fkp", f"mmap 0 4 rw- {NR}", "madvise 0 1 dontfork", "forkp")
    r, rp = run_live([s, p])
    assert [v.key()[:2] for v in r.steps[-1].vmas] == [(1, 3), (3, 4)]  # DONTCOPY VMA absent in the child
    assert "wf" in r.steps[-1].vmas[-1].flags
    assert [v.key()[:2] for v in rp.steps[-1].vmas] == [(0, 1), (1, 4)]  # the parent keeps it


# ---- old kernels under qemu ---------------------------------------------------------------------


@pytest.mark.qemu
@pytest.mark.parametrize("kernel", QEMU_OLD_ANON)
def test_qemu_runner_sane(kernel: str) -> None:
    need_qemu(kernel)
    s = seq(
        "q",
        f"mmap 0 10 rw- {NR}",
        "mprotect 0 5 r--",
        "touch 5",
        "mprotect 5 5 r--",  # L1: no merge on both old kernels
        "guard 0 1",  # 6.13+
        "mseal 0 1",  # 6.10+
        "mlock2 8 1 onfault",
    )
    (r,) = run_qemu(kernel, [s, seq("q2", "touch 1")])[:1]
    p = get_profile(BY_LABEL[kernel].version)
    assert r.status == "ok" and len(r.steps) == 8
    assert [v.key() for v in r.steps[4].vmas] == [(0, 5, "r--p"), (5, 10, "r--p")]
    assert r.steps[5].errno == (0 if p.guard_install_available else errno.EINVAL)
    assert r.steps[6].errno == (0 if p.mseal_available else errno.ENOSYS)
    assert all("sd" in v.flags for v in r.steps[1].vmas)  # Debian kernels: CONFIG_MEM_SOFT_DIRTY=y
    locked = r.steps[7].vmas[-2]
    assert locked.key()[:2] == (8, 9) and "lo" in locked.flags
    # 6.1 has no mnemonic for VM_LOCKONFAULT and prints "??" (found by the fuzzer)
    assert p.lockonfault_mnemonic in locked.flags


# ---- live profile detection logic (fake kernels) -------------------------------------------------


def _fake_kernel(
    new: bool, guard: bool, gu: bool, mseal: bool, acct_drop: bool, mremap_fixed: bool = True,
    dontunmap_merges: bool = True, mseal_stale: bool = False, checks_first: bool = True,
) -> tuple[Callable[[Seq[Sequence]], list[SeqResult]], list[str]]:
    """A stand-in runner for replay.live.probe() that answers like a kernel of the given kind and
    records what was asked (L20 must never be requested from a possibly affected kernel)."""
    from replay.oracle.recipes import BY_ID, B

    asked: list[str] = []

    def lay(x: list[tuple[int, int, str]], flags: frozenset[str] = frozenset()) -> tuple[VmaRow, ...]:
        return tuple(VmaRow(a + B, b + B, p, flags) for a, b, p in x)

    def run(seqs: Seq[Sequence]) -> list[SeqResult]:
        out = []
        for s in seqs:
            asked.append(s.name)
            rid = s.name.split("-")[0]
            steps = [StepResult(i, op, 0, None, ()) for i, op in enumerate(s.ops, 1)]
            if s.name == "probe-dontunmap":
                steps[-1].vmas = ((VmaRow(5, 8, "r--p", frozenset()),) if dontunmap_merges else
                                  (VmaRow(5, 7, "r--p", frozenset()), VmaRow(7, 8, "r--p", frozenset())))
            elif s.name == "probe-mseal-walk":
                sl = frozenset({"sl"})
                steps[-1].errno = 0 if mseal else errno.ENOSYS
                steps[-1].vmas = () if not mseal else (
                    (VmaRow(1, 3, "rw-p", sl), VmaRow(3, 4, "rw-p", sl),
                     VmaRow(4, 5, "rw-p", frozenset())) if mseal_stale else
                    (VmaRow(1, 4, "rw-p", sl), VmaRow(4, 5, "rw-p", frozenset())))
            elif s.name == "probe-mremap-order":
                steps[-1].errno = errno.EINVAL if checks_first else errno.EFAULT
            elif rid == "probe":  # mseal probe
                steps[-1].errno = 0 if mseal else errno.ENOSYS
            else:
                x = BY_ID[rid]
                if rid == "L1":
                    final = lay(x.new if new else x.old)
                elif rid == "L25":
                    steps[-2].errno = 0 if guard else errno.EINVAL
                    final = lay(x.new if guard and new else (x.old if guard else x.new), frozenset({"gu"} if gu else set()))
                elif rid == "L13b":
                    final = lay(x.new if acct_drop else x.by_kernel["6.1"])
                elif rid.startswith("L20"):
                    final = lay(x.new if mremap_fixed else BY_ID["L20prev"].new)
                else:
                    raise AssertionError(rid)
                steps[-1].vmas = final
            out.append(SeqResult(s.name, [StepResult(0, "", 0, None, ()), *steps]))
        return out

    return run, asked


def test_probe_tells_7_2_by_its_dontunmap_copy() -> None:
    from replay.live import probe

    run, _ = _fake_kernel(True, True, True, True, True, dontunmap_merges=False)
    assert probe(run).profile == "7.2"


@pytest.mark.parametrize(
    ("sticky", "stale", "checks_first", "profile"),
    [
        (True, True, True, "6.19.0"),  # 6.19.0 .. 6.19.10
        (True, False, True, "6.19"),
        (False, True, True, "6.18.0"),  # 6.17 .. 6.18.20: the mremap fix cannot be told
        (False, False, True, "6.18.21"),  # 6.18.21 .. 6.18.43
        (False, False, False, "6.16"),
    ],
)
def test_probe_places_the_stale_mseal_walk(sticky: bool, stale: bool, checks_first: bool,
                                           profile: str) -> None:
    from replay.live import probe

    run, asked = _fake_kernel(True, True, sticky, True, True, mseal_stale=stale,
                              checks_first=checks_first)
    info = probe(run)
    assert info.profile == profile, info.findings
    assert info.mseal_stale is stale
    assert any(n.startswith("L20") for n in asked) == sticky
    assert info.mremap_faulted_safe == sticky  # L20 only runs where sticky flags prove the fix


@pytest.mark.parametrize(
    ("kind", "profile", "safe"),
    [
        ((True, True, True, True, True), "6.19", True),
        # without sticky flags, mremap's check order and a fixed mseal walk: 6.18.21 .. 6.18.43
        ((True, True, False, True, True), "6.18.21", False),
        ((False, True, False, True, True), "6.15", True),
        ((False, False, False, True, True), "6.12", True),
        ((False, False, False, False, False), "6.1", True),
    ],
)
def test_probe_classifies_and_never_runs_l20_when_unsafe(kind: tuple[bool, ...], profile: str, safe: bool) -> None:
    from replay.live import probe

    run, asked = _fake_kernel(*kind)
    info = probe(run)
    assert info.profile == profile, info.findings
    assert info.mremap_faulted_safe == safe
    ran_l20 = any(n.startswith("L20") for n in asked)
    assert ran_l20 == (profile == "6.19")  # only where sticky flags prove the mremap fix
    assert info.findings[-1] == f"profile: {profile}"


@pytest.mark.qemu
@pytest.mark.parametrize("kernel", QEMU_OLD_ANON)
def test_probe_classifies_the_old_kernels(kernel: str) -> None:
    from replay.live import probe

    need_qemu(kernel)
    info = probe(lambda s: run_qemu(kernel, s))
    p = get_profile(BY_LABEL[kernel].version)
    assert info.profile == p.name, info.findings
    assert not info.new_anon_rule and info.has_guard == p.guard_install_available
    assert info.mremap_faulted_safe
    assert info.has_mseal == p.mseal_available
    assert info.account_drop == p.mprotect_unaccount_unfaulted


@pytest.mark.live
def test_detect_live_profile() -> None:
    from replay import get_profile
    from replay.live import detect_live_profile, probe_live

    need_live()
    profile, findings = detect_live_profile()
    assert profile in ("6.1", "6.12", "6.15", "6.16", "6.18.0", "6.18.21", "6.19.0", "6.19", "7.2")
    assert findings and findings[-1] == f"profile: {profile}"
    info = probe_live()
    assert info.profile == profile
    # the profile is consistent with what the probes saw
    assert info.new_anon_rule == (profile in ("6.16", "6.18.0", "6.18.21", "6.19.0", "6.19", "7.2"))
    assert info.sticky == (profile in ("6.19.0", "6.19", "7.2"))
    assert info.mseal_stale == get_profile(profile).mseal_stale_curr_start
    if info.sticky:
        assert info.mremap_fixed is True and info.mremap_faulted_safe


@pytest.mark.live
def test_python_engine_matches_the_c_runner() -> None:
    """pyrunner (ctypes; used without a compiler) and runner.c give identical results."""
    from replay.oracle.recipes import RECIPES

    need_live()
    seqs = [x.sequence() for x in RECIPES if not x.unsafe_before_6188] + gen_batch(31, 150, GenConfig(length=16, files=False, brk=False))
    a = run_live(seqs, engine="c")
    b = run_live(seqs, engine="python")
    assert all(r.status == "ok" for r in a)
    for s, x, y in zip(seqs, a, b, strict=True):
        assert (x.status, [(t.errno, t.ret, t.vmas) for t in x.steps]) == (
            y.status, [(t.errno, t.ret, t.vmas) for t in y.steps]), s.name


@pytest.mark.live
def test_static_elf_check() -> None:
    from replay.oracle.execute import is_static_elf

    need_cc()
    assert is_static_elf(build_runner())
    assert not is_static_elf(Path(sys.executable).resolve())


# ---- the pinned kernel table --------------------------------------------------------------------


def test_pinned_kernel_table_and_nearest_served_release() -> None:
    from replay.oracle.kernels import BY_LABEL, KERNELS, nearest_served

    assert len({k.label for k in KERNELS}) == len(KERNELS) >= 11
    assert {"6.1", "6.12", "6.18.5", "6.18.15", "7.3.4"} <= set(BY_LABEL)
    k = BY_LABEL["6.18.15"]
    served = ["linux-image-6.18.12+deb13-cloud-amd64", "linux-image-6.18.17+deb13-cloud-amd64",
              "linux-image-6.18.14+deb13-cloud-amd64", "linux-binary-6.18.15+deb13-cloud-amd64",
              "linux-image-6.19.15+deb13-cloud-amd64"]
    assert nearest_served(k, served) == "linux-image-6.18.14+deb13-cloud-amd64"
    # a tie goes to the newer release; another series or package kind never counts
    tie = ["linux-image-6.18.13+deb13-cloud-amd64", "linux-image-6.18.17+deb13-cloud-amd64"]
    assert nearest_served(k, tie) == "linux-image-6.18.17+deb13-cloud-amd64"
    assert nearest_served(k, served[3:]) is None


def test_kernel_fetcher_refuses_unknown_labels_in_one_line() -> None:
    import subprocess

    from tests.conftest import ROOT

    p = subprocess.run([sys.executable, str(ROOT / "replay/oracle/kernels.py"), "fetch", "9.9"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "unknown kernel label" in p.stderr
    lst = subprocess.run([sys.executable, str(ROOT / "replay/oracle/kernels.py"), "list"],
                         capture_output=True, text=True, check=True)
    assert "linux-binary-7.3.4+deb13-cloud-amd64" in lst.stdout


def test_hidden_state_lines_and_comparison() -> None:
    """`% START END ANON AVC` lines (runner -d) attach to the step's VMAs; compare(anon=True)
    compares anon_vma identity classes (not the numbers) and fork-child status."""
    from replay.oracle.compare import diff_step
    from replay.oracle.core import StepResult as Step
    from replay.oracle.core import VmaRow as Vma
    from replay.oracle.core import parse_output, seq

    s = seq("h", "mmap 0 4 rw- private,anon,fixed")
    out = ("#seq h\n@ 0 0 -\n@ 1 0 0\n0 2 rw-p rd wr mr mw me ac\n2 4 r--p rd mr mw me ac\n"
           "% 0 2 7 1\n% 2 4 7 2\n#end h ok\n")
    (r,) = parse_output(out, [s])
    a, b = r.steps[1].vmas
    assert (a.anon, a.avc, a.fork_child, b.anon, b.avc, b.fork_child) == (7, 1, False, 7, 2, True)
    f = frozenset({"rd"})

    def step(*vs: tuple[int, int, int]) -> Step:
        return Step(1, "x", 0, None, tuple(Vma(i * 2, i * 2 + 2, "rw-p", f, an, avc) for i, (an, avc, _) in enumerate(vs)))

    same = step((5, 1, 0), (5, 1, 0), (0, 0, 0))
    renamed = step((9, 1, 0), (9, 1, 0), (0, 0, 0))
    split = step((5, 1, 0), (6, 1, 0), (0, 0, 0))
    forked = step((5, 2, 0), (5, 1, 0), (0, 0, 0))
    faulted = step((5, 1, 0), (5, 1, 0), (8, 1, 0))
    assert diff_step(same, renamed, anon=True) == ([], [])
    assert diff_step(same, split, anon=True)[0] == ["anon_vma"]
    assert diff_step(same, faulted, anon=True)[0] == ["anon_vma"]
    assert diff_step(same, forked, anon=True)[0] == ["fork-child"]
    assert diff_step(same, split)[0] == []  # off unless asked
    plain = Step(1, "x", 0, None, tuple(Vma(v.start, v.end, v.perms, v.flags) for v in same.vmas))
    assert diff_step(plain, split, anon=True)[0] == ["oracle"]  # asked, but the runner gave none
