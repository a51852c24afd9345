"""A minimal ptrace tracer whose only job is to hold processes at the moments snapshots must be taken.

Every tracee is attached with ``PTRACE_SEIZE`` (the launched command too), with options
``TRACEEXIT | TRACECLONE | TRACEFORK | TRACEVFORK | TRACEEXEC``. There are no syscall stops, so a
tracee only stops:

* at exit (``PTRACE_EVENT_EXIT``): the thread is inside ``do_exit()`` *before* ``exit_mm()``, so its
  address space can still be read through ``/proc/TGID/task/TID/{maps,smaps}``, for every way of
  ending (exit, exit_group from any thread, fatal signal, SIGKILL: each checked, and without ptrace /proc is already empty by the time
  user space hears of the exit). Not every thread stops there: one that is already inside
  ``do_exit()`` when the group is killed (``exit_group`` or a fatal signal sent to another
  thread) skips its stop, or is woken from it before the tracer has seen it (``ptrace_stop()``
  returns at once with ``SIGKILL`` pending). Which stop is the last one is therefore decided
  from the kernel's state of the other threads, not from the stops seen (see
  :meth:`Tracer.stops_to_come`);
* after exec (``PTRACE_EVENT_EXEC``): the new image, before its first instruction;
* at the initial stop of an auto-attached child, before it runs a single instruction;
* at fork/clone events (to learn the new tids) and at signal and group stops (signals are passed
  on; group stops are kept with ``PTRACE_LISTEN``, as a SEIZE tracer must).

All ptrace requests must come from the thread that attached: the caller runs :meth:`Tracer.wait_one`
in one thread (the recorder uses its main thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from vmatrace.base.errors import NoSuchProcess, VmatraceError

PTRACE_CONT = 7
PTRACE_DETACH = 17
PTRACE_GETEVENTMSG = 0x4201
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208

PTRACE_O_TRACEFORK = 0x02
PTRACE_O_TRACEVFORK = 0x04
PTRACE_O_TRACECLONE = 0x08
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACEEXIT = 0x40

PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_VFORK_DONE = 5
PTRACE_EVENT_EXIT = 6
PTRACE_EVENT_STOP = 128

WALL = 0x40000000  # __WALL: wait for threads and non-SIGCHLD children too

OPTIONS = PTRACE_O_TRACEEXIT | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC
_STOP_SIGNALS = {signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


def ptrace(req: int, pid: int, addr: int = 0, data: int = 0) -> int:
    r = _libc.ptrace(req, pid, ctypes.c_void_p(addr), ctypes.c_void_p(data))
    if r == -1:
        e = ctypes.get_errno()
        if e:
            raise OSError(e, os.strerror(e))
    return int(r)


def geteventmsg(pid: int) -> int:
    v = ctypes.c_ulong(0)
    r = _libc.ptrace(PTRACE_GETEVENTMSG, pid, None, ctypes.byref(v))
    if r == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return int(v.value)


def tgid_of(tid: int) -> int | None:
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


PF_KTHREAD = 0x00200000  # include/linux/sched.h: the task is a kernel thread
PF_EXITING = 0x00000004  # include/linux/sched.h: set by exit_signals(), right after the exit stop
SIGKILL_BIT = 1 << (signal.SIGKILL - 1)  # in the SigPnd mask of /proc/PID/status
QUIET_WAIT_S = 0.5  # longest wait for dying threads to let go of the address space (normally < 1 ms)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the comm (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split() if ")" in text else None


def _status_field(pid: int, key: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key.encode() + b":"):
                    return line.split(b":", 1)[1].strip().decode(errors="replace")
    except OSError:
        return None
    return None


def untraceable_reason(pid: int) -> str | None:
    """Why process `pid` cannot be traced, when /proc tells: a kernel thread, a zombie, the
    recorder itself, or already traced by another process. None when nothing is known against it."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    comm = _status_field(pid, "Name") or "?"
    state, ppid = fields[0], fields[1]
    try:
        flags = int(fields[6])
    except (IndexError, ValueError):
        flags = 0
    if flags & PF_KTHREAD:
        return f"PID {pid} ({comm}) is a kernel thread: it has no user address space to trace"
    if state in ("Z", "X"):
        return (f"PID {pid} ({comm}) is a zombie: it has exited and only waits for its parent (PID {ppid}) "
                "to reap it; there is no address space left to trace")
    if pid == os.getpid():
        return f"PID {pid} is this vmatrace process itself"
    tracer = _status_field(pid, "TracerPid")
    if tracer and tracer != "0":
        tname = _status_field(int(tracer), "Name") or "?"
        return f"PID {pid} ({comm}) is already traced by PID {tracer} ({tname}); only one tracer at a time"
    return None


