"""User-space stack symbolization from a maps snapshot and the mapped ELF files.

:func:`symbolize` turns user instruction pointers into ``(symbol, module, offset)`` rows of
``STACK_SCHEMA`` without ptrace or bcc:

1. find the VMA holding the ip in the snapshot (VMA_SCHEMA frame, e.g. from
   :func:`collectors.procmaps.read_snapshot` taken before the process exited);
2. for a file-backed VMA, the file offset is ``ip - vma.start + vma.offset``; the PT_LOAD
   segment containing that offset maps it to a link-time address
   ``p_vaddr + (file_offset - p_offset)`` (this is the load bias computed per mapping, so it
   works for PIE, shared objects and non-PIE executables alike);
3. look that address up in the file's ``.symtab`` (or ``.dynsym`` when stripped), or in a
   separate debug file found by build-id under ``/usr/lib/debug/.build-id``: functions, and
   untyped labels in code sections (assembly entry points such as ld.so's ``_dl_start_user``);
4. an ip in an anonymous VMA is looked up in ``/tmp/perf-PID.map`` (JIT code, the format
   perf and bcc read: ``START SIZE NAME`` in hex per line).

Unresolved ips get symbol ``"[unknown]"`` with the module that holds them (``[anon]``,
``[vdso]``, ``[stack]``, the file path) or ``"[unknown]"`` if no VMA holds them.
``offset`` is ``ip - symbol start`` when resolved, else the file offset (file VMAs) or
``ip - vma.start``. Frames below the top (return addresses) are looked up at ``ip - 1`` so
that a call as the last instruction of a function is attributed to that function.

Parsed symbol tables are cached per (path, device, inode, size, mtime).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import polars as pl

__all__ = ["SymbolTable", "load_symbols", "symbolize"]

UNKNOWN = "[unknown]"


@dataclass(frozen=True, slots=True)
class SymbolTable:
    """Function symbols of one ELF file plus its PT_LOAD file-offset → vaddr map."""

    starts: tuple[int, ...]
    sizes: tuple[int, ...]
    names: tuple[str, ...]
    loads: tuple[tuple[int, int, int], ...]  # (p_offset, p_vaddr, p_filesz)

    def vaddr_of(self, file_offset: int) -> int | None:
        """Link-time address of a file offset, via the PT_LOAD segment that maps it."""
        for off, vaddr, filesz in self.loads:
            if off <= file_offset < off + max(filesz, 1):
                return vaddr + (file_offset - off)
        return None

    def lookup(self, vaddr: int) -> tuple[str, int] | None:
        """(name, symbol start) of the function containing `vaddr`, or None."""
        i = bisect.bisect_right(self.starts, vaddr) - 1
        while i >= 0:
            start, size = self.starts[i], self.sizes[i]
            if size == 0 or vaddr < start + size:
                return self.names[i], start
            # a sized symbol that ends before vaddr: an enclosing one may start earlier
            # (rare: nested/alias symbols); look back a few entries only.
            if i > 0 and self.starts[i - 1] + self.sizes[i - 1] > vaddr:
                i -= 1
                continue
            return None
        return None


def _debug_file(path: str) -> str | None:
    """The separate debug file of `path` by build-id (Debian's -dbgsym layout), if installed."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import NoteSection

    try:
        with open(path, "rb") as f:
            ef = ELFFile(f)
            for sec in ef.iter_sections():
                if isinstance(sec, NoteSection):
                    for note in sec.iter_notes():
                        if note["n_type"] == "NT_GNU_BUILD_ID":
                            bid = str(note["n_desc"])
                            cand = f"/usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug"
                            return cand if os.path.exists(cand) else None
    except Exception:
        return None
    return None


def _read_symbols(path: str) -> tuple[list[tuple[int, int, str]], list[tuple[int, int, int]], bool]:
    from elftools.elf.constants import SH_FLAGS
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    syms: list[tuple[int, int, str]] = []
    loads: list[tuple[int, int, int]] = []
    has_symtab = False
    with open(path, "rb") as f:
        ef = ELFFile(f)
        for seg in ef.iter_segments():
            if seg["p_type"] == "PT_LOAD":
                loads.append((seg["p_offset"], seg["p_vaddr"], seg["p_filesz"]))
        for secname in (".symtab", ".dynsym"):
            sec = ef.get_section_by_name(secname)
            if not isinstance(sec, SymbolTableSection):
                continue
            code_sections: dict[int, bool] = {}
            for s in sec.iter_symbols():
                kind = s["st_info"]["type"]
                if kind not in ("STT_FUNC", "STT_GNU_IFUNC", "STT_LOOS", "STT_NOTYPE"):
                    continue
                shndx = s["st_shndx"]
                if s["st_value"] == 0 or shndx == "SHN_UNDEF" or not s.name:
                    continue
                if kind == "STT_NOTYPE":
                    # an assembly entry label (ld.so's _start, _dl_start_user): only in code
                    if not isinstance(shndx, int) or s.name[0] in ".$":
                        continue
                    if shndx not in code_sections:
                        code_sections[shndx] = bool(
                            ef.get_section(shndx)["sh_flags"] & SH_FLAGS.SHF_EXECINSTR)
                    if not code_sections[shndx]:
                        continue
                syms.append((s["st_value"], s["st_size"], s.name))
            if syms:
                has_symtab = secname == ".symtab"
                break
    return syms, loads, has_symtab


@lru_cache(maxsize=128)
def _load_cached(path: str, dev: int, inode: int, size: int, mtime_ns: int) -> SymbolTable | None:
    try:
        syms, loads, has_symtab = _read_symbols(path)
    except Exception:
        return None
    if not has_symtab:
        dbg = _debug_file(path)
        if dbg:
            try:
                dsyms, _, _ = _read_symbols(dbg)
                if dsyms:
                    syms = dsyms
            except Exception:
                pass
    # one entry per address: prefer the sized, then the shorter (non-versioned) name
    best: dict[int, tuple[int, str]] = {}
    for start, sz, name in syms:
        cur = best.get(start)
        if cur is None or (cur[0] == 0 and sz) or (bool(sz) == bool(cur[0]) and len(name) < len(cur[1])):
            best[start] = (sz, name)
    order = sorted(best)
    return SymbolTable(
        starts=tuple(order),
        sizes=tuple(best[a][0] for a in order),
        names=tuple(best[a][1] for a in order),
        loads=tuple(loads),
    )


def load_symbols(path: str) -> SymbolTable | None:
    """The (cached) symbol table of the ELF file at `path`; None if unreadable or not ELF."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _load_cached(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=32)
def _perf_map_cached(path: str, size: int, mtime_ns: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]]:
    entries: list[tuple[int, int, str]] = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split(" ", 2)
                if len(parts) < 3:
                    continue
                try:
                    entries.append((int(parts[0], 16), int(parts[1], 16), parts[2]))
                except ValueError:
                    continue
    except OSError:
        return (), (), ()
    entries.sort()
    return (tuple(e[0] for e in entries), tuple(e[1] for e in entries), tuple(e[2] for e in entries))


def _perf_map_lookup(pid: int, ip: int) -> tuple[str, int] | None:
    path = f"/tmp/perf-{pid}.map"
    try:
        st = os.stat(path)
    except OSError:
        return None
    starts, sizes, names = _perf_map_cached(path, st.st_size, st.st_mtime_ns)
    i = bisect.bisect_right(starts, ip) - 1
    # JITs append; a later entry for the same range wins, so scan back over overlaps
    while i >= 0:
        if ip < starts[i] + max(sizes[i], 1):
            return names[i], starts[i]
        i -= 1
        if i >= 0 and starts[i] + sizes[i] <= ip and ip - starts[i] > 1 << 20:
            break
    return None


def _open_path(pid: int, path: str, start: int, end: int) -> str | None:
    """A path to open the mapped file by, or None.

    A file shown as ``(deleted)`` was removed or replaced after it was mapped: only the
    process's own handle (/proc/PID/map_files, needs root) still reaches that file. Otherwise
    the path itself, else through the process's root (containers).
    """
    handle = f"/proc/{pid}/map_files/{start:x}-{end:x}"
    if path.endswith(" (deleted)"):
        return handle if os.path.exists(handle) else None
    for cand in (path, f"/proc/{pid}/root{path}", handle):
        if os.path.exists(cand):
            return cand
    return None


class _Vmas:
    def __init__(self, frame: pl.DataFrame) -> None:
        f = frame.sort("start")
        self.starts: list[int] = f.get_column("start").to_list()
        self.ends: list[int] = f.get_column("end").to_list()
        self.offsets: list[int] = f.get_column("offset").to_list()
        self.paths: list[str | None] = f.get_column("path").to_list()

    def find(self, ip: int) -> int | None:
        i = bisect.bisect_right(self.starts, ip) - 1
        if i >= 0 and ip < self.ends[i]:
            return i
        return None


def _resolve(pid: int, vmas: _Vmas, ip: int, *, return_address: bool = False) -> tuple[str, str, int]:
    # (symbol, module, offset) of one ip; see the module docstring for the rules
    look = ip - 1 if return_address and ip > 0 else ip
    i = vmas.find(look)
    if i is None:
        hit = _perf_map_lookup(pid, look)
        if hit:
            return hit[0], f"/tmp/perf-{pid}.map", ip - hit[1]
        return UNKNOWN, UNKNOWN, 0
    start, end, off, path = vmas.starts[i], vmas.ends[i], vmas.offsets[i], vmas.paths[i]
    if path and path.startswith("/"):
        file_off = look - start + off
        where = _open_path(pid, path, start, end)
        table = load_symbols(where) if where else None
        if table is not None:
            vaddr = table.vaddr_of(file_off)
            if vaddr is not None:
                hit = table.lookup(vaddr)
                if hit:
                    return hit[0], path, vaddr - hit[1] + (ip - look)
        return UNKNOWN, path, ip - start + off
    hit = _perf_map_lookup(pid, look)
    if hit:
        return hit[0], f"/tmp/perf-{pid}.map", ip - hit[1]
    return UNKNOWN, path or "[anon]", ip - start


def symbolize(pid: int, snapshot_frame: pl.DataFrame, stacks: dict[int, list[int]]) -> pl.DataFrame:
    """Resolve user stacks of `pid` against its maps snapshot.

    Parameters
    ----------
    pid
        The process (for /tmp/perf-PID.map and /proc/PID/map_files).
    snapshot_frame
        Its VMAs (VMA_SCHEMA), taken while the stacks' code was mapped.
    stacks
        stack_id -> instruction pointers, innermost frame first (as bcc's
        ``stack_traces.walk(id)`` yields them).

    Returns
    -------
    A STACK_SCHEMA frame: one row per (stack_id, depth).
    """
    from vmatrace.base.trace import STACK_SCHEMA

    vmas = _Vmas(snapshot_frame)
    rows: dict[str, list[object]] = {k: [] for k in STACK_SCHEMA}
    memo: dict[tuple[int, bool], tuple[str, str, int]] = {}  # stacks share most frames
    for sid, ips in stacks.items():
        for depth, ip in enumerate(_ints(ips)):
            key = (ip, depth > 0)
            hit = memo.get(key)
            if hit is None:
                hit = memo[key] = _resolve(pid, vmas, ip, return_address=depth > 0)
            sym, mod, off = hit
            for k, v in (("pid", pid), ("stack_id", sid), ("depth", depth), ("ip", ip),
                         ("symbol", sym), ("module", mod), ("offset", max(off, 0))):
                rows[k].append(v)
    return pl.DataFrame(rows, schema=STACK_SCHEMA)


def _ints(ips: Iterable[int]) -> list[int]:
    return [int(x) & ((1 << 64) - 1) for x in ips]
