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

import sys
from array import array
from collections.abc import Callable, Iterable
from itertools import chain, compress, repeat
from operator import add, eq, getitem, is_, itemgetter, le, sub
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
_VMFLAGS = "\nVmFlags: "  # the start of a block's last line (show_smap_vma_flags())
_PIECE = 1 << 20  # smaps text is parsed in pieces of this many characters
_cut: Callable[[str, slice], str] = getitem  # text[slice], mapped over many texts
_NO_NAME: dict[str, str | None] = {"": None}

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


# show_map_vma() pads each header to this column before the name (seq_setwidth(m, 25 +
# sizeof(void *) * 6 - 1), then seq_pad(m, ' '), in show_vma_header_prefix(), fs/proc/task_mmu.c)
_NAME_AT = 25 + 8 * 6 - 1 + 1
_PREFIX, _NAME, _PAD = slice(0, _NAME_AT), slice(_NAME_AT, None), slice(_NAME_AT - 2, _NAME_AT)


def _u64s(text: str, width: int, n: int) -> list[int] | None:
    """``n`` hex numbers of ``width`` digits each, joined by "-", as ints, in a few C-level calls
    (bytes.fromhex(), 64-bit words); None where that text is not of that shape."""
    pad = "0" * (16 - width)
    try:
        words = array("Q", bytes.fromhex(pad + text.replace("-", pad)))
    except ValueError:
        return None
    if len(words) != n:
        return None
    if sys.byteorder == "little":
        words.byteswap()
    return words.tolist()


def _hex_column(values: list[str]) -> list[int]:
    """Hex numbers into ints: all at once where they have one width, else one by one."""
    w = len(values[0]) if values else 0
    if 0 < w <= 16 and set(map(len, values)) == {w} and (got := _u64s("-".join(values), w, len(values))):
        return got
    return list(map(int, values, repeat(16)))


def _range_columns(ranges: list[str]) -> tuple[list[int], list[int]]:
    """``start-end`` texts into starts and ends: all at once where every start and end has one
    width, else one by one."""
    n = len(ranges)
    w = len(ranges[0]) // 2 if ranges else 0
    if (0 < w <= 16 and set(map(len, ranges)) == {2 * w + 1} and "".join(map(itemgetter(w), ranges)) == "-" * n
            and (both := _u64s("-".join(ranges), w, 2 * n))):
        return both[0::2], both[1::2]
    rng = list(map(str.partition, ranges, repeat("-")))
    if set(map(itemgetter(1), rng)) != {"-"}:
        raise ValueError
    return list(map(int, map(itemgetter(0), rng), repeat(16))), list(map(int, map(itemgetter(2), rng), repeat(16)))


