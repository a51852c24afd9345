"""VM_* flag bits of vm_area_struct.vm_flags (x86-64) and their /proc/PID/smaps VmFlags mnemonics.

Base layer: the model (``replay.flags`` re-exports these), the deep snapshot collector (raw
``vm_flags`` read from the kernel) and the reports share this one table. Bit positions follow
include/linux/mm.h on x86-64 as of Linux 6.18; bits 0-31 have kept their meaning since long before
6.1, the higher ones (protection keys, VM_DROPPABLE, VM_UFFD_MINOR, VM_SEALED) moved between
releases.
"""

from __future__ import annotations

# --- VM_* bits ---------------------------------------------------------------------------------
VM_READ = 0x1
VM_WRITE = 0x2
VM_EXEC = 0x4
VM_SHARED = 0x8
VM_MAYREAD = 0x10
VM_MAYWRITE = 0x20
VM_MAYEXEC = 0x40
VM_MAYSHARE = 0x80
VM_GROWSDOWN = 0x100
VM_UFFD_MISSING = 0x200
VM_PFNMAP = 0x400
VM_MAYBE_GUARD = 0x800  # bit 11, smaps "gu" (6.19 / late 6.18.y)
VM_UFFD_WP = 0x1000
VM_LOCKED = 0x2000
VM_IO = 0x4000
VM_SEQ_READ = 0x8000
VM_RAND_READ = 0x10000
VM_DONTCOPY = 0x20000
VM_DONTEXPAND = 0x40000
VM_LOCKONFAULT = 0x80000
VM_ACCOUNT = 0x100000
VM_NORESERVE = 0x200000
VM_HUGETLB = 0x400000
VM_SYNC = 0x800000
VM_ARCH_1 = 0x1000000
VM_WIPEONFORK = 0x2000000
VM_DONTDUMP = 0x4000000
VM_SOFTDIRTY = 0x8000000
VM_MIXEDMAP = 0x10000000
VM_HUGEPAGE = 0x20000000
VM_NOHUGEPAGE = 0x40000000
VM_MERGEABLE = 0x80000000
VM_PKEY_BIT0 = 1 << 32
VM_PKEY_BIT1 = 1 << 33
VM_PKEY_BIT2 = 1 << 34
VM_PKEY_BIT3 = 1 << 35
VM_PKEY_MASK = VM_PKEY_BIT0 | VM_PKEY_BIT1 | VM_PKEY_BIT2 | VM_PKEY_BIT3
VM_DROPPABLE = 1 << 40
VM_UFFD_MINOR = 1 << 41
VM_SEALED = 1 << 42

VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC
VM_MAY_FLAGS = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
VM_LOCKED_MASK = VM_LOCKED | VM_LOCKONFAULT
VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP
VM_UFFD_FLAGS = VM_UFFD_MISSING | VM_UFFD_WP | VM_UFFD_MINOR
VM_DATA_DEFAULT_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
VM_STACK_DEFAULT_FLAGS = VM_DATA_DEFAULT_FLAGS | VM_GROWSDOWN
# Flags that make KSM refuse a VMA (vma_ksm_compatible()).
VM_KSM_INCOMPATIBLE = (
    VM_SHARED | VM_MAYSHARE | VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_HUGETLB | VM_MIXEDMAP
    | VM_DROPPABLE
)

# /proc/pid/smaps VmFlags mnemonics (show_smap_vma_flags()), in bit order.
MNEMONICS: dict[int, str] = {
    VM_READ: "rd",
    VM_WRITE: "wr",
    VM_EXEC: "ex",
    VM_SHARED: "sh",
    VM_MAYREAD: "mr",
    VM_MAYWRITE: "mw",
    VM_MAYEXEC: "me",
    VM_MAYSHARE: "ms",
    VM_GROWSDOWN: "gd",
    VM_PFNMAP: "pf",
    VM_MAYBE_GUARD: "gu",
    VM_LOCKED: "lo",
    VM_IO: "io",
    VM_SEQ_READ: "sr",
    VM_RAND_READ: "rr",
    VM_DONTCOPY: "dc",
    VM_DONTEXPAND: "de",
    VM_LOCKONFAULT: "lf",
    VM_ACCOUNT: "ac",
    VM_NORESERVE: "nr",
    VM_HUGETLB: "ht",
    VM_SYNC: "sf",
    VM_ARCH_1: "ar",
    VM_WIPEONFORK: "wf",
    VM_DONTDUMP: "dd",
    VM_SOFTDIRTY: "sd",
    VM_MIXEDMAP: "mm",
    VM_HUGEPAGE: "hg",
    VM_NOHUGEPAGE: "nh",
    VM_MERGEABLE: "mg",
    VM_UFFD_MISSING: "um",
    VM_UFFD_WP: "uw",
    VM_DROPPABLE: "dp",
    VM_UFFD_MINOR: "ui",
    VM_SEALED: "sl",
}
FLAG_OF_MNEMONIC: dict[str, int] = {v: k for k, v in MNEMONICS.items()}
_MNEMONIC_ITEMS = sorted(MNEMONICS.items())


_MNEMONIC_CACHE: dict[tuple[int, bool], frozenset[str]] = {}


def mnemonics(flags: int, *, soft_dirty: bool = True) -> frozenset[str]:
    """Return the smaps VmFlags mnemonics of ``flags`` (``sd`` only with CONFIG_MEM_SOFT_DIRTY)."""
    key = (flags, soft_dirty)
    got = _MNEMONIC_CACHE.get(key)
    if got is None:
        out = {m for bit, m in _MNEMONIC_ITEMS if flags & bit}
        if not soft_dirty:
            out.discard("sd")
        got = frozenset(out)
        if len(_MNEMONIC_CACHE) < 4096:
            _MNEMONIC_CACHE[key] = got
    return got


def flags_from_mnemonics(text: str) -> int:
    """Parse a space-separated VmFlags string; unknown mnemonics are ignored."""
    flags = 0
    for tok in text.split():
        flags |= FLAG_OF_MNEMONIC.get(tok, 0)
    return flags


def perms(flags: int) -> str:
    """The ``rwxp``/``rwxs`` column of /proc/pid/maps (show_map_vma())."""
    return (
        ("r" if flags & VM_READ else "-")
        + ("w" if flags & VM_WRITE else "-")
        + ("x" if flags & VM_EXEC else "-")
        + ("s" if flags & VM_MAYSHARE else "p")
    )


def vmflags_text(flags: int) -> str:
    """The smaps ``VmFlags`` line of ``flags``: mnemonics in bit order, as show_smap_vma_flags()
    prints them (this table's bits; unknown bits are not shown)."""
    return " ".join(m for bit, m in _MNEMONIC_ITEMS if flags & bit)
