"""``vmatrace import-strace``: turn strace output into a vmatrace trace (no root, no bcc).

Input: the text strace writes with ``-f`` (``[pid N]`` prefixes on stderr, or a plain pid
column with ``-o FILE``), ``-ff -o PREFIX`` (one file per process, ``PREFIX.PID``: pass them
all), with or without ``-t``/``-tt``/``-ttt`` timestamps, ``-T`` durations, ``-y`` fd paths,
``-X raw|abbrev|verbose`` flag decoding. Calls interrupted by another thread's output
(``<unfinished ...>`` / ``<... NAME resumed>``) are stitched back together.

Output: trace format v1 (:mod:`vmatrace.base.trace`) with

* one event per memory syscall (``mmap``, ``munmap``, ``mprotect``, ``mremap``, ``brk``,
  ``madvise``, ``mlock*``, ``mseal``, ``prctl``, ``shmat``/``shmdt``, ...) with the raw
  argument values in ``a0..a5`` and the return value in ``ret`` (``-errno`` on failure);
* ``fork`` for clone/clone3/fork/vfork (child = return value; CLONE_THREAD makes a thread),
  ``execve`` (the call) plus ``exec`` on success, ``exit_group``, and ``exit`` for
  ``+++ exited with N +++`` / ``+++ killed by SIG +++``;
* snapshots: ``--maps [PID:]FILE`` maps texts as given, and otherwise one *reconstructed*
  snapshot per successful execve, rebuilt from the ELF program headers of the executable and
  its interpreter (:mod:`collectors.elf`) with the load bases taken from the log.

``seq`` follows the log: a call is placed where it completes (the line with its return
value), except process creation, placed where it starts so that the ``fork`` event precedes
every line of the child. See ``docs/strace-import.md``.
"""

from __future__ import annotations

import codecs
import contextlib
import errno as _errno
import io
import os
import platform
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from collectors import elf
from vmatrace.base import uapi
from vmatrace.base.errors import VmatraceError
from vmatrace.base.events import SYSCALL_KINDS

__all__ = [
    "MEMORY_KINDS",
    "ExecInfo",
    "ParsedLog",
    "Reconstruction",
    "import_strace",
    "parse_args_text",
    "parse_strace",
    "reconstruct_exec",
]

U64 = (1 << 64) - 1
# positions in an event row (EVENT_SCHEMA order)
_SEQ, _TS, _PID, _TID, _KIND, _A1, _RET, _STACK, _FLAGS, _TEXT = 0, 1, 2, 3, 4, 6, 11, 12, 13, 14
_FILE_DEV, _FILE_INO, _FILE_PATH, _FILE_ID = 15, 16, 17, 18

# Syscalls that become events of the same name.
MEMORY_KINDS = frozenset(SYSCALL_KINDS)
_ALIASES = {"mmap2": "mmap", "execveat": "execve",
            # x86-64 numbers of memory syscalls newer than some strace releases (strace 6.1
            # prints mseal as syscall_0x1ce)
            "syscall_0x1ce": "mseal", "syscall_0x149": "pkey_mprotect", "syscall_0x1b8": "process_madvise",
            "syscall_0x145": "mlock2"}
_FORK_CALLS = frozenset({"clone", "clone3", "fork", "vfork"})
# calls that change the fd table (followed so that mmap events can name their file)
_FD_CALLS = frozenset({"open", "openat", "openat2", "creat", "close", "dup", "dup2", "dup3", "close_range",
                       "fcntl", "fcntl64", "memfd_create", "shmget"})
_F_DUPFD, _F_DUPFD_CLOEXEC = 0, 1030  # fcntl commands that duplicate an fd (x86-64 values)
# strace -y: "= 3</usr/lib/libc.so.6>"; a deleted file: "= 3</tmp/x>(deleted)"
_RET_FD_PATH_RE = re.compile(r"^\s*=\s*(\d+<.*>(?:\(deleted\))?)\s*$")
# prctl options that change VMAs or their flags (the ones the bcc collector records):
# PR_SET_VMA, PR_SET_MM, PR_SET_THP_DISABLE, PR_SET_MDWE, PR_SET_MEMORY_MERGE
_PRCTL_VMA = frozenset({0x53564D41, 35, 41, 65, 67})

# -- symbolic constants strace prints (x86-64 values) ---------------------------------------
_CONST: dict[str, int] = uapi.BY_NAME
_SIGNALS = {k: v for k, v in _CONST.items() if k.startswith("SIG")}
# strace's names for the kernel-internal restart codes (include/linux/errno.h)
_ERRNO_EXTRA = {"ERESTARTSYS": 512, "ERESTARTNOINTR": 513, "ERESTARTNOHAND": 514,
                "ENOIOCTLCMD": 515, "ERESTART_RESTARTBLOCK": 516, "EPROBE_DEFER": 517,
                "EOPENSTALE": 518, "ENOPARAM": 519}

