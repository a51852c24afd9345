"""Drive the model (`replay.AddressSpace`, public API only) with oracle sequences.

Window-relative pages are translated to absolute addresses at the same window base the runner
uses (WINDOW_BASE), so that page offsets, alignment and pgoff arithmetic are identical.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable
from collections.abc import Sequence as Seq
from typing import Any

from .core import PAGE, WINDOW_BASE, WINDOW_PAGES, SeqResult, Sequence, Step, Vma

# Raw Linux x86-64 constants (the model's contract uses them).
PROT = {"r": 0x1, "w": 0x2, "x": 0x4}
MAP_FLAGS = {
    "shared": 0x01, "private": 0x02, "fixed": 0x10, "anon": 0x20, "growsdown": 0x100,
    "locked": 0x2000, "noreserve": 0x4000, "populate": 0x8000, "noreplace": 0x100000,
}  # fmt: skip
MADV = {
    "normal": 0, "random": 1, "sequential": 2, "willneed": 3, "dontneed": 4, "free": 8,
    "dontfork": 10, "dofork": 11, "mergeable": 12, "unmergeable": 13, "hugepage": 14,
    "nohugepage": 15, "dontdump": 16, "dodump": 17, "wipeonfork": 18, "keeponfork": 19,
    "cold": 20, "pageout": 21, "populate_read": 22, "populate_write": 23,
    "guard_install": 102, "guard_remove": 103,
}  # fmt: skip
MREMAP_FLAGS = {"maymove": 1, "fixed": 2, "dontunmap": 4}
MLOCK_ONFAULT = 1


def prot_of(s: str) -> int:
    p = 0
    for c in s:
        if c in PROT:
            p |= PROT[c]
        elif c != "-":
            raise ValueError(f"bad protection {s!r}")
    return p


def _flags_of(s: str, table: dict[str, int]) -> int:
    if s in ("", "-", "0"):
        return 0
    v = 0
    for t in s.split(","):
        if t not in table:
            raise ValueError(f"unknown flag {t!r}")
        v |= table[t]
    return v


def advice_of(s: str) -> int:
    return MADV[s] if s in MADV else int(s, 0)


def _model_class(kernel: str) -> Callable[..., Any]:
    mod = importlib.import_module("replay")
    cls = getattr(mod, "AddressSpace", None)
    if cls is None:
        raise ImportError("replay.AddressSpace is not available yet")
    return cls


def _window_vmas(mm: Any, base: int, pages: int) -> tuple[Vma, ...]:
    end = base + pages * PAGE
    out = []
    for v in mm.vmas():
        if v.end > base and v.start < end:
            out.append(
                Vma((v.start - base) // PAGE, (v.end - base) // PAGE, str(v.perms), frozenset(v.vmflags),
                    getattr(v, "anon_id", None) or 0, getattr(v, "avc", None))
            )
    return tuple(sorted(out, key=lambda x: x.start))


def _rel(addr: int, base: int, pages: int) -> int | str:
    if base <= addr < base + pages * PAGE and (addr - base) % PAGE == 0:
        return (addr - base) // PAGE
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
        r = mm.mmap(a(1), n(2), prot_of(t[3]), _flags_of(t[4], MAP_FLAGS), -1, 0)
        return mm, _rel(int(r), base, pages)
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
        flags = _flags_of(t[4] if len(t) > 4 else "0", MREMAP_FLAGS)
        new = a(5) if len(t) > 5 else 0
        r = mm.mremap(a(1), n(2), n(3), flags, new)
        return mm, _rel(int(r), base, pages)
    elif name in ("touch", "read"):
        mm.touch(a(1), write=(name == "touch"))
    elif name == "fork":
        return mm.fork(), None  # the script continues in the child
    elif name == "forkp":
        mm.fork()  # the child exits at once; the parent continues
    else:
        raise ValueError(f"unknown op {name!r}")
    return mm, None


# Configuration of the oracle machines, beyond the merge era, passed to the model as keyword
# arguments of AddressSpace (kernel="live" reads the live configuration itself):
# * the Debian 6.1 and 6.12 images are built with CONFIG_MEM_SOFT_DIRTY=y (every VMA shows `sd`);
# * qemu's `-cpu max` has protection keys (PKU/OSPKE): a PROT_EXEC-only mapping gets the
#   execute-only pkey and cannot be read (a read of it is EFAULT), unlike on a CPU without PKU.
ORACLE_CONFIG: dict[str, dict[str, Any]] = {
    "6.1": {"soft_dirty": True, "pkeys": True},
    "6.12": {"soft_dirty": True, "pkeys": True},
}


def make_model(profile: str, options: dict[str, Any] | None = None) -> Any:
    cls = _model_class(profile)
    if options:
        try:
            return cls(kernel=profile, **options)
        except TypeError:
            pass  # a model without these keyword arguments: the contract's constructor
    return cls(kernel=profile)


def run_model_one(
    profile: str, s: Sequence, base: int = WINDOW_BASE, pages: int = WINDOW_PAGES,
    options: dict[str, Any] | None = None, check: bool = True,
) -> SeqResult:
    """One sequence through the model; `mm.check()` (if the model has it) after every step."""
    res = SeqResult(s.name)
    try:
        mm = make_model(profile, options)
        res.steps.append(Step(0, "", 0, None, _window_vmas(mm, base, pages)))
    except Exception as e:
        res.status = "model-error"
        res.steps.append(Step(0, "", -1, None, (), note=f"{type(e).__name__}: {e}"))
        return res
    for i, op in enumerate(s.ops, 1):
        err, ret, note = 0, None, ""
        try:
            mm, ret = apply_op(mm, op, base, pages)
            check = check and hasattr(mm, "check")
        except OSError as e:
            err = e.errno if e.errno is not None else -1
            ret = None
        except Exception as e:
            tb = traceback.extract_tb(e.__traceback__)[-1]
            note = f"{type(e).__name__}: {e} (at {tb.filename}:{tb.lineno})"
            res.steps.append(Step(i, op, -1, None, (), note=note))
            res.status = "model-error"
            return res
        try:
            vmas = _window_vmas(mm, base, pages)
            if check:
                mm.check()  # the model's own invariants, after every step
        except Exception as e:
            what = "check()" if isinstance(e, AssertionError) else "vmas()"
            res.steps.append(Step(i, op, -1, ret, (), note=f"{what}: {type(e).__name__}: {e}"))
            res.status = "model-error"
            return res
        res.steps.append(Step(i, op, err, ret, vmas))
    return res


def run_model(profile: str, seqs: Seq[Sequence], base: int = WINDOW_BASE,
              pages: int = WINDOW_PAGES, options: dict[str, Any] | None = None) -> list[SeqResult]:
    """Run every sequence through `replay.AddressSpace(kernel=profile, **options)`."""
    return [run_model_one(profile, s, base, pages, options) for s in seqs]
