"""Exact snapshots of a live process's address space.

Two readers:

* ``PROCMAP_QUERY`` (Linux 6.11+): an ioctl on an open ``/proc/PID/maps`` that returns one VMA per
  call, binary and without text formatting. Used for maps-only snapshots where the kernel has it.
* The text files ``/proc/PID/maps`` and ``/proc/PID/smaps``: everywhere, and always for smaps
  (Rss, Pss, Anonymous, Swap, VmFlags), which no ioctl exposes.

A snapshot holds columns of :data:`VMA_FIELDS` (documented in ``docs/trace-format.md``); nothing
here imports polars (the snapshot makes its frame on first use).
Reading a live process can show oddities: ``seq_file`` restarts after each read() chunk, so a VMA
that changes between two chunks can be printed twice; the process can exit mid-read; /proc can say
EACCES. Each is reported as a warning or a one-line :class:`SnapshotError`, never a traceback.
"""

from __future__ import annotations

import codecs
import errno
import fcntl
import os
import signal
import time
from contextlib import suppress

from vmatrace.base.errors import AccessDenied, NoSuchProcess, VmatraceError
from vmatrace.base.snapshot import (
    SmapsParser,
    Snapshot,
    SnapshotError,
    empty_vma_columns,
    parse_maps_columns,
)

PF_KTHREAD = 0x00200000


# ---------------------------------------------------------------------------------------------
# The layout through PROCMAP_QUERY (collectors.procmap_query, loaded only when used)

# The gate VMA (x86-64 vsyscall page) is not in the mm's VMA tree, so PROCMAP_QUERY never returns it;
# /proc/PID/maps prints it last for every 64-bit process when vsyscall emulation is enabled.
VSYSCALL_START, VSYSCALL_END = 0xFFFFFFFFFF600000, 0xFFFFFFFFFF601000

_vsyscall_perms: str | bool | None = False  # False = not probed yet


def has_procmap_query() -> bool:
    """Whether this kernel implements PROCMAP_QUERY (probed once on our own maps)."""
    from collectors.procmap_query import has_procmap_query as probe

    return probe()


def _vsyscall_line_perms() -> str | None:
    global _vsyscall_perms
    if _vsyscall_perms is False:
        _vsyscall_perms = None
        try:
            with open("/proc/self/maps") as f:
                for line in f:
                    if line.rstrip().endswith("[vsyscall]"):
                        _vsyscall_perms = line.split()[1]
        except OSError:
            pass
    return _vsyscall_perms if isinstance(_vsyscall_perms, str) else None


# ---------------------------------------------------------------------------------------------
# Reading a live process


def _is_kernel_thread(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rfind(b")") + 2:].split()
    return bool(int(fields[6]) & PF_KTHREAD)  # field 9: flags