# -- line syntax -------------------------------------------------------------------------------
_PREFIX_RE = re.compile(
    r"^(?:\[pid\s+(?P<pid1>\d+)\]\s+|(?P<pid2>\d+)\s+)?"
    r"(?:(?P<ts>\d{2}:\d{2}:\d{2}(?:\.\d+)?|\d+\.\d+)\s+)?"
    r"(?P<rest>.*)$"
)
_NAME_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\(")
_RESUMED_RE = re.compile(r"^<\.\.\.\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)?\s*resumed>\s?")
_UNFINISHED = "<unfinished ...>"
_RET_RE = re.compile(
    r"^\s*=\s*(?P<ret>0x[0-9a-fA-F]+|-?\d+|\?)"
    r"(?:\s+(?P<errno>E[A-Z0-9_]+)(?:\s+\((?P<errtext>[^)]*)\))?)?"
)
_EXIT_RE = re.compile(r"^\+\+\+ (?:exited with (?P<code>-?\d+)|killed by (?P<sig>SIG[A-Z0-9+]+|\d+)(?P<core> \(core dumped\))?|superseded by execve in pid (?P<newpid>\d+)) \+\+\+\s*$")
_SIGNAL_RE = re.compile(r"^--- (?:stopped by )?(?P<sig>SIG[A-Z0-9+]+|\d+) (?P<info>\{.*\} |.*)?---\s*$")
_DURATION_RE = re.compile(r"\s*<\d+\.\d+>\s*$")
_ATTACHED_RE = re.compile(r"strace: Process \d+ (?:attached|detached|suspended)")
_INT_RE = re.compile(r"^-?(?:0x[0-9a-fA-F]+|\d+)$")
_FD_PATH_RE = re.compile(r"^(-?\d+)<(.*)>(\(deleted\))?$")


def _fd_path(m: re.Match[str] | None) -> str | None:
    """The path of an strace -y fd (``3</p>``; ``3</p>(deleted)`` is "/p (deleted)" as /proc prints it)."""
    if m is None:
        return None
    return m.group(2) + " (deleted)" if m.group(3) else m.group(2)


MAX_PIPE_LOG_BYTES = 4 << 30  # a log given as a pipe is copied to a temporary file up to this size
MAX_LINE_CHARS = 1 << 20  # no strace line is this long (strace cuts strings at -s, 32 by default)
MAX_MAPS_FILE_BYTES = 256 << 20  # a --maps text (65,530 VMAs of long paths: ~30 MB)
_FORK_RET_RE = re.compile(r"(?:clone3?|v?fork)\(.*=\s*(\d+)\s*$")
_FORK_RESUMED_RET_RE = re.compile(r"<\.\.\. (?:clone3?|v?fork) resumed>.*\)\s*=\s*(\d+)\s*$")


# strace -k: " > /usr/lib/x86_64-linux-gnu/libc.so.6(mmap64+0x26) [0xfb6f6]"
_STACK_RE = re.compile(r"^(?P<module>[^(\[]*?)\((?P<sym>[^+)]*)(?:\+0x(?P<off>[0-9a-fA-F]+))?\)\s*\[0x(?P<addr>[0-9a-fA-F]+)\]$"
                       r"|^(?P<module2>\S+)\s*\[0x(?P<addr2>[0-9a-fA-F]+)\]$")


def _symbol_at_file_offset(module: str, fileoff: int, *, return_address: bool) -> tuple[str, int] | None:
    """(symbol, offset) for a module file offset, from the module's own symbol tables."""
    from collectors.symbols import load_symbols

    table = load_symbols(module)
    if table is None:
        return None
    look = fileoff - 1 if return_address and fileoff else fileoff
    vaddr = table.vaddr_of(look)
    if vaddr is None:
        return None
    hit = table.lookup(vaddr)
    if hit is None:
        return None
    return hit[0], vaddr - hit[1] + (fileoff - look)


def _to_u64(v: int) -> int:
    return v & U64


def _const(tok: str) -> int | None:
    """Value of one token of a flags expression, or None if unknown."""
    tok = tok.strip()
    if not tok:
        return None
    if _INT_RE.match(tok):
        neg = tok.startswith("-")
        body = tok[1:] if neg else tok
        try:
            if body.startswith("0x"):
                v = int(body, 16)
            elif len(body) > 1 and body.startswith("0"):
                v = int(body, 8)
            else:
                v = int(body)
        except ValueError:  # "09": not octal
            return None
        return -v if neg else v
    if "<<" in tok:
        a, _, b = tok.partition("<<")
        x, y = _const(a), _const(b)
        return None if x is None or y is None else x << y
    if "*" in tok:  # strace writes 8192*1024 for rlimits
        a, _, b = tok.partition("*")
        x, y = _const(a), _const(b)
        return None if x is None or y is None else x * y
    if tok.startswith("~"):
        inv = _const(tok[1:])
        return None if inv is None else ~inv
    return _CONST.get(tok)


@dataclass
class Arg:
    """One syscall argument as printed by strace."""

    text: str
    value: int | None  # numeric value, None if strace printed a structure/string/unknown name
    unknown: list[str] = field(default_factory=list)  # symbolic names we do not know


def _string_end(s: str, i: int) -> int:
    """Index just past the strace string literal that opens at s[i] (backslash escapes honoured)."""
    j, n = i + 1, len(s)
    while j < n and s[j] != '"':
        j += 2 if s[j] == "\\" else 1
    return j + 1


def _split_top(s: str) -> list[str]:
    """Split at commas that are outside quotes, brackets, braces and comments."""
    out: list[str] = []
    depth = 0
    cur: list[str] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == '"':
            j = _string_end(s, i)
            cur.append(s[i:j])
            i = j
            continue
        if s.startswith("/*", i):
            j = s.find("*/", i + 2)
            j = n if j < 0 else j + 2
            cur.append(s[i:j])
            i = j
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    last = "".join(cur).strip()
    if last or out:
        out.append(last)
    return out


def _find_close(s: str, start: int) -> int:
    """Index of the ')' closing the '(' just before `start`, or -1."""
    depth = 1
    i, n = start, len(s)
    while i < n:
        c = s[i]
        if c == '"':
            i = _string_end(s, i)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i if c == ")" else -1
        i += 1
    return -1


_KW_RE = re.compile(r"^[a-z_][a-z0-9_]*=(?!=)")
_VERBOSE_RE = re.compile(r"^(\S+)\s*/\*.*\*/$")
_PLAIN_RE = re.compile(r'^[^"()\[\]{}/]*$')  # nothing to nest or quote: split at commas
_SIMPLE_CALL_RE = re.compile(r'^([^"()\[\]{}]*)\)')


@lru_cache(maxsize=1 << 16)
def _parse_arg(text: str) -> Arg:
    t = text.strip()
    m = _KW_RE.match(t)  # clone's "flags=...", "child_stack=..."
    if m:
        t = t[m.end() :]
    verbose = _VERBOSE_RE.match(t)  # -X verbose: 0x3 /* PROT_READ|PROT_WRITE */
    if verbose:
        t = verbose.group(1)
    fdm = _FD_PATH_RE.match(t)  # -y: 3</usr/lib/libc.so.6>
    if fdm:
        t = fdm.group(1)
    if not t or t[0] in "\"[{":
        return Arg(text, None)
    total = 0
    unknown: list[str] = []
    for tok in t.split("|"):
        v = _const(tok)
        if v is None:
            unknown.append(tok.strip())
        else:
            total |= v
    if unknown and len(unknown) == len(t.split("|")):
        return Arg(text, None, unknown)
    return Arg(text, total, unknown)


def parse_args_text(args: str) -> list[Arg]:
    """Split and decode an strace argument list (the text between the parentheses)."""
    if _PLAIN_RE.match(args):
        parts = [a.strip() for a in args.split(",")] if args.strip() else []
    else:
        parts = _split_top(args)
    return [_parse_arg(a) for a in parts]


# -- records -----------------------------------------------------------------------------------
@dataclass(slots=True)
class _Line:
    src: str
    lineno: int
    tid: int | None
    ts: str | None
    rest: str


@dataclass
class _Proc:
    pid: int
    ppid: int = 0
    comm: str = ""
    cmdline: str = ""
    start_ns: int = 0
    exit_ns: int = 0
    exit_code: int = 0
    how_ended: str = "unknown"


@dataclass
class ExecInfo:
    """A successful execve, and what the log tells about the new image's layout."""

    pid: int
    event: list[Any]  # the "exec" event row (its seq is final once parsing is done)
    ts_ns: int
    filename: str
    brk: int | None = None  # return of the first brk(NULL)
    prot_read: list[tuple[int, int]] = field(default_factory=list)  # mprotect(a, l, PROT_READ)
    mmaps: list[tuple[int, int]] = field(default_factory=list)  # successful mmaps (addr, len)
    done: bool = False  # a later exec of the same pid ended this image


@dataclass
class ParsedLog:
    """Everything :func:`parse_strace` extracted from a log."""

    rows: list[list[Any]]  # event rows in EVENT_SCHEMA column order, seq = index
    procs: dict[int, _Proc]
    execs: list[ExecInfo]
    warnings: list[str]
    clock: str  # "realtime" or "none"
    lines: int
    strace_lines: int
    other_syscalls: int
    signals: dict[str, int]
    first_pid: int | None
    stacks: list[dict[str, Any]] = field(default_factory=list)  # strace -k frames (STACK_SCHEMA)
    unpaired_calls: int = 0  # unfinished calls never resumed + resumed lines without a start
    unparsed_lines: int = 0  # lines skipped as damaged
    unfollowed_children: int = 0  # fork children with no line in the log (strace without -f)
    cmdline: str | None = None  # argv of the log's first successful execve (the command strace ran)

    def events_frame(self) -> pl.DataFrame:
        """The events as an EVENT_SCHEMA frame."""
        from vmatrace.base.events import with_populates
        from vmatrace.base.trace import EVENT_SCHEMA

        return with_populates(pl.DataFrame(self.rows, schema=EVENT_SCHEMA, orient="row"))

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events as dicts (convenient for small logs and tests)."""
        return self.events_frame().to_dicts()


def _errno_value(name: str) -> int | None:
    v = getattr(_errno, name, None)
    if isinstance(v, int):
        return v
    return _ERRNO_EXTRA.get(name)


def _parse_ret(tail: str) -> tuple[int, str | None] | None:
    """(ret, errno name) from the text after the closing parenthesis."""
    tail = _DURATION_RE.sub("", tail)
    m = _RET_RE.match(tail)
    if not m:
        return None
    r, en = m.group("ret"), m.group("errno")
    if r == "?":
        ret = 0
        if en:
            v = _errno_value(en)
            ret = -v if v is not None else 0
        return ret, en
    v = int(r, 16) if r.startswith("0x") else int(r)
    if not -(1 << 63) <= v < 1 << 64:
        return None  # no 64-bit register holds that: a damaged line
    if v >= 1 << 63:
        v -= 1 << 64
    if v == -1 and en:
        ev = _errno_value(en)
        if ev is not None:
            v = -ev
    return v, en


def _unescape(body: str) -> str:
    """The text of an strace string literal's body: C escapes (``\\303\\251``, ``\\x2f``, ``\\n``)
    give bytes, and the bytes are UTF-8 (undecodable bytes are kept as ``\\xNN``)."""
    if "\\" not in body:
        return body
    raw: bytes = codecs.escape_decode(body.encode("utf-8"))[0]
    return raw.decode("utf-8", errors="backslashreplace")


def _strings(text: str) -> list[str]:
    return [_unescape(s) for s in re.findall(r'"((?:[^"\\]|\\.)*)"', text)]


def _argv(argtext: str) -> list[str]:
    """The strings of the first ``[...]`` array in an argument list, as strace printed them: a
    string strace cut (``"abc"...``) keeps its ``...``, and so does an array it cut (``..., ...]``)."""
    lb = argtext.find("[")
    if lb < 0:
        return []
    i, n, depth = lb, len(argtext), 0
    while i < n:  # the matching "]" (strings skipped)
        c = argtext[i]
        if c == '"':
            i = _string_end(argtext, i)
            continue
        if c in "[{(":
            depth += 1
        elif c in "]})":
            depth -= 1
            if depth == 0:
                break
        i += 1
    out: list[str] = []
    for item in _split_top(argtext[lb + 1 : i]):
        if item.startswith('"'):
            end = _string_end(item, 0)
            out.append(_unescape(item[1 : end - 1]) + ("..." if item[end:].startswith("...") else ""))
        elif item == "...":
            out.append("...")
    return out


class _Lines:
    """The lines of the log(s), re-iterable, with pid and timestamp split off, in log order.

    One file is streamed from disk on each pass (a log can be far larger than memory allows
    as Python objects); several ``-ff`` files are merged by timestamp in memory.
    """

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.warnings: list[str] = []
        self.spooled: dict[Path, Any] = {}  # a pipe's content, kept in an unnamed temporary file
        for p in paths:
            try:
                st = os.stat(p)
            except FileNotFoundError:
                raise VmatraceError(f"{p}: no such file") from None
            except OSError as e:
                raise VmatraceError(f"cannot read {p}: {e.strerror}") from None
            if stat.S_ISDIR(st.st_mode):
                raise VmatraceError(f"{p} is a directory, not an strace log")
            if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                self.spooled[p] = self._spool(p)  # `<(strace ...)`: a pipe can be read only once
            elif not stat.S_ISREG(st.st_mode):
                raise VmatraceError(f"{p} is a device, not an strace log")
            try:
                with self._open(p) as f:
                    head = f.read(4096)
            except OSError as e:
                raise VmatraceError(f"cannot read {p}: {e.strerror}") from None
            if b"\0" in head or (head and sum(b < 9 or 13 < b < 32 for b in head) > len(head) // 20):
                raise VmatraceError(f"{p} is binary data, not strace output")
        self.merged: list[_Line] | None = None
        if len(paths) > 1:
            per_file = [list(self._file(p, multi=True)) for p in paths]
            merged = [ln for f in per_file for ln in f]
            if not all(ln.ts for ln in merged):
                self.warnings.append("several logs without timestamps (-tt/-ttt): concatenated in argument "
                                     "order, so the interleaving of processes is unknown")
            else:
                merged.sort(key=lambda ln: _ts_sort_key(ln.ts or ""))  # stable: ties keep file order
            self.merged = merged

    @staticmethod
    def _spool(p: Path) -> Any:
        """Copy a pipe into an unnamed temporary file, at most MAX_PIPE_LOG_BYTES."""
        import tempfile

        tmp = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        try:
            with open(p, "rb", buffering=0) as src:
                total = 0
                while chunk := src.read(1 << 20):
                    total += len(chunk)
                    if total > MAX_PIPE_LOG_BYTES:
                        raise VmatraceError(f"{p}: more than {MAX_PIPE_LOG_BYTES >> 20} MiB from a pipe: "
                                            "save the log to a file and import that")
                    tmp.write(chunk)
            tmp.flush()
        except OSError as e:
            tmp.close()
            raise VmatraceError(f"cannot read {p}: {e.strerror}") from None
        except BaseException:
            tmp.close()
            raise
        return tmp

    def _open(self, p: Path) -> Any:
        """A binary file object reading `p` from its start (its spooled copy for a pipe)."""
        tmp = self.spooled.get(p)
        if tmp is not None:  # (a new open file description: an offset of its own)
            return open(f"/proc/self/fd/{tmp.fileno()}", "rb")
        return open(p, "rb")

    def close(self) -> None:
        for tmp in self.spooled.values():
            tmp.close()
        self.spooled.clear()

    def _file(self, p: Path, *, multi: bool) -> Iterator[_Line]:
        # -ff -o PREFIX writes PREFIX.PID without a pid column
        suffix = p.suffix[1:]
        file_pid = int(suffix) if multi and suffix.isdigit() else None
        src = str(p)
        try:
            raw_f = self._open(p)
        except OSError as e:
            raise VmatraceError(f"cannot read {p}: {e.strerror}") from None
        f = io.TextIOWrapper(raw_f, encoding="utf-8", errors="replace", newline=None)
        with f:
            n = 0
            while raw := f.readline(MAX_LINE_CHARS):
                n += 1
                if len(raw) >= MAX_LINE_CHARS and not raw.endswith("\n"):
                    while (more := f.readline(MAX_LINE_CHARS)) and not more.endswith("\n"):
                        pass  # (skipped, never held whole)
                    raw = f"<a line of more than {MAX_LINE_CHARS >> 20} Mi characters, skipped>"
                raw = raw.rstrip("\n")
                if not raw.strip():
                    continue
                m = _PREFIX_RE.match(raw)
                assert m is not None  # the pattern matches every string
                pid = m.group("pid1") or m.group("pid2")
                yield _Line(src, n, int(pid) if pid else file_pid, m.group("ts"), m.group("rest"))

    def __iter__(self) -> Iterator[_Line]:
        if self.merged is not None:
            return iter(self.merged)
        return self._file(self.paths[0], multi=False)


def _ts_sort_key(ts: str) -> float:
    if ":" in ts:
        h, m, s = ts.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    return float(ts)


class _Clock:
    """Converts strace timestamps to ns since the epoch."""

    def __init__(self, mtime: float | None) -> None:
        self.mtime = mtime
        self.base: int | None = None  # epoch ns of local midnight for time-of-day stamps
        self.last_tod = -1
        self.day = 0
        self.kind: str | None = None

    def ns(self, ts: str | None) -> int:
        if ts is None:
            return 0
        if ":" not in ts:
            self.kind = self.kind or "epoch"
            sec, _, frac = ts.partition(".")
            return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])
        self.kind = self.kind or "time-of-day"
        h, m, s = ts.split(":")
        sec, _, frac = s.partition(".")
        tod = ((int(h) * 60 + int(m)) * 60 + int(sec)) * 1_000_000_000 + int((frac + "000000000")[:9])
        if tod + 43_200 * 1_000_000_000 < self.last_tod:  # wrapped past midnight
            self.day += 1
        self.last_tod = tod
        if self.base is None:
            self.base = self._midnight(tod)
        return self.base + self.day * 86_400_000_000_000 + tod

    def _midnight(self, first_tod: int) -> int:
        # strace -t/-tt prints local time of day without a date: take the date of the log
        # file's modification time (when strace last wrote it), in local time.
        ref = datetime.fromtimestamp(self.mtime if self.mtime is not None else time.time())
        day = ref.replace(hour=0, minute=0, second=0, microsecond=0)
        ref_tod = int((ref - day).total_seconds() * 1e9)
        if first_tod > ref_tod + 3_600 * 1_000_000_000:  # the log began before midnight
            day -= timedelta(days=1)
        return int(day.timestamp()) * 1_000_000_000


class _Parser:
    def __init__(self, lines: _Lines, mtime: float | None) -> None:
        self.lines = lines
        self.n_lines = 0
        self.first_line: _Line | None = None
        self.unprefixed = False
        self.clock = _Clock(mtime)
        self.events: list[list[Any] | None] = []
        self.warnings: list[str] = []
        self.bad_lines = 0
        self.strace_lines = 0
        self.other = 0
        self.signals: dict[str, int] = {}
        # tid -> its unfinished calls, oldest first: (name, argument text so far, first line, slot).
        # A thread has one call in flight, but a damaged log (or one without -f, where all
        # processes share one pid) can start another before the first resumes: keep them all.
        self.pending: dict[int, list[tuple[str, str, _Line, int | None]]] = {}
        self.unpaired: list[str] = []  # "FILE:LINE: name() by tid ..." for calls never paired
        self.n_unpaired = 0
        self.fork_children: set[int] = set()  # processes (not threads) created by a fork call
        self.seen_tids: set[int] = set()  # tids that have a line of their own
        self.first_cmdline: dict[int, str] = {}  # pid -> argv of the log's first successful execve
        self.tgid: dict[int, int] = {}
        self.live: dict[int, set[int]] = {}  # tgid -> live tids
        self.procs: dict[int, _Proc] = {}
        self.execs: list[ExecInfo] = []
        self.cur_exec: dict[int, ExecInfo] = {}
        self.unknown_names: set[str] = set()
        self.first_pid = self._guess_first_pid()
        self.provisional: dict[int, int] = {}  # tid -> index of the first event after it showed up
        # tgid -> fd -> (path, O_CLOEXEC, file id): the file id names the open file description,
        # shared by dup'd and inherited fds (the bcc collector's file_id)
        self.fds: dict[int, dict[int, tuple[str | None, bool, int]]] = {}
        self.file_ids = 0
        self.shm_keys: dict[int, int] = {}  # shmid -> the key it was created with
        self.last_event: list[Any] | None = None
        self.stack_ids: list[int] = []
        self.stacks: list[dict[str, Any]] = []
        self.stack_depth: dict[int, int] = {}
        self.ints: dict[int, int] = {}

    # The initial process has no "[pid N]" prefix while it is the only traced process; find
    # its pid: the one prefixed pid that is never a child, or a getpid/gettid-like return.
    def _guess_first_pid(self) -> int | None:
        seen: dict[int, None] = {}  # (ordered: first appearance)
        children: set[int] = set()
        self_ret: int | None = None
        for ln in self.lines:
            if ln.tid is not None:
                seen.setdefault(ln.tid)
            if "clone" in ln.rest or "fork" in ln.rest:
                m = _FORK_RET_RE.search(ln.rest) or _FORK_RESUMED_RET_RE.search(ln.rest)
                if m:
                    children.add(int(m.group(1)))
            if ln.tid is None and self_ret is None:
                m = re.match(r"^(?:getpid|gettid|set_tid_address)\(.*\)\s*=\s*(\d+)", ln.rest)
                if m:
                    self_ret = int(m.group(1))
        roots = [p for p in seen if p not in children]
        if self_ret is not None:
            return self_ret
        if roots:
            return roots[0]
        return None

    def warn_line(self, ln: _Line, what: str) -> None:
        self.bad_lines += 1
        if self.bad_lines <= 20:
            self.warnings.append(f"{ln.src}:{ln.lineno}: {what}: {ln.rest[:80]!r}")

    def tid_of(self, ln: _Line) -> int:
        if ln.tid is not None:
            return ln.tid
        only: int | None = None
        for ts in self.live.values():  # (empty sets are removed: this stops at the second live tid)
            if not ts:
                continue
            if only is not None or len(ts) > 1:
                only = None
                break
            only = next(iter(ts))
        else:
            if only is not None:
                return only
        return self.first_pid if self.first_pid is not None else 0

    def pid_of(self, tid: int) -> int:
        if tid not in self.tgid:
            # first seen before any clone returned it: a child that ran before its parent's
            # "<... clone resumed>" line. Provisionally its own process; fixed up in fork().
            self.provisional[tid] = len(self.events)
        pid = self.tgid.setdefault(tid, tid)
        self.live.setdefault(pid, set()).add(tid)
        if pid not in self.procs:
            self.procs[pid] = _Proc(pid)
        return pid

    def intern(self, v: int) -> int:
        """One int object per repeated small value (tids, lengths, flags, the fd -1 as u64): the rows
        of a long log then share them (10% of its memory); addresses, mostly distinct, are not kept."""
        if 0 <= v < 1 << 32 or v == U64:
            ints = self.ints
            if len(ints) > 1 << 16:
                ints.clear()
            return ints.setdefault(v, v)
        return v

    def emit(self, ts_ns: int, pid: int, tid: int, kind: str, args: list[int], ret: int,
             flags: int = 0, text: str | None = None, slot: int | None = None) -> int:
        a = [self.intern(_to_u64(x)) for x in args[:6]] + [0] * (6 - min(len(args), 6))
        # one row in EVENT_SCHEMA column order (a list: a dict per event costs 4x the memory)
        ev: list[Any] = [0, ts_ns, self.intern(pid), self.intern(tid), kind, *a, self.intern(ret), None, flags,
                         text, None, None, None, None]
        if slot is not None:
            self.events[slot] = ev
            return slot
        self.events.append(ev)
        self.last_event = ev
        return len(self.events) - 1

    def stack_line(self, ln: _Line, frame: str) -> None:
        """One ``strace -k`` frame: ``MODULE(SYMBOL+0xOFF) [0xFILEOFF]`` after the call's line."""
        ev = self.last_event
        if ev is None:
            return  # the stack of a call that is not an event
        m = _STACK_RE.match(frame.strip())
        if not m:
            self.warn_line(ln, "cannot parse strace -k frame")
            return
        if ev[_STACK] is None:
            sid = len(self.stack_ids)
            ev[_STACK] = sid
            self.stack_ids.append(sid)
        module, sym, fileoff = m.group("module"), m.group("sym"), int(m.group("addr"), 16)
        off = int(m.group("off"), 16) if m.group("off") else 0
        depth = self.stack_depth.get(ev[_STACK], 0)
        self.stack_depth[ev[_STACK]] = depth + 1
        resolved = _symbol_at_file_offset(module, fileoff, return_address=depth > 0)
        if resolved is not None:
            sym, off = resolved
        self.stacks.append({"pid": ev[_PID], "stack_id": ev[_STACK], "depth": depth, "ip": fileoff,
                            "symbol": sym or "[unknown]", "module": module, "offset": off})

    def run(self) -> None:
        for ln in self.lines:
            self.n_lines += 1
            if self.first_line is None:
                self.first_line = ln
            self.unprefixed = self.unprefixed or ln.tid is None
            self.line(ln)
            if self.n_lines >= 50 and self.strace_lines == 0:
                return  # not strace: the caller says so without reading the rest
        for tid, calls in self.pending.items():
            for call in calls:
                self.lost_call(tid, call, "never completed in the log")
        self.pending.clear()

    def lost_call(self, tid: int, call: tuple[str, str, _Line, int | None], why: str) -> None:
        """An unfinished call that no resumed line completes: counted and named (the first few)."""
        name, _, ln, slot = call
        self.n_unpaired += 1
        if len(self.unpaired) < 10:
            self.unpaired.append(f"{ln.src}:{ln.lineno}: {name}() by {tid} {why}")
        if slot is not None:
            self.events[slot] = None

    def line(self, ln: _Line) -> None:
        if ln.tid is not None and not 0 < ln.tid < 1 << 32:
            self.warn_line(ln, "pid out of range")
            return
        rest = ln.rest.rstrip()
        if rest.lstrip().startswith("> "):
            self.stack_line(ln, rest.lstrip()[2:])
            return
        self.last_event = None
        if rest.startswith("strace: "):
            return  # strace's own messages
        cut = _ATTACHED_RE.search(rest)
        if cut:  # "clone(...strace: Process N attached": strace's stderr message split the line
            rest = rest[: cut.start()].rstrip() + " " + _UNFINISHED
            if rest.startswith(_UNFINISHED):
                return
        if rest.startswith("+++"):
            self.exit_line(ln, rest)
            return
        if rest.startswith("---"):
            m = _SIGNAL_RE.match(rest)
            if not m:
                self.warn_line(ln, "cannot parse signal line")
                return
            self.strace_lines += 1
            self.signals[m.group("sig")] = self.signals.get(m.group("sig"), 0) + 1
            return
        tid = self.tid_of(ln)
        self.seen_tids.add(tid)
        m = _RESUMED_RE.match(rest)
        if m:
            p = self.take_pending(tid, m.group("name"))
            if p is None:
                # strace -ff or a log that starts mid-call: nothing to stitch to
                self.n_unpaired += 1
                if len(self.unpaired) < 10:
                    self.unpaired.append(f"{ln.src}:{ln.lineno}: {m.group('name') or 'a call'} resumed by {tid} "
                                         "without its start in the log")
                return
            name, args_start, first, slot = p
            body = args_start + rest[m.end() :]
            if body.rstrip().endswith(_UNFINISHED):  # resumed and interrupted again
                self.strace_lines += 1
                self.pending.setdefault(tid, []).append((name, body.rstrip()[: -len(_UNFINISHED)], first, slot))
                return
            self.complete(ln, tid, name, body, slot, first)
            return
        m = _NAME_RE.match(rest)
        if not m:
            self.warn_line(ln, "not an strace line")
            return
        name = m.group("name")
        body = rest[m.end() :]
        if body.endswith(_UNFINISHED):
            self.strace_lines += 1
            slot = None
            if name in _FORK_CALLS:  # reserve the fork's place before anything the child does
                self.events.append(None)
                slot = len(self.events) - 1
            self.pending.setdefault(tid, []).append((name, body[: -len(_UNFINISHED)], ln, slot))
            return
        self.complete(ln, tid, name, body, None, ln)

    def take_pending(self, tid: int, name: str | None) -> tuple[str, str, _Line, int | None] | None:
        """The newest unfinished call of `tid` named `name` (any name if None), removed."""
        calls = self.pending.get(tid)
        if not calls:
            return None
        for i in range(len(calls) - 1, -1, -1):
            if name is None or calls[i][0] == name:
                call = calls.pop(i)
                if not calls:
                    del self.pending[tid]
                return call
        return None

    def complete(self, ln: _Line, tid: int, name: str, body: str, slot: int | None, first: _Line) -> None:
        sm = _SIMPLE_CALL_RE.match(body)
        close = sm.end() - 1 if sm else _find_close(body, 0)
        if close < 0:
            self.warn_line(ln, "incomplete call (no closing parenthesis; truncated line?)")
            if slot is not None:
                self.events[slot] = None
            return
        r = _parse_ret(body[close + 1 :])
        if r is None:
            self.warn_line(ln, "cannot parse the return value")
            if slot is not None:
                self.events[slot] = None
            return
        self.strace_lines += 1
        ret, _ = r
        ts_ns = self.clock.ns(first.ts if slot is not None else ln.ts)
        if ts_ns >= 1 << 64:
            self.warn_line(ln, "timestamp out of range")
            if slot is not None:
                self.events[slot] = None
            return
        pid = self.pid_of(tid)
        proc = self.procs[pid]
        if not proc.start_ns:
            proc.start_ns = ts_ns
        kind = _ALIASES.get(name, name)
        if kind not in MEMORY_KINDS and kind not in _FORK_CALLS:
            self.other += 1
            if kind in _FD_CALLS and ret >= 0:
                self.fd_call(pid, kind, body[:close], ret, body[close + 1 :])
            return
        args = parse_args_text(body[:close])
        if kind in _FORK_CALLS:
            self.fork(ts_ns, pid, tid, name, args, ret, slot)
            return
        if kind not in MEMORY_KINDS or (kind == "prctl" and (not args or args[0].value not in _PRCTL_VMA)):
            self.other += 1
            return
        for a in args:
            for u in a.unknown:
                if u not in self.unknown_names:
                    self.unknown_names.add(u)
                    self.warnings.append(f"{ln.src}:{ln.lineno}: unknown constant {u!r} in {name}(), taken as 0")
        vals = [a.value if a.value is not None else 0 for a in args]
        text: str | None = None
        flags = 0
        if kind == "mmap" and name == "mmap2" and len(vals) >= 6:
            vals[5] *= elf.PAGE_SIZE
        file: tuple[str | None, int] | None = None
        if kind == "mmap" and len(args) >= 5:
            fdm = _FD_PATH_RE.match(args[4].text.strip())  # strace -y: 3</usr/lib/libc.so.6>
            if fdm:
                text = _fd_path(fdm)
            elif args[4].value is not None and args[4].value >= 0:
                text = self.fds.get(pid, {}).get(args[4].value, (None, False, 0))[0]
            if not -4096 < ret < 0 and len(vals) >= 4:
                file = self.mmap_file(pid, vals[3], args[4], _fd_path(fdm))
        elif kind == "shmat" and not -4096 < ret < 0 and args and args[0].value is not None:
            key = self.shm_keys.get(args[0].value)
            file = (None if key is None else f"/SYSV{key & 0xFFFFFFFF:08x} (deleted)", self.new_file_id())
        if kind == "execve":
            strs = _strings(body[:close])
            filename = strs[0] if strs else (args[0].text if args else "")
            if name == "execveat" and len(strs) > 0:
                filename = strs[0]
            text = filename
            vals = [0, 0, 0]
            self.emit(ts_ns, pid, tid, "execve", vals, ret, text=text)
            if ret == 0:
                old_tid = first.tid if first.tid is not None else tid
                self.exec_done(ts_ns, pid, tid, filename, body[:close], old_tid=old_tid)
            return
        if kind == "prctl" or kind == "process_madvise":
            strs = _strings(body[:close])
            text = strs[0] if strs else None
            if kind == "process_madvise":
                text = args[1].text if len(args) > 1 else None
        idx = self.emit(ts_ns, pid, tid, kind, vals, ret, flags=flags, text=text)
        if file is not None:
            ev = self.events[idx]
            assert ev is not None
            ev[_FILE_PATH], ev[_FILE_ID] = file
        self.note_layout(pid, kind, vals, ret)

    def new_file_id(self) -> int:
        self.file_ids += 1
        return self.file_ids

    def fd_entry(self, pid: int, fd: int, ypath: str | None) -> tuple[str | None, bool, int]:
        """The fd table entry of `fd`; an fd the log never showed being opened (inherited from
        before the trace, or made by a call that is not followed) gets an open file of its own."""
        table = self.fds.setdefault(pid, {})
        e = table.get(fd)
        live = ypath.removesuffix(" (deleted)") if ypath is not None else None  # (unlinked since)
        if e is None or (live is not None and e[0] is not None and e[0] not in (ypath, live)
                         and (e[0].startswith("/") or not live.endswith("/" + e[0].removeprefix("./")))):
            # unknown, or -y names another file than the one the table holds (a call that is not
            # followed replaced it): a new open file
            e = table[fd] = (ypath, False, self.new_file_id())
        elif ypath is not None and e[0] != ypath:
            e = table[fd] = (ypath, e[1], e[2])  # the absolute path of a relative open
        return e

    def mmap_file(self, pid: int, flags: int, fd_arg: Arg, ypath: str | None) -> tuple[str | None, int] | None:
        """(file_path, file_id) of a successful mmap, None for anonymous memory (do_mmap())."""
        if flags & uapi.MAP_ANONYMOUS:
            if flags & uapi.MAP_SHARED:  # shmem_zero_setup(): a shmem file of its own
                return "/dev/zero (deleted)", self.new_file_id()
            return None
        if fd_arg.value is None or not 0 <= fd_arg.value < 1 << 31:
            return None
        path, _, fid = self.fd_entry(pid, fd_arg.value, ypath)
        if path == "/dev/zero":  # mmap_zero(): shared becomes a shmem file, private anonymous
            return ("/dev/zero (deleted)", self.new_file_id()) if flags & uapi.MAP_SHARED else None
        return path, fid

    def fd_call(self, pid: int, kind: str, argtext: str, ret: int, tail: str = "") -> None:
        """Follow the fd table: an mmap's fd is named (without -y) and its open file identified.

        open/openat/openat2/creat/memfd_create make a new open file; dup/dup2/dup3 and fcntl
        F_DUPFD/F_DUPFD_CLOEXEC share one; close and close_range drop fds; fork copies the table,
        exec drops the close-on-exec fds. With -y the return value carries the file's path.
        """
        table = self.fds.setdefault(pid, {})
        args = parse_args_text(argtext)
        m = _RET_FD_PATH_RE.match(_DURATION_RE.sub("", tail))
        ypath = _fd_path(_FD_PATH_RE.match(m.group(1))) if m else None
        if kind in ("open", "openat", "openat2", "creat", "memfd_create"):
            strs = _strings(argtext)
            if strs or ypath:
                i = {"openat": 2, "open": 1, "memfd_create": 1}.get(kind)  # creat has no flags; openat2 a struct
                flags = args[i] if i is not None and len(args) > i else None
                ftext = flags.text if flags is not None else (argtext if kind == "openat2" else "")
                bit = 1 if kind == "memfd_create" else 0o2000000  # MFD_CLOEXEC, O_CLOEXEC
                cloexec = "CLOEXEC" in ftext or bool(flags and flags.value and flags.value & bit)
                path = ypath or (f"/memfd:{strs[0]} (deleted)" if kind == "memfd_create" else strs[0])
                table[ret] = (path, cloexec, self.new_file_id())
        elif kind == "close" and args and args[0].value is not None:
            table.pop(args[0].value, None)
        elif kind in ("dup", "dup2", "dup3", "fcntl", "fcntl64") and args and args[0].value is not None:
            if kind.startswith("fcntl"):
                if len(args) < 2 or args[1].value not in (_F_DUPFD, _F_DUPFD_CLOEXEC):
                    return
                cloexec = args[1].value == _F_DUPFD_CLOEXEC
            else:
                cloexec = kind == "dup3" and "O_CLOEXEC" in argtext
            fdm = _FD_PATH_RE.match(args[0].text.strip())
            src = self.fd_entry(pid, args[0].value, _fd_path(fdm) or ypath)
            table[ret] = (src[0], cloexec, src[2])
        elif kind == "close_range" and len(args) >= 2 and args[0].value is not None and args[1].value is not None:
            for fd in [f for f in table if args[0].value <= f <= args[1].value]:
                table.pop(fd)
        elif kind == "shmget" and args and args[0].value is not None:
            self.shm_keys[ret] = args[0].value

    def note_layout(self, pid: int, kind: str, vals: list[int], ret: int) -> None:
        ex = self.cur_exec.get(pid)
        if ex is None or ret < 0:
            return
        if kind == "brk" and ex.brk is None and vals and vals[0] == 0:
            ex.brk = ret
        elif kind == "mprotect" and len(vals) >= 3 and vals[2] == _CONST["PROT_READ"]:
            ex.prot_read.append((vals[0], vals[1]))
        elif kind == "mmap" and len(vals) >= 2:
            ex.mmaps.append((ret, vals[1]))

    def fork(self, ts_ns: int, pid: int, tid: int, name: str, args: list[Arg], ret: int,
             slot: int | None) -> None:
        if not 0 < ret < 1 << 32:  # failed, or a damaged line
            if slot is not None:
                self.events[slot] = None
            return
        flags = 0
        if name == "clone" and len(args) >= 2:
            for a in args:
                if a.text.strip().startswith("flags="):
                    flags = a.value or 0
                    break
            else:
                flags = args[0].value or 0  # raw syscall order (flags, stack, ...)
        elif name == "clone3" and args:
            m = re.search(r"flags=([^,}]+)", args[0].text)
            if m:
                flags = _parse_arg(m.group(1)).value or 0
        elif name == "vfork":
            flags = _CONST["CLONE_VM"] | _CONST["CLONE_VFORK"]
        thread = bool(flags & _CONST["CLONE_THREAD"])
        child = ret
        child_tgid = pid if thread else child
        early = child in self.provisional  # the child has lines before this one (see pid_of)
        exited = False
        if early:
            first_ev = self.provisional.pop(child)
            mine = [ev for ev in self.events[first_ev:]
                    if ev is not None and ev[_TID] == child and ev[_PID] == child]
            # on a loaded machine the child can even end before the clone returns in the log
            exited = any(ev[_KIND] == "exit" for ev in mine)
            if thread:  # its lines came before the clone returned: they belong to the parent
                for ev in mine:
                    ev[_PID] = child_tgid
                    if ev[_KIND] == "exit":
                        # not the group's last thread: the thread calling clone is alive
                        ev[_A1] = 0
                self.live.pop(child, None)
                self.procs.pop(child, None)
        self.tgid[child] = child_tgid
        if not exited:
            self.live.setdefault(child_tgid, set()).add(child)
        if not thread:
            self.fork_children.add(child)
            proc = self.procs.setdefault(child, _Proc(child, ppid=pid, start_ns=ts_ns))
            proc.ppid = pid
            proc.start_ns = ts_ns  # (an early child's first line came after the clone started)
            inherited = dict(self.fds.get(pid, {}))
            if child in self.cur_exec:
                # the child exec'd before the fork returned in the log (vfork's child runs while
                # its parent waits): it keeps the exec's name, and the fds without close-on-exec
                inherited = {fd: v for fd, v in inherited.items() if not v[1]}
                inherited.update(self.fds.get(child, {}))
            else:
                parent = self.procs[pid]
                proc.comm = parent.comm
                proc.cmdline = parent.cmdline
                if early:  # what the child opened before the clone returned in the log is its own
                    inherited.update(self.fds.get(child, {}))
            self.fds[child] = inherited
        self.emit(ts_ns, pid, tid, "fork", [child, child_tgid, int(thread), flags], ret,
                  text=name, slot=slot)

    def exec_done(self, ts_ns: int, pid: int, tid: int, filename: str, argtext: str, *, old_tid: int) -> None:
        self.live[pid] = {tid}  # every other thread is gone (de_thread)
        self.fds[pid] = {fd: v for fd, v in self.fds.get(pid, {}).items() if not v[1]}
        # a0 = the tid that called execve (the kernel's old_pid), as the bcc collector records it
        idx = self.emit(ts_ns, pid, tid, "exec", [old_tid], 0, text=filename)
        ev = self.events[idx]
        assert ev is not None
        old = self.cur_exec.get(pid)
        if old is not None:
            old.done = True
        ex = ExecInfo(pid=pid, event=ev, ts_ns=ts_ns, filename=filename)
        self.execs.append(ex)
        self.cur_exec[pid] = ex
        proc = self.procs[pid]
        proc.comm = os.path.basename(filename)[:15]
        proc.cmdline = " ".join(_argv(argtext))
        if not self.first_cmdline:
            self.first_cmdline[pid] = proc.cmdline

    def exit_line(self, ln: _Line, rest: str) -> None:
        m = _EXIT_RE.match(rest)
        if not m:
            self.warn_line(ln, "cannot parse exit line")
            return
        self.strace_lines += 1
        tid = self.tid_of(ln)
        pid = self.pid_of(tid)
        ts_ns = self.clock.ns(ln.ts)
        if ts_ns >= 1 << 64:
            self.warn_line(ln, "timestamp out of range")
            return
        self.seen_tids.add(tid)
        if m.group("newpid"):
            # A non-leader thread N exec'd: the leader's pid continues as N's new image, and
            # N's "<... execve resumed>" comes under the leader's pid. The leader's own call in
            # flight ended with it (de_thread()): not a lost call.
            self.pending.pop(tid, None)
            newpid = int(m.group("newpid"))
            moved = self.pending.pop(newpid, None)
            if moved is not None:
                self.pending[tid] = moved
            self.live.get(pid, set()).discard(newpid)
            return
        for call in self.pending.pop(tid, []):
            self.lost_call(tid, call, "ended by the thread's exit without a result line")
        live = self.live.get(pid, set())
        live.discard(tid)
        group_dead = int(not live)
        if not live:
            self.live.pop(pid, None)
        proc = self.procs[pid]
        # a0 is the kernel's exit code, a wait(2) status, as the bcc collector records it
        if m.group("code") is not None:
            status = (int(m.group("code")) & 0xFF) << 8
            text = None
        else:
            sig = m.group("sig")
            status = _SIGNALS.get(sig, int(sig) if sig.isdigit() else 0) | (0x80 if m.group("core") else 0)
            text = f"killed by {sig}" + (" (core dumped)" if m.group("core") else "")
        self.emit(ts_ns, pid, tid, "exit", [status, group_dead], 0, text=text)
        if group_dead:
            from collectors.ptrace import describe_status

            proc.exit_ns = ts_ns
            proc.exit_code, proc.how_ended = describe_status(status)


