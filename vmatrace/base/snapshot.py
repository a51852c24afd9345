"""The snapshot schema, the :class:`Snapshot` record and the /proc/PID/maps and smaps text parsers.

Base layer: collectors produce snapshots (``collectors.procmaps`` reads live processes), traces store
them (``vmatrace.base.trace``), the model and the reports read them. A snapshot is a polars frame with
:data:`VMA_SCHEMA` (documented in ``docs/trace-format.md``). ``seq_file`` restarts after each read()
chunk, so a VMA that changes between two chunks can be printed twice: the parsers drop the later
overlapping line and say so in a warning.
"""


from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from vmatrace.base.errors import SnapshotError

VMA_SCHEMA: dict[str, pl.DataType] = {
    "start": pl.UInt64(),
    "end": pl.UInt64(),
    "perms": pl.Utf8(),
    "offset": pl.UInt64(),
    "dev": pl.Utf8(),
    "inode": pl.UInt64(),
    "path": pl.Utf8(),
    "rss_kb": pl.UInt64(),
    "pss_kb": pl.UInt64(),
    "anonymous_kb": pl.UInt64(),
    "swap_kb": pl.UInt64(),
    "vmflags": pl.Utf8(),
}

# Deep snapshot columns (collectors.deep: a BPF task_vma iterator), beside VMA_SCHEMA. Identities are
# small integers assigned in user space, stable within one trace or one command run; a raw kernel
# pointer is never stored.
DEEP_SCHEMA: dict[str, pl.DataType] = {
    "vm_flags": pl.UInt64(),      # raw vm_area_struct.vm_flags
    "pgoff": pl.UInt64(),         # vm_pgoff in pages (anonymous memory too)
    "file_id": pl.UInt32(),       # the open file (struct file); null: no file
    "anon_vma_id": pl.UInt32(),   # the anon_vma; null: none (never faulted)
    "avc": pl.UInt16(),           # entries in the anon_vma_chain (0: no anon_vma)
    "fork_child": pl.Boolean(),   # has an anon_vma and its anon_vma_chain is not singular
    "close_hook": pl.Boolean(),   # vm_ops->close is set
    "anon_name": pl.Utf8(),       # prctl(PR_SET_VMA_ANON_NAME) name; null: none
    "mempolicy": pl.Boolean(),    # a VMA mempolicy (mbind) is set
    "uffd": pl.Boolean(),         # a userfaultfd context is set
}

# smaps field -> column
_SMAPS_FIELDS = {"Rss:": "rss_kb", "Pss:": "pss_kb", "Anonymous:": "anonymous_kb", "Swap:": "swap_kb"}



@dataclass
class Snapshot:
    pid: int
    t_start_ns: int  # CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns()
    t_end_ns: int
    method: str  # "procmap_query" | "text" | "bpf_iter" (deep: frame has DEEP_SCHEMA columns too)
    frame: pl.DataFrame
    warnings: list[str] = field(default_factory=list)

    @property
    def deep(self) -> bool:
        """The frame carries the :data:`DEEP_SCHEMA` columns (a deep snapshot)."""
        return all(c in self.frame.columns for c in DEEP_SCHEMA)

    @property
    def complete(self) -> bool:
        return not any(w.startswith("incomplete") for w in self.warnings)

    def maps_lines(self) -> list[str]:
        """The snapshot as /proc/PID/maps lines."""
        return [format_maps_line(r) for r in self.frame.iter_rows(named=True)]


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


# ---------------------------------------------------------------------------------------------
# Text parsing


def _rows_from_header(line: str) -> tuple[int, int, str, int, str, int, str | None]:
    parts = line.split(None, 5)
    if len(parts) < 5:
        raise ValueError(f"not a maps line: {line!r}")
    lo, _, hi = parts[0].partition("-")
    path = parts[5] if len(parts) == 6 else None
    return int(lo, 16), int(hi, 16), parts[1], int(parts[2], 16), parts[3], int(parts[4]), path


