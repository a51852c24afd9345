"""Detect which merge-logic profile the running kernel follows, by probing it (never by `uname -r`).

Probes run in forked children of the oracle runner (replay/oracle/runner.c), inside a private
window, so the calling process is untouched:

* L1 (a live recipe, replay/oracle/recipes.py): unfaulted prev + faulted middle merge on mprotect -> NEW (6.16+) anon
  rule, else OLD;
* L25: MADV_GUARD_INSTALL availability (6.13+) and `gu` in smaps afterwards -> sticky flags
  (6.19, or 6.18.y with the June 2026 backport, which sits on top of the 6.18.8 mremap fix);
* mseal availability (6.10+), L13b (VM_ACCOUNT drop on mprotect, ~6.7+), and whether mseal's
  walk goes on from a stale start after a merge (6.17 until the 7.0 fix, which reached 6.18.21
  and 6.19.11);
* the mremap probe (L20, forked and unforked) ONLY when sticky flags prove the kernel is past
  6.18.8, with an unfaulted MREMAP_DONTUNMAP copy beside its source (merged 6.16 - 7.1: 6.19;
  apart: 7.2+). On a NEW kernel without sticky flags it may be 6.16 .. 6.18.7, where L20 drives a
  known use-after-free (docs/model.md, "Three kinds of 6.18"), so it is not run and the profile is chosen conservatively
  ("6.18.0": the mremap fix is assumed missing, and the fuzzer must not generate faulted mremap
  merges there), unless the order of mremap's checks (EINVAL before EFAULT since 6.17) and a
  fixed mseal walk place it at 6.18.21+ (or the old order at 6.16).
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Any

from .mm import AddressSpace
from .oracle.core import SeqResult, Sequence
from .oracle.recipes import BY_ID, final_flags, final_layout
from .profiles import KernelProfile, get_profile

Runner = Callable[[Seq[Sequence]], list[SeqResult]]

PROBE_MSEAL = Sequence("probe-mseal", ("mmap 1 2 rw- private,anon,fixed,noreserve", "mseal 1 1"))
# mseal of [1,4) over [1,2) [2,3 sealed) [3,5): [1,2) merges with the sealed [2,3); from
# 6c2da14ae1e0 (6.17) until 2697dd8ae721 (7.0; stable 6.18.21, 6.19.11) mseal_apply() then seals
# [3,4) from a stale start, apart from [1,3). No merge is unsafe here: run on every kernel.
PROBE_MSEAL_WALK = Sequence("probe-mseal-walk", ("mmap 1 4 rw- private,anon,fixed,noreserve",
                                                 "mseal 2 1", "mseal 1 3"))
# An unmapped range overlapping its own MREMAP_FIXED destination: EINVAL where every mremap
# parameter is checked before the VMA lookup (6.17+), EFAULT before (6.16). Safe everywhere.
PROBE_MREMAP_ORDER = Sequence("probe-mremap-order", ("mmap 4 1 rw- private,anon,fixed",
                                                     "mremap 5 3 3 maymove,fixed,dontunmap 5"))
# An unfaulted MREMAP_DONTUNMAP copy next to its own source: merged from 6.16 to 7.1, kept apart
# before and since 7.2 (no anon_vma is involved: safe on every kernel)
PROBE_DONTUNMAP = Sequence("probe-dontunmap", ("mmap 5 2 r-- private,anon,fixed",
                                               "mremap 6 1 1 maymove,fixed,dontunmap 7"))


@dataclass
class LiveInfo:
    profile: str
    findings: list[str] = field(default_factory=list)
    new_anon_rule: bool = False
    has_guard: bool = False
    sticky: bool = False
    has_mseal: bool = False
    account_drop: bool = False
    mremap_fixed: bool | None = None  # None: not probed (unsafe or irrelevant)
    mseal_stale: bool | None = None  # mseal_apply()'s stale curr_start; None: no mseal
    mremap_checks_first: bool | None = None  # None: not probed (OLD anon rule)

    @property
    def mremap_faulted_safe(self) -> bool:
        """May faulted->unfaulted mremap merges (L20) be run on this kernel?"""
        return not self.new_anon_rule or self.mremap_fixed is True


def _step_errno(res: SeqResult, op_prefix: str) -> int | None:
    for s in res.steps:
        if s.op.startswith(op_prefix):
            return s.errno
    return None


def _ok(res: SeqResult, what: str) -> None:
    if res.status != "ok":
        raise RuntimeError(f"probe {what} failed: runner status {res.status}")


def probe(run: Runner) -> LiveInfo:
    """Classify a kernel with `run` (run_live, or a qemu runner for tests)."""
    l1, l25, l13b = BY_ID["L1"], BY_ID["L25"], BY_ID["L13b"]
    r1, r25, r13b, rms, rwalk = run([l1.sequence("-probe"), l25.sequence("-probe"),
                                     l13b.sequence("-probe"), PROBE_MSEAL, PROBE_MSEAL_WALK])
    for r in (r1, r25, r13b, rms, rwalk):
        _ok(r, r.name)
    info = LiveInfo(profile="")
    f = info.findings

    lay1 = final_layout(r1)
    if lay1 == l1.new:
        info.new_anon_rule = True
        f.append("L1: unfaulted prev + faulted middle merged -> NEW anon rule (6.16+)")
    elif lay1 == l1.old:
        f.append("L1: not merged -> OLD anon rule (<= 6.15)")
    else:
        raise RuntimeError(f"L1 probe gave an unexpected layout {lay1}")

    g = _step_errno(r25, "madvise")
    info.has_guard = g == 0
    if info.has_guard:
        gu = any("gu" in fl for fl in final_flags(r25).values())
        info.sticky = gu
        f.append("MADV_GUARD_INSTALL works (6.13+); "
                 + ("`gu` shown after it -> sticky VMA flags (6.19 semantics)" if gu
                    else "no `gu` -> no sticky flags"))
    else:
        f.append(f"MADV_GUARD_INSTALL fails with errno {g} ({errno.errorcode.get(g or 0, '?')}) -> < 6.13")

    ms = _step_errno(rms, "mseal")
    info.has_mseal = ms == 0
    f.append("mseal works (6.10+)" if ms == 0 else f"mseal fails with errno {ms} -> < 6.10")
    if info.has_mseal:
        sealed = [(v.start, v.end) for v in rwalk.steps[-1].vmas if "sl" in v.flags]
        if sealed in ([(1, 3), (3, 4)], [(1, 4)]):
            info.mseal_stale = sealed == [(1, 3), (3, 4)]
            f.append("mseal after a merge with a sealed next VMA " + (
                "leaves the following VMA apart (stale curr_start: 6.17 .. 6.18.20, 6.19.0 .. "
                "6.19.10)" if info.mseal_stale else "merges the following VMA too"))
        else:
            f.append(f"the mseal walk probe gave an unexpected layout {sealed}")

    info.account_drop = len(final_layout(r13b)) == 1
    f.append("L13b: " + ("unfaulted anon VMA loses VM_ACCOUNT on mprotect to read-only (~6.7+)"
                         if info.account_drop else "VM_ACCOUNT kept on mprotect to read-only (<= 6.6)"))

    if info.new_anon_rule:
        if info.sticky:
            # Sticky flags reached 6.18.y only on top of 6.18.8 and mainline in 6.19, both of which
            # carry the mremap fix: the L20 probes are safe here.
            a, b = BY_ID["L20prev"], BY_ID["L20fprev"]
            ra, rb, rd = run([a.sequence("-probe"), b.sequence("-probe"), PROBE_DONTUNMAP])
            _ok(ra, "L20prev")
            _ok(rb, "L20fprev")
            _ok(rd, "dontunmap")
            dontunmap_apart = [(v.start, v.end) for v in rd.steps[-1].vmas] == [(5, 7), (7, 8)]
            la, lb = final_layout(ra), final_layout(rb)
            info.mremap_fixed = la == a.new and lb == b.new
            if info.mremap_fixed:
                f.append("L20 (run because sticky flags imply >= 6.18.8): faulted->unfaulted mremap merges, "
                         "and is refused for a forked source -> mremap fix present")
                info.profile = "6.19"
                if dontunmap_apart:
                    f.append("an unfaulted MREMAP_DONTUNMAP copy stays apart from its source -> 7.2+")
                    info.profile = "7.2"
                elif info.mseal_stale:
                    f.append("sticky flags with the stale mseal walk -> 6.19.0 .. 6.19.10")
                    info.profile = "6.19.0"
            else:
                f.append(f"L20 gave unexpected layouts {la} / {lb}: sticky flags without the mremap fork "
                         "check; profile 6.19 kept, mremap disagreements are expected")
                info.profile = "6.19"
        else:
            (rord,) = run([PROBE_MREMAP_ORDER])
            _ok(rord, rord.name)
            info.mremap_checks_first = rord.steps[-1].errno == errno.EINVAL
            f.append("NEW rule without sticky flags: 6.16 .. 6.18.7 (mremap UAF) or 6.18.8+ (fixed). "
                     "They can only be told apart by running L20, a use-after-free on the affected "
                     "kernels, so it is NOT run, and faulted mremap merges must not be exercised")
            if info.mseal_stale is False and info.mremap_checks_first:
                f.append("mremap parameters checked first (6.17+) and the mseal walk fixed: "
                         "6.18.21 .. 6.18.43, which carry the mremap fix of 6.18.8")
                info.profile = "6.18.21"
            elif info.mseal_stale is False:
                f.append("mremap looks the VMA up before its parameter checks -> 6.16")
                info.profile = "6.16"
            else:
                f.append("assuming the mremap fix is missing (profile 6.18.0)")
                info.profile = "6.18.0"
    else:
        if info.has_guard:
            info.profile = "6.15"
        elif info.has_mseal or info.account_drop:
            info.profile = "6.12"
            if not info.has_mseal:
                f.append("no mseal but the VM_ACCOUNT drop: 6.7 .. 6.9; using the 6.12 profile")
        else:
            info.profile = "6.1"
            f.append("6.1 and 6.6 differ only in vm_ops->close handling, which no anonymous probe "
                     "can see; using the 6.1 profile (the one the qemu oracle verifies)")
    f.append(f"profile: {info.profile}")
    return info


@functools.cache
def _probe_live_cached() -> LiveInfo:
    from .oracle.execute import run_live

    return probe(run_live)


def probe_live() -> LiveInfo:
    """probe() on the running kernel; done once per process (the kernel cannot change under it)."""
    info = _probe_live_cached()
    return LiveInfo(**{**info.__dict__, "findings": list(info.findings)})


def detect_live_profile() -> tuple[str, list[str]]:
    """(profile name for replay.profiles.get_profile, human-readable findings) of this kernel."""
    info = probe_live()
    return info.profile, info.findings


def live_profile(sticky: bool | None = None) -> KernelProfile:
    """The profile of the running kernel, by probing it (``sticky`` forces the backport)."""
    name, _ = detect_live_profile()
    return get_profile(name, sticky=sticky)


def cpu_has_pku() -> bool:
    """Does this CPU and kernel have memory protection keys (ospke)?"""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return " ospke" in line or " pku " in line
    except OSError:  # pragma: no cover
        pass
    return False


def own_soft_dirty() -> bool:
    """Does this kernel have CONFIG_MEM_SOFT_DIRTY? (any ``sd`` in our own smaps)."""
    try:
        with open("/proc/self/smaps") as f:
            return any(line.startswith("VmFlags:") and " sd" in line for line in f)
    except OSError:  # pragma: no cover
        return False


def live_options() -> dict[str, object]:
    """The running machine's configuration as AddressSpace keyword arguments: soft-dirty from
    this process's smaps, protection keys from /proc/cpuinfo."""
    return {"soft_dirty": own_soft_dirty(), "pkeys": cpu_has_pku()}


def live_address_space(*, sticky: bool | None = None, **kw: Any) -> AddressSpace:
    """``AddressSpace`` with the running kernel's profile and configuration: the probed profile
    (its findings in ``mm.profile_findings``) and :func:`live_options`, unless ``kw`` sets them
    (``soft_dirty``, ``pkeys``). Other ``kw`` go to the constructor."""
    name, findings = detect_live_profile()
    if kw.get("soft_dirty") is None:
        kw["soft_dirty"] = own_soft_dirty()
    if not kw.get("pkeys"):
        kw["pkeys"] = cpu_has_pku()
    mm = AddressSpace(get_profile(name, sticky=sticky), **kw)
    mm.profile_findings = list(findings)
    return mm


__all__ = ["LiveInfo", "cpu_has_pku", "detect_live_profile", "live_address_space", "live_options",
           "live_profile", "own_soft_dirty", "probe", "probe_live"]
