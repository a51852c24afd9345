"""A bundled workload with known invisible fragmentation, for the demo, tests and benchmarks.

Run: ``python3 -m vmatrace.workloads.fragment [--many N] [--fork] [--hold SECONDS]``. It prints one
JSON line describing its regions (addresses as integers), then holds its address space still until
stdin closes, SIGTERM, or ``--hold`` seconds pass. It uses only the standard library (ctypes on
libc), so it runs under any python3, including as the target of ``vmatrace record``.

Regions (each a run of adjacent VMAs that /proc/PID/maps shows with equal perms and name):

* ``ac``: two read-only anonymous VMAs; the right one was written, then mprotect'ed read-only,
  so it keeps VM_ACCOUNT (``ac``) and the left one never had it;
* ``locked``: three pages, the middle one mlock'ed (``lo``);
* ``dontdump``: four pages, the last two MADV_DONTDUMP (``dd``);
* ``anon``: two adjacent rw VMAs that were faulted while they differed in VM_DONTDUMP and then made
  equal again: distinct anon_vmas, which no VmFlags show;
* ``fork`` (with ``--fork``): a child that maps next to a faulted VMA it inherited: a fork child
  never merges with it.
* ``many`` (with ``--many N``): N VMAs alternating PROT_READ and PROT_READ|PROT_WRITE.
* ``anon_merge`` (with ``--anon-merge N``): N two-page read-only mappings whose second page was
  made writable, written and made read-only again, then both pages made read-write. The faulted
  second page can merge into the unfaulted first one (the merge target) only under the anon_vma
  rule of Linux 6.16 (commit 879bca0a2c4f): N VMAs fewer than on an older kernel (N pairs before
  6.16, N single VMAs since).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import select
import signal
import sys
import time

from vmatrace.base.uapi import (
    MADV_DODUMP,
    MADV_DONTDUMP,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_NORESERVE,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)

PAGE = os.sysconf("SC_PAGE_SIZE")

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
for name in ("munmap", "mprotect", "madvise", "mlock"):
    getattr(libc, name).argtypes = [ctypes.c_void_p, ctypes.c_size_t] + ([ctypes.c_int] if name in ("mprotect", "madvise") else [])


def _check(ret: int, what: str) -> int:
    if ret == -1 or ret is None or ret == ctypes.c_void_p(-1).value:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def mmap(addr: int, length: int, prot: int, flags: int) -> int:
    return _check(libc.mmap(addr or None, length, prot, flags | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), "mmap")


def touch(addr: int, pages: int) -> None:
    for i in range(pages):
        ctypes.c_char.from_address(addr + i * PAGE).value = b"x"


def reserve(pages: int) -> int:
    """A free, page-aligned window: reserve with PROT_NONE, then unmap it (so MAP_FIXED is safe)."""
    a = mmap(0, pages * PAGE, 0, MAP_NORESERVE)
    _check(libc.munmap(a, pages * PAGE), "munmap")
    return a


def build(many: int, anon_merge: int = 0) -> dict[str, object]:
    out: dict[str, object] = {}
    w = reserve(4)  # ac: [r-- no ac][r-- ac]
    mmap(w, 2 * PAGE, PROT_READ, MAP_FIXED)
    mmap(w + 2 * PAGE, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_FIXED)
    touch(w + 2 * PAGE, 2)
    _check(libc.mprotect(w + 2 * PAGE, 2 * PAGE, PROT_READ), "mprotect")
    out["ac"] = [w, w + 4 * PAGE]
    w = mmap(0, 3 * PAGE, PROT_READ | PROT_WRITE, 0)  # locked: middle page mlock'ed
    _check(libc.mlock(w + PAGE, PAGE), "mlock")
    out["locked"] = [w, w + 3 * PAGE]
    w = mmap(0, 4 * PAGE, PROT_READ | PROT_WRITE, 0)  # dontdump: last two pages
    _check(libc.madvise(w + 2 * PAGE, 2 * PAGE, MADV_DONTDUMP), "madvise")
    out["dontdump"] = [w, w + 4 * PAGE]
    w = mmap(0, 4 * PAGE, PROT_READ | PROT_WRITE, 0)  # anon: distinct anon_vmas, equal flags
    _check(libc.madvise(w + 2 * PAGE, 2 * PAGE, MADV_DONTDUMP), "madvise")
    touch(w, 4)  # the two halves fault while they differ in a non-RWX flag: no anon_vma reuse
    _check(libc.madvise(w + 2 * PAGE, 2 * PAGE, MADV_DODUMP), "madvise")
    out["anon"] = [w, w + 4 * PAGE]
    if many:
        w = mmap(0, many * PAGE, PROT_READ | PROT_WRITE, MAP_NORESERVE)
        for i in range(0, many, 2):
            _check(libc.mprotect(w + i * PAGE, PAGE, PROT_READ), "mprotect")
        out["many"] = [w, w + many * PAGE]
    if anon_merge:
        cases = []
        for _ in range(anon_merge):
            w = reserve(4) + PAGE  # a hole on each side: no neighbour to merge with
            mmap(w, 2 * PAGE, PROT_READ, MAP_FIXED)
            _check(libc.mprotect(w + PAGE, PAGE, PROT_READ | PROT_WRITE), "mprotect")
            touch(w + PAGE, 1)  # only the second page gets an anon_vma
            _check(libc.mprotect(w + PAGE, PAGE, PROT_READ), "mprotect")
            # both pages read-write: the faulted second page merges into the unfaulted first one
            # (the merge target) only under the 6.16 rule
            _check(libc.mprotect(w, 2 * PAGE, PROT_READ | PROT_WRITE), "mprotect")
            cases.append([w, w + 2 * PAGE])
        out["anon_merge"] = cases
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--many", type=int, default=0, metavar="N", help="also make N alternating VMAs")
    ap.add_argument("--anon-merge", type=int, default=0, metavar="N",
                    help="also make N cases that only the 6.16 anon_vma merge rule merges")
    ap.add_argument("--fork", action="store_true", help="also fork a child that maps next to an inherited faulted VMA")
    ap.add_argument("--hold", type=float, default=None, metavar="S", help="exit after S seconds (default: stdin EOF)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    out = build(args.many, args.anon_merge)
    out["pid"] = os.getpid()
    if args.fork:
        base = reserve(4)
        mmap(base, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_FIXED)
        touch(base, 2)
        r, wfd = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(r)
            mmap(base + 2 * PAGE, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_FIXED)
            touch(base + 2 * PAGE, 2)
            os.write(wfd, b"x")
            deadline = time.monotonic() + (args.hold if args.hold is not None else 3600)
            while time.monotonic() < deadline and os.getppid() != 1:
                time.sleep(0.05)
            os._exit(0)
        os.close(wfd)
        os.read(r, 1)
        out["fork"] = [base, base + 4 * PAGE]
        out["child_pid"] = child
    print(json.dumps(out), flush=True)
    if args.hold is not None:
        time.sleep(args.hold)
    else:
        while True:
            ready, _, _ = select.select([sys.stdin], [], [], 1.0)
            if ready and not sys.stdin.read(1):
                break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
