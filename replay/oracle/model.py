"""Drive the model (`replay.AddressSpace`, public API only) with oracle sequences.

Window-relative pages are translated to absolute addresses at the same window base the runner
uses (WINDOW_BASE), so that page offsets, alignment and pgoff arithmetic are identical.
"""

from __future__ import annotations

import errno
import traceback
from collections.abc import Sequence as Seq
from typing import Any

from replay.mm import AddressSpace

from .core import (
    MADV,
    MAP_FLAGS,
    MLOCK_ONFAULT,
    MREMAP_FLAGS,
    PAGE,
    WINDOW_BASE,
    WINDOW_PAGES,
    SeqResult,
    Sequence,
    StepResult,
    VmaRow,
    advice_of,
    backing_of,
    flags_of,
    prot_of,
)

# The runner's files (runner.c file_pages(), memfd size) and heap (HEAP_PAGE, HEAP0, HEAP_PAGES).
FILE_PAGES = {"a": 16, "b": 8, "c": 3}
MEMFD_PAGES = 16
HEAP_PAGE = 1000
HEAP0 = 4
HEAP_PAGES = 64
FILE_DIR = "/oracle/"
NSLOTS = 8


class _Driver:
    """The runner's per-sequence state beside the model: fd slots, and whether brk was called."""

    __slots__ = ("heap_shown", "slots")

    def __init__(self) -> None:
        self.slots: dict[int, int] = {}  # slot -> the model's fd
        self.heap_shown = False

    def copy(self) -> _Driver:
        d = _Driver()
        d.slots = dict(self.slots)
        d.heap_shown = self.heap_shown
        return d


def _driver(mm: Any) -> _Driver:
    d = vars(mm).get("_oracle_driver")
    if d is None:
        d = _Driver()
        mm._oracle_driver = d
    return d


def _window_vmas(mm: Any, base: int, pages: int) -> tuple[VmaRow, ...]:
    end = base + pages * PAGE
    heap = base + HEAP_PAGE * PAGE
    heap_end = heap + HEAP_PAGES * PAGE
    shown = _driver(mm).heap_shown
    out = []
    for v in mm.vmas():
        if (v.end > base and v.start < end) or (shown and v.end > heap and v.start < heap_end):
            backing = backing_of(v.path, v.pgoff) if v.file_id is not None else ""
            out.append(
                VmaRow((v.start - base) // PAGE, (v.end - base) // PAGE, str(v.perms), frozenset(v.vmflags),
                    v.anon_id or 0, v.avc, backing)
            )
    return tuple(sorted(out, key=lambda x: x.start))


def _rel(addr: int, base: int, pages: int, heap: int | None = None) -> int | str:
    if base <= addr < base + pages * PAGE and (addr - base) % PAGE == 0:
        return (addr - base) // PAGE
    if heap is not None and addr >= heap and (addr - heap) % PAGE == 0:
        return HEAP_PAGE + (addr - heap) // PAGE
    return f"x{addr:x}"


def apply_op(mm: Any, op: str, base: int = WINDOW_BASE, pages: int = WINDOW_PAGES) -> tuple[Any, int | str | None]:
    """Apply one runner op line to the model. Returns (the address space to continue with, ret)."""
    t = op.split()
    name = t[0]

    def a(i: int) -> int:
        return base + int(t[i], 0) * PAGE

    def n(i: int) -> int:
        return int(t[i], 0) * PAGE

    if name == "mmap":
        flags = flags_of(t[4], MAP_FLAGS)
        fd, off = -1, 0
        if not flags & MAP_FLAGS["anon"]:
            slot = int(t[5], 0)
            fd = _driver(mm).slots.get(slot, -1)
            off = int(t[6], 0) * PAGE
        r = mm.mmap(a(1), n(2), prot_of(t[3]), flags, fd, off)
        return mm, _rel(int(r), base, pages)
    if name in ("open", "memfd", "zero"):
        d = _driver(mm)
        slot = int(t[1], 0)
        if slot in d.slots:
            mm.close(d.slots.pop(slot))
        if name == "open":
            ro = len(t) > 3 and t[3] == "ro"
            fd = mm.open_file(FILE_DIR + t[2], writable=not ro, shmem=True, dev="00:1f",
                              size=FILE_PAGES[t[2]])
        elif name == "memfd":
            fd = mm.memfd_create("m", size=MEMFD_PAGES)
        else:
            fd = mm.open_file("/dev/zero", dev="00:05", ino=4)
        d.slots[slot] = fd
        return mm, None
    if name in ("dup", "close"):
        d = _driver(mm)
        s1 = int(t[1], 0)
        if s1 not in d.slots:
            raise OSError(errno.EBADF, "empty fd slot")
        if name == "close":
            mm.close(d.slots.pop(s1))
            return mm, None
        s2 = int(t[2], 0)
        fd = mm.dup(d.slots[s1])
        if s2 in d.slots:
            mm.close(d.slots.pop(s2))
        d.slots[s2] = fd
        return mm, None
    if name == "brk":
        d = _driver(mm)
        d.heap_shown = True
        heap = base + HEAP_PAGE * PAGE
        r = mm.brk(heap + int(t[1], 0) * PAGE)
        return mm, _rel(int(r), base, pages, heap)
    if name == "munmap":
        mm.munmap(a(1), n(2))
    elif name == "mprotect":
        mm.mprotect(a(1), n(2), prot_of(t[3]))
    elif name == "madvise":
        mm.madvise(a(1), n(2), advice_of(t[3]))
    elif name == "guard":
        mm.madvise(a(1), n(2), MADV["guard_install"])
    elif name == "mlock":
        mm.mlock(a(1), n(2))
    elif name == "mlock2":
        mm.mlock(a(1), n(2), MLOCK_ONFAULT if len(t) > 3 and t[3] == "onfault" else 0)
    elif name == "munlock":
        mm.munlock(a(1), n(2))
    elif name == "mseal":
        mm.mseal(a(1), n(2))
    elif name == "mremap":
        flags = flags_of(t[4] if len(t) > 4 else "0", MREMAP_FLAGS)
        new = a(5) if len(t) > 5 else 0
        r = mm.mremap(a(1), n(2), n(3), flags, new)
        return mm, _rel(int(r), base, pages)
    elif name in ("touch", "read"):
        mm.touch(a(1), write=(name == "touch"))
    elif name == "fork":
        child = mm.fork()  # the script continues in the child
        child._oracle_driver = _driver(mm).copy()
        return child, None
    elif name == "forkp":
        mm.fork()  # the child exits at once; the parent continues
    else:
        raise ValueError(f"unknown op {name!r}")
    return mm, None


