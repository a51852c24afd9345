"""``vmatrace record``: trace the address-space changes of a process tree with bcc.

Pipeline (docs/recording.md has the why):

1. compile and attach the BPF program (collectors/bpf/record.bpf.c) with the task_struct offsets of
   the running kernel (collectors/btf.py) and an empty process filter;
2. start the command (stopped before exec, seized with ptrace, its pid put into the filter, then
   released), or seize the given PIDs and put them into the filter, then take their start snapshots;
3. a reader thread (nice -10) empties the ring buffer every few milliseconds
   (collectors/ringbuf.py: numpy, no wakeups); a writer thread turns the batches into EVENT_SCHEMA
   frames for the TraceWriter and takes periodic snapshots; the main thread runs the ptrace loop
   (collectors/ptrace.py), which takes a snapshot at every exec, new child and last exit stop and
   attaches the mmap-lock ordering program when a traced process creates its first thread;
4. at the end (Ctrl-C, SIGTERM, -d elapsed, the tree exited) still-running processes get an end
   snapshot and are detached, the tracepoints are detached in the background, the ring is drained
   a last time, stacks are symbolized, and the trace is closed.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import pwd
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from vmatrace.base import uapi
from vmatrace.base.errors import Interrupted, NoSuchProcess, TargetFailed, UsageError, VmatraceError
from vmatrace.base.events import KIND_CODES
from vmatrace.base.snapshot import kernel_dev_str
from vmatrace.base.trace import check_replaceable

BPF_SOURCE = Path(__file__).resolve().parent / "bpf" / "record.bpf.c"

# Event kinds: wire codes shared with record.bpf.c (K_*), defined once in the base layer.
KINDS = KIND_CODES
_CODE = {name: code for code, name in KINDS.items()}
K_PRCTL, K_FAULT, K_EXEC = _CODE["prctl"], _CODE["fault"], _CODE["exec"]
K_TEXT = 40  # recorder-internal: a string chunk that follows its event (not an event kind)
K_FILE = 41  # recorder-internal: the open file of a mapping, follows its mmap/shmat event
K_PATH = 42  # recorder-internal: a chunk of that open file's path (first sight of the file only)
K_MMAP, K_SHMAT = _CODE["mmap"], _CODE["shmat"]

EVENT_DTYPE = np.dtype([
    ("seq", "<u8"), ("ts", "<u8"), ("pid", "<u4"), ("tid", "<u4"), ("kind", "<u2"), ("flags", "<u2"),
    ("stack_id", "<i4"), ("a", "<u8", (6,)), ("ret", "<i8"),
])
assert EVENT_DTYPE.itemsize == 88

# Counter slots of the BPF `counters` array.
C_SEQ, C_LOST, C_DEDUP, C_STACKFAIL, C_TEXTLOST, C_FILEMISS, C_FILELOST = 0, 1, 2, 3, 4, 5, 6

# Struct members the BPF program reads, by struct; their offsets come from the running kernel's
# BTF and reach the program as -DOFF_<STRUCT>_<MEMBER> (the short prefixes below where the struct
# name is long).
BTF_MEMBERS: dict[str, tuple[str, list[str]]] = {
    "mm_struct": ("MM", ["mm_mt", "start_brk", "brk"]),
    "maple_tree": ("MAPLE_TREE", ["ma_root"]),
    "maple_range_64": ("MR64", ["pivot", "slot", "meta"]),
    "maple_arange_64": ("MA64", ["pivot", "slot", "meta"]),
    "maple_metadata": ("MAPLE_METADATA", ["end"]),
    "vm_area_struct": ("VMA", ["vm_start", "vm_end", "vm_mm", "vm_file"]),
    "file": ("FILE", ["f_inode", "f_path"]),
    "path": ("PATH", ["mnt", "dentry"]),
    "inode": ("INODE", ["i_ino", "i_sb"]),
    "super_block": ("SUPER_BLOCK", ["s_dev", "s_magic"]),
    "dentry": ("DENTRY", ["d_parent", "d_name", "d_op", "d_hash"]),
    "qstr": ("QSTR", ["name"]),
    "dentry_operations": ("DENTRY_OPERATIONS", ["d_dname"]),
    "vfsmount": ("VFSMOUNT", ["mnt_root"]),
    "mount": ("MOUNT", ["mnt", "mnt_parent", "mnt_mountpoint"]),
}

PR_SET_VMA = uapi.PR_SET_VMA
MAP_ANONYMOUS, MAP_SHARED = uapi.MAP_ANONYMOUS, uapi.MAP_SHARED
# records that can follow their event: 5 text chunks, or a K_FILE and up to 24 path chunks
TAIL_RECORDS = 32

DRAIN_INTERVAL_S = 0.005  # reader: ring polling period while events flow (BPF_RB_NO_WAKEUP: no wakeups)
IDLE_POLL_MAX_S = 0.05  # reader: longest polling period when idle
READER_NICE = -10  # reader thread priority (root only)
WRITE_INTERVAL_S = 0.05  # writer: decode + write period

# ---------------------------------------------------------------------------------------------
# Options and checks


@dataclass
class Options:
    command: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    output: str | None = None
    duration: float | None = None
    interval: float | None = None
    stacks: bool = False
    deep: bool = False  # deep snapshots (collectors/deep.py) instead of /proc-only ones
    faults: bool = True
    smaps: bool = True
    buffer_pages: int = 8192
    as_root: bool = False
    lock_order: bool = True
    force: bool = False
    quiet: bool = False
    stack_entries: int = 16384
    fault_dedup_entries: int = 262144
    file_seen_entries: int = 16384
    # the live kernel's probed VMA behaviour (replay.live, given by the record command): stored
    # as meta.kernel_probe so that an offline replay models what this kernel did
    kernel_probe: dict[str, Any] | None = None


def check_options(o: Options) -> None:
    if bool(o.command) == bool(o.pids):
        raise UsageError("give either -p PID ... or -- CMD ARGS (one of them, not both)")
    pages = o.buffer_pages
    if pages < 1 or pages & (pages - 1):
        raise UsageError(f"-b {pages}: the ring buffer size must be a power of two (pages)")
    if o.duration is not None and o.duration <= 0:
        raise UsageError("-d must be a positive number of seconds")
    if o.interval is not None and o.interval <= 0:
        raise UsageError("--interval must be a positive number of seconds")
    from collectors.ptrace import tgid_of, untraceable_reason

    for pid in o.pids:
        if not os.path.exists(f"/proc/{pid}"):
            raise NoSuchProcess(f"no process with PID {pid}")
        why = untraceable_reason(pid)
        if why is not None:
            raise VmatraceError(f"cannot trace: {why}")
        tgid = tgid_of(pid)
        if tgid is not None and tgid != pid:
            raise VmatraceError(f"{pid} is a thread, not a process: pass its process ID ({tgid})")


def check_environment() -> None:
    """One line naming the fix for each thing `record` needs (vmatrace doctor says more)."""
    if os.geteuid() != 0:
        raise VmatraceError("record needs root (BPF and ptrace): run it with sudo (`vmatrace doctor` says more)")
    if not (os.path.isdir("/sys/kernel/tracing/events") or os.path.isdir("/sys/kernel/debug/tracing/events")):
        raise VmatraceError("tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing "
                            "(`vmatrace doctor` says more)")
    try:
        import bcc  # noqa: F401
    except Exception as e:
        raise VmatraceError(f"bcc is not importable ({type(e).__name__}): install python3-bpfcc and run "
                            "scripts/setup.sh (`vmatrace doctor` says more)") from None


def bpf_cflags(o: Options) -> list[str]:
    from collectors.btf import struct_offsets

    off = struct_offsets("task_struct", ["pid", "tgid", "exit_code", "mm"])
    cf = [
        f"-DRINGBUF_PAGES={o.buffer_pages}",
        f"-DOFF_TASK_PID={off['pid']}",
        f"-DOFF_TASK_TGID={off['tgid']}",
        f"-DOFF_TASK_EXIT_CODE={off['exit_code']}",
        f"-DOFF_TASK_MM={off['mm']}",
        *(f"-DOFF_{prefix}_{m.upper()}={v}" for struct, (prefix, members) in BTF_MEMBERS.items()
          for m, v in struct_offsets(struct, members).items()),
        f"-DFILE_SEEN_ENTRIES={o.file_seen_entries}",
        f"-DFAULT_DEDUP_ENTRIES={o.fault_dedup_entries}",
        f"-DSTACK_ENTRIES={o.stack_entries}",
        *(f"-DK_{name.upper()}={code}" for code, name in KINDS.items()),
        f"-DK_TEXT={K_TEXT}", f"-DK_FILE={K_FILE}", f"-DK_PATH={K_PATH}",
    ]
    if o.faults:
        cf.append("-DWITH_FAULTS")
    if o.stacks:
        cf.append("-DWITH_STACKS")
    if o.lock_order:
        mm, write, success = mmap_lock_offsets()
        cf += ["-DWITH_LOCKSEQ", f"-DMMLOCK_OFF_MM={mm}", f"-DMMLOCK_OFF_WRITE={write}",
               f"-DMMLOCK_OFF_SUCCESS={success}"]
    return cf


MMAP_LOCK_TP = "mmap_lock:mmap_lock_acquire_returned"
# x86-64 numbers of the calls ordered by their mmap write-lock acquisition (execve is not: it
# locks the new mm while building it, before its exec event).
LOCKSEQ_SYSCALLS = {
    "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12, "mremap": 25, "madvise": 28, "shmat": 30,
    "shmdt": 67, "mlock": 149, "munlock": 150, "mlockall": 151, "munlockall": 152, "prctl": 157,
    "mlock2": 325, "pkey_mprotect": 329, "process_madvise": 440, "mseal": 462,
}
# x86-64 numbers of the calls that fork: ordered by dup_mmap()'s write lock on the parent's mm
LOCKSEQ_FORKS = {"clone": 56, "fork": 57, "clone3": 435}


def mmap_lock_offsets() -> tuple[int, int, int]:
    """Offsets of mm, write, success in the mmap_lock_acquire_returned record (tracefs format)."""
    for base in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        fmt = Path(base) / "events" / "mmap_lock" / "mmap_lock_acquire_returned" / "format"
        try:
            text = fmt.read_text()
        except FileNotFoundError:
            continue
        except PermissionError:
            raise VmatraceError(f"cannot read {fmt}: tracefs needs root (run with sudo)") from None
        if text:
            offs: dict[str, int] = {}
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("field:"):
                    decl = line.split(";")[0].removeprefix("field:").strip()
                    name = decl.split()[-1].lstrip("*")
                    off = int(line.split("offset:")[1].split(";")[0])
                    offs[name] = off
            try:
                return offs["mm"], offs["write"], offs["success"]
            except KeyError:
                break
    raise VmatraceError("the kernel has no usable mmap_lock:mmap_lock_acquire_returned tracepoint; "
                        "use --no-lock-order")


def bpf_text(o: Options) -> str:
    """The BPF program as compiled: the -D parameters, then the source."""
    head = "".join(f"#define {c[2:].replace('=', ' ', 1)}\n" for c in bpf_cflags(o))
    return f"// cflags of this run\n{head}\n" + BPF_SOURCE.read_text()


# ---------------------------------------------------------------------------------------------
# Decoding ring records into EVENT_SCHEMA frames


def _texts(recs: np.ndarray) -> dict[int, str]:
    """seq -> string from K_TEXT records (56 bytes each, chunk index in flags, length in stack_id)."""
    out: dict[int, bytearray] = {}
    for r in recs[np.argsort(recs["flags"], kind="stable")]:
        out.setdefault(int(r["seq"]), bytearray()).extend(r["a"].tobytes() + r["ret"].tobytes())
    res = {}
    for seq, b in out.items():
        res[seq] = bytes(b).split(b"\0", 1)[0].decode("utf-8", "replace")
    return res


# K_FILE flags (record.bpf.c F_*)
F_PATH, F_DNAME, F_DELETED, F_TRUNCATED = 1, 2, 4, 8
ANON_INODE_FS_MAGIC = 0x09041934  # anon_inodefs: d_dname() prints "anon_inode:NAME"


def _proc_name(b: bytes) -> str:
    # as /proc prints a path (seq_file_path(..., "\n")); non-UTF-8 bytes as \xNN, like the snapshots
    return b.decode("utf-8", "backslashreplace").replace("\n", "\\012")


def path_of(data: bytes, flags: int, magic: int) -> str | None:
    """The path /proc/PID/maps prints for an open file, from the K_PATH bytes of record.bpf.c
    (names from the file up to the root, each NUL-terminated) and its K_FILE flags (d_path())."""
    if flags & F_TRUNCATED:
        return None
    names = [_proc_name(n) for n in data.split(b"\0")[:-1]]
    if flags & F_DNAME:  # the file system's d_dname(): anon_inodefs_dname() or simple_dname()
        if not names:
            return None
        return f"anon_inode:{names[0]}" if magic == ANON_INODE_FS_MAGIC else f"/{names[0]} (deleted)"
    path = "/" + "/".join(reversed(names))
    return path + " (deleted)" if flags & F_DELETED else path


class FileTable:
    """Open files seen in one recording: per-trace ids 1, 2, 3... for kernel struct file addresses.

    An id stands for one open file description (struct file) while it lives: two opens of one
    file get two ids, dup'd and inherited fds the same one. The kernel may reuse a freed file's
    address for a later open; a reused address gets a new id when its inode differs (the K_FILE
    record carries both), the old one otherwise (harmless for replay: nothing maps the freed file
    any more). No address is ever written to the trace.
    """

    def __init__(self) -> None:
        self.ids: dict[tuple[int, int], int] = {}  # (struct file *, struct inode *) -> id
        self.info: dict[int, tuple[str, int, str | None]] = {}  # id -> (dev, ino, path)
        self.truncated = 0
        self._lock = threading.Lock()  # deep snapshots name open files from another thread

    def _id(self, key: tuple[int, int], dev: int, ino: int) -> int:
        """The id of the open file ``key`` (a new one the first time); the caller holds the lock."""
        fid = self.ids.get(key)
        if fid is None:
            fid = self.ids[key] = len(self.ids) + 1
            self.info[fid] = (kernel_dev_str(dev), ino, None)
        return fid

    def identify(self, files: np.ndarray, inodes: np.ndarray, devs: np.ndarray, inos: np.ndarray) -> np.ndarray:
        """The ids of the open files a deep snapshot's VMAs map (0 where none): the numbering of the
        events' file_id, so that a VMA of a deep snapshot and a later mmap of the same open file
        name one file."""
        out = np.zeros(files.size, np.uint32)
        nz = np.flatnonzero(files)
        if not nz.size:
            return out
        pairs = np.ascontiguousarray(np.stack([files[nz], inodes[nz]], axis=1))
        keys, first, inverse = np.unique(pairs, axis=0, return_index=True, return_inverse=True)
        ids = np.empty(len(keys), np.uint32)
        with self._lock:  # Python works per distinct open file, not per VMA
            for k, (key, i) in enumerate(zip(keys.tolist(), first.tolist(), strict=True)):
                ids[k] = self._id((key[0], key[1]), int(devs[nz[i]]), int(inos[nz[i]]))
        out[nz] = ids[inverse.reshape(-1)]
        return out

    def frame(self, recs: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(seq, file_id) of the K_FILE records; their paths (K_PATH records) go into the table."""
        files = recs[recs["kind"] == K_FILE]
        if not files.size:
            return None
        a = files["a"]
        # Python works per distinct open file and per path sent, never per mapping. The key is the
        # (struct file, inode) address pair; a file address seen with two inodes (freed and reused
        # within one batch) is rare, and only then is the slower pair-wise unique needed.
        ptr_keys, first, inverse = np.unique(a[:, 0], return_index=True, return_inverse=True)
        if np.any(a[:, 4] != a[first[inverse], 4]):
            pairs = np.ascontiguousarray(np.stack([a[:, 0], a[:, 4]], axis=1))
            keys, first, inverse = np.unique(pairs, axis=0, return_index=True, return_inverse=True)
        else:
            keys = np.stack([ptr_keys, a[first, 4]], axis=1)
        ids = np.empty(len(keys), np.uint32)
        with self._lock:
            for k, (key, i) in enumerate(zip(keys.tolist(), first.tolist(), strict=True)):
                ids[k] = self._id((key[0], key[1]), int(a[i, 2]), int(a[i, 1]))
        fids = ids[inverse.reshape(-1)]
        with_path = np.flatnonzero(files["flags"] & F_PATH)
        if with_path.size:
            chunks: dict[int, list[tuple[int, bytes]]] = {}
            for r in recs[recs["kind"] == K_PATH]:
                chunks.setdefault(int(r["seq"]), []).append((int(r["flags"]), r["a"].tobytes() + r["ret"].tobytes()))
            for i in with_path.tolist():
                fid = int(fids[i])
                if self.info[fid][2] is not None:
                    continue
                parts = sorted(chunks.get(int(files["seq"][i]), []))
                length = int(files["stack_id"][i])
                if [n for n, _ in parts] != list(range((length + 55) // 56)):
                    continue  # (a chunk lost: a later mapping of this file sends the path again)
                path = path_of(b"".join(c for _, c in parts)[:length], int(files["flags"][i]), int(a[i, 3]))
                if path is None:
                    self.truncated += 1
                dev, ino, _ = self.info[fid]
                self.info[fid] = (dev, ino, path)
        return files["seq"], fids

    def columns(self, recs: np.ndarray, ev_seq: np.ndarray) -> dict[str, pl.Series] | None:
        """file_dev, file_ino, file_path, file_id for events with sequence numbers ``ev_seq``
        (null where no K_FILE record names the event's file)."""
        found = self.frame(recs)
        if found is None:
            return None
        seqs, fids = found
        order = np.argsort(ev_seq, kind="stable")
        pos = np.searchsorted(ev_seq[order], seqs).clip(0, max(len(ev_seq) - 1, 0))
        ok = ev_seq[order][pos] == seqs if len(ev_seq) else np.zeros(len(seqs), bool)
        uniq = np.unique(fids)
        # row 0 of each lookup column is the null of the events without a file
        rank = np.zeros(len(ev_seq), np.uint32)
        rank[order[pos[ok]]] = np.searchsorted(uniq, fids[ok]) + 1
        info = [self.info[int(f)] for f in uniq]
        idx = pl.Series(rank)
        return {
            "file_dev": pl.Series([None, *(d for d, _, _ in info)], dtype=pl.Utf8).gather(idx),
            "file_ino": pl.Series([None, *(i for _, i, _ in info)], dtype=pl.UInt64).gather(idx),
            "file_path": pl.Series([None, *(p for _, _, p in info)], dtype=pl.Utf8).gather(idx),
            "file_id": pl.Series([None, *uniq.tolist()], dtype=pl.UInt32).gather(idx),
        }


def decode(recs: np.ndarray, raced: dict[int, int] | None = None, files: FileTable | None = None) -> pl.DataFrame:
    """EVENT_SCHEMA frame of ring records (K_TEXT records folded into the `text` of their event,
    K_FILE and K_PATH records into its file_* columns through `files`, which lives as long as the
    recording)."""
    from vmatrace.base.events import EV_RACED_SNAPSHOT, with_populates
    from vmatrace.base.trace import EVENT_SCHEMA, conform

    kinds = recs["kind"]
    is_text = kinds == K_TEXT
    texts = _texts(recs[is_text]) if is_text.any() else {}
    aux = is_text | (kinds == K_FILE) | (kinds == K_PATH)
    ev = recs[~aux]
    kind = ev["kind"]
    a = ev["a"]
    ret = ev["ret"]
    flags = np.zeros(len(ev), np.uint16)
    if raced:
        pids = ev["pid"]
        for pid, t_end in raced.items():
            flags |= np.where((pids == pid) & (ev["ts"] <= t_end), EV_RACED_SNAPSHOT, 0).astype(np.uint16)
    names = pl.Series("kind", kind).replace_strict(KINDS, default="unknown", return_dtype=pl.Utf8)
    cols: dict[str, Any] = {
        "seq": ev["seq"], "ts_ns": ev["ts"], "pid": ev["pid"], "tid": ev["tid"], "kind": names,
        "a0": a[:, 0], "a1": a[:, 1], "a2": a[:, 2], "a3": a[:, 3], "a4": a[:, 4], "a5": a[:, 5],
        "ret": ret, "flags": flags,
    }
    frame = pl.DataFrame(cols)
    stack = ev["stack_id"]
    if (stack >= 0).any():  # (otherwise conform() adds an all-null column)
        frame = frame.with_columns(pl.Series("stack_id", stack).set(pl.Series(stack < 0), None))
    if (kinds == K_FILE).any():
        # (positional: before any join, which need not keep the row order)
        fcols = (files or FileTable()).columns(recs, ev["seq"])
        if fcols is not None:
            frame = frame.with_columns(**{k: v.alias(k) for k, v in fcols.items()})
    if texts:
        tf = pl.DataFrame({"seq": list(texts.keys()), "text": list(texts.values())},
                          schema={"seq": pl.UInt64, "text": pl.Utf8})
        frame = frame.join(tf, on="seq", how="left")
    seq = ev["seq"]
    if seq.size > 1 and not bool(np.all(seq[1:] > seq[:-1])):
        frame = frame.sort("seq")  # calls ordered at lock acquisition are committed at their return
    return with_populates(conform(frame, EVENT_SCHEMA))


# ---------------------------------------------------------------------------------------------
# The recorder


class _Stop(Exception):
    pass


@dataclass
class ProcInfo:
    pid: int
    ppid: int = 0
    comm: str | None = None
    cmdline: str | None = None
    start_ns: int | None = None
    exit_ns: int | None = None
    exit_code: int | None = None
    how_ended: str | None = None


def _cpu_s() -> float:
    """CPU seconds (user + system) of the recorder itself, all threads, not its children."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _missing_interpreter(exe: str) -> str:
    """Why an existing file fails to exec with ENOENT: its #! or ELF interpreter is missing."""
    try:
        with open(exe, "rb") as f:
            head = f.read(256)
    except OSError:
        head = b""
    if head.startswith(b"#!"):
        interp = head[2:].split(b"\n", 1)[0].strip().decode(errors="replace")
        return f"its interpreter ({interp!r} on its #! line) does not exist"
    if head.startswith(b"\x7fELF"):
        return "its ELF interpreter (the dynamic loader it names) does not exist"
    return os.strerror(errno.ENOENT)


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().replace(b"\0", b" ").strip().decode("utf-8", "replace")
    except OSError:
        return None


class Recorder:
    """One recording. :meth:`run` returns the process exit code for the CLI."""

    def __init__(self, opts: Options) -> None:
        self.o = opts
        self.bpf: Any = None
        self.ring: Any = None
        self.writer: Any = None
        self.tracer: Any = None
        self.lock = threading.Lock()  # serializes writer calls between the two threads
        self.stop = threading.Event()
        self.waiting = False
        self.raced: dict[int, int] = {}  # pid -> t_end of a start snapshot taken while it ran
        self.ending = threading.Event()  # the end snapshots are being taken: no periodic one now
        self.periodic_lock = threading.Lock()  # held while periodic snapshots are taken
        self.stack_pids: set[tuple[int, int]] = set()
        self.last_snapshot: dict[int, pl.DataFrame] = {}
        self.procs: dict[int, ProcInfo] = {}
        self.procs_written: set[int] = set()
        self.events = 0
        self.faults = 0
        self.lost = 0
        self.snapshots = 0
        self.snapshot_errors: list[str] = []
        self.exit_missing: dict[int, str] = {}  # pid -> why it has no exit snapshot
        self.drain_error: BaseException | None = None
        self.carry: np.ndarray = np.empty(0, dtype=EVENT_DTYPE)
        self.raw: collections.deque[np.ndarray] = collections.deque()
        self.loss_windows: collections.deque[tuple[int, int, int]] = collections.deque()
        self.lost_seen = 0
        self.t_last_pull = time.monotonic_ns()
        self.ended_by = "the traced processes exited"
        self.child: int | None = None
        self.launch_error: str | None = None
        self.load_cpu_s = 0.0
        self.lock_order_since_ns: int | None = None
        self.pre_exec: int | None = None  # the launched child until its exec event (event stream)
        self.started = False  # the command is running (its exec stop was seen), or PIDs were seized
        self.commit_error: str | None = None
        self._go_w = self._err_r = -1
        self.exe: str | None = None
        self.files = FileTable()
        self.deep: Any = None  # collectors.deep.DeepCollector with --deep

    # -- BPF -------------------------------------------------------------------------------------
    def load_bpf(self) -> None:
        from bcc import BPF

        from collectors.ringbuf import RingReader

        try:
            self.bpf = BPF(src_file=str(BPF_SOURCE).encode(), cflags=bpf_cflags(self.o))
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise VmatraceError(f"cannot load the BPF program: {first} (`vmatrace doctor` says more)") from None
        if self.o.lock_order:
            nrs = self.bpf["lockseq_nrs"]
            for nr in LOCKSEQ_SYSCALLS.values():
                nrs[nrs.Key(nr)] = nrs.Leaf(1)
            for nr in LOCKSEQ_FORKS.values():
                nrs[nrs.Key(nr)] = nrs.Leaf(2)
        self.ring = RingReader(self.bpf["events"].map_fd, self.o.buffer_pages * os.sysconf("SC_PAGE_SIZE"),
                               EVENT_DTYPE)

    def enable_lock_order(self) -> None:
        """Attach the mmap-lock ordering program (once a traced process has a second thread)."""
        if not self.o.lock_order or self.lock_order_since_ns is not None:
            return
        self.bpf.attach_tracepoint(tp=MMAP_LOCK_TP.encode(), fn_name=b"vmat_mmap_lock_acquired")
        self.lock_order_since_ns = time.monotonic_ns()

    def on_new_thread(self, tgid: int) -> None:
        self.enable_lock_order()

    def filter_add(self, tgid: int) -> None:
        procs = self.bpf["procs"]
        procs[procs.Key(tgid)] = procs.Leaf(0)

    def counter(self, slot: int) -> int:
        c = self.bpf["counters"]
        return int(c[c.Key(slot)].value)

    # -- snapshots -------------------------------------------------------------------------------
    def snapshot(self, pid: int, reason: str, *, task: int | None = None) -> Any:
        from collectors.procmaps import read_snapshot

        try:
            if self.deep is not None:
                from collectors.deep import DeepRaceError

                try:
                    snap = self.deep.snapshot(pid, task=task, smaps=self.o.smaps, helper=False)
                except DeepRaceError as e:
                    # a running process that maps and unmaps faster than a deep snapshot's two
                    # reads: a plain snapshot rather than none (a trace without a start state
                    # cannot be replayed); the trace says which snapshot is not deep and why
                    snap = read_snapshot(pid, smaps=self.o.smaps, task=task, helper=False)
                    self.snapshot_errors.append(f"{reason} snapshot of {pid}: {e}: a plain snapshot instead")
            else:  # no helper process: the ptrace loop reaps every child (waitpid(-1))
                snap = read_snapshot(pid, smaps=self.o.smaps, task=task, helper=False)
        except VmatraceError as e:
            if reason in ("periodic", "end") and not os.path.exists(f"/proc/{pid}"):
                return None  # it just exited: its exit snapshot is (being) taken
            self.snapshot_errors.append(f"{reason} snapshot of {pid}: {e}")
            return None
        start_brk, brk = self.brk_of(pid)
        with self.lock:
            self.writer.add_snapshot(snap, reason, start_brk=start_brk, brk=brk)
        self.snapshots += 1
        if self.o.stacks:  # (kept only to symbolize stacks at the end)
            self.last_snapshot[pid] = snap.frame
        return snap

    def brk_of(self, pid: int) -> tuple[int | None, int | None]:
        """(mm->start_brk, mm->brk) of a traced process as the BPF program last saw them (at its
        exec, fork, brk and PR_SET_MM calls, or its first event after -p attached it); start_brk
        from /proc/PID/stat (field 47) while the program has not seen the process yet."""
        procs = self.bpf["procs"]
        try:
            v = procs[procs.Key(pid)]
            if v.start_brk:
                return int(v.start_brk), int(v.brk)
        except KeyError:
            pass
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            return int(fields[47 - 3]), None  # (fields 1 and 2, pid and comm, precede ")")
        except (OSError, IndexError, ValueError):
            return None, None

    # -- ptrace callbacks (main thread, tracee stopped) -----------------------------------------
    def _proc(self, pid: int) -> ProcInfo:
        p = self.procs.get(pid)
        if p is None:
            p = self.procs[pid] = ProcInfo(pid, start_ns=time.monotonic_ns())
        return p

    def _fill_names(self, pid: int) -> None:
        p = self._proc(pid)
        p.comm = _read_text(f"/proc/{pid}/comm") or p.comm
        p.cmdline = _read_text(f"/proc/{pid}/cmdline") or p.cmdline

    def on_new_process(self, tgid: int, parent: int) -> None:
        p = self._proc(tgid)
        p.ppid = parent
        self._fill_names(tgid)
        self.snapshot(tgid, "start")

    def on_exec(self, tgid: int) -> None:
        if tgid == self.child and not self.started:
            self.command_started()
        self._fill_names(tgid)
        self.snapshot(tgid, "start")

    def command_started(self) -> None:
        """The command runs (or the PIDs are held): only now does the trace take its name,
        replacing (--force) an older one."""
        self.started = True
        with self.lock:
            try:
                self.writer.commit()
            except (OSError, VmatraceError) as e:  # recording goes on; the end says where it is
                self.commit_error = str(e)

    def on_last_exit(self, tgid: int, tid: int, status: int) -> None:
        from collectors.ptrace import describe_status

        if tgid == self.child and not self.started:
            self.launch_failed(status)
            return
        errors = len(self.snapshot_errors)
        if self.snapshot(tgid, "exit", task=tid) is None:
            why = self.snapshot_errors.pop(errors) if len(self.snapshot_errors) > errors else "unreadable"
            self.exit_snapshot_missing(tgid, f"its exit snapshot could not be read ({why})")
        p = self._proc(tgid)
        p.exit_ns = time.monotonic_ns()
        p.exit_code, p.how_ended = describe_status(status)
        self.write_procs([tgid])

    def on_gone(self, tgid: int, status: int) -> None:
        from collectors.ptrace import describe_status

        if tgid == self.child and not self.started:
            return
        p = self._proc(tgid)
        if p.how_ended is None:
            # no exit stop was handled: the process ended without one that could be read
            p.exit_ns = time.monotonic_ns()
            p.exit_code, p.how_ended = describe_status(status)  # (the leader's status is the process's)
            self.exit_snapshot_missing(tgid, "no thread stopped at exit while the address space was still there")
        self.write_procs([tgid])

    def exit_snapshot_missing(self, pid: int, why: str) -> None:
        """Say in the trace, at once (a killed recorder keeps it), that process ``pid`` ended
        without an exit snapshot: meta.exit_snapshot_missing and a record warning."""
        if pid in self.exit_missing:
            return
        self.exit_missing[pid] = why
        with self.lock:
            self.writer.update_meta(exit_snapshot_missing=sorted(self.exit_missing))

    # -- draining (drain thread) ----------------------------------------------------------------
    # -- draining: a reader thread empties the ring, a writer thread decodes and writes ----------
    def pull(self) -> int:
        """Reader thread: move committed records out of the ring (fast: numpy copies only)."""
        recs = self.ring.drain()
        if recs.size:
            self.raw.append(recs)
        now = time.monotonic_ns()
        lost = self.counter(C_LOST)
        if lost > self.lost_seen:
            self.loss_windows.append((lost - self.lost_seen, self.t_last_pull, now))
            self.lost_seen = lost
        self.t_last_pull = now
        return int(recs.size)

    def reader_loop(self) -> None:
        capacity = self.ring.size // self.ring.rec_size
        # Poll fast while events flow; when idle back off, but never longer than a third of the time
        # the fastest producer (~1.5 M events/s here) needs to fill the ring.
        idle_max = min(IDLE_POLL_MAX_S, max(DRAIN_INTERVAL_S, capacity / 4_500_000))
        sleep = DRAIN_INTERVAL_S
        # The reader must get a CPU when the machine is busy, or the ring overflows: raise its
        # priority (it sleeps most of the time and uses ~0.1 µs per event when it runs).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), READER_NICE)
        try:
            while not self.stop.is_set():
                n = self.pull()
                if n >= capacity // 4:
                    continue  # a busy ring is drained again at once
                sleep = DRAIN_INTERVAL_S if n else min(idle_max, sleep * 1.5)
                time.sleep(sleep)
        except BaseException as e:  # reported by the main thread
            self._thread_failed(e)

    def process(self, *, final: bool = False) -> int:
        """Writer thread: decode what the reader pulled and hand it to the TraceWriter."""
        while self.loss_windows:
            n, t_from, t_to = self.loss_windows.popleft()
            with self.lock:
                self.writer.note_lost(n, t_from, t_to)
            self.lost += n
        batches = [self.carry] if self.carry.size else []
        while self.raw:
            batches.append(self.raw.popleft())
        self.carry = np.empty(0, dtype=EVENT_DTYPE)
        if not batches:
            return 0
        recs = np.concatenate(batches) if len(batches) > 1 else batches[0]
        if not final:
            # An exec (or PR_SET_VMA) event's K_TEXT records, and a mapping's K_FILE and K_PATH
            # records, are committed right after it: if the batch ends within reach of one, keep
            # that tail for the next batch.
            tail = recs[-TAIL_RECORDS:]
            tk = tail["kind"]
            wants = (tk == K_EXEC) | ((tk == K_PRCTL) & (tail["a"][:, 0] == PR_SET_VMA)) | (tk == K_SHMAT) \
                | ((tk == K_MMAP) & (((tail["a"][:, 3] & MAP_ANONYMOUS) == 0) | ((tail["a"][:, 3] & MAP_SHARED) != 0)))
            if wants.any():
                cut = recs.size - tail.size + int(np.flatnonzero(wants)[0])
                self.carry = recs[cut:].copy()
                recs = recs[:cut]
                if not recs.size:
                    return 0
        frame = decode(recs, self.raced, self.files)
        if self.pre_exec is not None:
            frame = self._drop_pre_exec(frame)
        if self.o.stacks:
            sp = frame.filter(pl.col("stack_id").is_not_null()).select("pid", "stack_id").unique()
            self.stack_pids.update(sp.iter_rows())
        n = frame.height
        self.events += n
        self.faults += int((frame.get_column("kind") == "fault").sum())  # (what the trace holds)
        with self.lock:
            self.writer.add_events(frame)
        return n

    def _drop_pre_exec(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Drop the launched child's events before its exec: they are the recorder's own forked
        copy (copy-on-write faults of Python), not the command."""
        child = self.pre_exec
        mine = pl.col("pid") == child
        execs = frame.filter(mine & (pl.col("kind") == "exec"))
        if execs.height:
            self.pre_exec = None
            return frame.filter(~mine | (pl.col("seq") >= execs.get_column("seq").min()))
        return frame.filter(~mine)

    def writer_loop(self) -> None:
        next_snap = time.monotonic() + self.o.interval if self.o.interval else None
        try:
            while not self.stop.is_set():
                self.process()
                with self.lock:
                    self.writer.maybe_flush()
                if next_snap is not None and time.monotonic() >= next_snap:
                    next_snap += self.o.interval or 0
                    with self.periodic_lock:
                        for pid in list(self.live_pids()):
                            if self.ending.is_set():
                                break  # the end snapshots are next: none after them
                            self.snapshot(pid, "periodic")
                self.stop.wait(WRITE_INTERVAL_S)
        except BaseException as e:  # reported by the main thread
            self._thread_failed(e)

    def _thread_failed(self, e: BaseException) -> None:
        if self.drain_error is None:
            self.drain_error = e
        self.stop.set()
        os.kill(os.getpid(), signal.SIGTERM)

    def live_pids(self) -> list[int]:
        t = self.tracer
        return [] if t is None else [pid for pid, p in list(t.procs.items()) if p.threads and not p.final_done]

    # -- launching -------------------------------------------------------------------------------
    def find_command(self) -> str:
        """The executable the command names (checked before anything is loaded or created)."""
        import shutil

        cmd = self.o.command
        exe = shutil.which(cmd[0]) if "/" not in cmd[0] else cmd[0]
        if exe is None or not os.path.exists(exe):
            raise TargetFailed(f"{cmd[0]}: command not found")
        if os.path.isdir(exe):
            raise TargetFailed(f"{cmd[0]} is a directory, not a command")
        return exe

    def launch(self) -> int:
        """Fork the command, stopped before exec; seize it; return its pid (not yet released)."""
        cmd = self.o.command
        exe = self.exe or self.find_command()
        uid, gid = self._run_as()
        groups: list[int] | None = None
        env = dict(os.environ)
        if uid != 0:
            try:
                pw = pwd.getpwuid(uid)
                groups = os.getgrouplist(pw.pw_name, gid)
                env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
            except KeyError:
                groups = [gid]
        go_r, go_w = os.pipe()
        # the child's exec error comes back on this pipe; the recorder reads it only at the
        # child's exit stop (where it is complete), never waiting on it: a tracee in its exit stop
        # keeps the write end open, so reading to EOF would wait for ever
        err_r, err_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        pid = os.fork()
        if pid == 0:  # child: only simple calls from here on
            try:
                os.close(go_w)
                os.close(err_r)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                if groups is not None:
                    os.setgroups(groups)
                    os.setgid(gid)
                    os.setuid(uid)
                # wait until the recorder has seized us and filters our pid; EOF = the recorder died
                if os.read(go_r, 1) != b"x":
                    os._exit(127)
                os.close(go_r)
                os.execve(exe, cmd, env)
            except OSError as e:
                os.write(err_w, f"{e.strerror}".encode())
            finally:
                os._exit(127)
        os.close(go_r)
        os.close(err_w)
        self._go_w, self._err_r = go_w, err_r
        return pid

    def _run_as(self) -> tuple[int, int]:
        from vmatrace.base.safeio import invoking_user

        if self.o.as_root:
            return 0, 0
        return invoking_user()

    def release(self) -> None:
        """Let the seized child go on to exec the command (nothing here waits)."""
        os.write(self._go_w, b"x")
        os.close(self._go_w)
        self._go_w = -1

    def launch_failed(self, status: int) -> None:
        """The launched child ended before its exec: say why (its exec error, else its status)."""
        from collectors.ptrace import describe_status

        err = b""
        with contextlib.suppress(OSError):  # (written before its exit: complete now, or empty)
            err = os.read(self._err_r, 4096)
        cmd = self.o.command[0]
        if err:
            why = err.decode(errors="replace")
            if why == os.strerror(errno.ENOENT) and self.exe and os.path.exists(self.exe):
                why = _missing_interpreter(self.exe)
            self.launch_error = f"cannot run {cmd}: {why}"
        else:
            self.launch_error = f"{cmd} did not start ({describe_status(status)[1]} before its exec)"

    # -- main ------------------------------------------------------------------------------------
    def default_output(self) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        what = os.path.basename(self.o.command[0]) if self.o.command else f"pid{self.o.pids[0]}"
        return f"vmatrace-{what}-{stamp}.vmat"

    def _handler(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGALRM:
            self.ended_by = f"-d {self.o.duration:g} s elapsed"
        elif signum == signal.SIGINT:
            self.ended_by = "Ctrl-C"
        elif self.drain_error is None:
            self.ended_by = f"signal {signal.Signals(signum).name}"
        self.stop.set()
        if self.waiting:
            raise _Stop

    def run(self) -> int:
        from collectors.ptrace import Tracer
        from vmatrace.base.trace import TraceWriter

        o = self.o
        check_options(o)
        check_environment()
        out = o.output or self.default_output()
        # (the staged TraceWriter checks again; this only fails before the BPF program is built)
        check_replaceable(Path(out), force=o.force)
        if o.command:
            self.exe = self.find_command()
        cpu0 = _cpu_s()
        self.load_bpf()
        if o.deep:
            from collectors.deep import DeepCollector

            self.deep = DeepCollector()
            self.deep.file_ids = self.files.identify  # one numbering of open files in the trace
        self.load_cpu_s = _cpu_s() - cpu0
        self.tracer = t = Tracer()
        t.on_new_process = self.on_new_process
        t.on_exec = self.on_exec
        t.on_last_exit = self.on_last_exit
        t.on_gone = self.on_gone
        t.on_new_thread = self.on_new_thread
        meta: dict[str, Any] = {
            "collector": "bcc",
            "cmdline": shlex.join(o.command) if o.command else None,
            "pids": list(o.pids),
            "comm": os.path.basename(o.command[0]) if o.command else _read_text(f"/proc/{o.pids[0]}/comm"),
            "record_options": {"faults": o.faults, "stacks": o.stacks, "interval": o.interval,
                               "buffer_pages": o.buffer_pages, "lock_order": o.lock_order,
                               "smaps": o.smaps, "duration": o.duration, "deep": o.deep},
            "kernel_probe": o.kernel_probe,
            # deep_vmas.file_id and events.file_id are one numbering of open files
            "file_ids_shared": bool(o.deep),
            "event_order": ("seq = mmap write-lock acquisition order once a process has threads "
                            "(from lock_order_since_ns), else syscall return order") if o.lock_order
            else "seq = syscall return order",
        }
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM, signal.SIGHUP)}
        for s in old:
            signal.signal(s, self._handler)
        threads = [threading.Thread(target=self.reader_loop, name="vmatrace-reader", daemon=True),
                   threading.Thread(target=self.writer_loop, name="vmatrace-writer", daemon=True)]
        try:
            if o.command:
                self.writer = TraceWriter(out, meta, force=o.force, staged=True)
                self.child = self.launch()
                try:
                    t.seize_thread(self.child, self.child)
                except OSError as e:
                    os.kill(self.child, signal.SIGKILL)
                    os.waitpid(self.child, 0)
                    self.child = None
                    raise VmatraceError(f"cannot ptrace the command: {e.strerror}") from None
                self._proc(self.child).ppid = os.getpid()
                self.pre_exec = self.child
                self.filter_add(self.child)
                self.writer.update_meta(pids=[self.child])
            else:
                if any(len(os.listdir(f"/proc/{pid}/task")) > 1 for pid in o.pids):
                    self.enable_lock_order()
                for pid in o.pids:
                    self.filter_add(pid)  # attach first, then snapshot: nothing falls in between
                for pid in o.pids:
                    t.seize_process(pid)
                self.writer = TraceWriter(out, meta, force=o.force, staged=True)
                for pid in o.pids:
                    self._fill_names(pid)
                    # every thread stopped while the start snapshot is read: one state, which a
                    # deep snapshot reads at its first attempt (a thread that does not stop leaves
                    # the read racing with its calls: the events up to its end are flagged)
                    held, running = t.hold(pid)
                    try:
                        snap = self.snapshot(pid, "start")
                    finally:
                        t.release(held)
                    if running:
                        self.snapshot_errors.append(
                            f"start snapshot of {pid}: {len(running)} thread(s) did not stop within 1 s "
                            f"(TID {', '.join(map(str, sorted(running)[:5]))}): read while they ran")
                    if snap is not None:
                        self.raced[pid] = snap.t_end_ns
                self.command_started()
            for th in threads:
                th.start()
            if o.duration:
                signal.setitimer(signal.ITIMER_REAL, o.duration)
            if not o.quiet:
                what = f"`{shlex.join(o.command)}`" if o.command else "PID " + ", ".join(map(str, o.pids))
                print(f"Tracing VMA changes of {what} and its children into {out}... Ctrl-C to end.",
                      file=sys.stderr, flush=True)
            if o.command and not self.stop.is_set():  # (interrupted meanwhile: it is killed, never run)
                self.release()
            self.trace_loop()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.finish(threads)
            if self.deep is not None:
                self.deep.close()
            for s, h in old.items():
                signal.signal(s, h)
        if not self.started:
            # the command never ran: nothing was recorded, no trace is left, an older one is kept
            if self.launch_error:
                raise TargetFailed(self.launch_error + " (nothing recorded; no trace written)")
            if self.ended_by == "Ctrl-C" or self.ended_by.startswith("signal"):
                raise Interrupted(f"interrupted ({self.ended_by}) before {o.command[0]} started: nothing recorded")
            raise TargetFailed(f"{o.command[0]} did not start: nothing recorded")
        if self.drain_error is not None:
            raise VmatraceError(f"recording failed while draining events: {self.drain_error}")
        if not o.quiet:
            self.print_summary(out)
        if self.commit_error:
            staged = self.writer.staging
            raise VmatraceError(f"the trace could not be named {out} ({self.commit_error}): it is in {staged}")
        return 0

    def trace_loop(self) -> None:
        t = self.tracer
        while not self.stop.is_set():
            try:
                self.waiting = True
                if self.stop.is_set():
                    break
                more = t.wait_one()
            except _Stop:
                break
            finally:
                self.waiting = False
            if not more:
                break

    def finish(self, threads: list[threading.Thread]) -> None:
        if self.writer is None:
            if self.child is not None:  # launched, but no writer: it must not run untraced
                self._kill_unstarted()
            return
        t = self.tracer
        if not self.started:
            self._kill_unstarted()
        elif t is not None:
            self.ending.set()
            with self.periodic_lock:  # (a periodic snapshot being read finishes first)
                pass
            live = self.live_pids()

            def end_snapshots(running: set[int]) -> None:
                # still running: every thread is stopped now, so each end snapshot is the state
                # the last traced event left (a snapshot read while they ran could show calls
                # made after the recording's end, or half of them)
                for pid in live:
                    proc = t.procs.get(pid)
                    if proc is not None and (proc.final_done or proc.gone):
                        continue  # it exited meanwhile: its exit snapshot was taken
                    late = sorted(tid for tid in running if t.tid_tgid.get(tid) == pid)
                    if late:
                        self.snapshot_errors.append(
                            f"end snapshot of {pid}: {len(late)} thread(s) did not stop within 1 s "
                            f"(TID {', '.join(map(str, late[:5]))}): read while they ran")
                    self.snapshot(pid, "end")
                    self._proc(pid).how_ended = "still running (detached)"

            with contextlib.suppress(_Stop):
                t.detach_all(while_stopped=end_snapshots)
        # Nothing more is wanted from the kernel: detach the tracepoints while the rest is finished
        # (each detach waits for RCU grace periods: about a second for all of them on this VM).
        detacher = threading.Thread(target=self.detach_tracepoints, name="vmatrace-detach", daemon=True)
        detacher.start()
        self.stop.set()
        for th in threads:
            if th.is_alive():
                th.join()
        # Last drain: records reserved by a CPU that is still writing them show up in a moment.
        deadline = time.monotonic() + 0.5
        while True:
            self.pull()
            if self.ring.pending_bytes() == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        self.process(final=True)
        if self.o.stacks:
            self.write_stacks()
        self.write_procs()
        warnings = list(self.snapshot_errors)
        warnings += [f"PID {pid} ended without an exit snapshot: {why}" for pid, why in self.exit_missing.items()]
        text_lost = self.counter(C_TEXTLOST)
        if text_lost:
            warnings.append(f"{text_lost} text records (exec filenames, VMA names) lost")
        file_miss, file_lost = self.counter(C_FILEMISS), self.counter(C_FILELOST)
        if file_miss:
            warnings.append(f"{file_miss} file mappings without file_id: their VMA had changed before the "
                            "call returned (another thread)")
        if file_lost:
            warnings.append(f"{file_lost} file identity records lost (ring buffer full)")
        if self.files.truncated:
            warnings.append(f"{self.files.truncated} file paths longer than the recorder reads: file_path null")
        stack_fail = self.counter(C_STACKFAIL) if self.o.stacks else 0
        if stack_fail:
            warnings.append(f"{stack_fail} user stacks could not be recorded (stack map full or not walkable)")
        with self.lock:
            cpu = _cpu_s()
            self.writer.close(end_ns=time.monotonic_ns(), ended_by=self.ended_by,
                              recorder_cpu_s=round(cpu, 3), bpf_load_cpu_s=round(self.load_cpu_s, 3),
                              lock_order_since_ns=self.lock_order_since_ns,
                              seq_issued=self.counter(C_SEQ),
                              faults_deduplicated=self.counter(C_DEDUP), record_warnings=warnings)
        self.ring.close()
        detacher.join()
        self.bpf.cleanup()
        with contextlib.suppress(OSError):
            os.close(self._err_r)
        if not self.started:
            self.writer.discard()

    def _kill_unstarted(self) -> None:
        """The launched child has not exec'd the command (interrupted, or its exec failed): it is
        the recorder's own copy, so it is killed and reaped, never let go to run untraced."""
        from collectors.ptrace import PTRACE_CONT, WALL, ptrace

        child = self.child
        if child is None:
            return
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(child, WALL | os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.002)
                continue
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                break
            with contextlib.suppress(OSError):  # a stop on the way out (exit stop): go on
                ptrace(PTRACE_CONT, child)
        if self.tracer is not None:
            self.tracer.procs.pop(child, None)

    def detach_tracepoints(self) -> None:
        """Detach the tracepoint programs, in parallel (one after the other: 2.3 s for 20 here)."""
        from concurrent.futures import ThreadPoolExecutor

        tps = list(self.bpf.tracepoint_fds)
        if tps:
            with ThreadPoolExecutor(max_workers=len(tps)) as ex:
                list(ex.map(self.bpf.detach_tracepoint, tps))

    def write_stacks(self) -> None:
        from collectors.symbols import symbolize

        stacks_map = self.bpf["stacks"]
        by_pid: dict[int, dict[int, list[int]]] = {}
        for pid, sid in sorted(self.stack_pids):
            try:
                ips = list(stacks_map.walk(sid))
            except KeyError:
                continue
            by_pid.setdefault(pid, {})[sid] = ips
        for pid, stacks in by_pid.items():
            frame = self.last_snapshot.get(pid)
            if frame is None:
                continue
            try:
                rows = symbolize(pid, frame, stacks)
            except Exception as e:  # symbolization is best effort: keep the raw ips
                self.snapshot_errors.append(f"symbolizing stacks of {pid}: {e}")
                from vmatrace.base.trace import STACK_SCHEMA

                rows = pl.DataFrame(
                    [(pid, sid, d, ip, None, None, None) for sid, ips in stacks.items() for d, ip in enumerate(ips)],
                    schema=STACK_SCHEMA, orient="row")
            with self.lock:
                self.writer.add_stacks(rows)

    def write_procs(self, pids: list[int] | None = None) -> None:
        """One procs row per process, written once: when it ends (so a killed recorder keeps them),
        or at the end of recording for the others."""
        from vmatrace.base.trace import PROC_SCHEMA

        todo = [p for p in self.procs.values() if p.pid not in self.procs_written and (pids is None or p.pid in pids)]
        self.procs_written.update(p.pid for p in todo)
        rows = [(p.pid, p.ppid, p.comm, p.cmdline, p.start_ns, p.exit_ns, p.exit_code, p.how_ended) for p in todo]
        if rows:
            with self.lock:
                self.writer.add_procs(pl.DataFrame(rows, schema=PROC_SCHEMA, orient="row"))

    def print_summary(self, out: str) -> None:
        n_procs = len(self.procs)
        print(f"\nRecording ended ({self.ended_by}): {self.events} events ({self.faults} first write faults), "
              f"{self.lost} lost, {self.snapshots} snapshots of {n_procs} process{'es' if n_procs != 1 else ''}.",
              file=sys.stderr)
        for p in self.procs.values():
            if p.how_ended and p.how_ended != "exit" and p.how_ended != "still running (detached)":
                print(f"  PID {p.pid} ({p.comm}): {p.how_ended}", file=sys.stderr)
        running = [p for p in self.procs.values() if p.how_ended == "still running (detached)"]
        if running:
            names = ", ".join(f"{p.pid} ({p.comm})" for p in running[:8]) + (" ..." if len(running) > 8 else "")
            print(f"  still running, no longer traced: {len(running)} process{'es' if len(running) != 1 else ''}: "
                  f"PID {names}", file=sys.stderr)
        elif self.ended_by != "the traced processes exited":
            print("  no traced process is still running", file=sys.stderr)
        for w in self.snapshot_errors[:5]:
            print(f"  warning: {w}", file=sys.stderr)
        for pid, why in list(self.exit_missing.items())[:5]:
            print(f"  warning: PID {pid} ended without an exit snapshot: {why}", file=sys.stderr)
        if self.lost:
            print(f"  warning: {self.lost} events were lost (ring buffer full): raise -b "
                  f"(now {self.o.buffer_pages}); the trace records where.", file=sys.stderr)
        print(f"Trace: {out}", file=sys.stderr)
