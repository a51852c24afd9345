"""Kernel profiles: every behaviour difference between kernel eras, as named fields.

This is the only module of ``replay`` that looks at version numbers. The model reads fields of a
:class:`KernelProfile`; it never compares versions. Each field cites the kernel commit that
introduced the behaviour (drgn style), with a confidence tag where the release that first
carried it is INFERRED rather than VERIFIED (docs/model.md, "Where the rules come from").

Support matrix (profile name -> what it models):

======== ======================================================================================
name     behaviour
======== ======================================================================================
6.1      vma_merge() era; OLD anon rule; a close hook on a merge target blocks the merge;
         mprotect never drops VM_ACCOUNT; no mseal, no guard regions
6.6      OLD anon rule; close checked only on VMAs that may be removed (714965ca8252);
         mprotect drops VM_ACCOUNT of unfaulted anon (~6.7, INFERRED for 6.6 = not yet)
6.12     vma_merge_new_range()/vma_merge_existing_range(); close blocks only deletion; mseal
6.15     as 6.12 plus MADV_GUARD_INSTALL (6.13); OLD anon rule (last era before the fix)
6.16     NEW anon rule (879bca0a2c4f); KSM flag applied before the merge (check_ksm_early);
         move_vma() refactor (DONTUNMAP: whole source unlocked, source loses VM_ACCOUNT)
6.17     + multi-VMA mremap, mremap parameters checked first, DONTUNMAP keeps VM_ACCOUNT;
         mseal_apply() walks on with a stale curr_start after a merge (6c2da14ae1e0)
6.18.0   as 6.17; mremap of a faulted VMA merges without anon_vma propagation (the UAF)
6.18.8   + copied_from propagation (61f67c230a5e) and fork check on it (3b617fd3d317)
6.18.21  + the mseal curr_start fix (2697dd8ae721, stable backport)
6.19.0   6.18.8 + sticky flags VM_SOFTDIRTY|VM_MAYBE_GUARD (64212ba02e66, 6707915e030a), guard
         install sets VM_MAYBE_GUARD ("gu"); 6.19.0 - 6.19.10 (the mseal walk not yet fixed)
6.19     + the mseal curr_start fix (2697dd8ae721): 6.19.11+, 7.0, 7.1 and 6.18.44+
7.2      MREMAP_DONTUNMAP as in 6.12-6.15 again: the copy never merges with its source, a
         locked source has only the moved range split out and unlocked (7.2, 7.3)
======== ======================================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum

__all__ = [
    "PROFILES",
    "PROFILE_NAMES",
    "AnonRule",
    "CloseRule",
    "KernelProfile",
    "get_profile",
]


class AnonRule(Enum):
    """Which is_mergeable_anon_vma() the kernel has."""

    # Since Linux kernel commit 965f55dea0e3 ("mmap: avoid merging cloned VMAs") (in v3.0):
    # exactly one side faulted is allowed only if the *target* has exactly one avc.
    OLD = "old"
    # Since Linux kernel commit 879bca0a2c4f ("mm/vma: fix incorrectly disallowed anonymous VMA
    # merges") (in v6.16, INFERRED): the fork check applies to the VMA whose anon_vma is used.
    NEW = "new"


class CloseRule(Enum):
    """How a vm_ops->close hook restricts merging."""

    # v6.1 is_mergeable_vma(): any VMA with a close hook refuses to be a merge target.
    TARGET = "target"
    # Since Linux kernel commit 714965ca8252 ("mm/mmap: start distinguishing if vma can be removed
    # in mergeability test") (in v6.4, INFERRED) and fc0c8f9089c2 ("mm, mmap: fix vma_merge()
    # case 7 with vma_ops->close"): next (which may be removed) must have no close hook, and a
    # removed middle must have none.
    REMOVABLE = "removable"
    # Since the v6.12 vma_merge() elimination series: only a VMA that would be *deleted* blocks;
    # a 3-way merge whose next has close shrinks to a left merge.
    DELETION = "deletion"


@dataclass(frozen=True, slots=True)
class KernelProfile:
    """One kernel era's VMA behaviour. Construct through :func:`get_profile`."""

    name: str
    anon_rule: AnonRule
    close_rule: CloseRule
    # Since Linux kernel commit 61f67c230a5e ("mm/vma: fix anon_vma UAF on mremap() faulted,
    # unfaulted merge") (in v6.19 and v6.18.8, VERIFIED): vmg->copied_from; vma_expand() gives an
    # unfaulted target the anon_vma of the VMA copied by mremap.
    copied_from_propagation: bool
    # Since Linux kernel commit 3b617fd3d317 ("mm/vma: enforce VMA fork limit on unfaulted,faulted
    # mremap merge too") (in v6.19 and v6.18.8, VERIFIED): the copied-from VMA must not be a fork
    # child either.
    fork_check_copied_from: bool
    # Since Linux kernel commit 64212ba02e66 ("mm: implement sticky VMA flags") and 6707915e030a
    # ("mm: propagate VM_SOFTDIRTY on merge") (in v6.19; 6.18.y backport queued 2026-06-25):
    # VM_STICKY = VM_SOFTDIRTY|VM_MAYBE_GUARD is ignored by merges and OR-ed into the result.
    sticky_flags: bool
    # Since Linux kernel commit 662df3e5c376 ("mm: madvise: implement lightweight guard page
    # mechanism") (in v6.13): MADV_GUARD_INSTALL/REMOVE exist (else EINVAL).
    guard_install_available: bool
    # Since the VM_MAYBE_GUARD series (ab04b530e7e8 "mm: introduce copy-on-fork VMAs and make
    # VM_MAYBE_GUARD one") (in v6.19): guard install sets VM_MAYBE_GUARD ("gu") on the whole VMA
    # and calls anon_vma_prepare() only for anonymous VMAs.
    guard_install_sets_maybe_guard: bool
    # Since Linux kernel commit 8be7258aad44 ("mseal: add mseal syscall") (in v6.10): mseal exists
    # (else ENOSYS) and VM_SEALED blocks munmap/mremap/mprotect/MAP_FIXED.
    mseal_available: bool
    # Since patch "mm/mprotect: allow unfaulted VMAs to be unaccounted on mprotect()" (v2 posted
    # 2023-10-07; in ~v6.7, INFERRED; live-checked: absent in 6.1, present in 6.12):
    # mprotect to non-writable drops VM_ACCOUNT from an unfaulted anonymous VMA.
    mprotect_unaccount_unfaulted: bool
    # Since "mm: prevent KSM from breaking VMA merging for new VMAs" (check_ksm_early) (in v6.16,
    # INFERRED): with PR_SET_MEMORY_MERGE the new VMA is VM_MERGEABLE *before* the merge attempt.
    ksm_early: bool
    # Since Linux kernel commit efa7df3e3bb5 ("mm: align larger anonymous mappings on THP
    # boundaries") (in v6.7) as limited by d4148aeab412 ("mm, mmap: limit THP alignment of
    # anonymous mappings to PMD-aligned sizes") (v6.12 and stable): anonymous mmaps whose length
    # is a multiple of 2 MiB are placed 2 MiB aligned.
    thp_align_anon: bool
    # Since Linux kernel commit d23cb648e365 ("mm/mremap: permit mremap() move of multiple VMAs")
    # (in v6.17): MREMAP_FIXED with old_len == new_len moves every VMA in the range, gaps kept.
    mremap_multi_vma: bool = False
    # Between Linux kernel commit b714ccb02a76 ("mm/mremap: complete refactor of move_vma()")
    # (in v6.16; qemu-checked: 6.12.118 differs, 6.16.12 .. 7.1.13 agree) and 7.2 (qemu-checked:
    # 7.2.13 and 7.3.4 differ again; the 7.2 commit is not identified, the behaviour is measured):
    # MREMAP_DONTUNMAP unlocks the whole source VMA in place (dontunmap_complete()). Otherwise
    # the moved range of a locked source is split out of it before the copy (which may then
    # merge with the source's remainder) and only that range is unlocked.
    dontunmap_unlocks_whole_source: bool = False
    # How a MREMAP_DONTUNMAP copy merges when it is made (qemu-checked on every pinned kernel,
    # live on 6.18): "no_source_neighbour" (6.1; 6.6 INFERRED) - no merge at all when the source
    # VMA is the destination's prev or next, a normal merge otherwise; "not_source" (6.12-6.15,
    # and again 7.2+): never with the source VMA, normally with the other side; "any" (6.16 -
    # 7.1, since b714ccb02a76).
    dontunmap_copy_merges: str = "no_source_neighbour"
    # Since "mm/mremap: check remap conditions earlier" and the check_mremap_params() series
    # that follows the move_vma() refactor (in v6.17, INFERRED; qemu-checked: 6.16.12 has the
    # old order, 6.17.13 the new): every parameter, including the overlap of the old and new
    # ranges, is checked before the VMA lookup and before a MREMAP_FIXED destination is
    # unmapped. Before (6.16 included): the lookup (EFAULT) comes first and the destination is
    # unmapped before the source range is validated.
    mremap_checks_first: bool = False
    # Between Linux kernel commit b714ccb02a76 ("mm/mremap: complete refactor of move_vma()")
    # (in v6.16) and its fix 0e59f47c15ce ("mm/mremap: correctly account old mapping after
    # MREMAP_DONTUNMAP remap") (in v6.18 and stable 6.17.y; qemu-checked: 6.16.12 clears,
    # 6.17.13 keeps): MREMAP_DONTUNMAP clears VM_ACCOUNT ("ac") of the source VMA it leaves.
    dontunmap_clears_account: bool = False
    # 6.16 only (qemu-checked: 6.16.12 does it, 6.12.118 and 6.17.13 do not; the commit that
    # introduced and the one that removed it are not identified): MADV_UNMERGEABLE on a
    # VM_MERGEABLE VMA clears VM_SEALED ("sl") along with VM_MERGEABLE.
    unmergeable_clears_sealed: bool = False
    # smaps mnemonic of VM_LOCKONFAULT: 6.1 prints "??" (qemu-checked), 6.12 prints "lf"
    # (qemu-checked); 6.6 INFERRED "??".
    lockonfault_mnemonic: str = "??"
    # mmap_region() of the maple-tree era (6.1-6.11, before vma_merge_new_range()): next is
    # checked first, and prev is then checked with *next's* anon_vma as the proposal, so an
    # unfaulted prev cannot join a faulted next under the OLD rule (qemu-checked on 6.1).
    mmap_prev_uses_next_anon: bool = True
    # Before "mm/madvise: make MADV_POPULATE_(READ|WRITE) handle VM_FAULT_RETRY properly"
    # (631426ba1d45, v6.10): MADV_POPULATE_* ran per VMA inside madvise_walk_vmas(), so a hole
    # is ENOMEM only after the rest succeeded and an incompatible VMA is EINVAL first
    # (qemu-checked on 6.1). Since: a hole is ENOMEM at once.
    madvise_populate_in_walk: bool = True
    # What-if only, no kernel has it: the merge check ignores VM_ACCOUNT, so the PT_GNU_RELRO piece
    # ld.so makes read-only (faulted, keeps `ac`) could merge with the read-only segment before it
    # (never writable, no `ac`). `vmatrace replay --what-if merge_ignores_account=true` measures it.
    merge_ignores_account: bool = False
    # Since Linux kernel commit c4608d1bf7c6 ("mm: mmap: map MAP_STACK to VM_NOHUGEPAGE") (in
    # v6.7; qemu-checked: absent in 6.1, present in 6.12 and later), limited to kernels built
    # with CONFIG_TRANSPARENT_HUGEPAGE by "mm: mmap: map MAP_STACK to VM_NOHUGEPAGE only if THP
    # is enabled" (v6.15): a MAP_STACK mapping is VM_NOHUGEPAGE ("nh"), so a thread stack does
    # not merge with the rw-p mapping beside it.
    map_stack_nohugepage: bool = False
    # Between Linux kernel commit 6c2da14ae1e0 ("mm/mseal: rework mseal apply logic") (in v6.17)
    # and its fix 2697dd8ae721 ("mm/mseal: update VMA end correctly on merge") (in v7.0, and in
    # stable 6.18.21 and 6.19.11; qemu-checked: 6.16.12 and 6.19.14 without, 6.17.13, 6.18.5 and
    # 6.18.15 with): mseal_apply() advances its curr_start to the curr_end it computed *before*
    # vma_modify_flags(), so after a VMA merged with the sealed next one the walk modifies the
    # following VMA from a start below its vm_start. vma_merge_existing_range() then has no left
    # side, and next's pgoff, counted from an address below vm_start (unsigned), never matches:
    # that VMA is sealed without merging with its sealed prev, split only at the range's end.
    mseal_stale_curr_start: bool = False

    @property
    def anon_rule_new(self) -> bool:
        return self.anon_rule is AnonRule.NEW


