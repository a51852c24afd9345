"""The snapshot schema, the :class:`Snapshot` record and the /proc/PID/maps and smaps text parsers.

Base layer: collectors produce snapshots (``collectors.procmaps`` reads live processes), traces store
them (``vmatrace.base.trace``), the model and the reports read them. A snapshot's VMAs are the
columns of :data:`VMA_FIELDS` (documented in ``docs/trace-format.md``): as plain Python lists (what
the parsers give, and all that ``vmatrace snapshot`` needs) and, on first use, as a polars frame with
:data:`VMA_SCHEMA`. This module imports polars only when a frame is asked for, so a command that
never needs one (``snapshot --json``, the VMA table) does not pay for loading it.

``seq_file`` restarts after each read() chunk, so a VMA that changes between two chunks can be
printed twice: the parsers drop the later overlapping line and say so in a warning.
"""


from __future__ import annotations

from collections.abc import Iterable
from itertools import repeat
from operator import add, itemgetter
from typing import TYPE_CHECKING, Any

from vmatrace.base.errors import SnapshotError

if TYPE_CHECKING:
    import polars as pl

    VMA_SCHEMA: dict[str, pl.DataType]
    DEEP_SCHEMA: dict[str, pl.DataType]

# The VMA columns of every snapshot, in order, with their type: "u64" unsigned integer, "str" text.
VMA_FIELDS: dict[str, str] = {
    "start": "u64",
    "end": "u64",
    "perms": "str",
    "offset": "u64",
    "dev": "str",
    "inode": "u64",
    "path": "str",
    "rss_kb": "u64",
    "pss_kb": "u64",
    "anonymous_kb": "u64",
    "swap_kb": "u64",
    "vmflags": "str",
}

# Deep snapshot columns (collectors.deep: a BPF task_vma iterator), beside VMA_FIELDS. Identities are
# small integers assigned in user space, stable within one trace or one command run; a raw kernel
# pointer is never stored.
DEEP_FIELDS: dict[str, str] = {
    "vm_flags": "u64",      # raw vm_area_struct.vm_flags
    "pgoff": "u64",         # vm_pgoff in pages (anonymous memory too)
    "file_id": "u32",       # the open file (struct file); null: no file
    "anon_vma_id": "u32",   # the anon_vma; null: none (never faulted)
    "avc": "u16",           # entries in the anon_vma_chain (0: no anon_vma)
    "fork_child": "bool",   # has an anon_vma and its anon_vma_chain is not singular
    "close_hook": "bool",   # vm_ops->close is set
    "anon_name": "str",     # prctl(PR_SET_VMA_ANON_NAME) name; null: none
    "mempolicy": "bool",    # a VMA mempolicy (mbind) is set
    "uffd": "bool",         # a userfaultfd context is set
}

# smaps field -> column
_SMAPS_FIELDS = {"Rss:": "rss_kb", "Pss:": "pss_kb", "Anonymous:": "anonymous_kb", "Swap:": "swap_kb"}
_SIZE_COLUMNS = tuple(_SMAPS_FIELDS.values())

_SCHEMAS: dict[str, Any] = {}


def _polars_schema(fields: dict[str, str]) -> dict[str, pl.DataType]:
    import polars as pl

    types = {"u64": pl.UInt64, "u32": pl.UInt32, "u16": pl.UInt16, "bool": pl.Boolean, "str": pl.Utf8}
    return {k: types[t]() for k, t in fields.items()}


def __getattr__(name: str) -> Any:
    """``VMA_SCHEMA`` and ``DEEP_SCHEMA``, the polars schemas of the fields above, built (and polars
    imported) on first use."""
    if name in ("VMA_SCHEMA", "DEEP_SCHEMA"):
        if name not in _SCHEMAS:
            _SCHEMAS[name] = _polars_schema(VMA_FIELDS if name == "VMA_SCHEMA" else DEEP_FIELDS)
        return _SCHEMAS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Columns = dict[str, list[Any]]


