"""Arguments the kernel reads as unsigned long: a negative Python int is the same bits.

The live kernel is the oracle: each call runs in a forked child (on a 4-page mapping it makes
itself) and in the model (the running kernel's profile) on the same layout; errno, or success, must agree and the
model's invariants must hold. Plus two placements the model once got wrong.
"""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

from replay import AddressSpace
from replay.flags import (
    DEFAULT_MMAP_BASE,
    MADV_DONTDUMP,
    MADV_NORMAL,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_PRIVATE,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_READ,
    PROT_WRITE,
)
from replay.live import live_address_space

P = 0x1000
A = MAP_PRIVATE | MAP_ANONYMOUS
RW = PROT_READ | PROT_WRITE
NR = {"mmap": 9, "mprotect": 10, "munmap": 11, "mremap": 25, "madvise": 28, "mlock": 149,
      "munlock": 150, "mseal": 462}
B = object()  # stands for the base address of the child's mapping

CASES: list[tuple[str, tuple[object, ...]]] = [
    ("munmap", (B, -P)), ("munmap", (-P, P)),
    ("mprotect", (B, -P, PROT_READ)), ("mprotect", (-P, P, PROT_READ)),
    ("madvise", (B, -P, MADV_NORMAL)), ("madvise", (-P, P, MADV_NORMAL)),
    ("madvise", (-2 * P, P, MADV_DONTDUMP)),
    ("mlock", (B, -P)), ("munlock", (-P, P)),
    ("mremap", (B, P, P, MREMAP_MAYMOVE | MREMAP_FIXED, -P)), ("mremap", (-P, P, P, 0, 0)),
    ("mremap", (B, -P, P, 0, 0)), ("mremap", (B, P, -P, MREMAP_MAYMOVE, 0)),
    ("mmap", (-P, P, PROT_READ, A | MAP_FIXED, -1, 0)),
    ("mmap", ("B+8", -P, PROT_READ, A | MAP_FIXED, -1, 0)),
    ("mmap", ("B+8", P, PROT_READ, A | MAP_FIXED, -1, -P)),  # offset 2**64-4096: anon ignores it
    ("mseal", (-P, P)), ("mseal", (B, -P)),
]


def _args(args: tuple[object, ...], base: int) -> list[int]:
    return [base if a is B else base + 8 * P if a == "B+8" else a for a in args]  # type: ignore[misc]


def _kernel_results() -> list[str]:
    """Run every case in a forked child; the child maps 4 RW pages where the kernel likes."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            out = []
            for name, args in CASES:
                base = libc.syscall(NR["mmap"], *(ctypes.c_long(x) for x in (0, 64 * P, RW, A, -1, 0)))
                libc.syscall(NR["munmap"], ctypes.c_long(base + 4 * P), ctypes.c_long(60 * P))
                ret = libc.syscall(NR[name], *(ctypes.c_long(x) for x in _args(args, base)))
                out.append(errno.errorcode[ctypes.get_errno()] if ret == -1 else "ok")
                libc.syscall(NR["munmap"], ctypes.c_long(base), ctypes.c_long(64 * P))
            os.write(w, " ".join(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return data.decode().split()


@pytest.mark.live
def test_negative_arguments_behave_like_the_kernels_unsigned_values() -> None:
    kernel = _kernel_results()
    assert len(kernel) == len(CASES)
    base = 0x6F0000000000
    got = []
    for name, args in CASES:
        mm = live_address_space(explain=False)
        mm.mmap(base, 4 * P, RW, A | MAP_FIXED)
        try:
            getattr(mm, name)(*_args(args, base))
            got.append("ok")
        except OSError as e:
            got.append(errno.errorcode.get(e.errno or 0, str(e.errno)))
        mm.check()
    assert got == kernel, [(c, k, m) for c, k, m in zip(CASES, kernel, got, strict=True) if k != m]


def test_topdown_search_keeps_out_of_every_stack_guard_gap() -> None:
    """unmapped_area_topdown(): a GROWSDOWN VMA whose guard gap reaches below mmap_base makes the
    space under it unusable, and so does the guard gap of a second one inside that gap."""
    base = DEFAULT_MMAP_BASE
    mm = AddressSpace("6.19", explain=False)
    mm.mmap(base + 0x10000, 0x10000, RW, A | MAP_FIXED | MAP_GROWSDOWN)  # gap to base - 0xf0000
    mm.mmap(base - 0x20000, 0x10000, RW, A | MAP_FIXED | MAP_GROWSDOWN)  # gap to base - 0x120000
    assert mm.mmap(0, P, RW, A) == base - 0x120000 - P


def test_brk_next_to_a_mergeable_mapping_is_a_new_vma() -> None:
    """do_brk_flags() with no brk VMA creates one without any merge attempt, even when the VMA
    below is an identical anonymous mapping (the invariant check must accept that boundary)."""
    mm = AddressSpace("6.12", explain=False)
    mm.set_brk_base(0x5000000)
    mm.mmap(0x4FFF000, P, RW, A | MAP_FIXED)
    assert mm.brk(0x5002000) == 0x5002000
    assert [(v.start, v.end) for v in mm.vmas()] == [(0x4FFF000, 0x5000000), (0x5000000, 0x5002000)]
    mm.check()


@pytest.mark.live
def test_brk_past_task_size_is_refused_like_the_kernel() -> None:
    """check_brk_limits(): brk(-4096), brk(2**62) and brk(TASK_SIZE + 4096) leave the break
    where it was, on the live kernel and in the model."""
    targets = (-P, 1 << 62, (1 << 47) + P)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            b0 = libc.syscall(12, ctypes.c_long(0))
            os.write(w, bytes(int(libc.syscall(12, ctypes.c_long(t)) == b0) for t in targets))
        finally:
            os._exit(0)
    os.close(w)
    kernel = os.read(r, 16)
    os.close(r)
    os.waitpid(pid, 0)
    assert kernel == b"\x01\x01\x01"
    mm = live_address_space(explain=False)
    mm.set_brk_base(0x5000000)
    assert [mm.brk(t) for t in targets] == [0x5000000] * 3
    assert mm.map_count == 0
    mm.check()