def parse_strace(paths: list[Path]) -> ParsedLog:
    """Parse strace log file(s) into events, processes and exec records (see module docstring).

    Raises VmatraceError if a file is missing, binary, or not strace output at all.
    """
    lines = _Lines(paths)
    try:
        return _parse(paths, lines)
    finally:
        lines.close()


def _parse(paths: list[Path], lines: _Lines) -> ParsedLog:
    mtime = None
    with contextlib.suppress(OSError):
        mtime = max(p.stat().st_mtime for p in paths)
    p = _Parser(lines, mtime)
    p.warnings.extend(lines.warnings)
    p.run()
    if p.first_line is None:
        raise VmatraceError(f"{paths[0]} is empty: no strace output to import")
    if p.strace_lines == 0:
        first = p.first_line
        raise VmatraceError(f"{first.src} is not strace output (line {first.lineno}: {first.rest[:60]!r})")
    if p.bad_lines > 20:
        p.warnings.append(f"... {p.bad_lines - 20} more unparseable lines skipped")
    if p.bad_lines > max(10, p.strace_lines):
        raise VmatraceError(f"{paths[0]} is mostly not strace output ({p.bad_lines} of {p.n_lines} "
                            f"lines unparseable; first: {p.warnings[0] if p.warnings else '?'})")
    if p.n_unpaired:
        p.warnings.append(f"{p.n_unpaired} unfinished calls could not be paired with their result (log truncated "
                          "or damaged): they are not in the trace; first: " + "; ".join(p.unpaired[:3]))
    unfollowed = sorted(p.fork_children - p.seen_tids)
    if unfollowed:
        p.warnings.append(f"{len(unfollowed)} child processes created in the log have no line of their own "
                          "(strace without -f, or their -ff files not given): they are not in the trace's "
                          f"processes (first: {unfollowed[0]})")
        for c in unfollowed:
            p.procs.pop(c, None)
    if not p.execs and any(e is not None and e[_KIND] in MEMORY_KINDS for e in p.events):
        p.warnings.append("no successful execve in the log (trace it: -e trace=%memory,%process): "
                          "the program is unknown, its layout is not reconstructed")
    events = [e for e in p.events if e is not None]
    for i, e in enumerate(events):
        e[_SEQ] = i
    if p.first_pid is None and p.unprefixed:
        p.warnings.append("the pid of the traced process is not in the log (no -f prefix, getpid() "
                          "or set_tid_address()); its events carry pid 0")
    clock = "realtime" if p.clock.kind else "none"
    return ParsedLog(rows=events, procs=p.procs, execs=p.execs, warnings=p.warnings, clock=clock,
                     lines=p.n_lines, strace_lines=p.strace_lines, other_syscalls=p.other,
                     signals=p.signals, first_pid=p.first_pid, stacks=p.stacks,
                     unpaired_calls=p.n_unpaired, unfollowed_children=len(unfollowed), unparsed_lines=p.bad_lines,
                     cmdline=next(iter(p.first_cmdline.values()), None))


