"""Deep snapshots: the VMA state /proc does not show, read from the kernel with a BPF task_vma iterator.

For every VMA of a process: start, end, the raw ``vm_flags``, ``vm_pgoff`` (anonymous memory too),
an identity for the open file (``struct file``) and for the anon_vma, the length of the
anon_vma_chain (a fork child's is not singular), whether ``vm_ops->close`` is set, the anon name,
and whether a mempolicy or a userfaultfd context is set (columns: ``DEEP_SCHEMA`` in
``vmatrace.base.snapshot``, documented in docs/trace-format.md).

How: ``collectors/bpf/deep.bpf.c`` is compiled and loaded by bcc as a ``BPF_TRACE_ITER`` program
(bcc's loader finds the ``bpf_iter_task_vma`` BTF id from the function name). A link is made for
one process (``bpf_iter_link_info.task.pid``, Linux 6.1+) with libbcc's ``bcc_iter_attach()``, an
iterator fd from it with ``bcc_iter_create()``; reading that fd runs the program once per VMA, and
each run writes one fixed-size binary record, decoded as whole numpy/polars columns (no Python
object per VMA). Names: without smaps, where the kernel has PROCMAP_QUERY and ``mm_lock_seq``, the
records give the file's device and inode and the mm's brk and stack, and only the VMAs /proc
names from elsewhere are asked for, one ioctl each (:meth:`DeepCollector._snapshot_named`);
otherwise the names, devices and inodes come from ``/proc/PID/maps`` (or smaps) text read right
after, and the two must agree on every VMA's bounds and protection, else both are read again.

Struct offsets are read from the running kernel's BTF (``collectors.btf``), never from the
installed headers (they may describe another kernel). Before the first snapshot the collector
checks them against ``/proc/self/smaps`` (bounds, VmFlags, file offsets, "Anonymous > 0 means an
anon_vma") and refuses, with one line, when they disagree: plain snapshots keep working.

Kernel pointers never leave this module: :class:`Identities` maps them to small integers, stable
for the collector's lifetime (one trace, one command run).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from vmatrace.base.errors import NoSuchProcess, VmatraceError
from vmatrace.base.snapshot import DEEP_SCHEMA, VMA_SCHEMA, Snapshot, SnapshotError, kernel_dev_str
from vmatrace.base.vmflags import MNEMONICS, VM_MAYSHARE, mnemonics, vmflags_text

BPF_SOURCE = Path(__file__).with_name("bpf") / "deep.bpf.c"
AVC_MAX = 64
ANON_NAME_LEN = 80
# struct deep_rec of deep.bpf.c; anon_name only on kernels with CONFIG_ANON_VMA_NAME (HAVE_ANON_NAME)
_REC_FIELDS = [
    ("start", "<u8"), ("end", "<u8"), ("flags", "<u8"), ("pgoff", "<u8"), ("file", "<u8"),
    ("anon_vma", "<u8"), ("mm", "<u8"), ("tgid", "<u4"), ("tid", "<u4"), ("avc", "<u4"),
    ("bits", "<u4"), ("ino", "<u8"), ("start_brk", "<u8"), ("brk", "<u8"), ("start_stack", "<u8"),
    ("mm_seq", "<u8"), ("dev", "<u4"), ("pad", "<u4"), ("inode", "<u8"),
]
REC_DTYPE = np.dtype([*_REC_FIELDS, ("anon_name", f"S{ANON_NAME_LEN}")])
REC_DTYPE_NO_NAME = np.dtype(_REC_FIELDS)
BIT_CLOSE, BIT_POLICY, BIT_UFFD, BIT_OPS, BIT_SEQ = 1, 2, 4, 8, 16
TASK_SIZE_LIMIT = 1 << 47  # the gate VMA ([vsyscall]) is above: not in the mm, not iterated
# the VmFlags bits whose meaning has not moved between kernel releases (bits 0-31)
_STABLE_BITS = (1 << 32) - 1
_STABLE_MNEMONICS = frozenset(m for bit, m in MNEMONICS.items() if bit <= _STABLE_BITS)
RETRIES = 5


class DeepError(VmatraceError):
    """Deep snapshots cannot be taken here; the message says why in one line."""


class DeepOffsetsError(DeepError):
    """The struct offsets do not describe the running kernel: deep snapshots are refused."""


class DeepRaceError(SnapshotError):
    """The process changed its mappings during every attempt: the iterator's walk and the /proc
    read never agreed. A plain snapshot can still be taken (it is read once, as it stands)."""


@dataclass(frozen=True)
class DeepOffsets:
    """Member offsets the BPF program reads at (bytes), and which optional members exist."""

    vma: dict[str, int]
    task: dict[str, int]
    ops_close: int
    anon_name_name: int | None = None
    # file->f_inode, inode->i_ino, inode->i_sb, super_block->s_dev
    file: dict[str, int] = field(default_factory=dict)
    # mm_struct: start_brk, brk, start_stack, and mm_lock_seq where the kernel has it
    mm: dict[str, int] = field(default_factory=dict)

    def cflags(self) -> list[str]:
        v = self.vma
        cf = [
            f"-DOFF_VMA_START={v['vm_start']}", f"-DOFF_VMA_END={v['vm_end']}",
            f"-DOFF_VMA_FLAGS={v['vm_flags']}", f"-DOFF_VMA_PGOFF={v['vm_pgoff']}",
            f"-DOFF_VMA_FILE={v['vm_file']}", f"-DOFF_VMA_ANON_VMA={v['anon_vma']}",
            f"-DOFF_VMA_AVC={v['anon_vma_chain']}", f"-DOFF_VMA_OPS={v['vm_ops']}",
            f"-DOFF_VMA_MM={v['vm_mm']}", f"-DOFF_OPS_CLOSE={self.ops_close}",
            f"-DOFF_TASK_PID={self.task['pid']}", f"-DOFF_TASK_TGID={self.task['tgid']}",
            f"-DAVC_MAX={AVC_MAX}",
        ]
        if "vm_policy" in v:
            cf += ["-DHAVE_POLICY", f"-DOFF_VMA_POLICY={v['vm_policy']}"]
        if "vm_userfaultfd_ctx" in v:
            cf += ["-DHAVE_UFFD", f"-DOFF_VMA_UFFD={v['vm_userfaultfd_ctx']}"]
        if self.has_anon_name:
            cf += ["-DHAVE_ANON_NAME", f"-DOFF_VMA_ANON_NAME={v['anon_name']}",
                   f"-DOFF_ANON_NAME_NAME={self.anon_name_name}"]
        f, m = self.file, self.mm
        cf += [f"-DOFF_FILE_INODE={f.get('f_inode', 0)}", f"-DOFF_INODE_INO={f.get('i_ino', 0)}",
               f"-DOFF_INODE_SB={f.get('i_sb', 0)}", f"-DOFF_SB_DEV={f.get('s_dev', 0)}",
               f"-DOFF_MM_START_BRK={m.get('start_brk', 0)}", f"-DOFF_MM_BRK={m.get('brk', 0)}",
               f"-DOFF_MM_START_STACK={m.get('start_stack', 0)}"]
        if "mm_lock_seq" in m:
            cf += ["-DHAVE_MM_SEQ", f"-DOFF_MM_LOCK_SEQ={m['mm_lock_seq']}"]
        return cf

    @property
    def has_names(self) -> bool:
        """The program reads what names a VMA without /proc's text: the file's device and inode,
        the mm's brk and stack, and a walk-consistency sequence (mm_lock_seq)."""
        return bool(self.file) and {"start_brk", "brk", "start_stack", "mm_lock_seq"} <= set(self.mm)

    @property
    def has_anon_name(self) -> bool:
        return "anon_name" in self.vma and self.anon_name_name is not None

    def with_changes(self, **vma: int) -> DeepOffsets:
        """A copy with some vm_area_struct offsets replaced (tests simulate a wrong layout)."""
        return dataclasses.replace(self, vma={**self.vma, **vma})


