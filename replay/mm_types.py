"""The model's value types (include/linux/mm_types.h, include/linux/rmap.h): a VMA, an anon_vma,
an open file description, the third truth value UNKNOWN, and the immutable view of a VMA that
:meth:`replay.AddressSpace.vmas` returns.
"""

from __future__ import annotations

import itertools

from replay.flags import PAGE_SHIFT, perms

__all__ = ["UNKNOWN", "AnonState", "AnonVma", "OpenFile", "Unknown", "UnknownAnonVma", "Vma",
           "VmaView", "new_id"]


class Unknown:
    """The third truth value: the model does not know (e.g. anon_vma state from a snapshot)."""

    _inst: Unknown | None = None

    def __new__(cls) -> Unknown:
        if cls._inst is None:
            cls._inst = super().__new__(cls)
        return cls._inst

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __bool__(self) -> bool:
        raise TypeError("UNKNOWN has no truth value; compare with `is UNKNOWN`")


UNKNOWN = Unknown()


_ids = itertools.count(1)


def new_id() -> int:
    """A fresh identity number (anon_vmas, open files, inode numbers of new shmem files)."""
    return next(_ids)


class AnonVma:
    """An anon_vma (identity only). ``snapshot=True``: faulted, seen in a snapshot."""

    __slots__ = ("id", "snapshot")
    unknown = False

    def __init__(self, *, snapshot: bool = False) -> None:
        self.id = new_id()
        self.snapshot = snapshot

    def __repr__(self) -> str:
        return f"AnonVma#{self.id}"


class UnknownAnonVma:
    """Placeholder for a VMA whose anon_vma state is unknown (from a snapshot with no proof)."""

    __slots__ = ("id",)
    unknown = True

    def __init__(self) -> None:
        self.id = new_id()

    def __repr__(self) -> str:
        return f"UnknownAnonVma#{self.id}"


AnonState = AnonVma | UnknownAnonVma | None


class OpenFile:
    """An open file description (struct file): ``dup`` shares it, a second open does not."""

    __slots__ = ("dev", "has_close_hook", "id", "ino", "path", "readable", "shmem", "size",
                 "writable")

    def __init__(self, path: str, *, dev: str = "fe:00", ino: int = 0, readable: bool = True,
                 writable: bool = True, has_close_hook: bool = False, shmem: bool = False,
                 size: int | None = None) -> None:
        self.size = size  # pages; None: large enough (accesses beyond EOF raise SIGBUS)
        self.id = new_id()
        self.path = path
        self.dev = dev
        self.ino = ino
        self.readable = readable
        self.writable = writable
        self.has_close_hook = has_close_hook  # vm_ops->close (hugetlbfs, SysV shm, some drivers)
        self.shmem = shmem

    def __repr__(self) -> str:
        return f"OpenFile#{self.id}({self.path!r})"


class Vma:
    """One vm_area_struct. Mutable; owned by exactly one :class:`AddressSpace`."""

    __slots__ = ("anon_name", "anon_vma", "avc", "end", "file", "flags", "has_close_hook",
                 "label", "next", "pgoff", "policy", "prev", "start", "uffd_ctx")

    def __init__(self, start: int, end: int, pgoff: int, flags: int, file: OpenFile | None = None,
                 anon_vma: AnonState = None, avc: int = 0, anon_name: str | None = None,
                 policy: object = None, uffd_ctx: object = None, has_close_hook: bool = False,
                 label: str | None = None) -> None:
        self.start = start
        self.end = end
        self.pgoff = pgoff
        self.flags = flags
        self.file = file
        self.anon_vma = anon_vma
        self.avc = avc
        self.anon_name = anon_name
        self.policy = policy
        self.uffd_ctx = uffd_ctx
        self.has_close_hook = has_close_hook  # vm_ops->close
        self.label = label
        self.prev: Vma | None = None
        self.next: Vma | None = None

    @property
    def pages(self) -> int:
        return (self.end - self.start) >> PAGE_SHIFT

    @property
    def faulted(self) -> bool | Unknown:
        a = self.anon_vma
        if a is None:
            return False
        return UNKNOWN if a.unknown else True

    @property
    def forked(self) -> bool | Unknown:
        """vma_is_fork_child(): has an anon_vma and an avc other than 1."""
        a = self.anon_vma
        if a is None:
            return False
        return UNKNOWN if a.unknown else self.avc != 1

    @property
    def perms(self) -> str:
        return perms(self.flags)

    @property
    def rng(self) -> tuple[int, int]:
        return (self.start, self.end)

    def __repr__(self) -> str:
        return (f"Vma([{self.start:#x},{self.end:#x}) {perms(self.flags)} pg={self.pgoff:#x} "
                f"anon={self.anon_vma!r} avc={self.avc})")


class VmaView:
    """An immutable view of one VMA as /proc shows it plus the model's hidden state.

    ``vmflags`` (the mnemonics as the kernel prints them) and ``path`` (the name column) depend on
    the address space; :meth:`replay.AddressSpace.vmas` passes them.
    """

    __slots__ = ("anon_id", "anon_name", "avc", "end", "faulted", "file_id", "flags", "forked",
                 "offset", "path", "perms", "pgoff", "start", "vmflags")

    def __init__(self, v: Vma, vmflags: frozenset[str], path: str | None) -> None:
        self.start = v.start
        self.end = v.end
        self.flags = v.flags
        self.perms = perms(v.flags)
        self.vmflags = vmflags
        self.pgoff = v.pgoff
        self.offset = (v.pgoff << PAGE_SHIFT) if v.file is not None else 0
        self.path = path
        self.faulted = v.faulted
        self.forked = v.forked
        self.avc = v.avc
        a = v.anon_vma
        self.anon_id = None if a is None else a.id
        self.anon_name = v.anon_name
        self.file_id = None if v.file is None else v.file.id

    def __repr__(self) -> str:
        return (f"VmaView({self.start:#x}-{self.end:#x} {self.perms} "
                f"{' '.join(sorted(self.vmflags))} {self.path or ''})")