# -- layout reconstruction -------------------------------------------------------------------
Reconstruction = elf.Reconstruction


def reconstruct_exec(ex: ExecInfo, *, root: str = "/") -> elf.Reconstruction:
    """The layout right after `ex`'s execve: :func:`collectors.elf.reconstruct_after_exec`
    with the evidence the log gave (first ``brk(NULL)``, ``mprotect(PROT_READ)`` calls, mmaps)."""
    return elf.reconstruct_after_exec(ex.filename, brk=ex.brk, prot_read=ex.prot_read,
                                      mmaps=ex.mmaps, root=root)


def _rows_frame(rows: list[elf.VmaRow]) -> pl.DataFrame:
    from vmatrace.base.snapshot import VMA_SCHEMA

    return pl.DataFrame({
        "start": [r.start for r in rows], "end": [r.end for r in rows],
        "perms": [r.perms for r in rows], "offset": [r.offset for r in rows],
        "dev": [r.dev for r in rows], "inode": [r.inode for r in rows],
        "path": [r.path for r in rows],
        "rss_kb": [None] * len(rows), "pss_kb": [None] * len(rows),
        "anonymous_kb": [None] * len(rows), "swap_kb": [None] * len(rows),
        "vmflags": [None] * len(rows),
    }, schema=VMA_SCHEMA)


