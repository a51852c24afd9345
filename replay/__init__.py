"""replay: a pure-Python model of the Linux kernel's VMA merge logic, one profile per era.

>>> from replay import AddressSpace
>>> mm = AddressSpace(kernel="6.15")
>>> a = mm.mmap(0, 10 * 4096, 3, 0x22 | 0x4000)
>>> mm.mprotect(a, 5 * 4096, 1); mm.touch(a + 5 * 4096); mm.mprotect(a + 5 * 4096, 5 * 4096, 1)
>>> len(mm.vmas())   # OLD anon rule: the faulted half does not merge into the unfaulted one
2
"""

from replay.errors import ReplayError, SnapshotError
from replay.explain import Explanation, Refusal, Step
from replay.mm import (
    UNKNOWN,
    AddressSpace,
    AnonVma,
    OpenFile,
    Unknown,
    UnknownAnonVma,
    Vma,
    VmaView,
)
from replay.profiles import PROFILE_NAMES, PROFILES, AnonRule, CloseRule, KernelProfile, get_profile

__all__ = [
    "PROFILES",
    "PROFILE_NAMES",
    "UNKNOWN",
    "AddressSpace",
    "AnonRule",
    "AnonVma",
    "CloseRule",
    "Explanation",
    "KernelProfile",
    "OpenFile",
    "Refusal",
    "ReplayError",
    "SnapshotError",
    "Step",
    "Unknown",
    "UnknownAnonVma",
    "Vma",
    "VmaView",
    "get_profile",
]
