"""VM_* flag bits, the raw x86-64 syscall constants the model accepts, and smaps mnemonics.

Flags are plain ``int`` bit sets (not ``enum.IntFlag``) because they sit on the hot path of every
merge predicate. Bit positions follow include/linux/mm.h on x86-64 where that matters for
readability; nothing outside this module depends on the exact values.
"""

from __future__ import annotations

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)
TASK_SIZE = 0x7FFFFFFFF000
DEFAULT_MMAP_BASE = 0x7F0000000000
PMD_SIZE = 2 << 20
STACK_GUARD_GAP = 256 << PAGE_SHIFT  # stack_guard_gap default (256 pages)
MMAP_MIN_ADDR = 0x1000  # vm.mmap_min_addr on this kind of machine (4096)
DEFAULT_MAX_MAP_COUNT = 65530

# --- raw Linux x86-64 syscall constants, VM_* bits and smaps mnemonics: one table each, in the
# base layer ----------------------------------------------------------------------------------
from vmatrace.base.uapi import *  # noqa: E402, F403
from vmatrace.base.vmflags import *  # noqa: E402, F403

# VM_STICKY (6.19): soft-dirty and maybe-guard; a merge keeps them if either side has them, and
# under sticky flags the merge check ignores them (the model's profile field sticky_flags).
VM_STICKY = VM_SOFTDIRTY | VM_MAYBE_GUARD  # noqa: F405
# The pkey x86 allocates for PROT_EXEC-only memory (execute_only_pkey()), as VM_PKEY_* bits.
EXEC_ONLY_PKEY = 1
EXEC_ONLY_PKEY_BITS = EXEC_ONLY_PKEY * VM_PKEY_BIT0  # noqa: F405