def _file_dev_ino(events: pl.DataFrame, snaps: list[Any]) -> pl.DataFrame:
    """file_dev and file_ino of mmap events from the snapshots' rows of the same path, where
    they name one file only (strace prints paths, not devices and inodes)."""
    if not events.height or events.get_column("file_path").null_count() == events.height:
        return events
    seen: dict[str, set[tuple[str, int]]] = {}
    for snap in snaps:
        for path, dev, ino in snap.frame.select("path", "dev", "inode").unique().iter_rows():
            if path and ino:
                seen.setdefault(path, set()).add((dev, ino))
    known = {p: next(iter(v)) for p, v in seen.items() if len(v) == 1}
    if not known:
        return events
    fp = pl.col("file_path")
    return events.with_columns(
        fp.replace_strict({p: d for p, (d, _) in known.items()}, default=None, return_dtype=pl.Utf8).alias("file_dev"),
        fp.replace_strict({p: i for p, (_, i) in known.items()}, default=None, return_dtype=pl.UInt64).alias("file_ino"),
    )


# -- the command -----------------------------------------------------------------------------
def _parse_maps_arg(spec: str, default_pid: int | None) -> tuple[int | None, Path]:
    m = re.match(r"^(\d+):(.+)$", spec)
    if m:
        return int(m.group(1)), Path(m.group(2))
    return default_pid, Path(spec)