class Snapshot:
    """One read of a process's VMAs: ``columns`` (lists, :data:`VMA_FIELDS` and, for a deep
    snapshot, :data:`DEEP_FIELDS`) and ``frame`` (the same as a polars frame); either is made from
    the other on first use."""

    def __init__(self, pid: int, t_start_ns: int, t_end_ns: int, method: str,
                 frame: pl.DataFrame | None = None, warnings: list[str] | None = None, *,
                 columns: Columns | None = None) -> None:
        if (frame is None) == (columns is None):
            raise ValueError("a Snapshot takes a frame or columns")
        self.pid = pid
        self.t_start_ns = t_start_ns  # CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns()
        self.t_end_ns = t_end_ns
        self.method = method  # "procmap_query" | "text" | "bpf_iter" (deep) | ...
        self.warnings: list[str] = warnings if warnings is not None else []
        self._frame = frame
        self._columns = columns

    def __repr__(self) -> str:
        return f"Snapshot(pid={self.pid}, method={self.method!r}, vmas={self.height})"

    @property
    def frame(self) -> pl.DataFrame:
        if self._frame is None:
            assert self._columns is not None
            self._frame = vma_frame(self._columns)
        return self._frame

    @property
    def columns(self) -> Columns:
        if self._columns is None:
            assert self._frame is not None
            self._columns = self._frame.to_dict(as_series=False)
        return self._columns

    @property
    def height(self) -> int:
        if self._columns is not None:
            return len(self._columns["start"])
        assert self._frame is not None
        return self._frame.height

    @property
    def deep(self) -> bool:
        """The VMAs carry the :data:`DEEP_FIELDS` columns (a deep snapshot)."""
        have = self._columns if self._columns is not None else self.frame.columns
        return all(c in have for c in DEEP_FIELDS)

    @property
    def complete(self) -> bool:
        return not any(w.startswith("incomplete") for w in self.warnings)

    def maps_lines(self) -> list[str]:
        """The snapshot as /proc/PID/maps lines."""
        c = self.columns
        return [format_maps_line(dict(zip(VMA_FIELDS, row, strict=True)))
                for row in zip(*(c[k] for k in VMA_FIELDS), strict=True)]


def kernel_dev_str(dev: int) -> str:
    """A kernel dev_t (MAJOR << 20 | MINOR) as /proc/PID/maps prints it: MAJOR:MINOR in hex, at least two digits each."""
    return f"{dev >> 20:02x}:{dev & 0xFFFFF:02x}"


def format_maps_line(r: dict[str, object]) -> str:
    """One row back in the kernel's show_map_vma() layout (fs/proc/task_mmu.c)."""
    start, end, off, ino = r["start"], r["end"], r["offset"], r["inode"]
    assert isinstance(start, int) and isinstance(end, int)
    assert isinstance(off, int) and isinstance(ino, int)
    head = f"{start:08x}-{end:08x} {r['perms']} {off:08x} {r['dev']} {ino} "
    path = r["path"]
    if path:
        # show_map_vma(): seq_setwidth(25 + 6 * sizeof(void *) - 1), then seq_pad(m, ' ') pads to that
        # width and always adds one more space before the name
        return head.ljust(72) + " " + str(path)
    return head  # the kernel leaves the single space after the inode when there is no name


def vma_frame(columns: Columns) -> pl.DataFrame:
    """Columns (lists, :data:`VMA_FIELDS` first) as a polars frame with :data:`VMA_SCHEMA` (and
    :data:`DEEP_SCHEMA` for the deep columns present)."""
    import polars as pl

    schema = dict(__getattr__("VMA_SCHEMA"))
    deep = __getattr__("DEEP_SCHEMA")
    schema.update({k: deep[k] for k in columns if k in deep})
    return pl.DataFrame({k: columns[k] for k in schema}, schema=schema)


def empty_vma_columns() -> Columns:
    return {k: [] for k in VMA_FIELDS}


# ---------------------------------------------------------------------------------------------
# Text parsing: plain Python over the text, one pass, no per-line objects for the lines not read


