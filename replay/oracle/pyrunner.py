"""A pure-Python (ctypes) implementation of the runner, for machines without a C compiler.

Same script and output formats as runner.c (docs/oracle.md) for the anonymous vocabulary (file
slots and brk are the C runner's only: GenConfig(files=False, brk=False)); `run_live()` falls back to it when
gcc is missing, and tests/test_oracle.py checks that both engines give identical results. Every
sequence runs in a forked child (os.fork) that writes its output to a pipe.

Page accesses cannot be done by dereferencing (a SIGSEGV cannot be recovered in Python); they go
through the kernel's own user-memory copies, which fault exactly like a user access and return
EFAULT instead of raising a signal:
* touch P = read(2) of one byte from a pipe INTO the page (a write fault, copy_to_user);
* read P  = write(2) of one byte FROM the page into a pipe (a read fault, copy_from_user).
Protection keys apply to these kernel accesses too (x86 checks PKRU on every user-page data
access), and guard markers and shmem EOF make them fail like the runner's SIGSEGV/SIGBUS.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Sequence as Seq

from .core import (
    MADV,
    MAP_FLAGS,
    MREMAP_FLAGS,
    PAGE,
    WINDOW_BASE,
    WINDOW_PAGES,
    SeqResult,
    Sequence,
    advice_of,
    backing_of,
    flags_of,
    parse_output,
    prot_of,
)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.syscall.restype = ctypes.c_long
for _f in ("munmap", "mprotect", "madvise", "mlock", "munlock"):
    getattr(_libc, _f).restype = ctypes.c_int
_libc.read.restype = ctypes.c_ssize_t
_libc.read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
_libc.write.restype = ctypes.c_ssize_t
_libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]

SYS_MREMAP, SYS_MLOCK2, SYS_MSEAL = 25, 325, 462
MAP_FAILED = ctypes.c_void_p(-1).value


def _err(r: int) -> int:
    return ctypes.get_errno() if r == -1 else 0


class _Child:
    def __init__(self, out: int, base: int, pages: int) -> None:
        self.out, self.base, self.pages = out, base, pages
        self.buf: list[str] = []
        self.pr, self.pw = os.pipe()
        os.set_blocking(self.pr, False)  # a failed copy must never leave us blocked on a drain

    def flush(self) -> None:
        data = "".join(self.buf).encode()
        self.buf.clear()
        while data:
            n = os.write(self.out, data)
            data = data[n:]

    def dump(self) -> None:
        with open("/proc/self/smaps", "rb") as f:
            text = f.read().decode()
        lo, hi = self.base, self.base + self.pages * PAGE
        inside = False
        backing = ""
        for line in text.splitlines():
            head = line.split(" ", 1)[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                s, e = (int(x, 16) for x in head.split("-"))
                inside = s < hi and e > lo
                if inside:
                    cols = line.split(None, 5)
                    perms = cols[1]
                    path = cols[5] if len(cols) > 5 and int(cols[4]) and cols[5].startswith("/") \
                        else None
                    backing = backing_of(path, int(cols[2], 16) // PAGE)
                    self.buf.append(f"{(s - lo) // PAGE} {(e - lo) // PAGE} {perms}")
            elif inside and line.startswith("VmFlags:"):
                b = f" ={backing}" if backing else ""
                self.buf.append(" " + " ".join(line[8:].split()) + b + "\n")
                inside = False

    def access(self, addr: int, write: bool) -> int:
        if write:
            os.write(self.pw, b"\x01")
            r = _libc.read(self.pr, addr, 1)
            if r != 1:
                e = ctypes.get_errno()
                with contextlib.suppress(BlockingIOError):
                    os.read(self.pr, 1)  # drain the byte that was not consumed
                return e or errno.EFAULT
            return 0
        r = _libc.write(self.pw, addr, 1)
        if r != 1:
            return ctypes.get_errno() or errno.EFAULT
        os.read(self.pr, 1)
        return 0

    def op(self, line: str, step: int) -> bool:
        """Run one op; False if this process must stop (a fork parent)."""
        t = line.split()
        name = t[0]

        def a(i: int) -> int:
            return self.base + int(t[i], 0) * PAGE

        def n(i: int) -> int:
            return int(t[i], 0) * PAGE

        ret: int | None = None
        err = 0
        if name == "mmap":
            flags = flags_of(t[4], MAP_FLAGS)
            r = _libc.mmap(a(1), n(2), prot_of(t[3]), flags, -1, 0)
            err = ctypes.get_errno() if r == MAP_FAILED else 0
            ret = None if err else r
        elif name == "munmap":
            err = _err(_libc.munmap(ctypes.c_void_p(a(1)), ctypes.c_size_t(n(2))))
        elif name == "mprotect":
            err = _err(_libc.mprotect(ctypes.c_void_p(a(1)), ctypes.c_size_t(n(2)), prot_of(t[3])))
        elif name in ("madvise", "guard"):
            adv = MADV["guard_install"] if name == "guard" else advice_of(t[3])
            err = _err(_libc.madvise(ctypes.c_void_p(a(1)), ctypes.c_size_t(n(2)), adv))
        elif name in ("mlock", "munlock"):
            err = _err(getattr(_libc, name)(ctypes.c_void_p(a(1)), ctypes.c_size_t(n(2))))
        elif name == "mlock2":
            fl = 1 if len(t) > 3 and t[3] == "onfault" else 0
            err = _err(_libc.syscall(SYS_MLOCK2, ctypes.c_ulong(a(1)), ctypes.c_ulong(n(2)), ctypes.c_ulong(fl)))
        elif name == "mseal":
            err = _err(_libc.syscall(SYS_MSEAL, ctypes.c_ulong(a(1)), ctypes.c_ulong(n(2)), ctypes.c_ulong(0)))
        elif name == "mremap":
            fl = flags_of(t[4] if len(t) > 4 else "0", MREMAP_FLAGS)
            new = a(5) if len(t) > 5 else 0
            r = _libc.syscall(SYS_MREMAP, ctypes.c_ulong(a(1)), ctypes.c_ulong(n(2)), ctypes.c_ulong(n(3)),
                              ctypes.c_ulong(fl), ctypes.c_ulong(new))
            err = _err(r)
            ret = None if err else r & 0xFFFFFFFFFFFFFFFF
        elif name in ("touch", "read"):
            err = self.access(a(1), name == "touch")
        elif name in ("fork", "forkp"):
            self.flush()
            pid = os.fork()
            if name == "fork" and pid > 0:
                _, st = os.waitpid(pid, 0)
                os._exit(os.waitstatus_to_exitcode(st) & 0xFF)
            if name == "forkp" and pid == 0:
                os._exit(0)
            if pid > 0:
                os.waitpid(pid, 0)
        else:
            self.buf.append(f"!bad-op {step} {name}\n")
            return False
        if ret is not None:
            lo = self.base
            rel = f"{(ret - lo) // PAGE}" if lo <= ret < lo + self.pages * PAGE else f"x{ret:x}"
            self.buf.append(f"@ {step} {err} {rel}\n")
        else:
            self.buf.append(f"@ {step} {err} -\n")
        self.dump()
        return True

    def reserve(self) -> int:
        lo, ln = self.base - PAGE, (self.pages + 2) * PAGE
        r = _libc.mmap(lo, ln, 0, MAP_FLAGS["private"] | MAP_FLAGS["anon"] | MAP_FLAGS["noreserve"]
                       | MAP_FLAGS["noreplace"], -1, 0)
        if r == MAP_FAILED or r != lo:
            return errno.EEXIST
        return _err(_libc.munmap(ctypes.c_void_p(lo), ctypes.c_size_t(ln)))


def _run_one(s: Sequence, out: int, base: int, pages: int) -> None:
    c = _Child(out, base, pages)
    e = c.reserve()
    if e:
        c.buf.append(f"!window {e}\n")
        c.flush()
        os._exit(123)
    c.buf.append("@ 0 0 -\n")
    c.dump()
    for i, line in enumerate(s.ops, 1):
        if not c.op(line, i):
            c.flush()
            os._exit(124)
    c.flush()
    os._exit(0)


def run_live_py(seqs: Seq[Sequence], base: int = WINDOW_BASE, pages: int = WINDOW_PAGES) -> list[SeqResult]:
    """run_live() without the C runner: same output, parsed the same way."""
    chunks: list[bytes] = []
    for s in seqs:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                _run_one(s, w, base, pages)
            finally:
                os._exit(125)
        os.close(w)
        data = [f"#seq {s.name}\n".encode()]
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            data.append(b)
        os.close(r)
        _, st = os.waitpid(pid, 0)
        if os.WIFEXITED(st):
            code = os.WEXITSTATUS(st)
            status = "ok" if code == 0 else f"exit:{code}"
        else:
            status = f"signal:{os.WTERMSIG(st)}"
        data.append(f"#end {s.name} {status}\n".encode())
        chunks.append(b"".join(data))
    return parse_output(b"".join(chunks).decode(), seqs)