_REQUIRED_VMA = ["vm_start", "vm_end", "vm_flags", "vm_pgoff", "vm_file", "anon_vma",
                 "anon_vma_chain", "vm_ops", "vm_mm"]
# CONFIG_NUMA, CONFIG_USERFAULTFD, CONFIG_ANON_VMA_NAME: absent members mean the feature is absent
_OPTIONAL_VMA = ["vm_policy", "vm_userfaultfd_ctx", "anon_name"]


def read_offsets(path: Path | None = None) -> DeepOffsets:
    """The offsets of the running kernel (its BTF); DeepError when a required member is missing."""
    from collectors.btf import VMLINUX_BTF, BtfError, struct_offsets

    p = path or VMLINUX_BTF
    try:
        vma = struct_offsets("vm_area_struct", _REQUIRED_VMA, path=p)
        for m in _OPTIONAL_VMA:
            with contextlib.suppress(BtfError):
                vma.update(struct_offsets("vm_area_struct", [m], path=p))
        task = struct_offsets("task_struct", ["pid", "tgid"], path=p)
        close = struct_offsets("vm_operations_struct", ["close"], path=p)["close"]
        name_off = None
        if "anon_name" in vma:
            name_off = struct_offsets("anon_vma_name", ["name"], path=p)["name"]
    except BtfError as e:
        raise DeepError(f"deep snapshots need the kernel's BTF: {e}") from None
    files: dict[str, int] = {}
    mm: dict[str, int] = {}
    with contextlib.suppress(BtfError):  # without them, names come from /proc's text (slower)
        files = {"f_inode": struct_offsets("file", ["f_inode"], path=p)["f_inode"],
                 **struct_offsets("inode", ["i_ino", "i_sb"], path=p),
                 "s_dev": struct_offsets("super_block", ["s_dev"], path=p)["s_dev"]}
        mm = struct_offsets("mm_struct", ["start_brk", "brk", "start_stack"], path=p)
        # CONFIG_PER_VMA_LOCK: every mmap write lock changes it
        mm.update(struct_offsets("mm_struct", ["mm_lock_seq"], path=p))
    return DeepOffsets(vma, task, close, name_off, files, mm)


