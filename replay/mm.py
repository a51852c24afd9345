"""The address space model: :class:`AddressSpace`, composed from one mixin per kernel file.

Vocabulary follows the kernel: ``prev``/``middle``/``next``/``target``, ``pgoff`` in pages,
``anon_vma`` identity and ``avc`` (length of the anon_vma_chain). Behaviour that differs between
kernel eras is read from ``self.profile`` (:class:`replay.profiles.KernelProfile`); nothing
compares version numbers.

Where the code is, as in the kernel's tree:

============================ ==================================================================
module                       kernel
============================ ==================================================================
replay/vma.py                mm/vma.c: vma_merge_new_range(), vma_expand(), vma_shrink(),
                             vma_merge_existing_range() + commit_merge(), vma_modify(),
                             __split_vma(), dup_anon_vma(), do_vmi_align_munmap()
replay/mmap.py               mm/mmap.c: do_mmap(), __mmap_region(), munmap, brk
                             (do_brk_flags()), the unmapped-area search, expand_downwards()
replay/mprotect.py           mm/mprotect.c: do_mprotect_pkey(), mprotect_fixup()
replay/mremap.py             mm/mremap.c: both eras, move_vma(), copy_vma(), vma_merge_extend()
replay/mlock.py              mm/mlock.c: mlock_fixup(), apply_mlockall_flags()
replay/madvise.py            mm/madvise.c: madvise_walk_vmas(), guard regions, populate, anon
                             names (madvise_set_anon_name())
replay/mseal.py              mm/mseal.c
replay/memory.py             mm/memory.c faults, anon_vma_prepare() (mm/rmap.c), populate (gup.c)
replay/fork.py               kernel/fork.c dup_mmap() + anon_vma_fork(); execve
replay/ksm.py                mm/ksm.c: PR_SET_MEMORY_MERGE
replay/file.py               the fd table (open, memfd_create, dup, close)
replay/snapshot.py           an address space from /proc (from_snapshot, narrow_from_snapshot)
replay/validate.py           the invariants (check())
replay/internal.py           the shared state and helpers (:class:`replay.internal.MmCore`)
replay/mm_types.py           the value types: Vma, AnonVma, OpenFile, UNKNOWN, VmaView
============================ ==================================================================

Errors are ``OSError(errno, message)`` with the errno the kernel returns.
"""

from __future__ import annotations

from replay.file import FileMixin
from replay.fork import ForkMixin
from replay.internal import MmCore
from replay.ksm import KsmMixin
from replay.madvise import MadviseMixin
from replay.memory import MemoryMixin
from replay.mlock import MlockMixin
from replay.mm_types import UNKNOWN, AnonVma, OpenFile, Unknown, UnknownAnonVma, Vma, VmaView
from replay.mmap import MmapMixin
from replay.mprotect import MprotectMixin
from replay.mremap import MremapMixin
from replay.mseal import MsealMixin
from replay.snapshot import SnapshotMixin
from replay.validate import ValidateMixin
from replay.vma import VmaMixin

__all__ = ["UNKNOWN", "AddressSpace", "AnonVma", "OpenFile", "Unknown", "UnknownAnonVma", "Vma",
           "VmaView"]


class AddressSpace(MmapMixin, MprotectMixin, MremapMixin, MlockMixin, MadviseMixin, MsealMixin,
                   MemoryMixin, VmaMixin, ForkMixin, KsmMixin, FileMixin, SnapshotMixin,
                   ValidateMixin, MmCore):
    """A process address space replayed with one kernel era's VMA rules.

    Parameters
    ----------
    kernel:
        "X.Y[.Z]", a profile name, or a :class:`KernelProfile`. The running kernel's profile is
        found by probing it, above the model: ``replay.live.live_address_space()`` (or
        ``AddressSpace(replay.live.live_profile())``).
    mmap_base:
        Top of the top-down mmap area (``mm->mmap_base``).
    explain:
        Build an :class:`replay.explain.Explanation` per operation (``last_explanation``).
    history:
        Keep the last N explanations in ``history`` (0: none).
    soft_dirty:
        CONFIG_MEM_SOFT_DIRTY (``sd`` in VmFlags); None: off.
    overcommit_memory:
        vm.overcommit_memory (2 ignores MAP_NORESERVE).
    thp:
        transparent_hugepage/enabled ("always", "madvise", "never"): decides whether a read fault
        of a 2 MiB aligned anonymous range assigns an anon_vma; "unconfigured": a kernel without
        CONFIG_TRANSPARENT_HUGEPAGE (MAP_STACK then sets no VM_NOHUGEPAGE).
    max_map_count:
        vm.max_map_count (ENOMEM when a split would exceed it).
    pkeys:
        x86 protection keys (PKU): PROT_EXEC-only memory gets the execute-only key.
    sticky:
        Force the 6.18.y sticky-flag backport on or off (None: as the version says).
    """