def import_strace(logs: list[Path], out: Path, *, maps: list[str] | None = None,
                  force: bool = False, root: str = "/") -> dict[str, Any]:
    """Parse `logs` and write the trace `out`; returns the final meta.

    `maps` are ``[PID:]FILE`` saved /proc/PID/maps texts (PID defaults to the first process).
    `root` is where the executables named in the log are looked up (``/`` on the machine
    that ran strace; a copy of its root file system elsewhere).
    """
    from vmatrace.base.events import EV_RECONSTRUCTED
    from vmatrace.base.snapshot import Snapshot, parse_maps_text
    from vmatrace.base.trace import (
        EVENT_SCHEMA,
        PROC_SCHEMA,
        STACK_SCHEMA,
        TraceWriter,
    )

    parsed = parse_strace(logs)
    warnings = list(parsed.warnings)
    snaps: list[tuple[Snapshot, str, int | None]] = []  # (snapshot, reason, brk base)
    maps_pids: set[int] = set()
    for spec in maps or []:
        pid, mp = _parse_maps_arg(spec, parsed.first_pid)
        try:
            with open(mp, "rb") as f:
                st = os.fstat(f.fileno())
                if stat.S_ISREG(st.st_mode) and st.st_size > MAX_MAPS_FILE_BYTES:
                    raise VmatraceError(f"--maps {spec}: {mp} is {st.st_size >> 20} MiB: larger than any maps "
                                        f"text ({MAX_MAPS_FILE_BYTES >> 20} MiB at most)")
                data = f.read(MAX_MAPS_FILE_BYTES + 1)
            if len(data) > MAX_MAPS_FILE_BYTES:
                raise VmatraceError(f"--maps {spec}: {mp} holds more than {MAX_MAPS_FILE_BYTES >> 20} MiB: "
                                    "larger than any maps text")
            text = data.decode("utf-8", errors="replace")
        except FileNotFoundError:
            raise VmatraceError(f"--maps {spec}: {mp}: no such file") from None
        except OSError as e:
            raise VmatraceError(f"--maps {spec}: cannot read {mp}: {e.strerror}") from None
        swarn: list[str] = []
        try:
            frame = parse_maps_text(text, swarn)
        except VmatraceError as e:
            raise VmatraceError(f"--maps {spec}: {e}") from None
        if pid is None:
            pid = 0
            warnings.append(f"--maps {spec}: pid unknown (write PID:FILE); attached to pid 0")
        t = st.st_mtime_ns if parsed.clock == "realtime" else 0
        swarn.append(f"from {mp} (saved /proc/PID/maps; time = file mtime)")
        snaps.append((Snapshot(pid, t, t, "maps-file", frame, swarn), "periodic", None))
        maps_pids.add(pid)

    recon_meta: list[dict[str, Any]] = []
    for ex in parsed.execs:
        if ex.pid in maps_pids:
            continue
        try:
            rec = reconstruct_exec(ex, root=root)
        except VmatraceError as e:
            warnings.append(f"pid {ex.pid}: layout after execve({ex.filename!r}) not reconstructed: {e}")
            continue
        if not rec.rows:
            warnings.append(f"pid {ex.pid}: layout after execve({ex.filename!r}) unknown: "
                            + "; ".join(rec.unknown[:2]))
            continue
        ex.event[_FLAGS] |= EV_RECONSTRUCTED
        seq = ex.event[_SEQ]
        snap = Snapshot(ex.pid, ex.ts_ns, ex.ts_ns, "elf-reconstruction", _rows_frame(rec.rows),
                        [f"reconstructed after seq {seq}: " + "; ".join(rec.known),
                         "unknown: " + "; ".join(rec.unknown)])
        snaps.append((snap, "reconstructed", ex.brk))  # the first brk(NULL) returns mm->start_brk
        recon_meta.append({"pid": ex.pid, "after_seq": seq, "filename": ex.filename,
                           "known": rec.known, "unknown": rec.unknown})

    events = parsed.events_frame() if parsed.rows else pl.DataFrame(schema=EVENT_SCHEMA)
    parsed.rows.clear()
    events = _file_dev_ino(events, [s for s, _, _ in snaps])
    procs = pl.DataFrame([vars(p) for p in parsed.procs.values()], schema=PROC_SCHEMA) if parsed.procs \
        else pl.DataFrame(schema=PROC_SCHEMA)
    first = parsed.procs.get(parsed.first_pid if parsed.first_pid is not None else 0)
    ts = events.get_column("ts_ns") if events.height else None
    meta = {
        "collector": "strace-import",
        # the log does not say which kernel or host it was recorded on
        "kernel_release": "unknown",
        "host": "unknown",
        "imported_on": {"host": platform.node(), "kernel_release": platform.release()},
        "clock": parsed.clock,
        "source_logs": [str(p) for p in logs],
        "pids": sorted(parsed.procs),
        "comm": first.comm if first else None,
        "cmdline": parsed.cmdline or (first.cmdline if first else None) or None,
        "start_ns": int(ts.min()) if ts is not None and parsed.clock != "none" else 0,  # type: ignore[arg-type]
        "end_ns": int(ts.max()) if ts is not None and parsed.clock != "none" else 0,  # type: ignore[arg-type]
        "start_wall": (datetime.fromtimestamp(int(ts.min()) / 1e9).astimezone().isoformat(timespec="seconds")  # type: ignore[arg-type]
                       if ts is not None and parsed.clock != "none" else "unknown"),
        "reconstructed": bool(recon_meta),
        # strace -k gives each frame as a file offset in its module, not a runtime address
        "stack_ip": "module file offset (strace -k)" if parsed.stacks else None,
        "reconstructions": recon_meta,
        "strace": {"lines": parsed.lines, "strace_lines": parsed.strace_lines,
                   "other_syscalls": parsed.other_syscalls, "signals": parsed.signals,
                   "unparsed_lines": parsed.unparsed_lines, "unpaired_calls": parsed.unpaired_calls,
                   "unfollowed_children": parsed.unfollowed_children},
        "warnings": warnings,
    }
    # staged: an older trace at `out` is replaced only by a whole new one
    w = TraceWriter(out, meta, force=force, staged=True)
    try:
        w.add_events(events)
        for snap, reason, brk in snaps:
            w.add_snapshot(snap, reason, start_brk=brk, brk=brk)
        w.add_procs(procs)
        if parsed.stacks:
            w.add_stacks(pl.DataFrame(parsed.stacks, schema=STACK_SCHEMA))
        w.close()
        w.commit()
    except BaseException:
        w.discard()
        raise
    return w.meta