def _header_columns(heads: list[str], what: str) -> Columns:
    """Header lines (:func:`_header`) into the columns start, end, perms, offset, dev, inode and
    path, each step over all lines at once: the five fields before the name column split as one
    text, where every named line is padded to that column; line by line otherwise. Raises
    :class:`SnapshotError` naming the first bad line."""
    try:
        names = list(map(_cut, heads, repeat(_NAME)))
        pads = "".join(compress(map(_cut, heads, repeat(_PAD)), names))
        tokens = "\n".join(map(_cut, heads, repeat(_PREFIX))).split()
        if len(pads) == 2 * (len(heads) - names.count("")) and not pads.strip(" ") \
                and len(tokens) == 5 * len(heads):
            ranges, perms, offs, devs, inos = (tokens[i::5] for i in range(5))
            paths: list[str | None] = list(map(_NO_NAME.get, names, names))  # "" -> None
        else:  # a name elsewhere (a header wider than the pad, a 32-bit kernel): one by one
            parts = list(map(str.split, heads, repeat(None), repeat(5)))
            if min(map(len, parts), default=5) < 5:
                raise ValueError
            ranges, perms, offs, devs, inos = (list(map(itemgetter(i), parts)) for i in range(5))
            paths = [p[5] if len(p) == 6 else None for p in parts]
        starts, ends = _range_columns(ranges)
        cols: Columns = {"start": starts, "end": ends, "perms": perms, "offset": _hex_column(offs), "dev": devs,
                "inode": list(map(int, inos)), "path": paths}
        if set(map(len, perms)) - {4}:
            raise ValueError
        return cols
    except ValueError:
        for h in heads:  # name the bad line
            try:
                _header(h)
            except ValueError:
                raise SnapshotError(f"a line is not a /proc/PID/{what} line: {h[:60]!r}") from None
        raise SnapshotError(f"not /proc/PID/{what} text") from None


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
    if all(map(le, ends[:-1], starts[1:])):  # in order, none overlapping: the usual case
        return cols
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
    lines = text.split("\n")
    if not all(map(str.strip, lines)):
        lines = [ln for ln in lines if ln.strip()]
    try:
        cols = _header_columns(lines, "maps")
    except SnapshotError:
        raise _bad_line(text, "maps", "not /proc/PID/maps text") from None
    n = len(lines)
    for k in (*_SIZE_COLUMNS, "vmflags"):
        cols[k] = [None] * n
    return drop_reprinted({k: cols[k] for k in VMA_FIELDS}, warnings if warnings is not None else [])


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

    In bulk means a few C-level calls over all the blocks of a piece of text, and no Python code
    per VMA: the text is split at every VmFlags line; each size is a slice at a fixed offset from
    the end of its piece; the header lines are parsed together (:func:`_header_columns`). Text
    is parsed in pieces of about a megabyte, so that each pass finds its piece in the CPU's cache.
    """

    def __init__(self) -> None:
        self.cols = empty_vma_columns()
        self._buf = ""
        # (field name, offset of its line, offset of its " kB", column) and the VmFlags line's
        # offset, all from the end of the header line; False: not learnt yet; None: no fast path
        self._layout: tuple[tuple[tuple[str, int, int, str], ...], int] | bool | None = False
        self._tries = 0
        self._line_no = 0  # lines parsed so far (error messages name the line)
        self._block_lines = 0  # lines of a block of the learnt layout
        self._size_lines: tuple[int, ...] = ()  # the line number of each size in such a block
        self._body = 0
        self._sizes_at: Callable[[str], tuple[str, ...]] = tuple
        self._known: dict[str, int] = {}  # size text -> size

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
        self._block_lines = len(block_lines)
        # a block's body (the lines between its header and VmFlags line) is this long, and each
        # size stands at a fixed offset from its end
        self._body = vmflags - 2
        at.sort(key=lambda f: _SIZE_COLUMNS.index(f[3]))
        self._sizes_at = itemgetter(*(slice(a + len(name) - self._body - 1, b - self._body - 1)
                                      for name, a, b, _ in at))
        starts = [0]  # where each line of the block starts, after the header's newline
        for line in block_lines[1:]:
            starts.append(starts[-1] + len(line) + 1)
        self._size_lines = tuple(starts.index(a - 1) + 2 for _, a, _, _ in at)  # line numbers in a block
        return True

    def feed(self, text: str) -> None:
        """Parse every complete VMA block of the text read so far; keep the rest for later."""
        if isinstance(self._layout, tuple):
            self._buf = self._fast(text, self._buf)  # not copied onto the rest of the last piece
            return
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
        self._buf = self._fast(buf)

    def _fast(self, text: str, before: str = "") -> str:
        """The fast path over the complete blocks of ``before + text``; returns the rest (a block
        not all here yet).

        Split at each VmFlags line, every piece but the first and the last holds the flags of
        one VMA, then the header and the other lines of the next: ``flags\\nheader\\nbody``.
        A block of the learnt layout has a body of exactly the learnt length, so its header
        ends, and each of its sizes stands, at the same offset from the end of its piece."""
        pieces = text.split(_VMFLAGS)
        if before:
            first = before + pieces[0]
            if _VMFLAGS in first:  # the rest ended in a VmFlags line, or inside "\nVmFlags: "
                pieces[0:1] = first.split(_VMFLAGS)
            else:
                pieces[0] = first
        if len(pieces) < 2:
            return before + text
        tail = pieces[-1]
        t = tail.find("\n")
        if t >= 0:
            rest = tail[t + 1:]
        else:  # the last VmFlags line is not all here: its block waits for the next read
            pen = pieces[-2]
            f = pen.find("\n")
            if len(pieces) < 3 or f < 0:
                return before + text
            rest = pen[f + 1:] + _VMFLAGS + tail
            pieces[-2:] = [pen[:f + 1]]
        pieces[0] = "\n" + pieces[0]  # the first block has no flags before its header
        nls = list(map(str.find, pieces, repeat("\n")))
        # the flags of each block, spaces trimmed in one pass over them all
        flags = "\n".join(map(_cut, pieces[1:], map(slice, nls[1:]))).replace(" \n", "\n").split("\n")
        flags[-1] = flags[-1].strip()
        del pieces[-1], nls[-1]
        blocks, n = pieces, len(pieces)
        hstart = list(map(add, nls, repeat(1)))
        heads = list(map(_cut, blocks, map(slice, hstart, repeat(-self._body - 1))))
        try:  # every header is one line ending where the body of the layout begins
            fits = ("".join(map(itemgetter(-self._body - 1), blocks)) == "\n" * n and all(heads)
                    and "\n" not in "".join(heads))
        except IndexError:
            fits = False
        if fits:
            self._bulk(blocks, heads, flags)
            return rest
        good = list(map(eq, map(str.find, blocks, repeat("\n"), hstart),
                        map(sub, map(len, blocks), repeat(self._body + 1))))
        i = 0
        while i < n:  # runs of blocks of the layout, in bulk; any other block line by line
            if good[i]:
                j = good.index(False, i) if False in good[i:] else n
                self._bulk(blocks[i:j], heads[i:j], flags[i:j])
                i = j
            else:
                self._slow(blocks[i][hstart[i]:] + _VMFLAGS + flags[i])
                i += 1
        return rest

    def _bulk(self, blocks: list[str], heads: list[str], flags: list[str]) -> None:
        """Append these blocks (all of the learnt layout) with their header lines to the columns."""
        if not blocks:
            return
        c = self.cols
        try:
            head = _header_columns(heads, "smaps")
        except SnapshotError:
            for i, h in enumerate(heads):  # name the bad line and its number
                try:
                    _header(h)
                except ValueError:
                    raise SnapshotError(f"line {self._line_no + i * self._block_lines + 1} is not a /proc/PID/smaps "
                                        f"line: {h[:60]!r}") from None
            raise
        # the sizes of all blocks in one pass, then one column each; most sizes repeat (0, 4, ...),
        # so a size text seen before is looked up rather than converted again
        texts = list(chain.from_iterable(map(self._sizes_at, blocks)))
        known = self._known
        sizes = list(map(known.get, texts))
        if None in sizes:  # convert each new text once, then look them all up again
            try:
                new = {t: int(t) for t in set(compress(texts, map(is_, sizes, repeat(None))))}
                if min(new.values()) < 0:
                    raise ValueError
            except ValueError:
                raise self._bad_size(texts) from None
            if len(known) + len(new) <= 4096:
                known.update(new)
            else:
                new.update(known)
                known = new
            sizes = list(map(known.__getitem__, texts))
        self._line_no += len(blocks) * self._block_lines
        for k, col in head.items():
            c[k] += col
        for i, k in enumerate(_SIZE_COLUMNS):
            c[k] += sizes[i::len(_SIZE_COLUMNS)]
        c["vmflags"] += flags

    def _bad_size(self, texts: list[str]) -> SnapshotError:
        """The error for the first size text (of a bulk run) that is not a size."""
        for k, t in enumerate(texts):
            if not t.strip().isdigit():
                block, i = divmod(k, len(_SIZE_COLUMNS))
                line = self._line_no + block * self._block_lines + self._size_lines[i]
                return SnapshotError(f"line {line}: {tuple(_SMAPS_FIELDS)[i]} without a number: {t.strip()[:40]!r}")
        return SnapshotError("a size in /proc/PID/smaps is not a number")

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
                self._buf = self._fast(self._buf)
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
    if isinstance(text, str | bytes):  # in pieces: each pass over a piece stays in the CPU's cache
        whole = _decoded(text)
        text = (whole[i:i + _PIECE] for i in range(0, len(whole), _PIECE))
    for piece in text:
        p.feed(piece)
    return p.finish(warnings)


def parse_maps_text(text: str | bytes, warnings: list[str] | None = None) -> pl.DataFrame:
    """Parse /proc/PID/maps text into a :data:`VMA_SCHEMA` frame (smaps columns null)."""
    return vma_frame(parse_maps_columns(text, warnings))


def parse_smaps_text(text: str | bytes, warnings: list[str] | None = None) -> pl.DataFrame:
    """Parse /proc/PID/smaps text into a :data:`VMA_SCHEMA` frame."""
    return vma_frame(parse_smaps_columns(text, warnings))