def _header(line: str) -> tuple[int, int, str, int, str, int, str | None]:
    """A maps line (show_map_vma()): ``start-end perms offset dev inode [path]``."""
    parts = line.split(None, 5)
    if len(parts) < 5:
        raise ValueError(f"not a maps line: {line!r}")
    lo, _, hi = parts[0].partition("-")
    perms = parts[1]
    if len(perms) != 4:
        raise ValueError(f"not a maps line: {line!r}")
    path = parts[5] if len(parts) == 6 else None
    return int(lo, 16), int(hi, 16), perms, int(parts[2], 16), parts[3], int(parts[4]), path


def _decoded(text: str | bytes) -> str:
    """/proc text as str: non-UTF-8 bytes of a name become ``\\xNN`` (documented in the schema)."""
    if isinstance(text, str):
        return text
    return text.decode("ascii") if text.isascii() else text.decode("utf-8", "backslashreplace")


def drop_reprinted(cols: Columns, warnings: list[str]) -> Columns:
    """Drop VMAs that start below an earlier VMA's end: seq_file printed a changed VMA twice.

    /proc/PID/maps is produced in read()-sized chunks; between two chunks the kernel restarts from
    the last printed address, so a VMA that changed in between can appear again, overlapping.
    """
    starts, ends = cols["start"], cols["end"]
    dup: list[int] = []
    top = -1
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        if s < top:
            dup.append(i)
        elif e > top:
            top = e
    if not dup:
        return cols
    warnings.append(f"dropped {len(dup)} VMA line(s) printed twice (the address space changed during the read)")
    gone = set(dup)
    return {k: [v for i, v in enumerate(col) if i not in gone] for k, col in cols.items()}


def _bad_line(text: str, what: str, fallback: str) -> SnapshotError:
    """The error for text that did not parse: its first bad line."""
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip() and not line.partition(" ")[0].endswith(":"):
            try:
                _header(line)
            except ValueError:
                return SnapshotError(f"line {n} is not a /proc/PID/{what} line: {line[:60]!r}")
    return SnapshotError(fallback)


def parse_maps_columns(text: str | bytes, warnings: list[str] | None = None) -> Columns:
    """Parse /proc/PID/maps text (or the bytes read) into columns (the smaps columns None)."""
    text = _decoded(text)
    cols = empty_vma_columns()
    starts, ends, permss, offs, devs, inos, paths = (cols[k] for k in (
        "start", "end", "perms", "offset", "dev", "inode", "path"))
    try:
        for line in text.split("\n"):
            if not line.strip():
                continue
            s, e, perms, off, dev, ino, path = _header(line)
            starts.append(s)
            ends.append(e)
            permss.append(perms)
            offs.append(off)
            devs.append(dev)
            inos.append(ino)
            paths.append(path)
    except ValueError:
        raise _bad_line(text, "maps", "not /proc/PID/maps text") from None
    n = len(starts)
    for k in (*_SIZE_COLUMNS, "vmflags"):
        cols[k] = [None] * n
    return drop_reprinted(cols, warnings if warnings is not None else [])