_BASE = KernelProfile(
    name="6.1",
    anon_rule=AnonRule.OLD,
    close_rule=CloseRule.TARGET,
    copied_from_propagation=False,
    fork_check_copied_from=False,
    sticky_flags=False,
    guard_install_available=False,
    guard_install_sets_maybe_guard=False,
    mseal_available=False,
    mprotect_unaccount_unfaulted=False,
    ksm_early=False,
    thp_align_anon=False,
)
_P66 = replace(_BASE, name="6.6", close_rule=CloseRule.REMOVABLE)
_P612 = replace(
    _P66,
    name="6.12",
    dontunmap_copy_merges="not_source",
    lockonfault_mnemonic="lf",
    mmap_prev_uses_next_anon=False,
    madvise_populate_in_walk=False,
    map_stack_nohugepage=True,
    close_rule=CloseRule.DELETION,
    mseal_available=True,
    mprotect_unaccount_unfaulted=True,
    thp_align_anon=True,
)
_P615 = replace(_P612, name="6.15", guard_install_available=True)
_P616 = replace(_P615, name="6.16", anon_rule=AnonRule.NEW, ksm_early=True,
                dontunmap_unlocks_whole_source=True, dontunmap_copy_merges="any",
                dontunmap_clears_account=True, unmergeable_clears_sealed=True)
