"""ELF program headers and the address-space layout the kernel's ELF loader builds from them.

This module answers two questions with pyelftools, without running the program:

* what the PT_LOAD segments, PT_INTERP and PT_GNU_RELRO of an ELF file are
  (:func:`read_elf`, cached per (path, size, mtime));
* which VMAs ``execve`` creates for a file loaded at a given load bias
  (:func:`load_vmas`), following ``elf_load()``/``elf_map()`` in fs/binfmt_elf.c:

  - each PT_LOAD with ``p_filesz > 0`` is a private file mapping of
    ``[PAGE_DOWN(bias + p_vaddr), PAGE_UP(bias + p_vaddr + p_filesz))`` at file offset
    ``PAGE_DOWN(p_offset)``, perms from ``p_flags``;
  - the zero-fill part beyond ``p_filesz`` that does not share the last file page
    (``[PAGE_UP(bias + p_vaddr + p_filesz), PAGE_UP(bias + p_vaddr + p_memsz))``) is an
    anonymous VMA made by ``vm_brk_flags``, perms ``rw`` (+``x`` if the segment is executable);
  - the program break starts at ``PAGE_UP`` of the highest ``p_vaddr + p_memsz`` of the
    executable (plus a random offset under ASLR, which is why the caller takes the break
    from ``brk(NULL)`` where it can).

The load bias itself is not in the file: 0 for ET_EXEC, ELF_ET_DYN_BASE plus a random
offset for a PIE, and "wherever mmap puts it" for the interpreter. :func:`bias_from_relro`
recovers it from the ``mprotect(..., PROT_READ)`` that ld.so issues on each object's
PT_GNU_RELRO range, as seen in an strace log; :func:`reconstruct_after_exec` puts it all
together for one execve (executable, its bss, its interpreter; ``#!`` scripts followed).
"""

from __future__ import annotations

import bisect
import errno
import os
import stat
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO

from vmatrace.base.errors import VmatraceError

__all__ = [
    "PAGE_SIZE",
    "ElfInfo",
    "LoadSegment",
    "Reconstruction",
    "VmaRow",
    "bias_from_relro",
    "brk_start",
    "format_dev",
    "load_vmas",
    "read_elf",
    "reconstruct_after_exec",
    "relro_range",
]

PAGE_SIZE = 4096
_PF_X, _PF_W, _PF_R = 1, 2, 4


def _down(x: int) -> int:
    return x & ~(PAGE_SIZE - 1)


