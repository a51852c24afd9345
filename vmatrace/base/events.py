"""The event vocabulary of a trace: event kinds, their wire codes, event flag bits, and the one
rule that says which calls pre-fault their pages.

Both collectors (the bcc recorder and the strace import) and the replay engine read these; nothing
else defines an event kind or a flag bit.
"""

from __future__ import annotations

import polars as pl

from vmatrace.base.uapi import (
    MADV_POPULATE_WRITE,
    MAP_LOCKED,
    MAP_NONBLOCK,
    MAP_POPULATE,
    MCL_CURRENT,
    MCL_ONFAULT,
    MLOCK_ONFAULT,
)

#: Syscalls recorded as events of the same name; ``a0..a5`` are their arguments in the kernel's order.
SYSCALL_KINDS: tuple[str, ...] = (
    "mmap", "munmap", "mprotect", "pkey_mprotect", "mremap", "brk", "madvise", "process_madvise",
    "mlock", "mlock2", "munlock", "mlockall", "munlockall", "mseal", "prctl", "shmat", "shmdt",
    "execve", "exit_group",
)  # fmt: skip
#: Events that are not syscalls: a first write fault, a new task, a completed exec, a task's exit.
OTHER_KINDS: tuple[str, ...] = ("fault", "fork", "exec", "exit")
EVENT_KINDS: tuple[str, ...] = SYSCALL_KINDS + OTHER_KINDS

#: Wire codes of the kinds in the recorder's ring records (shared with collectors/bpf/record.bpf.c,
#: whose K_* values must match): syscalls from 0, other events from 32.
KIND_CODES: dict[int, str] = {
    **dict(enumerate(SYSCALL_KINDS)),
    **{32 + i: k for i, k in enumerate(OTHER_KINDS)},
}

# Event flag bits (the ``flags`` column).
EV_RACED_SNAPSHOT = 1  # the event may have raced with the start snapshot (its effect may or may not be in it)
EV_POPULATES = 2  # the call pre-faults pages (MAP_POPULATE, mlock*, MADV_POPULATE_WRITE): no fault events follow
EV_RECONSTRUCTED = 4  # state reconstructed (e.g. from ELF headers), not observed


def populates_expr() -> pl.Expr:
    """``EV_POPULATES`` or 0 for each row of an events frame: does the call pre-fault its pages?

    The one statement of the rule, applied by every collector to the frame it builds. A call
    populates when it succeeded and is: mmap with MAP_POPULATE or MAP_LOCKED and without
    MAP_NONBLOCK (do_mmap() -> mm_populate()); mlock; mlock2 without MLOCK_ONFAULT; mlockall with
    MCL_CURRENT and without MCL_ONFAULT; madvise or process_madvise with MADV_POPULATE_WRITE.
    """
    kind = pl.col("kind")
    a0, a2, a3 = pl.col("a0"), pl.col("a2"), pl.col("a3")
    ret = pl.col("ret")
    pop = (
        ((kind == "mmap") & ((a3 & (MAP_POPULATE | MAP_LOCKED)) != 0) & ((a3 & MAP_NONBLOCK) == 0))
        | (kind == "mlock")
        | ((kind == "mlock2") & ((a2 & MLOCK_ONFAULT) == 0))
        | ((kind == "mlockall") & ((a0 & MCL_CURRENT) != 0) & ((a0 & MCL_ONFAULT) == 0))
        | ((kind == "madvise") & (a2 == MADV_POPULATE_WRITE))
        | ((kind == "process_madvise") & (a3 == MADV_POPULATE_WRITE))
    )
    # mmap returns an address: it failed when the value is in [-4095, -1]
    ok = pl.when(kind == "mmap").then((ret >= 0) | (ret < -4095)).otherwise(ret >= 0)
    return pl.when(pop.fill_null(False) & ok.fill_null(False)).then(pl.lit(EV_POPULATES, pl.UInt16)) \
        .otherwise(pl.lit(0, pl.UInt16))


def with_populates(frame: pl.DataFrame) -> pl.DataFrame:
    """The events frame with ``EV_POPULATES`` set in ``flags`` wherever :func:`populates_expr` says so."""
    if frame.height == 0:
        return frame
    return frame.with_columns((pl.col("flags") | populates_expr()).cast(pl.UInt16).alias("flags"))
