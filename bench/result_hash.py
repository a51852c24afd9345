"""A hash of everything the model answers over a long seeded replay, one per kernel profile.

    .venv/bin/python bench/result_hash.py [-n 40000] [--seed 11] [--kernel 6.1 --kernel 6.19 ...]

A refactoring of the model (replay/) must leave the printed hashes unchanged; a change of
behaviour changes them, and docs/model.md gives the current value. What is hashed, per profile:

* every call's outcome: the return value (mmap and mremap addresses, brk's break) or the errno;
* every call's explanation (``str(mm.last_explanation)``: the kernel paths taken, every refusing
  predicate, the decisions that read UNKNOWN state);
* every 500 calls, and at the end, the whole layout: each VMA's range, pgoff, VmFlags as the
  profile prints them, path, faulted/forked state, avc, and which VMAs share an anon_vma or an
  open file (identities are numbered by first appearance, so the hash does not depend on how
  many objects the process made before);
* ``check()`` (the model's invariants) runs every 500 calls; a failure stops the run.

The generated mix covers every public call of ``AddressSpace``: private, shared, file and
populated/locked/GROWSDOWN mmaps, munmap, mprotect (GROWSDOWN and PROT_NONE included), every
flag advice, DONTNEED/FREE, POPULATE_READ/WRITE and guard regions, mlock/mlock2/munlock and
mlockall, mremap (shrink, grow, move, FIXED, DONTUNMAP), mseal, brk, read and write faults, stack
growth, anon names, KSM merge-any, fork (the replay continues in the child or in the parent)
and exec. Operations land in a 2,048-page window so that they meet each other's VMAs; about a
quarter fail, as random calls do.
Explanations are on. About 45 s for the default run on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replay import PROFILE_NAMES, AddressSpace
from replay.flags import (
    MADV_COLD,
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_FREE,
    MADV_GUARD_INSTALL,
    MADV_GUARD_REMOVE,
    MADV_HUGEPAGE,
    MADV_KEEPONFORK,
    MADV_MERGEABLE,
    MADV_NOHUGEPAGE,
    MADV_NORMAL,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_RANDOM,
    MADV_SEQUENTIAL,
    MADV_UNMERGEABLE,
    MADV_WIPEONFORK,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_LOCKED,
    MAP_NORESERVE,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MCL_CURRENT,
    MCL_FUTURE,
    MCL_ONFAULT,
    MLOCK_ONFAULT,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_EXEC,
    PROT_GROWSDOWN,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
)

P = 0x1000
WINDOW = 0x500000000000
WPAGES = 2048
BRK_BASE = WINDOW - 0x100000000  # the heap sits well below the window
LAYOUT_EVERY = 500
R, RW, RX = PROT_READ, PROT_READ | PROT_WRITE, PROT_READ | PROT_EXEC
PROTS = (R, RW, RW, RW, RX, PROT_NONE, PROT_EXEC)
ADVICE = (MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_DONTFORK, MADV_DOFORK,
          MADV_WIPEONFORK, MADV_KEEPONFORK, MADV_DONTDUMP, MADV_DODUMP, MADV_HUGEPAGE,
          MADV_NOHUGEPAGE, MADV_MERGEABLE, MADV_UNMERGEABLE, MADV_DONTNEED, MADV_FREE, MADV_COLD,
          MADV_POPULATE_READ, MADV_POPULATE_WRITE, MADV_GUARD_INSTALL, MADV_GUARD_REMOVE)

Op = tuple[str, tuple[Any, ...]]


def generate(n: int, seed: int) -> list[Op]:
    """n operations; the same list for every profile."""
    rnd = random.Random(seed)
    ops: list[Op] = []

    def addr() -> int:
        return WINDOW + rnd.randrange(WPAGES - 64) * P

    def length(most: int = 8) -> int:
        return rnd.randint(1, most) * P

    for _ in range(n):
        r = rnd.randrange(1000)
        a = addr()
        if r < 220:
            ops.append(("touch", (a, rnd.random() < 0.7)))
        elif r < 380:
            prot = rnd.choice(PROTS)
            if rnd.random() < 0.03:
                prot |= PROT_GROWSDOWN
            ops.append(("mprotect", (a, length(), prot)))
        elif r < 500:
            flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
            k = rnd.randrange(20)
            if k == 0:
                flags = MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED
            elif k == 1:
                flags |= MAP_POPULATE
            elif k == 2:
                flags |= MAP_LOCKED
            elif k == 3:
                flags |= MAP_NORESERVE
            elif k == 4:
                flags = (flags & ~MAP_FIXED) | MAP_FIXED_NOREPLACE
            elif k == 5:
                flags |= MAP_GROWSDOWN
            ops.append(("mmap", (a, length(64), rnd.choice(PROTS[:4]), flags)))
        elif r < 540:
            fd = rnd.choice((3, 3, 4, 5, 6))
            shared = rnd.random() < 0.3
            flags = (MAP_SHARED if shared else MAP_PRIVATE) | MAP_FIXED
            ops.append(("mmap", (a, length(16), rnd.choice((R, RW, RX)), flags, fd,
                                 rnd.randrange(64) * P)))
        elif r < 600:
            ops.append(("munmap", (a, length(4))))
        elif r < 700:
            ops.append(("madvise", (a, length(), rnd.choice(ADVICE))))
        elif r < 750:
            k = rnd.randrange(3)
            if k == 0:
                ops.append(("mlock", (a, length(), 0)))
            elif k == 1:
                ops.append(("mlock2", (a, length(), MLOCK_ONFAULT)))
            else:
                ops.append(("munlock", (a, length())))
        elif r < 800:
            ln = length()
            k = rnd.randrange(5)
            if k == 0:
                ops.append(("mremap", (a, ln, ln, MREMAP_MAYMOVE | MREMAP_FIXED, addr())))
            elif k == 1:
                ops.append(("mremap", (a, ln, ln + length(4), MREMAP_MAYMOVE, 0)))
            elif k == 2:
                ops.append(("mremap", (a, ln, ln + length(4), 0, 0)))
            elif k == 3:
                ops.append(("mremap", (a, ln, max(P, ln - 2 * P), 0, 0)))
            else:
                ops.append(("mremap", (a, ln, ln, MREMAP_MAYMOVE | MREMAP_DONTUNMAP,
                                       addr() if rnd.random() < 0.5 else 0)))
        elif r < 840:
            ops.append(("mmap", (0, length(4), RW, MAP_PRIVATE | MAP_ANONYMOUS)))
        elif r < 870:
            ops.append(("brk", (BRK_BASE + rnd.randrange(64) * P + rnd.randrange(P),)))
        elif r < 890:
            name = rnd.choice(("a", "b", None))
            ops.append(("prctl_set_vma_anon_name", (a, length(), name)))
        elif r < 900 and rnd.random() < 0.2:
            ops.append(("mseal", (a, length(2))))  # rare: a seal stays until exec
        elif r < 910:
            ops.append(("grow_stack", (a,)))
        elif r < 915:
            ops.append(("mlockall", (rnd.choice((MCL_CURRENT, MCL_FUTURE, MCL_CURRENT | MCL_ONFAULT,
                                                 MCL_CURRENT | MCL_FUTURE)),)))
        elif r < 925:
            ops.append(("munlockall", ()))
        elif r < 930:
            ops.append(("prctl_set_memory_merge", (rnd.random() < 0.5,)))
        elif r < 936:
            ops.append(("fork", (rnd.random() < 0.5,)))
        elif r < 937 and rnd.random() < 0.1:
            ops.append(("exec", ()))
        else:
            ops.append(("touch", (a, False)))
    return ops


def _fresh(kernel: str) -> AddressSpace:
    mm = AddressSpace(kernel, explain=True)
    mm.open_file("/lib/libc.so.6", writable=False)  # fd 3
    mm.open_file("/var/data", writable=True)  # fd 4
    mm.open_file("/dev/shm/hooked", close_hook=True, shmem=True)  # fd 5
    mm.memfd_create("buf")  # fd 6
    mm.set_brk_base(BRK_BASE)
    return mm


def layout(mm: AddressSpace) -> str:
    """The whole layout with hidden state; identities numbered by first appearance."""
    anon: dict[int, int] = {}
    files: dict[int, int] = {}
    out = []
    for v in mm.vmas():
        a = None if v.anon_id is None else anon.setdefault(v.anon_id, len(anon))
        f = None if v.file_id is None else files.setdefault(v.file_id, len(files))
        out.append(f"{v.start:x}-{v.end:x} {v.perms} {v.pgoff:x} {' '.join(sorted(v.vmflags))} "
                   f"{v.path} {v.faulted} {v.forked} {v.avc} {a} {f} {v.anon_name}")
    guards = list(mm.guard_pages.within(0, 1 << 64)) if mm.guard_pages else []
    out.append(f"brk {mm.cur_brk:x} guards {guards}")
    return "\n".join(out)


def run(kernel: str, ops: list[Op]) -> tuple[str, int, int]:
    """(hex digest, failed calls, VMAs at the end) of ops replayed on one profile."""
    h = hashlib.sha256()
    mm = _fresh(kernel)
    failed = 0
    for i, (name, args) in enumerate(ops):
        try:
            if name == "fork":
                child = mm.fork()
                if args[0]:
                    mm = child
                out: object = child.map_count
            else:
                fn: Callable[..., object] = getattr(mm, name)
                out = fn(*args)
        except OSError as e:
            failed += 1
            out = f"-{e.errno}"
        h.update(f"{i} {name} {out}\n{mm.last_explanation}\n".encode())
        if i % LAYOUT_EVERY == 0:
            h.update(layout(mm).encode())
            mm.check()
    h.update(layout(mm).encode())
    mm.check()
    return h.hexdigest(), failed, mm.map_count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=40_000, help="operations per profile (40,000)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--kernel", action="append", choices=PROFILE_NAMES,
                    help="a profile (repeatable; default: every profile)")
    args = ap.parse_args(argv)
    kernels = args.kernel or list(PROFILE_NAMES)
    ops = generate(args.n, args.seed)
    total = hashlib.sha256()
    t0 = time.perf_counter()
    for k in kernels:
        digest, failed, count = run(k, ops)
        total.update(f"{k} {digest}\n".encode())
        print(f"{k:7s} {digest[:16]}  ({len(ops):,} calls, {failed:,} failed, {count} VMAs at "
              "the end)")
    print(f"result hash (seed {args.seed}, {len(ops):,} calls x {len(kernels)} profiles): "
          f"{total.hexdigest()[:16]}  [{time.perf_counter() - t0:.1f}s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