_P617 = replace(_P616, name="6.17", mremap_multi_vma=True, mremap_checks_first=True,
                dontunmap_clears_account=False, unmergeable_clears_sealed=False,
                mseal_stale_curr_start=True)
_P6180 = replace(_P617, name="6.18.0")
_P6188 = replace(
    _P6180, name="6.18.8", copied_from_propagation=True, fork_check_copied_from=True
)
# 6.18.21 (stable): the mseal fix 2697dd8ae721
_P61821 = replace(_P6188, name="6.18.21", mseal_stale_curr_start=False)
# 6.19.0 - 6.19.10: sticky flags, but not yet the mseal fix (6.19.11)
_P6190 = replace(
    _P6188, name="6.19.0", sticky_flags=True, guard_install_sets_maybe_guard=True
)
_P619 = replace(_P6190, name="6.19", mseal_stale_curr_start=False)
# 7.0 and 7.1 behave as 6.19 on every oracle test; 7.2 changed MREMAP_DONTUNMAP back to the
# 6.12-6.15 handling of the source (qemu: 7.1.13 vs 7.2.13; 7.3.4 as 7.2)
_P72 = replace(_P619, name="7.2", dontunmap_unlocks_whole_source=False,
               dontunmap_copy_merges="not_source")

PROFILES: dict[str, KernelProfile] = {
    p.name: p for p in (_BASE, _P66, _P612, _P615, _P616, _P617, _P6180, _P6188, _P61821,
                        _P6190, _P619, _P72)
}
PROFILE_NAMES: tuple[str, ...] = tuple(PROFILES)