class SmapsParser:
    """/proc/PID/smaps text into columns, fed in pieces as they are read (:meth:`feed`, then
    :meth:`finish`), or whole (:func:`parse_smaps_columns`).

    The fast path. One kernel prints the same lines for every VMA, each size right-aligned in at
    least 8 columns (show_smap(), fs/proc/task_mmu.c): no line is ever narrower than it is for a
    VMA whose sizes all have fewer than 8 digits. So the first such block shows where Rss, Pss,
    Anonymous, Swap and VmFlags stand after the header line, and a block whose VmFlags line starts
    at that same offset has every line at that width: its fields are read at those offsets, in
    bulk, without splitting its other lines. A block where VmFlags stands elsewhere (a size of 8
    digits or more, another set of lines) is parsed line by line, and so is text of any other
    shape.
    """

    def __init__(self) -> None:
        self.cols = empty_vma_columns()
        self._buf = ""
        # (field name, offset of its line, offset of its " kB", column) and the VmFlags line's
        # offset, all from the end of the header line; False: not learnt yet; None: no fast path
        self._layout: tuple[tuple[tuple[str, int, int, str], ...], int] | bool | None = False
        self._tries = 0
        self._line_no = 0

    def _learn(self, block_lines: list[str]) -> bool:
        """Learn the layout from one block (header line first); False if this block cannot show
        it (a size of 8 digits or more), and after 16 such blocks, or a block of another shape,
        there is no fast path."""
        at: list[tuple[str, int, int, str]] = []
        off = 1  # past the header's newline
        vmflags = -1
        minimal = True
        for line in block_lines[1:]:
            name, _, rest = line.partition(" ")
            if line.endswith(" kB"):
                digits = rest[:-3].strip()
                if not digits.isdigit():
                    self._layout = None
                    return False
                minimal = minimal and len(digits) < 8
                if name in _SMAPS_FIELDS:
                    at.append((name, off, off + len(line) - 3, _SMAPS_FIELDS[name]))
            elif name == "VmFlags:":
                vmflags = off
            off += len(line) + 1
        if len(at) != len(_SMAPS_FIELDS) or block_lines[-1].partition(" ")[0] != "VmFlags:":
            self._layout = None
            return False
        if not minimal:
            self._tries += 1
            if self._tries >= 16:
                self._layout = None
            return False
        self._layout = (tuple(at), vmflags)
        return True

    def feed(self, text: str) -> None:
        """Parse every complete VMA block of the text read so far; keep the rest for later."""
        buf = self._buf + text if self._buf else text
        while self._layout is False:
            end = _first_block_end(buf)  # the newline before the next header
            if end < 0:
                self._buf = buf
                return
            if not self._learn(buf[:end].split("\n")):
                if self._layout is None:
                    break
                self._slow(buf[:end])  # a block that cannot show the layout: the next one may
                buf = buf[end + 1:]
        if self._layout is None:
            self._buf = buf  # another shape: line by line at the end
            return
        self._buf = buf[self._fast(buf):]

    def _fast(self, buf: str) -> int:
        """The fast path over the complete blocks of ``buf``; returns where it stopped."""
        assert isinstance(self._layout, tuple)
        vf_off = self._layout[1]
        find, startswith = buf.find, buf.startswith
        hs: list[int] = []   # header line start
        hes: list[int] = []  # header line end
        ves: list[int] = []  # VmFlags line end
        pos, n = 0, len(buf)
        while pos < n:
            he = find("\n", pos)
            if he < 0:
                break
            if startswith("VmFlags:", he + vf_off):
                ve = find("\n", he + vf_off)
                if ve < 0:
                    break  # the block is not all here yet
                hs.append(pos)
                hes.append(he)
                ves.append(ve)
                pos = ve + 1
                continue
            # VmFlags elsewhere: a wider block, or one not all here yet
            vfl = find("\nVmFlags:", he)
            ve = find("\n", vfl + 1) if vfl >= 0 else -1
            if ve < 0:
                break
            self._bulk(buf, hs, hes, ves)
            hs, hes, ves = [], [], []
            self._slow(buf[pos:ve])
            pos = ve + 1
        self._bulk(buf, hs, hes, ves)
        return pos

    def _bulk(self, buf: str, hs: list[int], hes: list[int], ves: list[int]) -> None:
        """Append the blocks at these offsets (all of the learnt layout) to the columns."""
        if not hs:
            return
        assert isinstance(self._layout, tuple)
        fields, vf_off = self._layout
        c = self.cols
        cut = buf.__getitem__
        # every step a C-level map over all blocks: no Python code runs per VMA
        heads = list(map(cut, map(slice, hs, hes)))
        try:
            parts = list(map(str.split, heads, repeat(None), repeat(5)))
            rng = list(map(str.partition, map(itemgetter(0), parts), repeat("-")))
            starts = list(map(int, map(itemgetter(0), rng), repeat(16)))
            ends = list(map(int, map(itemgetter(2), rng), repeat(16)))
            perms = list(map(itemgetter(1), parts))
            offs = list(map(int, map(itemgetter(2), parts), repeat(16)))
            devs = list(map(itemgetter(3), parts))
            inos = list(map(int, map(itemgetter(4), parts)))
            if set(map(len, perms)) != {4}:
                raise ValueError
        except (ValueError, IndexError):
            for h in heads:  # name the bad line
                try:
                    _header(h)
                except ValueError:
                    raise SnapshotError(f"a line is not a /proc/PID/smaps line: {h[:60]!r}") from None
            raise SnapshotError("not /proc/PID/smaps text") from None
        c["start"] += starts
        c["end"] += ends
        c["perms"] += perms
        c["offset"] += offs
        c["dev"] += devs
        c["inode"] += inos
        c["path"] += [p[5] if len(p) == 6 else None for p in parts]
        try:
            for name, a, b, col in fields:
                c[col] += map(int, map(cut, map(slice, map(add, hes, repeat(a + len(name))),
                                                 map(add, hes, repeat(b)))))
        except ValueError:
            raise SnapshotError("a size in /proc/PID/smaps is not a number") from None
        c["vmflags"] += map(str.strip, map(cut, map(slice, map(add, hes, repeat(vf_off + 8)), ves)))

    def _slow(self, text: str) -> None:
        """Line by line (any shape); names the first bad line."""
        c = self.cols
        cur: dict[str, Any] | None = None

        def flush() -> None:
            if cur is not None:
                for k in VMA_FIELDS:
                    c[k].append(cur[k])

        for line in text.split("\n"):
            self._line_no += 1
            if not line:
                continue
            first, _, rest = line.partition(" ")
            if first.endswith(":"):
                if cur is None:
                    raise SnapshotError(f"line {self._line_no}: smaps field before any VMA header")
                col = _SMAPS_FIELDS.get(first)
                if col is not None:
                    try:
                        cur[col] = int(rest.split()[0])
                    except (ValueError, IndexError):
                        raise SnapshotError(f"line {self._line_no}: {first} without a number: {line[:60]!r}") from None
                elif first == "VmFlags:":
                    cur["vmflags"] = " ".join(rest.split())
                continue
            flush()
            try:
                s, e, perms, off, dev, ino, path = _header(line)
            except ValueError:
                raise SnapshotError(f"line {self._line_no} is not a /proc/PID/smaps line: {line[:60]!r}") from None
            cur = {"start": s, "end": e, "perms": perms, "offset": off, "dev": dev, "inode": ino, "path": path,
                   "rss_kb": 0, "pss_kb": 0, "anonymous_kb": 0, "swap_kb": 0, "vmflags": ""}
        flush()

    def finish(self, warnings: list[str] | None = None) -> Columns:
        """The columns of everything fed (a trailing partial block is parsed line by line)."""
        if self._buf:
            if self._layout is False:
                self._layout = None  # one block, never followed by a second: line by line
            if isinstance(self._layout, tuple):
                self._buf = self._buf[self._fast(self._buf):]
            if self._buf.strip():
                self._slow(self._buf)
            self._buf = ""
        return drop_reprinted(self.cols, warnings if warnings is not None else [])


