"""PROCMAP_QUERY (include/uapi/linux/fs.h, Linux 6.11): an ioctl on an open ``/proc/PID/maps``
that returns one VMA per call, binary and without text formatting. ``collectors.procmaps`` loads
this module (and ctypes) only for a maps-only snapshot.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os

from vmatrace.base.snapshot import empty_vma_columns

_ok: bool | None = None


class _ProcmapQuery(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_uint64),
        ("query_flags", ctypes.c_uint64),
        ("query_addr", ctypes.c_uint64),
        ("vma_start", ctypes.c_uint64),
        ("vma_end", ctypes.c_uint64),
        ("vma_flags", ctypes.c_uint64),
        ("vma_page_size", ctypes.c_uint64),
        ("vma_offset", ctypes.c_uint64),
        ("inode", ctypes.c_uint64),
        ("dev_major", ctypes.c_uint32),
        ("dev_minor", ctypes.c_uint32),
        ("vma_name_size", ctypes.c_uint32),
        ("build_id_size", ctypes.c_uint32),
        ("vma_name_addr", ctypes.c_uint64),
        ("build_id_addr", ctypes.c_uint64),
    ]


_IOC_WRITE, _IOC_READ = 1, 2
PROCMAP_QUERY = ((_IOC_READ | _IOC_WRITE) << 30) | (ctypes.sizeof(_ProcmapQuery) << 16) | (ord("f") << 8) | 17
PROCMAP_QUERY_COVERING_OR_NEXT_VMA = 0x10
_PQ_READ, _PQ_WRITE, _PQ_EXEC, _PQ_SHARED = 1, 2, 4, 8


def has_procmap_query() -> bool:
    """Whether this kernel implements PROCMAP_QUERY (probed once on our own maps)."""
    global _ok
    if _ok is None:
        try:
            fd = os.open("/proc/self/maps", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            _ok = False
            return False
        try:
            q = _ProcmapQuery(size=ctypes.sizeof(_ProcmapQuery), query_flags=PROCMAP_QUERY_COVERING_OR_NEXT_VMA)
            fcntl.ioctl(fd, PROCMAP_QUERY, q)
            _ok = True
        except OSError:
            _ok = False
        finally:
            os.close(fd)
    return _ok


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.ioctl.restype = ctypes.c_int


def query_all(fd: int) -> dict[str, list[object]]:
    """Walk the VMAs with PROCMAP_QUERY(COVERING_OR_NEXT_VMA) until ENOENT.

    libc's ioctl() through ctypes on one reused struct: about half the per-call cost of fcntl.ioctl.
    """
    cols = empty_vma_columns()
    starts, ends, permss, offs, devs, inos, paths = (cols[k] for k in (
        "start", "end", "perms", "offset", "dev", "inode", "path"))
    name = ctypes.create_string_buffer(4096)
    q = _ProcmapQuery()
    qp = ctypes.addressof(q)
    name_addr = ctypes.addressof(name)
    size = ctypes.sizeof(_ProcmapQuery)
    perm_str = [("r" if f & _PQ_READ else "-") + ("w" if f & _PQ_WRITE else "-") + ("x" if f & _PQ_EXEC else "-")
                + ("s" if f & _PQ_SHARED else "p") for f in range(16)]
    ioctl = _libc.ioctl
    addr = 0
    while True:
        q.size = size
        q.query_flags = PROCMAP_QUERY_COVERING_OR_NEXT_VMA
        q.query_addr = addr
        q.vma_name_addr = name_addr
        q.vma_name_size = 4096
        q.build_id_size = 0
        if ioctl(fd, PROCMAP_QUERY, qp) != 0:
            err = ctypes.get_errno()
            if err == errno.ENOENT:
                break
            raise OSError(err, os.strerror(err))
        addr = q.vma_end
        starts.append(q.vma_start)
        ends.append(addr)
        permss.append(perm_str[q.vma_flags & 15])
        offs.append(q.vma_offset)
        devs.append(f"{q.dev_major:02x}:{q.dev_minor:02x}")
        inos.append(q.inode)
        paths.append(name.value.decode("utf-8", "backslashreplace").replace("\n", "\\012")
                     if q.vma_name_size else None)
    return cols


def query_names(path: str, starts: list[int]) -> list[tuple[int, int, str, int, str, int, str | None]] | None:
    """(start, end, perms, offset, dev, inode, name) of the VMAs that start at ``starts``, one
    PROCMAP_QUERY each on ``path`` (a /proc/PID/maps file); None when the process is gone or a VMA
    is no longer there (the caller reads again). The ioctl names a VMA as the maps text does."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    out: list[tuple[int, int, str, int, str, int, str | None]] = []
    try:
        name = ctypes.create_string_buffer(4096)
        q = _ProcmapQuery()
        qp = ctypes.addressof(q)
        name_addr = ctypes.addressof(name)
        size = ctypes.sizeof(_ProcmapQuery)
        ioctl = _libc.ioctl
        for addr in starts:
            q.size = size
            q.query_flags = 0  # the VMA covering addr, nothing else
            q.query_addr = addr
            q.vma_name_addr = name_addr
            q.vma_name_size = 4096
            q.build_id_size = 0
            if ioctl(fd, PROCMAP_QUERY, qp) != 0 or q.vma_start != addr:
                return None
            f = q.vma_flags
            perms = (("r" if f & _PQ_READ else "-") + ("w" if f & _PQ_WRITE else "-")
                     + ("x" if f & _PQ_EXEC else "-") + ("s" if f & _PQ_SHARED else "p"))
            out.append((q.vma_start, q.vma_end, perms, q.vma_offset, f"{q.dev_major:02x}:{q.dev_minor:02x}",
                        q.inode, name.value.decode("utf-8", "backslashreplace").replace("\n", "\\012")
                        if q.vma_name_size else None))
    finally:
        os.close(fd)
    return out