def _start_time(base: str) -> int | None:
    """Field 22 of BASE/stat: when the process (thread) started, in clock ticks since boot; with
    the PID it names one process for good (a reused PID has another start time)."""
    try:
        with open(f"{base}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rfind(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _lived_through(base: str, started: int | None) -> bool:
    """Did the process read at BASE live through the whole read? The same start time as before it,
    and a status that is still readable and not a zombie's afterwards (an exiting process's maps
    can end early, silently)."""
    if started is None or _start_time(base) != started:
        return False
    try:
        with open(f"{base}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return line.split()[1] not in ("Z", "X")
    except OSError:
        return False
    return False


def _status(pid: int | str, task: int | str | None = None) -> dict[str, str]:
    path = f"/proc/{pid}/task/{task}/status" if task is not None else f"/proc/{pid}/status"
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def _resolve(pid: int, warnings: list[str]) -> tuple[int, int | None]:
    """Map a thread id to its process, and a zombie group leader to a live thread of it.

    /proc/TID exists for every thread (hidden from readdir); its maps are the process's. Once a
    group leader has exited, /proc/TGID/maps is empty while other threads still run, so the
    snapshot reads /proc/TGID/task/TID of a live one. A whole-process zombie has no address space.
    """
    try:
        st = _status(pid)
    except OSError:
        return pid, None  # the caller names the error
    tgid = int(st.get("Tgid", pid) or pid)
    if tgid != pid:
        warnings.append(f"{pid} is a thread of process {tgid}: this is the snapshot of {tgid}")
        pid = tgid
        try:
            st = _status(pid)
        except OSError:
            return pid, None
    if not st.get("State", "").startswith("Z"):
        return pid, None
    try:
        tids = [t for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
    except OSError:
        tids = []
    for t in tids:
        try:
            if not _status(pid, t).get("State", "").startswith(("Z", "X")):
                return pid, int(t)
        except OSError:
            continue
    raise SnapshotError(f"PID {pid} is a zombie: it has exited and has no address space")


def _proc_error(pid: int, what: str, e: OSError) -> VmatraceError:
    if e.errno in (errno.ENOENT, errno.ESRCH):
        return NoSuchProcess(f"no process with PID {pid}")
    if e.errno in (errno.EACCES, errno.EPERM):
        return AccessDenied(f"permission denied reading {what} (run as root or as the process's owner)")
    return SnapshotError(f"cannot read {what}: {e.strerror}")


def _read_all(path: str) -> bytes:
    """Read a /proc file whole. seq_file gives about a page per read(), so this is thousands of
    reads for a large smaps: FileIO.readall() loops in C into one growing buffer."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    with open(fd, "rb", buffering=0) as f:
        return f.readall()


def _feed(fd: int, parser: SmapsParser) -> None:
    """Feed the parser all that ``fd`` gives, a piece at a time, as it arrives (non-UTF-8 bytes of a
    name become \\xNN, as documented in the schema)."""
    decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")
    while chunk := os.read(fd, 1 << 20):
        parser.feed(decoder.decode(chunk))
    parser.feed(decoder.decode(b"", final=True))


def _cat() -> str | None:
    for d in ("/usr/bin", "/bin"):
        if os.access(f"{d}/cat", os.X_OK):
            return f"{d}/cat"
    return None


def _parse_smaps_overlapped(path: str, parser: SmapsParser) -> bool:
    """Read smaps through a helper process while parsing it: ``cat`` copies the file (opened here,
    with our permissions) into a pipe, so the kernel formats smaps (show_smap() walks each VMA's
    page tables) on another CPU while this process parses the blocks it has already got. On a
    20,000-VMA process the two take about as long as each other, so this nearly halves the time.

    Returns False, having fed nothing, if the helper cannot start; raises OSError if the file
    cannot be opened. A helper that fails part way is an OSError too (the caller reads again)."""
    cat = _cat()
    if cat is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        with suppress(OSError):
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)  # fewer wake-ups; capped by pipe-max-size
        try:
            child = os.posix_spawn(cat, [cat], {}, file_actions=[
                (os.POSIX_SPAWN_DUP2, fd, 0), (os.POSIX_SPAWN_DUP2, w, 1),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)])
        except OSError:
            return False
        finally:
            os.close(w)
            os.close(fd)
        done = False
        try:
            _feed(r, parser)
            done = True
        finally:
            if not done:
                with suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            try:
                _, status = os.waitpid(child, 0)
            except ChildProcessError:  # another thread reaped it (waitpid(-1)): outcome unknown
                status = -1
        if status == -1 or os.waitstatus_to_exitcode(status) != 0:
            raise OSError(errno.EIO, f"cat {path} failed")
        return True
    finally:
        os.close(r)


def _use_helper() -> bool:
    return (os.cpu_count() or 1) > 1 and os.environ.get("VMATRACE_SNAPSHOT_HELPER", "1") != "0"


def read_snapshot(pid: int, *, smaps: bool = True, method: str = "auto", task: int | None = None,
                  helper: bool = True) -> Snapshot:
    """Snapshot the address space of ``pid``.

    ``smaps=True`` reads /proc/PID/smaps (sizes and VmFlags) and is always text. ``smaps=False``
    reads only the layout: through PROCMAP_QUERY when ``method`` is "auto" or "procmap_query" and
    the kernel has it, else /proc/PID/maps text. ``task=tid`` reads /proc/PID/task/TID/..., which
    stays readable while a non-leader thread is in do_exit() after the group leader is gone.
    ``helper``: smaps is read through a helper process where there is more than one CPU (see
    :func:`_parse_smaps_overlapped`). A caller that reads many small processes turns it off, and
    so must one whose other threads reap children with ``waitpid(-1)`` (a ptrace loop: the
    recorder): it would reap the helper first, and the file would be read twice.
    """
    if method not in ("auto", "text", "procmap_query"):
        raise SnapshotError(f"unknown snapshot method {method!r} (auto, text, procmap_query)")
    warnings: list[str] = []
    if task is None:
        pid, task = _resolve(pid, warnings)
    base = f"/proc/{pid}/task/{task}" if task is not None else f"/proc/{pid}"
    if not os.path.exists(base):
        raise NoSuchProcess(f"no process with PID {pid}" + (f" (task {task})" if task is not None else ""))
    if _is_kernel_thread(pid):
        raise SnapshotError(f"PID {pid} is a kernel thread: it has no user address space")
    use_ioctl = not smaps and method != "text" and has_procmap_query()
    if method == "procmap_query" and not use_ioctl:
        if smaps:
            raise SnapshotError("PROCMAP_QUERY gives no smaps data: use --method text or --no-smaps")
        raise SnapshotError("this kernel has no PROCMAP_QUERY ioctl (Linux 6.11+)")
    started = _start_time(base)
    t0 = time.monotonic_ns()
    if use_ioctl:
        what = f"{base}/maps"
        try:
            fd = os.open(what, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise _proc_error(pid, what, e) from None
        try:
            from collectors.procmap_query import query_all

            cols = query_all(fd)
        except OSError as e:
            if e.errno in (errno.ESRCH, errno.ENOENT):
                cols = empty_vma_columns()
                warnings.append("incomplete: the process exited during the read")
            else:
                raise _proc_error(pid, what, e) from None
        finally:
            os.close(fd)
        # compat (32-bit) tasks have no gate VMA: their address space ends below 4 GiB
        is_64bit = any(isinstance(e, int) and e > 1 << 32 for e in cols["end"][-1:])
        if is_64bit and (perms := _vsyscall_line_perms()) is not None:
            for k, v in (("start", VSYSCALL_START), ("end", VSYSCALL_END), ("perms", perms), ("offset", 0),
                         ("dev", "00:00"), ("inode", 0), ("path", "[vsyscall]")):
                cols[k].append(v)
        n = len(cols["start"])
        for k in ("rss_kb", "pss_kb", "anonymous_kb", "swap_kb", "vmflags"):
            cols[k] = [None] * n
        used = "procmap_query"
    else:
        what = f"{base}/{'smaps' if smaps else 'maps'}"
        # non-UTF-8 names become \xNN (documented in the schema)
        got: dict[str, list[object]] | None = None
        if smaps and helper and _use_helper():
            parser = SmapsParser()
            try:
                if _parse_smaps_overlapped(what, parser):
                    got = parser.finish(warnings)
            except OSError as e:
                if e.errno != errno.EIO:
                    raise _proc_error(pid, what, e) from None
        if got is None:  # no helper, or it failed: read it here, with this process's errors
            try:
                if smaps:
                    parser = SmapsParser()
                    fd = os.open(what, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        _feed(fd, parser)
                    finally:
                        os.close(fd)
                    got = parser.finish(warnings)
                else:
                    got = parse_maps_columns(_read_all(what), warnings)
            except OSError as e:
                raise _proc_error(pid, what, e) from None
        cols = got
        used = "text"
    t1 = time.monotonic_ns()
    if not _lived_through(base, started) and not any(w.startswith("incomplete") for w in warnings):
        warnings.append(f"incomplete: the process exited during the read ({len(cols['start'])} VMAs read)")
    if not cols["start"]:
        if not os.path.exists(base):
            warnings.append("incomplete: the process exited during the read")
        elif not any(w.startswith("incomplete") for w in warnings):
            warnings.append("incomplete: empty address space (exiting process or zombie)")
    return Snapshot(pid=pid, t_start_ns=t0, t_end_ns=t1, method=used, warnings=warnings, columns=cols)
