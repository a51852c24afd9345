"""Trace format v1: a directory of Parquet chunk files plus ``meta.json``.

Layout (documented for other readers in ``docs/trace-format.md``)::

    TRACE/                      0700, owned by the invoking user
      meta.json                 rewritten atomically (write + rename) at every flush and at close
      events/part-000000.parquet          EVENT_SCHEMA rows, ordered by seq
      snapshots/part-000000.parquet       VMA_SCHEMA rows + snapshot_id, pid
      snapshot_index/part-000000.parquet  SNAPSHOT_INDEX_SCHEMA, one row per snapshot
      stacks/  procs/  losses/            STACK_SCHEMA, PROC_SCHEMA, LOSS_SCHEMA

Each chunk file is complete on its own: it is written under a temporary name and renamed into place,
so a writer killed at any moment leaves every earlier chunk readable and loses only what it had
buffered (at most ``flush_interval_s``, one second by default). ``polars.scan_parquet("T/events/*.parquet")``
or DuckDB's ``read_parquet('T/events/*.parquet')`` read a trace without vmatrace.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import platform
import re
import secrets
import socket
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from vmatrace import __version__
from vmatrace.base.errors import VmatraceError
from vmatrace.base.safeio import chown_to_invoker, safe_create, safe_mkdir
from vmatrace.base.snapshot import DEEP_SCHEMA, VMA_SCHEMA, Snapshot

FORMAT = "vmatrace-trace"
FORMAT_VERSION = 1

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "seq": pl.UInt64(),
    "ts_ns": pl.UInt64(),
    "pid": pl.UInt32(),
    "tid": pl.UInt32(),
    "kind": pl.Utf8(),
    "a0": pl.UInt64(),
    "a1": pl.UInt64(),
    "a2": pl.UInt64(),
    "a3": pl.UInt64(),
    "a4": pl.UInt64(),
    "a5": pl.UInt64(),
    "ret": pl.Int64(),
    "stack_id": pl.Int32(),
    "flags": pl.UInt16(),
    "text": pl.Utf8(),
    # The open file an mmap/shmat mapped (null for anonymous memory); added after the first v1
    # traces, so readers fill them with nulls for chunks written without them.
    "file_dev": pl.Utf8(),
    "file_ino": pl.UInt64(),
    "file_path": pl.Utf8(),
    "file_id": pl.UInt32(),
}
SNAPSHOT_SCHEMA: dict[str, pl.DataType] = {"snapshot_id": pl.UInt32(), "pid": pl.UInt32(), **VMA_SCHEMA}
SNAPSHOT_INDEX_SCHEMA: dict[str, pl.DataType] = {
    "snapshot_id": pl.UInt32(),
    "pid": pl.UInt32(),
    "reason": pl.Utf8(),
    "t_start_ns": pl.UInt64(),
    "t_end_ns": pl.UInt64(),
    "method": pl.Utf8(),
    "vma_count": pl.UInt32(),
    "warnings": pl.Utf8(),
    # mm->start_brk and mm->brk at the snapshot (added after the first v1 traces: null there)
    "start_brk": pl.UInt64(),
    "brk": pl.UInt64(),
}
STACK_SCHEMA: dict[str, pl.DataType] = {
    "pid": pl.UInt32(),
    "stack_id": pl.Int32(),
    "depth": pl.UInt16(),
    "ip": pl.UInt64(),
    "symbol": pl.Utf8(),
    "module": pl.Utf8(),
    "offset": pl.UInt64(),
}
PROC_SCHEMA: dict[str, pl.DataType] = {
    "pid": pl.UInt32(),
    "ppid": pl.UInt32(),
    "comm": pl.Utf8(),
    "cmdline": pl.Utf8(),
    "start_ns": pl.UInt64(),
    "exit_ns": pl.UInt64(),
    "exit_code": pl.Int32(),
    "how_ended": pl.Utf8(),
}
LOSS_SCHEMA: dict[str, pl.DataType] = {"count": pl.UInt64(), "t_from_ns": pl.UInt64(), "t_to_ns": pl.UInt64()}
# deep snapshots (record --deep): the hidden state of each VMA, keyed by (snapshot_id, start); the
# VMA's /proc columns are in `snapshots` as for any snapshot, so readers that do not know this
# table still read every snapshot
DEEP_VMA_SCHEMA: dict[str, pl.DataType] = {"snapshot_id": pl.UInt32(), "pid": pl.UInt32(),
                                           "start": pl.UInt64(), **DEEP_SCHEMA}

TABLES: dict[str, dict[str, pl.DataType]] = {
    "events": EVENT_SCHEMA,
    "snapshots": SNAPSHOT_SCHEMA,
    "snapshot_index": SNAPSHOT_INDEX_SCHEMA,
    "stacks": STACK_SCHEMA,
    "procs": PROC_SCHEMA,
    "losses": LOSS_SCHEMA,
    "deep_vmas": DEEP_VMA_SCHEMA,
}

#: Columns added to format v1 after its first release. A chunk written before them lacks them; the
#: reader fills them with nulls. Every other column of a table must be present with its type.
ADDED_COLUMNS: dict[str, frozenset[str]] = {
    "events": frozenset({"file_dev", "file_ino", "file_path", "file_id"}),
    "snapshot_index": frozenset({"start_brk", "brk"}),
}

_PART_RE = re.compile(r"^part-(\d{6,})\.parquet$")


class TraceError(VmatraceError):
    """A trace cannot be read; the message names what is wrong."""


def base_meta(**kv: Any) -> dict[str, Any]:
    """Metadata every trace carries; collectors add theirs."""
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vmatrace_version": __version__,
        "kernel_release": platform.release(),
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "host": socket.gethostname(),
        "clock": "CLOCK_MONOTONIC",
        "start_ns": time.monotonic_ns(),
        "start_wall": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "end_ns": None,
        "pids": [],
        "comm": None,
        "cmdline": None,
        "collector": None,
        "event_count": 0,
        "lost_count": 0,
        "complete": False,
    }
    meta.update(kv)
    return meta


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Cast/extend ``frame`` to exactly ``schema`` (missing nullable columns become null)."""
    cols = []
    for name, dtype in schema.items():
        if name in frame.columns:
            cols.append(frame.get_column(name).cast(dtype, strict=True).alias(name))
        else:
            cols.append(pl.repeat(None, frame.height, dtype=dtype, eager=True).alias(name))
    return pl.DataFrame(cols)