def _up(x: int) -> int:
    return (x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


@dataclass(frozen=True, slots=True)
class LoadSegment:
    """One PT_LOAD program header."""

    vaddr: int
    memsz: int
    filesz: int
    offset: int
    flags: int  # PF_R=4 | PF_W=2 | PF_X=1

    @property
    def perms(self) -> str:
        """``rwxp``-style permission string of a private mapping of this segment."""
        f = self.flags
        return (
            ("r" if f & _PF_R else "-")
            + ("w" if f & _PF_W else "-")
            + ("x" if f & _PF_X else "-")
            + "p"
        )


@dataclass(frozen=True, slots=True)
class ElfInfo:
    """What the loader and the symbolizer need from one ELF file."""

    path: str
    e_type: str  # "ET_EXEC" | "ET_DYN" | ...
    segments: tuple[LoadSegment, ...]
    interp: str | None
    relro: tuple[int, int] | None  # (p_vaddr, p_memsz) of PT_GNU_RELRO
    dev: int
    inode: int

    @property
    def is_pie(self) -> bool:
        """True for ET_DYN (PIE executables, shared objects, ld.so)."""
        return self.e_type == "ET_DYN"

    @property
    def image_end(self) -> int:
        """Highest ``p_vaddr + p_memsz`` over the PT_LOAD segments (unbiased)."""
        return max((s.vaddr + s.memsz for s in self.segments), default=0)


@dataclass(frozen=True, slots=True)
class VmaRow:
    """A VMA as /proc/PID/maps would show it (sizes unknown)."""

    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str | None


def format_dev(dev: int) -> str:
    """``st_dev`` as /proc/PID/maps prints it: ``MM:mm`` in hex."""
    return f"{os.major(dev):02x}:{os.minor(dev):02x}"


def _open_regular(path: str) -> BinaryIO:
    """`path` opened for reading if it is a regular file: a name from a log may be a FIFO (an open
    would wait for a writer for ever) or a device (endless data)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@lru_cache(maxsize=256)
def _read_elf_cached(path: str, size: int, mtime_ns: int) -> ElfInfo:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.segments import InterpSegment

    try:
        with _open_regular(path) as f:
            ef = ELFFile(f)
            segs: list[LoadSegment] = []
            interp: str | None = None
            relro: tuple[int, int] | None = None
            for seg in ef.iter_segments():
                t = seg["p_type"]
                if t == "PT_LOAD":
                    segs.append(
                        LoadSegment(
                            vaddr=seg["p_vaddr"],
                            memsz=seg["p_memsz"],
                            filesz=seg["p_filesz"],
                            offset=seg["p_offset"],
                            flags=seg["p_flags"],
                        )
                    )
                elif t == "PT_INTERP" and isinstance(seg, InterpSegment):
                    interp = seg.get_interp_name()
                elif t == "PT_GNU_RELRO":
                    relro = (seg["p_vaddr"], seg["p_memsz"])
            e_type = ef.header["e_type"]
            st = os.fstat(f.fileno())
    except (ELFError, ValueError, OSError) as e:
        raise VmatraceError(f"{path}: not a readable ELF file ({e})") from e
    return ElfInfo(
        path=path,
        e_type=str(e_type),
        segments=tuple(segs),
        interp=interp,
        relro=relro,
        dev=st.st_dev,
        inode=st.st_ino,
    )


def read_elf(path: str) -> ElfInfo:
    """Program headers of the ELF file at `path` (cached while the file is unchanged).

    Raises VmatraceError if the file is missing or not ELF.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise VmatraceError(f"{path}: cannot read ({e.strerror})") from e
    return _read_elf_cached(os.path.realpath(path), st.st_size, st.st_mtime_ns)


def load_vmas(info: ElfInfo, bias: int, *, path: str | None = None) -> list[VmaRow]:
    """The VMAs ``execve`` creates for `info` loaded at `bias` (``load_bias`` in binfmt_elf.c).

    `path` is the name to show (default: the file's own path). Holes between segments stay
    unmapped: the kernel unmaps the part of its first ``total_size`` reservation past the
    first segment and maps each further segment with MAP_FIXED.
    """
    name = path or info.path
    dev = format_dev(info.dev)
    rows: list[VmaRow] = []
    for s in info.segments:
        lo = bias + s.vaddr
        if s.filesz:
            rows.append(
                VmaRow(
                    start=_down(lo),
                    end=_up(lo + s.filesz),
                    perms=s.perms,
                    offset=_down(s.offset),
                    dev=dev,
                    inode=info.inode,
                    path=name,
                )
            )
            zero_start = _up(lo + s.filesz)
        else:
            zero_start = _down(lo)
        zero_end = _up(lo + s.memsz)
        if s.memsz > s.filesz and zero_end > zero_start:
            # vm_brk_flags(): VM_DATA_DEFAULT_FLAGS (rw) plus VM_EXEC if the segment is X.
            perms = "rw" + ("x" if s.flags & _PF_X else "-") + "p"
            rows.append(VmaRow(zero_start, zero_end, perms, 0, "00:00", 0, None))
    rows.sort(key=lambda r: r.start)
    return rows


def brk_start(info: ElfInfo, bias: int) -> int:
    """``mm->start_brk`` without brk randomization: PAGE_UP of the end of the image."""
    return _up(bias + info.image_end)


def relro_range(info: ElfInfo, bias: int) -> tuple[int, int] | None:
    """(addr, len) of the ``mprotect(PROT_READ)`` ld.so makes on PT_GNU_RELRO, or None.

    glibc's ``_dl_protect_relro`` rounds both ends of the segment *down* to pages and skips
    the call when they coincide.
    """
    if info.relro is None:
        return None
    vaddr, memsz = info.relro
    start = _down(bias + vaddr)
    end = _down(bias + vaddr + memsz)
    if end <= start:
        return None
    return start, end - start


def bias_from_relro(info: ElfInfo, addr: int, length: int) -> int | None:
    """The load bias under which `info`'s RELRO protect is ``mprotect(addr, length, ...)``.

    Returns None if `length` does not fit or the implied bias is not page-aligned.
    """
    if info.relro is None:
        return None
    vaddr, _ = info.relro
    bias = addr - _down(vaddr)
    if bias < 0 or bias % PAGE_SIZE:
        return None
    rr = relro_range(info, bias)
    if rr is None or rr != (addr, length):
        return None
    return bias


@dataclass
class Reconstruction:
    """The layout right after one execve, as far as the ELF headers and the log tell."""

    rows: list[VmaRow]
    known: list[str]
    unknown: list[str]


class _Busy:
    """The address ranges already taken, as a union of intervals: point and overlap queries in
    O(log n) (a bias search that compared every candidate with every mmap was quadratic)."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for a, ln in sorted((a, ln) for a, ln in ranges if ln > 0):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], a + ln)
            else:
                merged.append([a, a + ln])
        self.starts = [m[0] for m in merged]
        self.ends = [m[1] for m in merged]

    def overlaps(self, lo: int, hi: int) -> bool:
        """Whether [lo, hi) meets a taken range (a point query is [addr, addr + 1))."""
        i = bisect.bisect_right(self.ends, lo)  # the first interval ending after lo
        return i < len(self.starts) and self.starts[i] < hi

    def add(self, lo: int, hi: int) -> None:
        """Take [lo, hi) too (merged with the ranges it meets or touches)."""
        if hi <= lo:
            return
        i = bisect.bisect_left(self.ends, lo)
        j = bisect.bisect_right(self.starts, hi)
        if i < j:
            lo, hi = min(lo, self.starts[i]), max(hi, self.ends[j - 1])
        self.starts[i:j] = [lo]
        self.ends[i:j] = [hi]


def _pick_bias(info: ElfInfo, cands: list[tuple[int, int]], taken: set[int], busy: _Busy) -> int | None:
    """The load bias whose RELRO ``mprotect`` is the first fitting one among `cands`.

    A candidate is skipped if it is already attributed (`taken`), lies inside a range mapped
    by a later mmap (a library ld.so mapped), or implies an image overlapping such a range
    or the image of an object placed before (`busy`).
    """
    for addr, length in cands:
        if addr in taken or busy.overlaps(addr, addr + 1):
            continue
        b = bias_from_relro(info, addr, length)
        if b is None or not info.segments:
            continue
        lo = (b + info.segments[0].vaddr) & ~(PAGE_SIZE - 1)
        hi = b + info.image_end
        if busy.overlaps(lo, hi):
            continue
        taken.add(addr)
        busy.add(lo, hi)
        return b
    return None


def _in_root(name: str, root: str) -> tuple[str, str]:
    """(path to open here, real path as the traced machine's /proc/PID/maps shows it).

    Symlinks are resolved component by component inside `root`: an absolute link target
    means `root`'s "/", not this machine's (a copied file system keeps absolute links).
    """
    if root in ("", "/") or not os.path.isabs(name):
        real = os.path.realpath(name)
        return real, real
    parts = [p for p in name.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        here = os.path.join(root, *resolved, part)
        if os.path.islink(here):
            hops += 1
            if hops > 40:
                raise VmatraceError(f"{name}: too many levels of symbolic links under {root}")
            target = os.readlink(here)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved), "/" + "/".join(resolved)


def _resolve_image(name: str, root: str, notes: list[str]) -> tuple[str, str]:
    """Follow ``#!`` lines the way binfmt_script does: the ELF that is mapped is the interpreter."""
    local, shown = _in_root(name, root)
    for _ in range(4):
        try:
            with _open_regular(local) as f:
                head = f.read(256)
        except OSError as e:
            raise VmatraceError(f"{local}: cannot read ({e.strerror})") from None
        if not head.startswith(b"#!"):
            break
        interp = head[2:].split(b"\n")[0].strip().split()
        if not interp:
            break
        name = interp[0].decode(errors="replace")
        notes.append(f"{shown} is a script: the layout is that of its interpreter {name}")
        local, shown = _in_root(name, root)
    return local, shown


def reconstruct_after_exec(filename: str, *, brk: int | None, prot_read: list[tuple[int, int]],
                           mmaps: list[tuple[int, int]], root: str = "/") -> Reconstruction:
    """Rebuild the VMAs of the executable `filename` and its interpreter right after execve.

    Evidence from a trace of the new image: `brk` the return of its first ``brk(NULL)``,
    `prot_read` its ``mprotect(addr, len, PROT_READ)`` calls in order, `mmaps` the (addr, len)
    of its successful mmaps. Files are read under `root`.

    Load biases: ET_EXEC is at its link address; a PIE executable and the interpreter are
    placed by the kernel (ASLR), so their bias is recovered from the RELRO ``mprotect`` ld.so
    makes on each of them (:func:`bias_from_relro`). What cannot be recovered is listed in
    ``unknown``.
    """
    known: list[str] = []
    unknown: list[str] = []
    path = filename
    if not os.path.isabs(path):
        unknown.append(f"executable {path!r} is a relative path: resolved against the current directory")
    local, shown = _resolve_image(path, root, unknown)
    exe = read_elf(local)
    rows: list[VmaRow] = []
    taken: set[int] = set()
    interp_info = None
    ishown = ""
    if exe.interp:
        ipath, ishown = _in_root(exe.interp, root)
        interp_info = read_elf(ipath)
    # glibc's ld.so protects the RELRO of the libraries (inside their mmaps), then of the
    # executable, then its own: in log order, the executable's comes first.
    busy = _Busy(mmaps)
    if not exe.is_pie:
        bias: int | None = 0
        known.append("executable at its link address (ET_EXEC)")
        rr = relro_range(exe, 0)
        if rr is not None:
            taken.add(rr[0])
        if exe.segments:
            lo = exe.segments[0].vaddr & ~(PAGE_SIZE - 1)
            busy.add(lo, exe.image_end)
    else:
        bias = _pick_bias(exe, prot_read, taken, busy)
        if bias is not None:
            known.append(f"executable load bias {bias:#x} from its RELRO mprotect")
        else:
            unknown.append("executable load bias (ASLR; no RELRO mprotect of it in the log)")
    ibias = None
    if interp_info is not None:
        ibias = _pick_bias(interp_info, prot_read, taken, busy)
    if bias is not None:
        rows += load_vmas(exe, bias, path=shown)
    if interp_info is not None:
        if ibias is not None:
            rows += load_vmas(interp_info, ibias, path=ishown)
            known.append(f"interpreter {exe.interp} at {ibias:#x} from its RELRO mprotect")
        else:
            unknown.append(f"interpreter {exe.interp} base (ASLR; no RELRO mprotect in the log)")
    if brk is not None:
        known.append(f"program break {brk:#x} from brk(NULL)")
        # No VMA is named [heap] yet: /proc/PID/maps names a VMA [heap] when it overlaps
        # (start_brk, brk) (vma_is_initial_heap(), strict), which is empty right after exec.
    else:
        unknown.append("program break (no brk(NULL) in the log)")
    unknown += ["[stack] (placement is randomized; strace does not show it)",
                "[vdso]/[vvar] placement", "smaps sizes and VmFlags"]
    rows.sort(key=lambda r: r.start)
    return Reconstruction(rows, known, unknown)