# The newest release whose behaviour is known (a qemu oracle runs it): a newer one gets the
# newest profile and a warning.
NEWEST_KNOWN: tuple[int, int] = (7, 3)


@dataclass(frozen=True, slots=True)
class Backport:
    """A behaviour a stable series received after its .0 release."""

    series: tuple[int, int]
    first: int  # the first stable release of the series known to carry it
    last_without: int  # the last stable release known not to carry it
    profile: str  # the profile of a release that carries it
    what: str
    evidence: str


# Stable releases that carry a later behaviour. Between last_without and first the release is
# not known: the profile without the backport is used, with a warning (a trace recorded with
# `vmatrace record` carries the recording kernel's probed behaviour instead, see
# docs/trace-format.md).
STABLE_BACKPORTS: tuple[Backport, ...] = (
    # Linux kernel commit 61f67c230a5e ("mm/vma: fix anon_vma UAF on mremap() faulted,
    # unfaulted merge") and 3b617fd3d317 ("mm/vma: enforce VMA fork limit on unfaulted,faulted
    # mremap merge too") (in v6.19 and v6.18.8).
    Backport((6, 18), 8, 7, "6.18.8", "the mremap anon_vma fix",
             "the 6.18.8 stable release notes; qemu: 6.18.5 without, 6.18.15 with"),
    # Linux kernel commit 2697dd8ae721 ("mm/mseal: update VMA end correctly on merge") (in v7.0;
    # stable: 6.18.21 as 40b3f4700e55, 6.19.11 as 83737e34b83a).
    Backport((6, 18), 21, 20, "6.18.21", "the mseal curr_start fix",
             "the 6.18.21 stable release (its shortlog); qemu: 6.18.5 and 6.18.15 without"),
    Backport((6, 19), 11, 10, "6.19", "the mseal curr_start fix",
             "the 6.19.11 stable release (its shortlog); qemu: 6.19.14 with"),
    # Linux kernel commits 64212ba02e66 ("mm: implement sticky VMA flags") and 6707915e030a
    # ("mm: propagate VM_SOFTDIRTY on merge") with the VM_MAYBE_GUARD series (in v6.19).
    Backport((6, 18), 44, 15, "6.19", "sticky VMA flags (VM_SOFTDIRTY, VM_MAYBE_GUARD)",
             "qemu: 6.18.15 without (the 6.18.8 profile agrees); live: 6.18.44 with (`gu` "
             "after MADV_GUARD_INSTALL, the 6.19 profile agrees)"),
)

