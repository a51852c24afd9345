"""The kernel lists the tests need, derived from the model's profiles (replay/profiles.py) and the
qemu oracle's pinned kernels (replay/oracle/kernels.py), never written by hand: a new profile or
a new pinned kernel is tested by every test whose class it falls in.
"""

from __future__ import annotations

from replay.oracle.kernels import KERNELS
from replay.profiles import PROFILES, AnonRule, CloseRule, KernelProfile, get_profile

__all__ = ["ALL", "MSEAL", "NEW_ANON", "OLD_ANON", "QEMU_NEW_ANON", "QEMU_OLD_ANON", "STICKY",
           "VMA_TEST_ERA", "profiles_where"]


def profiles_where(pred: object) -> list[str]:
    """The profile names, oldest first, whose KernelProfile satisfies ``pred``."""
    return [name for name, p in PROFILES.items() if pred(p)]  # type: ignore[operator]


def _old(p: KernelProfile) -> bool:
    return p.anon_rule is AnonRule.OLD


ALL: list[str] = list(PROFILES)
# is_mergeable_anon_vma() before / since 879bca0a2c4f
OLD_ANON: list[str] = profiles_where(_old)
NEW_ANON: list[str] = profiles_where(lambda p: not _old(p))
# the kernel's userland VMA tests (tools/testing/vma) exist since the vma_merge_struct era (6.12),
# the era whose vm_ops->close rule blocks only a deletion
VMA_TEST_ERA: list[str] = profiles_where(lambda p: p.close_rule is CloseRule.DELETION)
# mseal(2) exists (6.10+)
MSEAL: list[str] = profiles_where(lambda p: p.mseal_available)
# sticky VMA flags (64212ba02e66): the sticky-flag permutations of the kernel's tests
STICKY: list[str] = profiles_where(lambda p: p.sticky_flags)
# the pinned qemu kernels, by the anon rule of the profile their release picks
QEMU_OLD_ANON: list[str] = [k.label for k in KERNELS if _old(get_profile(k.version))]
QEMU_NEW_ANON: list[str] = [k.label for k in KERNELS if not _old(get_profile(k.version))]