def vma_frame(rows: dict[str, list[object]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=VMA_SCHEMA)


def empty_vma_columns() -> dict[str, list[object]]:
    return {k: [] for k in VMA_SCHEMA}


def _drop_reprinted(frame: pl.DataFrame, warnings: list[str]) -> pl.DataFrame:
    """Drop VMAs that start below an earlier VMA's end: seq_file printed a changed VMA twice.

    /proc/PID/maps is produced in read()-sized chunks; between two chunks the kernel restarts from
    the last printed address, so a VMA that changed in between can appear again, overlapping.
    """
    if frame.height < 2:
        return frame
    prev_end = frame["end"].shift(1).cum_max()
    dup = (frame["start"] < prev_end).fill_null(False)
    if dup.any():
        warnings.append(f"dropped {int(dup.sum())} VMA line(s) printed twice (the address space changed during the read)")
        frame = frame.filter(~dup)
    return frame


def _line_series(data: str | bytes) -> pl.Series:
    """The non-empty lines of /proc text as a polars Series, split in polars (its CSV reader, one
    column, no quoting, NUL as the never-seen separator). Non-UTF-8 bytes become ``\\xNN``.

    Only "\\n" ends a line: the kernel escapes "\\n" in names (as \\012) but no other line-break
    character; the CSV reader would also end a line at "\\r\\n", so such text is split in Python.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "backslashreplace")
    elif not data.isascii():
        data = data.decode("utf-8", "backslashreplace").encode()
    if b"\r\n" in data or not data.strip():
        lines = [ln for ln in data.decode().split("\n") if ln.strip()]
        return pl.Series("l", lines, dtype=pl.Utf8)
    s = pl.read_csv(data, has_header=False, separator="\x00", quote_char=None, new_columns=["l"],
                    schema={"l": pl.Utf8}).to_series()
    return s.drop_nulls() if s.null_count() else s


def _parse_headers(lines: pl.Series) -> pl.DataFrame:
    """maps header lines -> the VMA_SCHEMA columns of /proc/PID/maps; ValueError if one is not."""
    f = pl.DataFrame(lines.alias("l")).select(pl.col("l").str.splitn(" ", 6).alias("p"))
    f = f.select(
        pl.col("p").struct.field("field_0").str.split_exact("-", 1).alias("r"),
        pl.col("p").struct.field("field_1").alias("perms"),
        pl.col("p").struct.field("field_2").alias("off"),
        pl.col("p").struct.field("field_3").alias("dev"),
        pl.col("p").struct.field("field_4").alias("ino"),
        pl.col("p").struct.field("field_5").str.strip_chars_start(" ").alias("path"),
    )
    try:
        out = f.select(
            pl.col("r").struct.field("field_0").str.to_integer(base=16, dtype=pl.UInt64).alias("start"),
            pl.col("r").struct.field("field_1").str.to_integer(base=16, dtype=pl.UInt64).alias("end"),
            pl.col("perms"),
            pl.col("off").str.to_integer(base=16, dtype=pl.UInt64).alias("offset"),
            pl.col("dev"),
            pl.col("ino").str.to_integer(base=10, dtype=pl.UInt64).alias("inode"),
            pl.when(pl.col("path") == "").then(None).otherwise(pl.col("path")).alias("path"),
        )
    except pl.exceptions.PolarsError as e:
        raise ValueError(str(e)) from None
    bad = out.select(pl.any_horizontal(pl.exclude("path").is_null()) | (pl.col("perms").str.len_chars() != 4))
    if bad.to_series().any():
        raise ValueError("not a maps line")
    return out


def _name_bad_line(text: str, what: str) -> SnapshotError:
    """The error for text that did not parse: the first bad line, as a line-by-line parser would."""
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip() and not line.partition(" ")[0].endswith(":"):
            try:
                _rows_from_header(line)
                int(line.split()[0].partition("-")[2], 16)
            except ValueError:
                return SnapshotError(f"line {n} is not a /proc/PID/{what} line: {line[:60]!r}")
    return SnapshotError(f"not /proc/PID/{what} text")


def parse_maps_text(text: str | bytes, warnings: list[str] | None = None) -> pl.DataFrame:
    """Parse /proc/PID/maps text (or the bytes read) into a VMA_SCHEMA frame (smaps columns null).

    Vectorized with polars string kernels: a 10,000-VMA maps file parses in a few milliseconds.
    """
    try:
        out = _parse_headers(_line_series(text))
    except ValueError:
        raise _name_bad_line(_decoded(text), "maps") from None
    out = out.with_columns(*(pl.lit(None, VMA_SCHEMA[k]).alias(k)
                             for k in ("rss_kb", "pss_kb", "anonymous_kb", "swap_kb", "vmflags")))
    out = out.select(VMA_SCHEMA.keys())
    return _drop_reprinted(out, warnings if warnings is not None else [])


def _decoded(text: str | bytes) -> str:
    return text if isinstance(text, str) else text.decode("utf-8", "backslashreplace")


def _is_header(line: str) -> bool:
    # a VMA header starts with a lower-case hex digit, a field with an upper-case name
    return line[:1] in "0123456789abcdef" and line[:1] != ""


def _smaps_by_stride(lines: pl.Series) -> pl.DataFrame | None:
    """The fast path: the kernel prints the same fields in the same order for every VMA (one
    kernel, one configuration), so the VMA headers are every K-th line and each field is at a
    fixed offset after them; only those lines are read. None when the text does not have that
    shape (the caller then parses it line by line)."""
    n = len(lines)
    first = lines.head(128).to_list()
    if not first or not _is_header(first[0]):
        return None
    k = next((i for i in range(1, len(first)) if _is_header(first[i])), n if n <= len(first) else 0)
    if not k or n % k:
        return None
    at: dict[str, int] = {}
    for i, line in enumerate(first[:k]):
        name = line.partition(" ")[0]
        if name in _SMAPS_FIELDS or name == "VmFlags:":
            at[name] = i
    if len(at) != len(_SMAPS_FIELDS) + 1:
        return None
    heads = lines.gather_every(k, 0)
    hc = heads.str.head(1)
    if not ((hc >= "0") & (hc <= "9") | (hc >= "a") & (hc <= "f")).all():
        return None
    cols: dict[str, pl.Series] = {}
    for name, i in at.items():
        got = lines.gather_every(k, i)
        if not got.str.starts_with(name).all():
            return None
        rest = got.str.slice(len(name))
        if name == "VmFlags:":
            cols["vmflags"] = rest.str.strip_chars(" ").str.replace_all(" +", " ").alias("vmflags")
        else:  # "Rss:        1234 kB"
            num = rest.str.strip_chars(" kB").str.to_integer(base=10, dtype=pl.UInt64, strict=False)
            if num.null_count():
                return None
            cols[_SMAPS_FIELDS[name]] = num
    try:
        out = _parse_headers(heads)
    except ValueError:
        return None
    return out.with_columns(*(v.alias(c) for c, v in cols.items())).select(VMA_SCHEMA.keys())


def parse_smaps_text(text: str | bytes, warnings: list[str] | None = None) -> pl.DataFrame:
    """Parse /proc/PID/smaps text (or the bytes read) into a VMA_SCHEMA frame.

    Vectorized: the lines are split in polars and only the header and the fields of the schema are
    read (:func:`_smaps_by_stride`); text of another shape is parsed line by line.
    """
    w = warnings if warnings is not None else []
    try:
        fast = _smaps_by_stride(_line_series(text))
    except pl.exceptions.PolarsError:
        fast = None
    if fast is not None:
        return _drop_reprinted(fast, w)
    return _parse_smaps_lines(_decoded(text), w)


def _parse_smaps_lines(text: str, warnings: list[str]) -> pl.DataFrame:
    """smaps line by line (any shape; names the first bad line)."""
    cols = empty_vma_columns()
    cur: dict[str, object] | None = None

    def flush() -> None:
        if cur is not None:
            for k in VMA_SCHEMA:
                cols[k].append(cur.get(k))

    for n, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        first, _, rest = line.partition(" ")
        if first.endswith(":"):
            if cur is None:
                raise SnapshotError(f"line {n}: smaps field before any VMA header")
            col = _SMAPS_FIELDS.get(first)
            if col is not None:
                cur[col] = int(rest.split()[0])
            elif first == "VmFlags:":
                cur["vmflags"] = " ".join(rest.split())
            continue
        flush()
        try:
            s, e, perms, off, dev, ino, path = _rows_from_header(line)
        except ValueError:
            raise SnapshotError(f"line {n} is not a /proc/PID/smaps line: {line[:60]!r}") from None
        cur = {"start": s, "end": e, "perms": perms, "offset": off, "dev": dev, "inode": ino, "path": path,
               "rss_kb": 0, "pss_kb": 0, "anonymous_kb": 0, "swap_kb": 0, "vmflags": ""}
    flush()
    return _drop_reprinted(vma_frame(cols), warnings)