_VERSION_RE = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+~].*)?\s*$")
_WARNED: set[str] = set()


def _warn_once(version: str, message: str) -> None:
    if version not in _WARNED:
        _WARNED.add(version)
        from vmatrace.base.errors import warn

        warn(message)


def _with_backports(version: str, key: tuple[int, int], patch: int, name: str) -> str:
    """The profile of stable release ``patch`` of series ``key`` whose .0 release has profile
    ``name``: the table's backports apply in order, a later one on top of the earlier."""
    for b in STABLE_BACKPORTS:
        if b.series != key:
            continue
        if patch >= b.first:
            name = b.profile
        elif patch > b.last_without:
            hint = "pass sticky=True, or " if b.profile == "6.19" and key == (6, 18) else ""
            _warn_once(version, (
                f"kernel {version}: not known whether it carries {b.what} ({key[0]}.{key[1]}."
                f"{b.last_without} does not, {key[0]}.{key[1]}.{b.first} does); assuming it "
                f"does not ({hint}replay a trace recorded with its kernel probe)"))
    return name


def _series_profile(version: str, key: tuple[int, int], patch: int) -> str:
    """The profile of a release by its series, then by the stable backports it carries."""
    if key < (6, 6):
        return "6.1"
    if key < (6, 12):
        return "6.6"
    if key < (6, 13):
        return "6.12"
    if key < (6, 16):
        return "6.15"
    if key < (6, 17):
        return "6.16"
    if key < (6, 18):
        return "6.17"
    if key == (6, 18):
        return _with_backports(version, key, patch, "6.18.0")
    if key == (6, 19):
        return _with_backports(version, key, patch, "6.19.0")
    if key > NEWEST_KNOWN:
        _warn_once(version, (
            f"kernel {version} is newer than any profile (the newest checked release is "
            f"{NEWEST_KNOWN[0]}.{NEWEST_KNOWN[1]}); using the {PROFILE_NAMES[-1]} profile"))
    if key >= (7, 2):
        return "7.2"
    return "6.19"


def get_profile(version: str, *, sticky: bool | None = None) -> KernelProfile:
    """Map a kernel version string ("X.Y" or "X.Y.Z", optional "-suffix") to its profile.

    A stable release gets the backports the release table (STABLE_BACKPORTS) knows it carries.
    ``sticky`` overrides the sticky-flag part (a probed kernel knows; replay.live.live_profile() probes).
    A release newer than the newest checked one gets the newest profile and a warning.

    >>> get_profile("6.17").name, get_profile("6.18.3").name, get_profile("6.18.44").name
    ('6.17', '6.18.0', '6.19')
    """
    if not isinstance(version, str):
        raise ValueError(f"kernel version must be a string like '6.12', got {version!r}")
    if version in PROFILES and sticky is None:
        return PROFILES[version]
    if version == "live":
        raise ValueError(
            "the running kernel's profile is found by probing it, above the model: use "
            "replay.live.live_profile() or replay.live.live_address_space()")
    m = _VERSION_RE.match(version)
    if not m:
        raise ValueError(
            f"not a kernel version: {version!r} (expected 'X.Y' or 'X.Y.Z', e.g. '6.12' or "
            f"'6.18.8', or one of the profile names {', '.join(PROFILE_NAMES)})"
        )
    major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    key = (major, minor)
    if key < (6, 1):
        raise ValueError(
            f"kernel {version} predates the oldest modelled era (6.1); profiles: "
            f"{', '.join(PROFILE_NAMES)}"
        )
    prof = PROFILES[_series_profile(version, key, patch)]
    if sticky is not None and sticky != prof.sticky_flags:
        if key == (6, 18) and sticky:
            return PROFILES["6.19"]
        prof = replace(prof, name=f"{prof.name}{'+sticky' if sticky else '-sticky'}",
                       sticky_flags=sticky, guard_install_sets_maybe_guard=sticky)
    return prof