def _first_block_end(buf: str) -> int:
    """Where the first VMA block of smaps text ends (the newline before the second header), or -1."""
    pos = buf.find("\n") + 1
    while 0 < pos < len(buf):
        c = buf[pos]
        if c in "0123456789abcdef":
            return pos - 1
        nl = buf.find("\n", pos)
        if nl < 0:
            return -1
        pos = nl + 1
    return -1


def parse_smaps_columns(text: str | bytes | Iterable[str], warnings: list[str] | None = None) -> Columns:
    """Parse /proc/PID/smaps text (the bytes read, or its pieces in order) into columns."""
    p = SmapsParser()
    for piece in ([_decoded(text)] if isinstance(text, str | bytes) else text):
        p.feed(piece)
    return p.finish(warnings)


def parse_maps_text(text: str | bytes, warnings: list[str] | None = None) -> pl.DataFrame:
    """Parse /proc/PID/maps text into a :data:`VMA_SCHEMA` frame (smaps columns null)."""
    return vma_frame(parse_maps_columns(text, warnings))


def parse_smaps_text(text: str | bytes, warnings: list[str] | None = None) -> pl.DataFrame:
    """Parse /proc/PID/smaps text into a :data:`VMA_SCHEMA` frame."""
    return vma_frame(parse_smaps_columns(text, warnings))