# The configuration of an oracle machine beyond its merge era (soft-dirty, protection keys,
# THP, overcommit) is passed to the model as keyword arguments of AddressSpace: a qemu guest
# reports it (replay/oracle/execute.py GuestInfo.model_options()), profile "live" reads its own.


def make_model(profile: str, options: dict[str, Any] | None = None,
               base: int = WINDOW_BASE) -> AddressSpace:
    """The model of one runner sequence child: a heap of HEAP0 pages whose first page (the TLS
    block) the runner's parent wrote before it forked the child."""
    if profile == "live":  # the running kernel's profile and configuration, probed once
        from replay.live import live_address_space  # here: replay.live imports this package

        mm = live_address_space(**(options or {}))
    else:
        mm = AddressSpace(kernel=profile, **(options or {}))
    heap = base + HEAP_PAGE * PAGE
    mm.set_brk_base(heap)
    mm.brk(heap + HEAP0 * PAGE)
    mm.touch(heap)
    child = mm.fork()
    vars(child)["_oracle_driver"] = _Driver()  # the driver state rides along with forks
    return child


def run_model_one(
    profile: str, s: Sequence, base: int = WINDOW_BASE, pages: int = WINDOW_PAGES,
    options: dict[str, Any] | None = None, check: bool = True,
) -> SeqResult:
    """One sequence through the model; `mm.check()` after every step (unless ``check=False``)."""
    res = SeqResult(s.name)
    try:
        mm = make_model(profile, options, base)
        res.steps.append(StepResult(0, "", 0, None, _window_vmas(mm, base, pages)))
    except Exception as e:
        res.status = "model-error"
        res.steps.append(StepResult(0, "", -1, None, (), note=f"{type(e).__name__}: {e}"))
        return res
    for i, op in enumerate(s.ops, 1):
        err, ret, note = 0, None, ""
        try:
            mm, ret = apply_op(mm, op, base, pages)
        except OSError as e:
            err = e.errno if e.errno is not None else -1
            ret = None
        except Exception as e:
            tb = traceback.extract_tb(e.__traceback__)[-1]
            note = f"{type(e).__name__}: {e} (at {tb.filename}:{tb.lineno})"
            res.steps.append(StepResult(i, op, -1, None, (), note=note))
            res.status = "model-error"
            return res
        try:
            vmas = _window_vmas(mm, base, pages)
            if check:
                mm.check()  # the model's own invariants, after every step
        except Exception as e:
            what = "check()" if isinstance(e, AssertionError) else "vmas()"
            res.steps.append(StepResult(i, op, -1, ret, (), note=f"{what}: {type(e).__name__}: {e}"))
            res.status = "model-error"
            return res
        res.steps.append(StepResult(i, op, err, ret, vmas))
    return res


def run_model(profile: str, seqs: Seq[Sequence], base: int = WINDOW_BASE,
              pages: int = WINDOW_PAGES, options: dict[str, Any] | None = None) -> list[SeqResult]:
    """Run every sequence through `replay.AddressSpace(kernel=profile, **options)`."""
    return [run_model_one(profile, s, base, pages, options) for s in seqs]