class Identities:
    """Kernel pointers -> small integers (1, 2, ...), one numbering per kind, never reused."""

    def __init__(self) -> None:
        self._maps: dict[str, dict[int, int]] = {}

    def assign(self, kind: str, ptrs: np.ndarray) -> np.ndarray:
        """The identities of ``ptrs`` (uint32; 0 for a NULL pointer)."""
        table = self._maps.setdefault(kind, {})
        out = np.zeros(ptrs.size, dtype=np.uint32)
        nz = np.flatnonzero(ptrs)  # NULL stays 0 (most VMAs have no file, many no anon_vma)
        if not nz.size:
            return out
        uniq, inv = np.unique(np.ascontiguousarray(ptrs[nz]), return_inverse=True)
        ids = np.zeros(uniq.size, dtype=np.uint32)
        for i, p in enumerate(uniq.tolist()):
            got = table.get(p)
            if got is None:
                got = table[p] = len(table) + 1
            ids[i] = got
        out[nz] = ids[inv.reshape(-1)]
        return out

    def series(self, name: str, kind: str, ptrs: np.ndarray) -> pl.Series:
        """A UInt32 column of identities, null for NULL pointers."""
        s = pl.Series(name, self.assign(kind, ptrs), pl.UInt32)
        return s.set(s == 0, None) if s.len() else s


def _libbcc() -> Any:
    from bcc.libbcc import lib

    lib.bcc_iter_attach.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32]
    lib.bcc_iter_attach.restype = ctypes.c_int
    lib.bcc_iter_create.argtypes = [ctypes.c_int]
    lib.bcc_iter_create.restype = ctypes.c_int
    return lib