class TraceWriter:
    """Appends a trace in self-contained chunks; see the module docstring for the guarantees.

    ``staged=True``: the trace is written into a hidden temporary sibling (``.NAME.tmp-XXXXXXXX``)
    and appears at ``path`` only at :meth:`commit` (an existing trace there, with ``force``, is
    replaced at that moment, atomically where the file system can exchange two names);
    :meth:`discard` removes it instead. A recorder commits once the command has started, so a
    command that never runs neither leaves a trace nor destroys the one it was to replace.
    """

    def __init__(self, path: str | os.PathLike[str], meta: dict[str, Any], *, force: bool = False,
                 flush_interval_s: float = 1.0, staged: bool = False) -> None:
        self.path = Path(path)
        self.meta = base_meta(**meta)
        self.flush_interval_s = flush_interval_s
        self.force = force
        self.staging: Path | None = None
        if staged:
            check_replaceable(self.path, force=force)
            if not self.path.parent.is_dir():
                raise VmatraceError(f"cannot create {self.path}: {self.path.parent} is not a directory")
            self.staging = self.path.parent / f".{self.path.name}.tmp-{secrets.token_hex(4)}"
            self._dirfd, existed = safe_mkdir(self.staging)
        else:
            self._dirfd, existed = safe_mkdir(self.path, exist_ok=force)
        if existed:
            try:
                _clear_trace_dir(self._dirfd, self.path)
            except BaseException:
                os.close(self._dirfd)
                raise
        self._subfds: dict[str, int] = {}
        self._buf: dict[str, list[pl.DataFrame]] = {t: [] for t in TABLES}
        self._parts: dict[str, int] = dict.fromkeys(TABLES, 0)
        self._next_snapshot_id = 0
        self._last_flush = time.monotonic()
        self._closed = False
        self._write_meta()

    # -- adding data ---------------------------------------------------------------------------
    def add_events(self, frame: pl.DataFrame) -> None:
        if frame.height:
            self._buf["events"].append(conform(frame, EVENT_SCHEMA))
            self.meta["event_count"] += frame.height
        self.maybe_flush()

    def add_snapshot(self, snap: Snapshot, reason: str, *, start_brk: int | None = None,
                     brk: int | None = None) -> int:
        sid = self._next_snapshot_id
        self._next_snapshot_id += 1
        rows = snap.frame.with_columns(pl.lit(sid, pl.UInt32).alias("snapshot_id"),
                                       pl.lit(snap.pid, pl.UInt32).alias("pid"))
        self._buf["snapshots"].append(conform(rows, SNAPSHOT_SCHEMA))
        if snap.deep:
            self._buf["deep_vmas"].append(conform(rows, DEEP_VMA_SCHEMA))
        self._buf["snapshot_index"].append(pl.DataFrame([{
            "snapshot_id": sid, "pid": snap.pid, "reason": reason, "t_start_ns": snap.t_start_ns,
            "t_end_ns": snap.t_end_ns, "method": snap.method, "vma_count": snap.frame.height,
            "warnings": "; ".join(snap.warnings) or None, "start_brk": start_brk, "brk": brk,
        }], schema=SNAPSHOT_INDEX_SCHEMA))
        self.maybe_flush()
        return sid

    def add_stacks(self, frame: pl.DataFrame) -> None:
        if frame.height:
            self._buf["stacks"].append(conform(frame, STACK_SCHEMA))
        self.maybe_flush()

    def add_procs(self, frame: pl.DataFrame) -> None:
        if frame.height:
            self._buf["procs"].append(conform(frame, PROC_SCHEMA))
        self.maybe_flush()

    def note_lost(self, count: int, t_from_ns: int, t_to_ns: int) -> None:
        if count > 0:
            self._buf["losses"].append(pl.DataFrame([{"count": count, "t_from_ns": t_from_ns, "t_to_ns": t_to_ns}],
                                                    schema=LOSS_SCHEMA))
            self.meta["lost_count"] += count
        self.maybe_flush()

    def update_meta(self, **kv: Any) -> None:
        self.meta.update(kv)

    # -- writing -------------------------------------------------------------------------------
    def maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def flush(self) -> None:
        # the next flush is due flush_interval_s after this one began, not after it ended: a write
        # slowed down by a busy disk does not stretch the interval of what a kill can lose
        began = time.monotonic()
        for table, frames in self._buf.items():
            if frames:
                self._write_part(table, pl.concat(frames, how="vertical"))
                frames.clear()
        self._write_meta()
        self._last_flush = began

    @property
    def committed(self) -> bool:
        return self.staging is None

    def commit(self) -> None:
        """Give a staged trace its name, replacing (with ``force``) the trace there."""
        if self.staging is None:
            return
        check_replaceable(self.path, force=self.force)  # (again: it may have changed meanwhile)
        parent = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            tmp, name = self.staging.name, self.path.name
            try:
                _renameat2(parent, tmp, name, _RENAME_NOREPLACE)
            except FileExistsError:
                if not self.force:
                    raise VmatraceError(f"{self.path} exists (use --force to overwrite)") from None
                _renameat2(parent, tmp, name, _RENAME_EXCHANGE)  # the old trace is now at tmp
                _remove_trace_dir(parent, tmp, self.path)
        finally:
            os.close(parent)
        self.staging = None

    def discard(self) -> None:
        """Remove a staged trace that is not to be kept (nothing at ``path`` is touched)."""
        if self.staging is None:
            return
        self._close_fds()
        parent = os.open(self.staging.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _remove_trace_dir(parent, self.staging.name, self.staging)
        finally:
            os.close(parent)
        self.staging = None

    def _close_fds(self) -> None:
        if self._closed:
            return
        for fd in self._subfds.values():
            os.close(fd)
        os.close(self._dirfd)
        self._closed = True

    def close(self, **final_meta: Any) -> None:
        if self._closed:
            return
        self.meta.update(final_meta)
        if self.meta.get("end_ns") is None:
            self.meta["end_ns"] = time.monotonic_ns()
        self.meta["complete"] = True
        self.flush()
        self._close_fds()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _subdir(self, table: str) -> int:
        fd = self._subfds.get(table)
        if fd is None:
            with contextlib.suppress(FileExistsError):
                os.mkdir(table, 0o700, dir_fd=self._dirfd)
            fd = os.open(table, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dirfd)
            chown_to_invoker(fd)
            self._subfds[table] = fd
        return fd

    def _write_part(self, table: str, frame: pl.DataFrame) -> None:
        dfd = self._subdir(table)
        n = self._parts[table]
        self._parts[table] = n + 1
        name = f"part-{n:06d}.parquet"
        tmp = f".{name}.tmp"
        fd = safe_create(tmp, force=True, dir_fd=dfd)
        with os.fdopen(fd, "wb") as f:
            frame.write_parquet(f, compression="zstd", compression_level=3, statistics=True)
            f.flush()
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)

    def _write_meta(self) -> None:
        data = json.dumps(self.meta, indent=1, sort_keys=True, default=str).encode()
        fd = safe_create(".meta.json.tmp", force=True, dir_fd=self._dirfd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.rename(".meta.json.tmp", "meta.json", src_dir_fd=self._dirfd, dst_dir_fd=self._dirfd)


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2  # linux/fs.h
_AT_FDCWD = -100


def _renameat2(dfd: int, old: str, new: str, flags: int) -> None:
    """renameat2(2) within one directory; without it (old C library or file system) a
    NOREPLACE rename checks first, and an EXCHANGE moves the old entry aside, then renames."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        if fn(dfd, old.encode(), dfd, new.encode(), flags) == 0:
            return
        e = ctypes.get_errno()
        if e not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(e, os.strerror(e), new)
    try:
        os.stat(new, dir_fd=dfd, follow_symlinks=False)
        exists = True
    except FileNotFoundError:
        exists = False
    if flags == _RENAME_NOREPLACE:
        if exists:
            raise FileExistsError(errno.EEXIST, "exists", new)
        os.rename(old, new, src_dir_fd=dfd, dst_dir_fd=dfd)
        return
    aside = f"{old}.old"
    os.rename(new, aside, src_dir_fd=dfd, dst_dir_fd=dfd)
    os.rename(old, new, src_dir_fd=dfd, dst_dir_fd=dfd)
    os.rename(aside, old, src_dir_fd=dfd, dst_dir_fd=dfd)


def check_replaceable(path: Path, *, force: bool) -> None:
    """Refuse, before anything is written, an output that exists (without ``force``), is a
    symlink, or is something other than a vmatrace trace (with ``force``)."""
    if os.path.islink(path):
        raise VmatraceError(f"{path} is a symlink: refusing to write through it")
    if not os.path.lexists(path):
        return
    if not force:
        raise VmatraceError(f"{path} exists (use --force to overwrite)")
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise VmatraceError(f"{path} exists and is not a vmatrace trace: refusing to replace it") from None
    try:
        _check_trace_dir(dfd, path)
    finally:
        os.close(dfd)


def _check_trace_dir(dfd: int, path: Path) -> list[tuple[str, bool]]:
    """The entries of a trace directory, after checking it holds a vmatrace meta.json and
    nothing that is not part of a trace (else VmatraceError)."""
    try:
        meta = json.loads(_read_small(dfd, "meta.json", limit=64 << 20))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError
    except (OSError, ValueError, RecursionError):
        raise VmatraceError(f"{path} exists and is not a vmatrace trace: refusing to replace it") from None
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.scandir(dfd) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for name, is_dir in entries:
        if is_dir and name in TABLES:
            sub = os.open(name, flags, dir_fd=dfd)
            try:
                with os.scandir(sub) as it:
                    strays = [e.name for e in it if not (_PART_RE.match(e.name) or e.name.endswith(".parquet.tmp"))]
            finally:
                os.close(sub)
            if strays:
                raise VmatraceError(f"{path}/{name} holds {strays[0]!r}, which is not part of a trace: "
                                    "refusing to replace it")
        elif is_dir or name not in ("meta.json", ".meta.json.tmp"):
            raise VmatraceError(f"{path} holds {name!r}, which is not part of a trace: refusing to replace it")
    return entries


def _remove_trace_dir(parent: int, name: str, shown: Path) -> None:
    """Empty (see _clear_trace_dir) and remove the trace directory `name` of `parent`."""
    dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        _clear_trace_dir(dfd, shown)
    finally:
        os.close(dfd)
    os.rmdir(name, dir_fd=parent)


def _clear_trace_dir(dfd: int, path: Path) -> None:
    """Empty an existing trace directory for ``--force``, through its fd, never following links.

    Only a directory that holds a vmatrace meta.json is emptied, and only of what a trace holds
    (meta.json and the table directories' chunk files); anything else makes us refuse.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    for name, is_dir in _check_trace_dir(dfd, path):
        if is_dir:
            sub = os.open(name, flags, dir_fd=dfd)
            try:
                with os.scandir(sub) as it:
                    names = [e.name for e in it]
                for n in names:
                    if _PART_RE.match(n) or n.endswith(".parquet.tmp"):  # (never what appeared since)
                        os.unlink(n, dir_fd=sub)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=dfd)
        else:
            os.unlink(name, dir_fd=dfd)


def _read_small(dfd: int | None, name: str, limit: int = 1 << 30) -> bytes:
    """Read a regular file without following a symlink or blocking on a FIFO."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > limit:
            raise OSError(errno.EFBIG, "too large")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class Trace:
    path: Path
    meta: dict[str, Any]
    events: pl.DataFrame
    snapshots: pl.DataFrame
    snapshot_index: pl.DataFrame
    stacks: pl.DataFrame
    procs: pl.DataFrame
    losses: pl.DataFrame
    warnings: list[str] = field(default_factory=list)
    deep_vmas: pl.DataFrame | None = None  # the deep_vmas table (its columns are also joined into snapshots)

    @property
    def damaged(self) -> bool:
        return bool(self.warnings)

    def snapshot(self, snapshot_id: int) -> pl.DataFrame:
        """The VMA rows of one snapshot (VMA_SCHEMA, plus DEEP_SCHEMA when the trace has deep
        snapshots), sorted by start. A plain snapshot of a trace that also has deep ones comes without
        the deep columns."""
        f = (self.snapshots.filter(pl.col("snapshot_id") == snapshot_id)
             .drop("snapshot_id", "pid").sort("start"))
        if "vm_flags" in f.columns and f.height and f.get_column("vm_flags").null_count() == f.height:
            f = f.drop(*DEEP_SCHEMA)
        return f


def _err(p: Path, what: str, e: OSError) -> TraceError:
    if e.errno == errno.ENOENT:
        return TraceError(f"{p}: no such trace")
    if e.errno == errno.ENOTDIR:
        return TraceError(f"{p} is not a vmatrace trace (a trace is a directory holding meta.json)")
    if e.errno == errno.ELOOP:
        return TraceError(f"{p}: {what} is a symlink: refusing to follow it")
    return TraceError(f"cannot read {what}: {e.strerror}")


def _read_meta(p: Path, dfd: int) -> dict[str, Any]:
    try:
        raw = _read_small(dfd, "meta.json", limit=64 << 20)
    except FileNotFoundError:
        raise TraceError(f"{p} is not a vmatrace trace: it has no meta.json") from None
    except OSError as e:
        raise _err(p, f"{p}/meta.json", e) from None
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise TraceError(f"{p}/meta.json is damaged: not valid JSON ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise TraceError(f"{p}/meta.json is damaged: nested too deeply to be a trace's metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise TraceError(f"{p} is not a vmatrace trace: meta.json format is {found!r}")
    ver = meta.get("format_version")
    if ver != FORMAT_VERSION:
        raise TraceError(f"{p}: trace format version {ver!r} is not supported (this vmatrace reads version {FORMAT_VERSION})")
    for key, types in (("event_count", int), ("lost_count", int), ("complete", bool), ("pids", list)):
        if key in meta and not isinstance(meta[key], types):
            raise TraceError(f"{p}/meta.json is damaged: {key} is {meta[key]!r}")
    return meta


MAX_CHUNK_BYTES = 4 << 30  # far above what one flush of a recorder writes


def _read_chunk(dfd: int, name: str) -> pl.DataFrame:
    """One Parquet chunk, checked before it is read: a regular file, not sparse (a chunk written
    by vmatrace never is), a Parquet footer that fits; polars then reads it through the open fd
    (memory-mapped, not copied whole into memory)."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > MAX_CHUNK_BYTES:
            raise OSError(errno.EFBIG, f"{st.st_size >> 20} MiB, more than a chunk can be")
        if st.st_size > 1 << 20 and st.st_blocks * 512 < st.st_size // 2:
            raise ValueError(f"a sparse file ({st.st_size >> 20} MiB, {st.st_blocks >> 11} MiB on disk): "
                             "not a chunk vmatrace wrote")
        if st.st_size < 12:
            raise ValueError("too short for Parquet")
        tail = os.pread(fd, 8, st.st_size - 8)
        head = os.pread(fd, 4, 0)
        footer = int.from_bytes(tail[:4], "little")
        if head != b"PAR1" or tail[4:] != b"PAR1" or footer > st.st_size - 12:
            raise ValueError("not a Parquet file (no PAR1 header and footer)")
        if st.st_size <= 16 << 20:
            return pl.read_parquet(io.BytesIO(os.pread(fd, st.st_size, 0)))
        return pl.read_parquet(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _read_table(p: Path, dfd: int, table: str, schema: dict[str, pl.DataType],
                warnings: list[str]) -> pl.DataFrame:
    frames = []
    try:
        sub = os.open(table, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        return pl.DataFrame(schema=schema)
    except OSError as e:
        warnings.append(f"{table}/: unreadable ({e.strerror}), table skipped")
        return pl.DataFrame(schema=schema)
    try:
        with os.scandir(sub) as it:
            names = sorted(e.name for e in it)
        for name in names:
            if name.endswith(".tmp"):
                warnings.append(f"{table}/{name}: unfinished chunk (the writer was stopped while writing it)")
                continue
            if not _PART_RE.match(name):
                warnings.append(f"{table}/{name}: unexpected file, ignored")
                continue
            try:
                df = _read_chunk(sub, name)
            except OSError as e:
                warnings.append(f"{table}/{name}: unreadable chunk skipped ({e.strerror})")
                continue
            except Exception as e:
                why = " ".join(str(e).split()) or type(e).__name__
                warnings.append(f"{table}/{name}: damaged chunk skipped ({why[:120]})")
                continue
            have = dict(df.schema)
            if have != schema:
                mismatch = _schema_mismatch(table, have, schema)
                if mismatch:
                    warnings.append(f"{table}/{name}: schema differs from format v1 ({mismatch}), chunk skipped")
                    continue
                df = conform(df.select([c for c in have if c in schema]), schema)
            frames.append(df)
    finally:
        os.close(sub)
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def _schema_mismatch(table: str, have: dict[str, pl.DataType], schema: dict[str, pl.DataType]) -> str | None:
    """Why a chunk's schema cannot be read as ``schema``, or None if it can.

    Columns are only ever added to v1 (docs/trace-format.md, "Versioning"): a chunk may lack a
    column added later (it reads as nulls) and may carry a column a newer writer added (ignored).
    A missing original column or a column of another type is damage.
    """
    added = ADDED_COLUMNS.get(table, frozenset())
    for c, t in schema.items():
        if c not in have:
            if c not in added:
                return f"no column {c}"
        elif have[c] != t:
            return f"column {c} is {have[c]}, not {t}"
    return None


def _check_snapshots(index: pl.DataFrame, rows: pl.DataFrame, warnings: list[str]) -> None:
    """Warn where the snapshot index and the snapshot rows disagree (one of them lost a chunk)."""
    if index.height == 0 and rows.height == 0:
        return
    have = rows.group_by("snapshot_id").len() if rows.height else pl.DataFrame(
        schema={"snapshot_id": pl.UInt32(), "len": pl.UInt32()})
    j = index.select("snapshot_id", "vma_count").join(have, on="snapshot_id", how="full", coalesce=True)
    short = j.filter(pl.col("vma_count").is_not_null()
                     & (pl.col("len").fill_null(0).cast(pl.Int64) != pl.col("vma_count").cast(pl.Int64)))
    if short.height:
        ids = ", ".join(str(i) for i in short.get_column("snapshot_id").head(5).to_list())
        warnings.append(f"{short.height} snapshots (ids {ids}{', ...' if short.height > 5 else ''}) have fewer or more "
                        "VMA rows than the index says: their rows are in a damaged or missing chunk")
    orphan = j.filter(pl.col("vma_count").is_null())
    if orphan.height:
        warnings.append(f"{orphan.height} snapshots have VMA rows but no index entry (a damaged or missing "
                        "snapshot_index chunk)")


def read_trace(path: str | os.PathLike[str]) -> Trace:
    """Read and validate a trace. Damaged chunks are skipped and named in ``Trace.warnings``."""
    p = Path(path)
    try:
        dfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise _err(p, str(p), e) from None
    try:
        meta = _read_meta(p, dfd)
        warnings: list[str] = []
        tables = {t: _read_table(p, dfd, t, schema, warnings) for t, schema in TABLES.items()}
    finally:
        os.close(dfd)
    if not meta.get("complete"):
        warnings.append("the trace was not finalized (recorder killed?): up to about a second before its end may be missing")
    _check_snapshots(tables["snapshot_index"], tables["snapshots"], warnings)
    ev = tables["events"]
    if meta.get("complete") and ev.height != meta.get("event_count", ev.height):
        warnings.append(f"meta.json says {meta.get('event_count')} events but the chunks hold {ev.height}")
    if ev.height > 1 and not ev.get_column("seq").is_sorted():
        ev = ev.sort("seq")
    snaps, deep = tables["snapshots"], tables["deep_vmas"]
    if deep.height:
        snaps = (snaps.with_row_index("_row").join(deep.drop("pid"), on=["snapshot_id", "start"], how="left")
                 .sort("_row").drop("_row"))
    return Trace(path=p, meta=meta, events=ev, snapshots=snaps,
                 snapshot_index=tables["snapshot_index"], stacks=tables["stacks"], procs=tables["procs"],
                 losses=tables["losses"], warnings=warnings, deep_vmas=deep)