def describe_status(status: int) -> tuple[int, str]:
    """(exit_code, how_ended) from a wait status (also the PTRACE_EVENT_EXIT message).

    exit_code is the exit status for a normal exit and -SIGNO for a death by signal.
    """
    sig = status & 0x7F
    if sig == 0:
        return (status >> 8) & 0xFF, "exit"
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
    how = "killed (SIGKILL)" if sig == signal.SIGKILL else f"signal {name}"
    if status & 0x80:
        how += " (core dumped)"
    return -sig, how


def _thread_state(tgid: int, tid: int) -> tuple[str, int, bool] | None:
    """(state letter, task flags, holds an address space) of thread ``tid``, or None if gone.

    ``vsize`` (field 23 of stat) is 0 once ``exit_mm()`` has cleared the thread's ``mm`` (and
    for a zombie): do_task_stat() reads it only through get_task_mm().
    """
    try:
        with open(f"/proc/{tgid}/task/{tid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields = text.rsplit(b")", 1)[1].split() if b")" in text else []
    try:
        return fields[0].decode(), int(fields[6]), int(fields[20]) != 0
    except (IndexError, ValueError):
        return None


def _sigkill_pending(tgid: int, tid: int) -> bool:
    """SIGKILL is in the thread's own pending set (zap_other_threads() and complete_signal() put it
    there when the group is killed; a thread already in do_exit() never takes it out)."""
    try:
        with open(f"/proc/{tgid}/task/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"SigPnd:"):
                    return bool(int(line.split()[1], 16) & SIGKILL_BIT)
    except (OSError, ValueError, IndexError):
        return False
    return False


@dataclass
class Proc:
    tgid: int
    threads: set[int] = field(default_factory=set)  # known threads not yet seen at their exit stop or reaped
    exit_status: int | None = None  # from PTRACE_EVENT_EXIT of the last thread
    final_done: bool = False  # the last exit stop was handled (on_last_exit called)
    gone: bool = False  # the group leader was reaped: the process no longer exists
    past_exit: set[int] = field(default_factory=set)  # threads let go from their exit stop, not yet reaped


class Tracer:
    """Seizes processes and reports, through callbacks, the stops a recorder needs.

    Callbacks (all run while the thread concerned is stopped):
      on_new_process(tgid, parent_tgid)   an auto-attached child, before its first instruction
      on_exec(tgid)                       after a successful exec, before the new image runs
      on_new_thread(tgid)                 a traced process is creating a thread (the creator and the
                                          new thread are both stopped)
      on_last_exit(tgid, tid, status)     thread tid of tgid is in PTRACE_EVENT_EXIT and no other thread
                                          will stop at exit while holding the address space: it is
                                          intact and final (snapshot it now, through task tid)
      on_gone(tgid, status)               the process has been reaped (status: the group leader's
                                          wait status, which is the process's)
    """

    def __init__(self) -> None:
        self.procs: dict[int, Proc] = {}
        self.tid_tgid: dict[int, int] = {}
        self.pending_parent: dict[int, int] = {}  # new tid -> parent tgid (from fork events)
        self.on_new_process: Callable[[int, int], None] = lambda tgid, parent: None
        self.on_exec: Callable[[int], None] = lambda tgid: None
        self.on_new_thread: Callable[[int], None] = lambda tgid: None
        self.on_last_exit: Callable[[int, int, int], None] = lambda tgid, tid, status: None
        self.on_gone: Callable[[int, int], None] = lambda tgid, status: None

    # -- attaching -------------------------------------------------------------------------------
    def seize_thread(self, tid: int, tgid: int) -> None:
        ptrace(PTRACE_SEIZE, tid, 0, OPTIONS)
        self.procs.setdefault(tgid, Proc(tgid)).threads.add(tid)
        self.tid_tgid[tid] = tgid

    def seize_process(self, pid: int) -> None:
        """Seize every thread of process ``pid`` (re-listing until no new thread shows up)."""
        if not os.path.exists(f"/proc/{pid}"):
            raise NoSuchProcess(f"no process with PID {pid}")
        why = untraceable_reason(pid)
        if why is not None:
            raise VmatraceError(f"cannot trace: {why}")
        tgid = tgid_of(pid)
        if tgid is not None and tgid != pid:
            raise VmatraceError(f"{pid} is a thread, not a process: pass its process ID ({tgid})")
        seized: set[int] = set()
        while True:
            try:
                tids = {int(t) for t in os.listdir(f"/proc/{pid}/task")}
            except FileNotFoundError:
                raise NoSuchProcess(f"process {pid} exited") from None
            new = tids - seized
            if not new:
                break
            for tid in sorted(new):
                try:
                    self.seize_thread(tid, pid)
                except OSError as e:
                    if e.errno == errno.ESRCH:
                        seized.add(tid)  # the thread exited meanwhile
                        continue
                    if e.errno == errno.EPERM:
                        why = untraceable_reason(pid)
                        raise VmatraceError(
                            f"cannot trace: {why}" if why else
                            f"cannot trace PID {pid}: the kernel refused (EPERM: another user's process without "
                            "CAP_SYS_PTRACE, a Yama ptrace_scope restriction, or being traced meanwhile)"
                        ) from None
                    raise VmatraceError(f"cannot trace PID {pid}: {e.strerror}") from None
                seized.add(tid)

    @property
    def live(self) -> list[int]:
        return [t for t, p in self.procs.items() if p.threads]

    # -- the event loop --------------------------------------------------------------------------
    def wait_one(self, *, block: bool = True) -> bool:
        """Handle one stop or exit. False when no tracee is left (or nothing ready when not blocking)."""
        try:
            tid, status = os.waitpid(-1, WALL | (0 if block else os.WNOHANG))
        except ChildProcessError:
            return False
        if tid == 0:
            return False
        self._handle(tid, status)
        return True

    def _handle(self, tid: int, status: int) -> None:
        """One wait status of a tracee: an exit, or a stop (the tracee goes on, but in a group-stop)."""
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self._reaped(tid, status)
            return
        if not os.WIFSTOPPED(status):
            return
        sig = os.WSTOPSIG(status)
        event = status >> 16
        if tid not in self.tid_tgid:
            self._new_tracee(tid)
        if event == PTRACE_EVENT_EXIT:
            self._exit_stop(tid)
            self._cont(tid)
        elif event in (PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE):
            try:
                child = geteventmsg(tid)
                self.pending_parent[child] = self.tid_tgid[tid]
            except OSError:
                pass
            else:
                if event == PTRACE_EVENT_CLONE:
                    self._new_thread(child, self.tid_tgid[tid])
            if event == PTRACE_EVENT_CLONE:
                self.on_new_thread(self.tid_tgid[tid])
            self._cont(tid)
        elif event == PTRACE_EVENT_EXEC:
            self._exec_stop(tid)
            self._cont(tid)
        elif event == PTRACE_EVENT_STOP:
            if sig in _STOP_SIGNALS:
                self._ptrace_quiet(PTRACE_LISTEN, tid)  # group-stop: stay stopped until SIGCONT
            else:
                self._cont(tid)  # initial stop of a new tracee, or PTRACE_INTERRUPT
        elif event == PTRACE_EVENT_VFORK_DONE:
            self._cont(tid)
        else:
            self._cont(tid, sig)  # signal-delivery stop: pass the signal on

    def hold(self, tgid: int, *, timeout_s: float = 1.0) -> tuple[set[int], set[int]]:
        """Stop every thread of process ``tgid`` (PTRACE_INTERRUPT) and keep them stopped: returns
        (the threads held, the threads that did not stop within ``timeout_s``). Other stops that
        come meanwhile are handled as the event loop would; a thread the process creates meanwhile
        is held too. :meth:`release` lets them go."""
        import time

        proc = self.procs.get(tgid)
        pending = set(proc.threads) if proc is not None else set()
        for tid in pending:
            self._ptrace_quiet(PTRACE_INTERRUPT, tid)
        held: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            try:
                tid, status = os.waitpid(-1, WALL | os.WNOHANG)
            except ChildProcessError:
                break
            if tid == 0:
                time.sleep(0.001)
                continue
            event = status >> 16
            if os.WIFSTOPPED(status) and event == PTRACE_EVENT_STOP and os.WSTOPSIG(status) not in _STOP_SIGNALS:
                if tid not in self.tid_tgid:
                    self._new_tracee(tid)
                if self.tid_tgid.get(tid) == tgid:
                    pending.discard(tid)
                    held.add(tid)
                    continue
            self._handle(tid, status)
            if not os.WIFSTOPPED(status) or event == PTRACE_EVENT_EXIT:
                pending.discard(tid)  # gone, or let go from its exit stop: it holds nothing up
        return held, pending

    def release(self, held: set[int]) -> None:
        """Let the threads :meth:`hold` stopped run on."""
        for tid in held:
            self._cont(tid)

    def _cont(self, tid: int, sig: int = 0) -> None:
        self._ptrace_quiet(PTRACE_CONT, tid, 0, sig)

    @staticmethod
    def _ptrace_quiet(req: int, tid: int, addr: int = 0, data: int = 0) -> None:
        try:
            ptrace(req, tid, addr, data)
        except OSError as e:
            if e.errno != errno.ESRCH:  # the tracee was killed meanwhile
                raise

    def _new_thread(self, child: int, tgid: int) -> None:
        """A clone event: count a new thread of ``tgid`` at once, before its first stop (which may
        come after the other threads' exit stops, or never, when the group is killed first)."""
        if child in self.tid_tgid or tgid_of(child) != tgid:
            return  # (a clone without CLONE_THREAD is a new process: its first stop says so)
        self.pending_parent.pop(child, None)
        self.tid_tgid[child] = tgid
        self.procs.setdefault(tgid, Proc(tgid)).threads.add(child)

    def _new_tracee(self, tid: int) -> None:
        tgid = tgid_of(tid)
        parent = self.pending_parent.pop(tid, None)
        if tgid is None:
            tgid = tid
        self.tid_tgid[tid] = tgid
        proc = self.procs.get(tgid)
        # a new process under a known PID: the old one was reaped (or, its reaping unseen, a new
        # group leader shows up after the old one's last exit stop)
        if proc is None or proc.gone or (tid == tgid and not proc.threads and proc.final_done):
            proc = self.procs[tgid] = Proc(tgid)
            proc.threads.add(tid)
            self.on_new_process(tgid, parent if parent is not None else 0)
        else:
            proc.threads.add(tid)
        if tid != tgid:
            self.on_new_thread(tgid)

    def _exit_stop(self, tid: int) -> None:
        tgid = self.tid_tgid.get(tid, tid)
        proc = self.procs.get(tgid)
        try:
            status = geteventmsg(tid)
        except OSError:
            status = 0
        if proc is None:
            return
        proc.threads.discard(tid)
        proc.past_exit.add(tid)  # (from here on: it is continued at once)
        if proc.final_done or self.stops_to_come(tgid, tid):
            return
        proc.exit_status = status
        proc.final_done = True
        self.on_last_exit(tgid, tid, status)

    def stops_to_come(self, tgid: int, tid: int) -> bool:
        """Thread ``tid`` of ``tgid`` is in its exit stop: will another thread still stop at exit
        with the address space intact? False means this stop is the last chance to read it.

        Each other thread is asked from /proc, whatever the tracer has seen of it:
        * without an address space (past exit_mm(), a zombie, reaped): it no longer counts;
        * its exit stop was seen (it is let go), or ``PF_EXITING`` (set by exit_signals() right
          after the exit stop): past its stop;
        * ``SIGKILL`` pending: the group is being killed; a thread already inside do_exit() never
          takes the signal, so ptrace_stop() returns without stopping (one that still takes it
          does stop, but no user code runs in the group any more: the layout is final);
        * any other thread (running, in a syscall, or in its exit stop not yet waited for) will
          stop at exit: a kill can only start from a thread that is not exiting yet, and that
          thread stops (exit_group's caller, or the one that takes the fatal signal), and once
          every thread is inside do_exit() prepare_signal() drops every new signal.
        When no thread of the last kind is left, this thread holds the address space for the
        snapshot; first the dying threads are given a moment to be stopped or to let go of it,
        so that no call of theirs still changes a mapping while it is read.
        """
        try:
            others = [int(t) for t in os.listdir(f"/proc/{tgid}/task") if int(t) != tid]
        except (OSError, ValueError):
            return False
        proc = self.procs.get(tgid)
        seen = proc.past_exit if proc is not None else set()
        dying: list[int] = []
        for other in others:
            st = _thread_state(tgid, other)
            if st is None or not st[2]:
                continue
            if other in seen:
                dying.append(other)
                continue
            if st[1] & PF_EXITING or _sigkill_pending(tgid, other):
                dying.append(other)
                continue
            return True
        self._let_go(tgid, dying)
        return False

    @staticmethod
    def _let_go(tgid: int, dying: list[int]) -> None:
        """Wait (briefly, bounded) until each dying thread is stopped or has no address space."""
        import time

        deadline = time.monotonic() + QUIET_WAIT_S
        while dying and time.monotonic() < deadline:
            busy = []
            for other in dying:
                st = _thread_state(tgid, other)
                if st is not None and st[2] and st[0] not in ("t", "T"):
                    busy.append(other)
            dying = busy
            if dying:
                time.sleep(0.0005)

    def _exec_stop(self, tid: int) -> None:
        # tid is now the thread group leader; the message is the tid that called exec.
        try:
            former = geteventmsg(tid)
        except OSError:
            former = tid
        tgid = tid
        proc = self.procs.setdefault(tgid, Proc(tgid))
        if former != tid:
            proc.threads.discard(former)
            self.tid_tgid.pop(former, None)
        # (the old leader may have stopped at exit under the TID the exec'ing thread now has)
        proc.past_exit.difference_update((tid, former))
        proc.threads.add(tid)
        self.tid_tgid[tid] = tgid
        self.on_exec(tgid)

    def _reaped(self, tid: int, status: int) -> None:
        tgid = self.tid_tgid.pop(tid, None)
        if tgid is None:
            return
        proc = self.procs.get(tgid)
        if proc is None:
            return
        proc.threads.discard(tid)
        proc.past_exit.discard(tid)
        if tid == tgid:
            # the leader is reported only once every other thread is gone (delay_group_leader()):
            # the process no longer exists, its PID may be reused
            proc.gone = True
            for t in proc.threads:
                self.tid_tgid.pop(t, None)
            proc.threads.clear()
            self.on_gone(tgid, status)

    # -- leaving ---------------------------------------------------------------------------------
    def detach_all(self, *, timeout_s: float = 1.0,
                   while_stopped: Callable[[set[int]], None] | None = None) -> None:
        """Interrupt and detach every remaining tracee (they continue untraced).

        ``while_stopped(running)`` is called once every thread is stopped (or ``timeout_s`` has
        passed: ``running`` holds the threads that did not stop), before any is let go: nothing
        of the tracees runs meanwhile, so what it reads of them is one state, the one the last
        traced event left."""
        import time

        pending = {tid for p in self.procs.values() for tid in p.threads}
        for tid in pending:
            self._ptrace_quiet(PTRACE_INTERRUPT, tid)
        held: dict[int, int] = {}  # stopped thread -> the signal to give back when it is let go
        deadline = time.monotonic() + timeout_s
        try:
            while pending and time.monotonic() < deadline:
                try:
                    tid, status = os.waitpid(-1, WALL | os.WNOHANG)
                except ChildProcessError:
                    break
                if tid == 0:
                    time.sleep(0.002)
                    continue
                if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                    pending.discard(tid)
                    held.pop(tid, None)
                    self._reaped(tid, status)
                    continue
                if not os.WIFSTOPPED(status):
                    continue
                event = status >> 16
                if event == PTRACE_EVENT_EXIT:
                    self._exit_stop(tid)
                sig = os.WSTOPSIG(status)
                held[tid] = 0 if event or sig == signal.SIGTRAP else sig
                pending.discard(tid)
            if while_stopped is not None:
                while_stopped(pending)
        finally:
            for tid, inject in held.items():
                with contextlib.suppress(OSError):
                    ptrace(PTRACE_DETACH, tid, 0, inject)