@dataclass
class DeepCollector:
    """Loads the iterator program once; :meth:`snapshot` reads one process.

    ``offsets``: None reads them from the kernel's BTF (the only right way; tests pass wrong ones
    to check the refusal). ``verify``: check them against /proc/self/smaps first.
    """

    offsets: DeepOffsets | None = None
    verify: bool = True
    ids: Identities = field(default_factory=Identities)
    load_s: float = 0.0
    # (struct file *, struct inode *, dev, ino) arrays -> file_id (0: no file). Set by a recorder
    # so that a trace has one numbering of open files, in its events and its deep snapshots;
    # None: the collector's own numbering (Identities)
    file_ids: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None

    def __post_init__(self) -> None:
        t0 = time.monotonic()
        if self.offsets is None:
            self.offsets = read_offsets()
        try:
            import bcc  # noqa: F401
        except Exception as e:  # bcc raises odd things when libbcc is missing
            raise DeepError(f"deep snapshots need bcc: import bcc failed ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        from bcc import BPF

        self._lib = _libbcc()
        self._dtype = REC_DTYPE if self.offsets.has_anon_name else REC_DTYPE_NO_NAME
        try:
            self._bpf = BPF(src_file=str(BPF_SOURCE).encode(), cflags=self.offsets.cflags())
            self._fn = self._bpf.load_func(b"bpf_iter__task_vma", BPF.TRACING)
        except Exception as e:
            msg = " ".join(str(e).split()) or type(e).__name__
            raise DeepError(f"cannot load the task_vma iterator (Linux 5.12+ with BTF and root needed): {msg[:160]}") from None
        self._lock = threading.Lock()  # record takes snapshots from two threads
        self.load_s = time.monotonic() - t0
        if self.verify:
            self.check_against_proc()

    def close(self) -> None:
        b = getattr(self, "_bpf", None)
        if b is not None:
            b.cleanup()
            self._bpf = None

    def __enter__(self) -> DeepCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def prog_fd(self) -> int:
        """The loaded iterator program (for a process that makes its own links, e.g. the oracle's
        runner: ``run_live(..., deep_fd=c.prog_fd)``)."""
        return int(self._fn.fd)

    @property
    def rec_size(self) -> int:
        """Bytes per record the program writes (depends on the kernel's configuration)."""
        return int(self._dtype.itemsize)

    # -- the iterator ------------------------------------------------------------------------
    def read_records(self, pid: int, *, tid: int | None = None) -> np.ndarray:
        """The raw records of every VMA of process ``pid`` (one thread's walk; REC_DTYPE, without
        ``anon_name`` on kernels that cannot name anonymous VMAs).
        ``tid``: walk through that thread (a thread in do_exit() after its group leader is gone)."""
        # union bpf_iter_link_info: task.tid, task.pid (one of them)
        info = (ctypes.c_uint32 * 4)(tid, 0, 0, 0) if tid is not None else (ctypes.c_uint32 * 4)(0, pid, 0, 0)
        link = self._lib.bcc_iter_attach(self._fn.fd, info, ctypes.sizeof(info))
        if link < 0:
            err = ctypes.get_errno() or -link
            if err in (errno.ESRCH, errno.ENOENT):
                raise NoSuchProcess(f"no process with PID {pid}")
            if err == errno.EINVAL:
                raise DeepError("this kernel cannot iterate one process's VMAs (Linux 6.1+ needed)")
            raise DeepError(f"cannot create the task_vma iterator for PID {pid}: {os.strerror(err)}")
        try:
            fd = self._lib.bcc_iter_create(link)
            if fd < 0:
                raise DeepError(f"cannot start the task_vma iterator: {os.strerror(ctypes.get_errno())}")
            try:
                parts = []
                while True:
                    b = os.read(fd, 1 << 22)
                    if not b:
                        break
                    parts.append(b)
            finally:
                os.close(fd)
        finally:
            os.close(link)
        data = b"".join(parts)
        recs = np.frombuffer(data, dtype=self._dtype, count=len(data) // self._dtype.itemsize)
        if recs.size:
            recs = recs[recs["tid"] == recs["tid"][0]]  # threads share the mm: one walk is enough
        return recs

    def deep_frame(self, recs: np.ndarray) -> pl.DataFrame:
        """The DEEP_SCHEMA columns of decoded records (vectorized), pointers mapped to identities."""
        avc = recs["avc"].astype(np.int64)
        has_anon = recs["anon_vma"] != 0
        bits = recs["bits"]
        names = recs["anon_name"] if "anon_name" in (recs.dtype.names or ()) else None
        if names is not None and names.size and (names != b"").any():
            name_col = pl.Series("anon_name", [n.decode("utf-8", "backslashreplace") or None
                                               for n in names.tolist()], pl.Utf8)
        else:
            name_col = pl.repeat(None, recs.size, dtype=pl.Utf8, eager=True).alias("anon_name")
        return pl.DataFrame([
            pl.Series("vm_flags", recs["flags"], pl.UInt64),
            pl.Series("pgoff", recs["pgoff"], pl.UInt64),
            self._file_series(recs),
            self.ids.series("anon_vma_id", "anon_vma", recs["anon_vma"]),
            pl.Series("avc", np.minimum(avc, 0xFFFF), pl.UInt16),
            pl.Series("fork_child", has_anon & (avc != 1), pl.Boolean),
            pl.Series("close_hook", (bits & BIT_CLOSE) != 0, pl.Boolean),
            name_col,
            pl.Series("mempolicy", (bits & BIT_POLICY) != 0, pl.Boolean),
            pl.Series("uffd", (bits & BIT_UFFD) != 0, pl.Boolean),
        ])

    def _file_series(self, recs: np.ndarray) -> pl.Series:
        if self.file_ids is None:
            return self.ids.series("file_id", "file", recs["file"])
        s = pl.Series("file_id", self.file_ids(recs["file"], recs["inode"], recs["dev"], recs["ino"]), pl.UInt32)
        return s.set(s == 0, None) if s.len() else s

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot(self, pid: int, *, task: int | None = None, smaps: bool = False,
                 helper: bool = True) -> Snapshot:
        """A deep snapshot: VMA_SCHEMA columns (names from /proc/PID/maps, VmFlags from the raw
        vm_flags, no sizes; with ``smaps``, from /proc/PID/smaps with sizes) plus DEEP_SCHEMA. The
        two reads are repeated until they agree on every VMA's bounds and protection (a process
        that changes its mappings meanwhile). ``task``: read through that thread (see
        :func:`collectors.procmaps.read_snapshot`)."""
        with self._lock:
            return self._snapshot(pid, task, smaps, helper)

    def _snapshot(self, pid: int, task: int | None, smaps: bool, helper: bool) -> Snapshot:
        from collectors.procmaps import has_procmap_query, read_snapshot

        if not smaps and task is None and self.offsets is not None and self.offsets.has_names and has_procmap_query():
            snap = self._snapshot_named(pid)
            if snap is not None:
                return snap
        warnings: list[str] = []
        for attempt in range(RETRIES):
            t0 = time.monotonic_ns()
            recs = self.read_records(pid, tid=task)
            # the maps text (or smaps) in one read: far cheaper than PROCMAP_QUERY's call per VMA
            plain = read_snapshot(pid, smaps=smaps, task=task, method="text", helper=helper)
            t1 = time.monotonic_ns()
            frame = plain.frame.filter(pl.col("start") < TASK_SIZE_LIMIT)
            mismatch = _layout_mismatch(frame, recs)
            if mismatch is None:
                break
            if not plain.complete:
                raise NoSuchProcess(f"PID {pid} exited during the deep snapshot")
            if attempt == RETRIES - 1:
                raise DeepRaceError(f"PID {pid} kept changing its mappings during {RETRIES} deep snapshot "
                                    f"attempts ({mismatch})")
        warnings.extend(plain.warnings)
        deep = self.deep_frame(recs)
        if not smaps:
            frame = frame.drop("vmflags").with_columns(_flags_text(recs["flags"]))
        frame = pl.concat([frame, deep], how="horizontal").select([*VMA_SCHEMA, *DEEP_SCHEMA])
        return Snapshot(pid=plain.pid, t_start_ns=t0, t_end_ns=t1, method="bpf_iter", frame=frame,
                        warnings=warnings)

    def _snapshot_named(self, pid: int) -> Snapshot | None:
        """A deep snapshot without /proc's text (the maps-only case): the iterator gives the layout,
        the file's device and inode and the anon name; only the VMAs /proc names from elsewhere
        (a file's path, a special mapping's vm_ops->name, the [heap] and [stack] of the mm's brk
        and start_stack, taken wide) are asked for with PROCMAP_QUERY, one ioctl each.

        The walk is one consistent state when every record saw the same mm_lock_seq (each mmap
        write lock changes it; the iterator reads under the read lock); the VMAs asked for must
        agree with the records on bounds, protection, offset, device and inode. Otherwise it
        reads again. None (the caller reads /proc's text instead): the process has many named
        VMAs (one text read is cheaper than an ioctl for each), no VMA was read (a thread id, an
        exiting process: the text reader says what it is), or it kept changing."""
        from collectors.procmap_query import query_names

        maps = f"/proc/{pid}/maps"
        for _ in range(RETRIES):
            t0 = time.monotonic_ns()
            recs = self.read_records(pid)
            n = int(recs.size)
            if n == 0 or not (recs["bits"] & BIT_SEQ).all():
                return None
            seq = recs["mm_seq"]
            if (seq != seq[0]).any():
                continue  # the process changed its mappings during the walk
            start = np.ascontiguousarray(recs["start"])
            end = np.ascontiguousarray(recs["end"])
            file = recs["file"] != 0
            # superset of vma_is_initial_heap() / vma_is_initial_stack() (closed intervals)
            brk_lo, brk_hi, stack = int(recs["start_brk"][0]), int(recs["brk"][0]), int(recs["start_stack"][0])
            special = ~file & (((start <= brk_hi) & (end >= brk_lo)) | ((start <= stack) & (end >= stack)))
            ask = np.flatnonzero(file | ((recs["bits"] & BIT_OPS) != 0) | special)
            if ask.size > max(64, n // 3):
                return None
            named = query_names(maps, start[ask].tolist())
            t1 = time.monotonic_ns()
            if named is None:
                continue
            flags = np.ascontiguousarray(recs["flags"])
            code = ((flags & 7) | np.where(flags & VM_MAYSHARE, 8, 0).astype(flags.dtype)).astype(np.int64)
            pgoff = np.ascontiguousarray(recs["pgoff"])
            offset = np.where(file, pgoff << np.uint64(12), np.uint64(0))
            inode = np.where(file, recs["ino"], np.uint64(0))
            # the few named VMAs in Python, the rest as whole columns
            devs, ends, offs, inos = recs["dev"][ask].tolist(), end[ask].tolist(), offset[ask].tolist(), inode[ask].tolist()
            codes, files = code[ask].tolist(), file[ask].tolist()
            if any(e0 != ends[k] or pm != _PERMS[codes[k]] or off != offs[k] or ino != inos[k]
                   or (files[k] and dv != kernel_dev_str(devs[k]))
                   for k, (_, e0, pm, off, dv, ino, _) in enumerate(named)):
                continue
            at = pl.Series(ask, dtype=pl.UInt32)
            path = pl.repeat(None, n, dtype=pl.Utf8, eager=True)
            names = recs["anon_name"] if "anon_name" in (recs.dtype.names or ()) else None
            if names is not None and (has := np.flatnonzero(names != b"")).size:
                path = path.scatter(has, ["[anon:" + x.decode("utf-8", "backslashreplace") + "]"
                                          for x in names[has].tolist()])
            if ask.size:
                path = path.scatter(at, [x[6] for x in named])
            dev = pl.repeat("00:00", n, dtype=pl.Utf8, eager=True)
            if ask.size:
                dev = dev.scatter(at, [x[4] for x in named])
            frame = pl.DataFrame([
                pl.Series("start", start, pl.UInt64), pl.Series("end", end, pl.UInt64),
                _PERMS_SERIES.gather(code).alias("perms"), pl.Series("offset", offset, pl.UInt64),
                dev.alias("dev"), pl.Series("inode", inode, pl.UInt64), path.alias("path"),
                *(pl.repeat(None, n, dtype=VMA_SCHEMA[k], eager=True).alias(k)
                  for k in ("rss_kb", "pss_kb", "anonymous_kb", "swap_kb")),
                _flags_text(flags).alias("vmflags"),
            ])
            frame = pl.concat([frame, self.deep_frame(recs)], how="horizontal")
            return Snapshot(pid=pid, t_start_ns=t0, t_end_ns=t1, method="bpf_iter", frame=frame)
        return None

    def snapshots(self, pids: list[int]) -> dict[int, Snapshot]:
        """Deep snapshots of several processes (a traced tree); those that exited are left out."""
        out = {}
        for p in pids:
            try:
                out[p] = self.snapshot(p)
            except NoSuchProcess:
                continue
        return out

    # -- the offsets check ---------------------------------------------------------------------
    def check_against_proc(self) -> None:
        """Compare a deep read of this process with its /proc/self/smaps; DeepOffsetsError if the
        offsets do not describe the running kernel (a race with our own threads is retried)."""
        from collectors.procmaps import read_snapshot

        problem: str | None = "no VMA read"
        for _ in range(3):
            recs = self.read_records(os.getpid())
            smaps = read_snapshot(os.getpid(), smaps=True).frame.filter(pl.col("start") < TASK_SIZE_LIMIT)
            problem = _offsets_problem(smaps, recs)
            if problem is None:
                return
        raise DeepOffsetsError(
            "deep snapshots refused: the kernel struct offsets do not match /proc/self/smaps "
            f"({problem}); plain snapshots still work")


def _flags_text(flags: np.ndarray) -> pl.Series:
    """The smaps VmFlags text of each raw vm_flags (formatted once per distinct value)."""
    uniq, inv = np.unique(np.ascontiguousarray(flags), return_inverse=True)
    texts = pl.Series("vmflags", [vmflags_text(int(f)) for f in uniq.tolist()], pl.Utf8)
    return texts.gather(inv.reshape(-1))


def _layout_mismatch(frame: pl.DataFrame, recs: np.ndarray) -> str | None:
    """None if /proc's layout (start, end, perms) equals the iterator's, else what differs."""
    if frame.height != recs.size:
        return f"/proc shows {frame.height} VMAs, the iterator {recs.size}"
    if frame.height == 0:
        return None
    starts = frame["start"].to_numpy()
    ends = frame["end"].to_numpy()
    bad = np.nonzero((starts != recs["start"]) | (ends != recs["end"]))[0]
    if bad.size:
        i = int(bad[0])
        return f"VMA {i}: /proc {starts[i]:#x}-{ends[i]:#x}, iterator {int(recs['start'][i]):#x}-{int(recs['end'][i]):#x}"
    f = recs["flags"]
    code = (f & 7) | np.where(f & VM_MAYSHARE, 8, 0).astype(f.dtype)
    want = _PERMS[code.astype(np.int64)]
    have = np.array(frame["perms"].to_list(), dtype=object)
    bad = np.nonzero(want != have)[0]
    if bad.size:
        i = int(bad[0])
        return f"VMA {starts[i]:#x}: /proc perms {have[i]}, iterator {want[i]}"
    return None


_PERMS = np.array([("r" if c & 1 else "-") + ("w" if c & 2 else "-") + ("x" if c & 4 else "-")
                   + ("s" if c & 8 else "p") for c in range(16)], dtype=object)
_PERMS_SERIES = pl.Series("perms", _PERMS.tolist(), pl.Utf8)


def _offsets_problem(smaps: pl.DataFrame, recs: np.ndarray) -> str | None:
    """What a deep read disagrees with in smaps (the same process): bounds, VmFlags (bits 0-31),
    file offset of file VMAs, a file where smaps shows an inode, an anon_vma where smaps shows
    anonymous pages. None when everything agrees."""
    by_start = {int(s): i for i, s in enumerate(recs["start"].tolist())}
    rows = smaps.to_dicts()
    if not rows:
        return "smaps is empty"
    matched = 0
    for r in rows:
        i = by_start.get(int(r["start"]))
        if i is None:
            continue
        rec = recs[i]
        where = f"VMA {r['start']:#x}"
        if int(rec["end"]) != r["end"]:
            return f"{where}: end {int(rec['end']):#x} in the kernel, {r['end']:#x} in /proc"
        matched += 1
        have = mnemonics(int(rec["flags"]) & _STABLE_BITS)
        want = frozenset((r["vmflags"] or "").split()) & _STABLE_MNEMONICS
        if have != want:
            return (f"{where}: vm_flags read as '{' '.join(sorted(have))}', /proc says "
                    f"'{' '.join(sorted(want))}'")
        if r["inode"] and not rec["file"]:
            return f"{where}: /proc shows a file, vm_file read as NULL"
        if r["inode"] and int(rec["pgoff"]) << 12 != r["offset"]:
            return f"{where}: vm_pgoff read as {int(rec['pgoff']):#x}, /proc offset is {r['offset']:#x}"
        if (r["anonymous_kb"] or 0) > 0 and not rec["anon_vma"]:
            return f"{where}: /proc shows anonymous pages, anon_vma read as NULL"
        if rec["anon_vma"] and rec["avc"] == 0:
            return f"{where}: an anon_vma with an empty anon_vma_chain"
    if matched < max(1, len(rows) // 2):
        return f"only {matched} of {len(rows)} VMA bounds agree"
    return None


def deep_available() -> tuple[bool, str]:
    """Whether deep snapshots work here (doctor): loads the program and runs the offsets check."""
    try:
        with DeepCollector() as c:
            return True, f"BPF task_vma iterator loads and agrees with /proc ({c.load_s:.2f} s to load)"
    except VmatraceError as e:
        return False, str(e)
