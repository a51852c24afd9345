"""The address space model: VMAs, anon_vmas, files, and the kernel's merge engine (mm/vma.c).

Vocabulary follows the kernel: ``prev``/``middle``/``next``/``target``, ``pgoff`` in pages,
``anon_vma`` identity and ``avc`` (length of the anon_vma_chain). Behaviour that differs between
kernel eras is read from ``self.profile`` (:class:`replay.profiles.KernelProfile`); nothing here
compares version numbers.

The merge engine is two functions, as in the kernel since 6.12:

* :meth:`AddressSpace._merge_new_range` mirrors ``vma_merge_new_range()`` + ``vma_expand()``
  (mmap, brk, mremap destination, mremap in-place extension);
* :meth:`AddressSpace._merge_existing_range` mirrors ``vma_merge_existing_range()`` and
  ``commit_merge()``, wrapped by :meth:`AddressSpace._vma_modify` (``vma_modify()``: merge, or
  split at the range boundaries).

Errors are ``OSError(errno, message)`` with the errno the kernel returns.
"""

from __future__ import annotations

import errno as E
import itertools
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from replay import explain as X
from replay.flags import (
    DEFAULT_MAX_MAP_COUNT,
    DEFAULT_MMAP_BASE,
    MADV_COLD,
    MADV_COLLAPSE,
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_DONTNEED_LOCKED,
    MADV_FREE,
    MADV_GUARD_INSTALL,
    MADV_GUARD_REMOVE,
    MADV_HUGEPAGE,
    MADV_KEEPONFORK,
    MADV_MERGEABLE,
    MADV_NOHUGEPAGE,
    MADV_NORMAL,
    MADV_PAGEOUT,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_RANDOM,
    MADV_REMOVE,
    MADV_SEQUENTIAL,
    MADV_UNMERGEABLE,
    MADV_WILLNEED,
    MADV_WIPEONFORK,
    MAP_ANONYMOUS,
    MAP_DROPPABLE,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_HUGETLB,
    MAP_KNOWN,
    MAP_LOCKED,
    MAP_NORESERVE,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MAP_SHARED_VALIDATE,
    MAP_STACK,
    MAP_SYNC,
    MAP_TYPE,
    MCL_CURRENT,
    MCL_FUTURE,
    MCL_ONFAULT,
    MLOCK_ONFAULT,
    MMAP_MIN_ADDR,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SIZE,
    PROT_EXEC,
    PROT_GROWSDOWN,
    PROT_GROWSUP,
    PROT_READ,
    PROT_SEM,
    PROT_WRITE,
    STACK_GUARD_GAP,
    TASK_SIZE,
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_DATA_DEFAULT_FLAGS,
    VM_DONTCOPY,
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_DROPPABLE,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_IO,
    VM_KSM_INCOMPATIBLE,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_LOCKONFAULT,
    VM_MAYBE_GUARD,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_MERGEABLE,
    VM_NOHUGEPAGE,
    VM_NORESERVE,
    VM_PFNMAP,
    VM_PKEY_BIT0,
    VM_PKEY_MASK,
    VM_RAND_READ,
    VM_READ,
    VM_SEALED,
    VM_SEQ_READ,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_SPECIAL,
    VM_UFFD_FLAGS,
    VM_WIPEONFORK,
    VM_WRITE,
    mnemonics,
    perms,
)
from replay.profiles import AnonRule, CloseRule, KernelProfile, get_profile
from replay.ranges import Ranges
from replay.tree import VmaIndex

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

__all__ = ["UNKNOWN", "AddressSpace", "AnonVma", "OpenFile", "Unknown", "UnknownAnonVma", "Vma",
           "VmaView"]

_P = PAGE_SIZE
_PS = PAGE_SHIFT
_OFF = PAGE_SIZE - 1
VM_STICKY = VM_SOFTDIRTY | VM_MAYBE_GUARD
EXEC_ONLY_PKEY = 1  # the pkey x86 allocates for PROT_EXEC-only memory (execute_only_pkey())
_EXEC_ONLY_PKEY_BITS = EXEC_ONLY_PKEY * VM_PKEY_BIT0
_VM_RWX = VM_READ | VM_WRITE | VM_EXEC
_PROT_GROWS = PROT_GROWSDOWN | PROT_GROWSUP
_BOUNDS_CAP_MIN = 4096
_U64 = (1 << 64) - 1
MAX_LFS_FILESIZE = (1 << 63) - 1
_PROT_UNKNOWN = ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM)
_PROT_RWX = PROT_READ | PROT_WRITE | PROT_EXEC
_VM_MAY_RWX = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC


def _page_align(x: int) -> int:
    return (x + _OFF) & ~_OFF


def _err(code: int, what: str) -> OSError:
    return OSError(code, f"{E.errorcode.get(code, code)}: {what}")


# --------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------


class Unknown:
    """The third truth value: the model does not know (e.g. anon_vma state from a snapshot)."""

    _inst: Unknown | None = None

    def __new__(cls) -> Unknown:
        if cls._inst is None:
            cls._inst = super().__new__(cls)
        return cls._inst

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __bool__(self) -> bool:
        raise TypeError("UNKNOWN has no truth value; compare with `is UNKNOWN`")


UNKNOWN = Unknown()

_ids = itertools.count(1)


class AnonVma:
    """An anon_vma (identity only). ``snapshot=True``: faulted, seen in a snapshot."""

    __slots__ = ("id", "snapshot")
    unknown = False

    def __init__(self, *, snapshot: bool = False) -> None:
        self.id = next(_ids)
        self.snapshot = snapshot

    def __repr__(self) -> str:
        return f"AnonVma#{self.id}"


class UnknownAnonVma:
    """Placeholder for a VMA whose anon_vma state is unknown (from a snapshot with no proof)."""

    __slots__ = ("id",)
    unknown = True

    def __init__(self) -> None:
        self.id = next(_ids)

    def __repr__(self) -> str:
        return f"UnknownAnonVma#{self.id}"


AnonState = AnonVma | UnknownAnonVma | None


class OpenFile:
    """An open file description (struct file): ``dup`` shares it, a second open does not."""

    __slots__ = ("close", "dev", "id", "ino", "path", "readable", "shmem", "size", "writable")

    def __init__(self, path: str, *, dev: str = "fe:00", ino: int = 0, readable: bool = True,
                 writable: bool = True, close: bool = False, shmem: bool = False,
                 size: int | None = None) -> None:
        self.size = size  # pages; None: large enough (accesses beyond EOF raise SIGBUS)
        self.id = next(_ids)
        self.path = path
        self.dev = dev
        self.ino = ino
        self.readable = readable
        self.writable = writable
        self.close = close  # vm_ops->close (hugetlbfs, SysV shm, some drivers)
        self.shmem = shmem

    def __repr__(self) -> str:
        return f"OpenFile#{self.id}({self.path!r})"


class Vma:
    """One vm_area_struct. Mutable; owned by exactly one :class:`AddressSpace`."""

    __slots__ = ("anon_name", "anon_vma", "avc", "close", "end", "file", "flags", "label",
                 "next", "pgoff", "policy", "prev", "start", "uffd_ctx")

    def __init__(self, start: int, end: int, pgoff: int, flags: int, file: OpenFile | None = None,
                 anon_vma: AnonState = None, avc: int = 0, anon_name: str | None = None,
                 policy: object = None, uffd_ctx: object = None, close: bool = False,
                 label: str | None = None) -> None:
        self.start = start
        self.end = end
        self.pgoff = pgoff
        self.flags = flags
        self.file = file
        self.anon_vma = anon_vma
        self.avc = avc
        self.anon_name = anon_name
        self.policy = policy
        self.uffd_ctx = uffd_ctx
        self.close = close
        self.label = label
        self.prev: Vma | None = None
        self.next: Vma | None = None

    @property
    def pages(self) -> int:
        return (self.end - self.start) >> _PS

    @property
    def faulted(self) -> bool | Unknown:
        a = self.anon_vma
        if a is None:
            return False
        return UNKNOWN if a.unknown else True

    @property
    def forked(self) -> bool | Unknown:
        """vma_is_fork_child(): has an anon_vma and an avc other than 1."""
        a = self.anon_vma
        if a is None:
            return False
        return UNKNOWN if a.unknown else self.avc != 1

    @property
    def perms(self) -> str:
        return perms(self.flags)

    @property
    def rng(self) -> tuple[int, int]:
        return (self.start, self.end)

    def __repr__(self) -> str:
        return (f"Vma([{self.start:#x},{self.end:#x}) {perms(self.flags)} pg={self.pgoff:#x} "
                f"anon={self.anon_vma!r} avc={self.avc})")


class VmaView:
    """An immutable view of one VMA as /proc shows it plus the model's hidden state."""

    __slots__ = ("anon_id", "anon_name", "avc", "end", "faulted", "file_id", "flags", "forked",
                 "offset", "path", "perms", "pgoff", "start", "vmflags")

    def __init__(self, v: Vma, mm: AddressSpace) -> None:
        self.start = v.start
        self.end = v.end
        self.flags = v.flags
        self.perms = perms(v.flags)
        vmf = mnemonics(v.flags, soft_dirty=mm.soft_dirty)
        if "lf" in vmf and mm.profile.lockonfault_mnemonic != "lf":
            vmf = (vmf - {"lf"}) | {mm.profile.lockonfault_mnemonic}
        self.vmflags = vmf
        self.pgoff = v.pgoff
        self.offset = (v.pgoff << _PS) if v.file is not None else 0
        self.path = mm._vma_name(v)
        self.faulted = v.faulted
        self.forked = v.forked
        self.avc = v.avc
        a = v.anon_vma
        self.anon_id = None if a is None else a.id
        self.anon_name = v.anon_name
        self.file_id = None if v.file is None else v.file.id

    def __repr__(self) -> str:
        return (f"VmaView({self.start:#x}-{self.end:#x} {self.perms} "
                f"{' '.join(sorted(self.vmflags))} {self.path or ''})")


# --------------------------------------------------------------------------------------------
# The address space
# --------------------------------------------------------------------------------------------


class AddressSpace:
    """A process address space replayed with one kernel era's VMA rules.

    Parameters
    ----------
    kernel:
        "X.Y[.Z]", a profile name, a :class:`KernelProfile`, or "live" (probe the running kernel
        through :func:`replay.live.detect_live_profile`).
    mmap_base:
        Top of the top-down mmap area (``mm->mmap_base``).
    explain:
        Build an :class:`replay.explain.Explanation` per operation (``last_explanation``).
    history:
        Keep the last N explanations in ``history`` (0: none).
    soft_dirty:
        CONFIG_MEM_SOFT_DIRTY (``sd`` in VmFlags). None: off, except for kernel="live", where it is
        read from this process's own smaps.
    overcommit_memory:
        vm.overcommit_memory (2 ignores MAP_NORESERVE).
    thp:
        transparent_hugepage/enabled ("always", "madvise", "never"): decides whether a read fault
        of a 2 MiB aligned anonymous range assigns an anon_vma; "unconfigured": a kernel without
        CONFIG_TRANSPARENT_HUGEPAGE (MAP_STACK then sets no VM_NOHUGEPAGE).
    """

    def __init__(self, kernel: str | KernelProfile = "6.19", *, mmap_base: int = DEFAULT_MMAP_BASE,
                 explain: bool = True, history: int = 0, soft_dirty: bool | None = None,
                 overcommit_memory: int = 0, thp: str = "madvise",
                 max_map_count: int = DEFAULT_MAX_MAP_COUNT, pkeys: bool = False,
                 sticky: bool | None = None) -> None:
        self.profile_findings: list[str] = []
        if isinstance(kernel, KernelProfile):
            profile = kernel
        elif kernel == "live":
            try:
                from replay import live
                detect = live.detect_live_profile
            except (ImportError, AttributeError) as e:
                raise RuntimeError(
                    "kernel='live' needs replay.live.detect_live_profile(), which is not "
                    f"available yet ({e}); pass an explicit version such as kernel='6.19'"
                ) from e
            name, findings = detect()
            self.profile_findings = list(findings)
            profile = get_profile(name, sticky=sticky)
            if soft_dirty is None:
                soft_dirty = _own_soft_dirty()
            if pkeys is False:
                pkeys = _cpu_has_pku()
        else:
            profile = get_profile(kernel, sticky=sticky)
        self.profile: KernelProfile = profile
        self.kernel = profile.name
        self.soft_dirty = bool(soft_dirty)
        self.mmap_base = mmap_base
        self.explain = explain
        self.history: deque[X.Explanation] = deque(maxlen=history or None) if history else deque(
            maxlen=0)
        self.last_explanation: X.Explanation | None = None
        self.overcommit_memory = overcommit_memory
        self.thp = thp
        self.max_map_count = max_map_count
        self.pkeys = pkeys
        self.unknown_policy = "unfaulted"  # how UNKNOWN anon state is resolved for decisions
        # profile-derived constants for the hot path
        self._ignored = VM_STICKY if profile.sticky_flags else VM_SOFTDIRTY
        # the VM flags is_mergeable_vma() compares (the what-if field adds VM_ACCOUNT to the ignored)
        self._merge_mask = ~(self._ignored | (VM_ACCOUNT if profile.merge_ignores_account else 0))
        self._anon_new = profile.anon_rule is AnonRule.NEW
        self._close_rule = profile.close_rule
        self._legacy_mmap = profile.mmap_prev_uses_next_anon
        self._close_target = profile.close_rule is CloseRule.TARGET
        self._reuse_ignore = VM_ACCESS_FLAGS | self._ignored
        self._sticky = profile.sticky_flags
        self._unaccount = profile.mprotect_unaccount_unfaulted
        self._init_state()
        self.files: dict[int, OpenFile] = {}
        self._inodes: dict[str, int] = {}

    def _init_state(self) -> None:
        self._index = VmaIndex()
        # find_vma(): the first VMA with end > addr (bound straight to the index: a hot path)
        self._find: Callable[[int], Vma | None] = self._index.find_vma
        self.map_count = 0
        self.def_flags = 0
        self.start_brk: int | None = None
        self.cur_brk = 0
        self.start_stack: int | None = None
        self.ksm_merge_any = False
        self.guard_pages = Ranges()  # addresses with a guard marker (MADV_GUARD_INSTALL)
        self.sealed_ever = False  # a VMA of this mm was sealed (skips seal scans otherwise)
        # boundaries created without a merge attempt (split, in-place flag change...): check()
        self._nomerge_bounds: set[int] = set()
        self._bounds_cap = _BOUNDS_CAP_MIN  # prune the set when it grows past this
        self._cur: X.Explanation | None = None

    # ------------------------------------------------------------------ explanation plumbing
    def _begin(self, op: str, args: tuple[object, ...]) -> None:
        if self.explain:
            self._cur = X.Explanation(op, args)

    def _end(self, errno: int | None = None) -> None:
        cur = self._cur
        if cur is not None:
            cur.errno = errno
            self.last_explanation = cur
            if self.history.maxlen:
                self.history.append(cur)
            self._cur = None

    def _step(self, path: str, start: int, end: int, target: Vma | None = None,
              refusals: list[X.Refusal] | None = None, note: str = "") -> None:
        cur = self._cur
        if cur is not None:
            cur.steps.append(X.Step(path, start, end, None if target is None else target.rng,
                                    refusals or [], note))

    def _note_unknown(self, v: Vma, what: str = "") -> None:
        cur = self._cur
        if cur is not None:
            msg = f"depends on unknown anon_vma of [{v.start:#x},{v.end:#x})" + (
                f" ({what})" if what else "")
            if msg not in cur.unknown:
                cur.unknown.append(msg)

    def _run(self, op: str, args: tuple[object, ...], fn: Any, *a: Any) -> Any:
        self._begin(op, args)
        try:
            r = fn(*a)
        except OSError as e:
            self._end(e.errno)
            raise
        self._end()
        return r

    # ------------------------------------------------------------------ structure helpers
    def _lookup(self, addr: int) -> Vma | None:
        """vma_lookup(): the VMA containing addr."""
        v: Vma | None = self._index.floor(addr)
        if v is not None and v.end > addr:
            return v
        return None

    def find_vma(self, addr: int) -> Vma | None:
        """The internal VMA containing ``addr`` (for tests and reports), or None."""
        return self._lookup(addr)

    def _link(self, v: Vma, prev: Vma | None) -> None:
        """Insert v after prev (None: at the head)."""
        nxt = self._index.first() if prev is None else prev.next
        v.prev = prev
        v.next = nxt
        if prev is not None:
            prev.next = v
        if nxt is not None:
            nxt.prev = v
        self._index.insert(v.start, v)
        self.map_count += 1
        if v.flags & VM_SEALED:
            self.sealed_ever = True

    def _unlink(self, v: Vma) -> None:
        p, n = v.prev, v.next
        if p is not None:
            p.next = n
        if n is not None:
            n.prev = p
        v.prev = v.next = None
        self._index.remove(v.start)
        self.map_count -= 1

    def _unlink_run(self, first: Vma, last: Vma, count: int) -> None:
        """_unlink() the ``count`` consecutive VMAs first..last in one go."""
        p, n = first.prev, last.next
        if p is not None:
            p.next = n
        if n is not None:
            n.prev = p
        self._index.remove_run(first.start, count)
        self.map_count -= count
        v: Vma | None = first
        while v is not n:
            w = v.next  # type: ignore[union-attr]
            v.prev = v.next = None  # type: ignore[union-attr]
            v = w

    def _set_start(self, v: Vma, start: int) -> None:
        self._index.rekey(v.start, start)
        v.start = start

    def _prev_of(self, addr: int) -> Vma | None:
        """The last VMA with start < addr."""
        v: Vma | None = self._index.floor(addr - 1) if addr > 0 else None
        return v

    def vmas(self) -> list[VmaView]:
        """All VMAs, sorted by address, as immutable views."""
        return [VmaView(v, self) for v in self._index]

    def raw_vmas(self) -> list[Vma]:
        """The internal VMA objects, sorted (do not mutate)."""
        return list(self._index)

    def __len__(self) -> int:
        return self.map_count

    def _vma_name(self, v: Vma) -> str | None:
        f = v.file
        if f is not None:
            if f.shmem and f.path.startswith("/dev/zero"):
                return f"[anon_shmem:{v.anon_name}]" if v.anon_name else "/dev/zero (deleted)"
            return f.path
        if v.label is not None:
            return v.label
        if self.start_brk is not None and v.start <= self.cur_brk and v.end >= self.start_brk:
            return "[heap]"
        ss = self.start_stack
        if ss is not None and v.start <= ss <= v.end:
            return "[stack]"
        if v.anon_name is not None:
            return f"[anon:{v.anon_name}]"
        return None

    def maps(self) -> list[str]:
        """Lines as /proc/pid/maps would print them."""
        out = []
        for v in self._index:
            f = v.file
            off = (v.pgoff << _PS) if f is not None else 0
            dev = f.dev if f is not None else "00:00"
            ino = f.ino if f is not None else 0
            name = self._vma_name(v) or ""
            line = f"{v.start:x}-{v.end:x} {perms(v.flags)} {off:08x} {dev} {ino}"
            out.append(f"{line:<73}{name}" if name else f"{line} ")
        return out

    # ------------------------------------------------------------------ anon_vma helpers
    def _anon(self, v: Vma) -> AnonVma | None:
        """v's anon_vma for a decision; UNKNOWN is resolved by ``unknown_policy`` (noted)."""
        a = v.anon_vma
        if a is None:
            return None
        if a.unknown:
            self._note_unknown(v)
            return None
        return a  # type: ignore[return-value]

    def _forked(self, v: Vma | None) -> bool:
        """vma_is_fork_child() / vma_had_uncowed_parents(); a test on None is false."""
        if v is None:
            return False
        a = v.anon_vma
        if a is None:
            return False
        if a.unknown:
            self._note_unknown(v, "fork child?")
            return False
        return v.avc != 1

    def _anon_ok(self, anon: AnonVma | None, t: Vma, src: Vma | None,
                 copied_from: Vma | None) -> str | None:
        """is_mergeable_anon_vma(): None if compatible, else the refusing predicate."""
        ta = t.anon_vma
        if ta is not None and ta.unknown:
            self._note_unknown(t)
            ta = None
        if self._anon_new:
            # mirrors is_mergeable_anon_vma() since 879bca0a2c4f
            if ta is None:
                if anon is None:
                    return None
                # case 1: dup_anon_vma() from src into an unfaulted target
                if self._forked(src):
                    return "fork_child"
                if self.profile.fork_check_copied_from and self._forked(copied_from):
                    return "fork_child"
                return None
            if anon is None:
                # case 2: use the target's anon_vma; the target must not be a fork child
                return "fork_child" if t.avc != 1 else None
            return None if anon is ta else "anon_vma"
        # OLD rule (965f55dea0e3 .. 6.15): one side unfaulted -> target's chain must be singular
        if anon is None or ta is None:
            if t.avc == 1 or anon is ta:
                return None
            return "anon_vma"
        return None if anon is ta else "anon_vma"

    def _mergeable(self, t: Vma, flags: int, file: OpenFile | None, pgoff_ok: bool,
                   anon: AnonVma | None, src: Vma | None, name: str | None, policy: object,
                   uffd: object, copied_from: Vma | None) -> bool:
        """is_mergeable_vma() + is_mergeable_anon_vma() + pgoff check (can_vma_merge_*()).

        The callers have compared the flags already (the commonest refusal, tested inline).
        """
        return (t.file is file and pgoff_ok and t.anon_name == name and t.policy == policy
                and t.uffd_ctx is uffd and not (t.close and self._close_target)
                and ((anon is None and t.anon_vma is None)
                     or self._anon_ok(anon, t, src, copied_from) is None))

    def _refusals(self, side: str, t: Vma | None, flags: int, file: OpenFile | None,
                  pgoff_ok: bool, anon: AnonVma | None, src: Vma | None, name: str | None,
                  policy: object, uffd: object, copied_from: Vma | None) -> list[X.Refusal]:
        """Every predicate that refuses merging with t (explain mode only)."""
        if t is None:
            return [X.Refusal(side, None, "no_neighbour")]
        out: list[X.Refusal] = []
        rng = t.rng
        diff = (t.flags ^ flags) & self._merge_mask
        if diff:
            out.append(X.Refusal(side, rng, "flags", " ".join(sorted(mnemonics(diff)))
                                 or hex(diff)))
        if t.file is not file:
            out.append(X.Refusal(side, rng, "file"))
        if not pgoff_ok:
            out.append(X.Refusal(side, rng, "pgoff"))
        if t.anon_name != name:
            out.append(X.Refusal(side, rng, "name", f"{t.anon_name!r} != {name!r}"))
        if t.policy != policy:
            out.append(X.Refusal(side, rng, "policy"))
        if t.uffd_ctx is not uffd:
            out.append(X.Refusal(side, rng, "uffd"))
        if self._close_rule is CloseRule.TARGET and t.close:
            out.append(X.Refusal(side, rng, "close", "6.1: a target with vm_ops->close"))
        why = self._anon_ok(anon, t, src, copied_from)
        if why is not None:
            ta = t.anon_vma
            if why == "fork_child":
                who = "target" if (ta is not None and anon is None) else (
                    "source" if self._forked(src) else "copied-from VMA")
                detail = f"{who} is a fork child (avc != 1)"
            elif not self._anon_new and (anon is None or ta is None):
                detail = ("OLD rule: one side unfaulted needs the target's avc == 1 "
                          f"(target avc {t.avc})")
            else:
                detail = "different anon_vmas"
            out.append(X.Refusal(side, rng, why, detail))
        return out

    def _prev_next_ok(self, prev: Vma, nxt: Vma) -> bool:
        """are_anon_vmas_compatible(prev, next): both faulted -> same anon_vma."""
        pa = prev.anon_vma
        na = nxt.anon_vma
        if pa is None and na is None:
            return True
        pa = self._anon(prev)
        na = self._anon(nxt)
        return pa is None or na is None or pa is na

    def _dup_anon_vma(self, dst: Vma, src: Vma) -> None:
        """dup_anon_vma(): an unfaulted dst takes src's anon_vma (and its avc)."""
        da = dst.anon_vma
        if (da is None or da.unknown) and src.anon_vma is not None:
            if da is not None and not src.anon_vma.unknown:
                self._note_unknown(dst, "assumed unfaulted when merged")
            dst.anon_vma = src.anon_vma
            dst.avc = src.avc
            self._nomerge_bounds.update((dst.start, dst.end))

    # ------------------------------------------------------------------ merge engine
    def _merge_new_range(self, start: int, end: int, flags: int, file: OpenFile | None,
                         pgoff: int, anon: AnonVma | None, name: str | None, policy: object,
                         uffd: object, prev: Vma | None, nxt: Vma | None, *,
                         just_expand: bool = False, copied_from: Vma | None = None,
                         src: Vma | None = None, legacy_mmap: bool = False) -> Vma | None:
        """Mirrors vma_merge_new_range() and vma_expand(): merge [start,end) into prev/next.

        ``prev``/``nxt`` are the VMAs around the range (adjacency is checked here). Returns the
        expanded VMA, or None (the caller creates a new VMA).
        """
        if prev is not None and prev.end != start:
            prev = None
        if nxt is not None and nxt.start != end:
            nxt = None
        if flags & VM_SPECIAL or (prev is None and nxt is None):
            if self._cur is not None:
                refs = ([X.Refusal("new", (start, end), "special")] if flags & VM_SPECIAL else
                        [X.Refusal("prev", None, "no_neighbour"),
                         X.Refusal("next", None, "no_neighbour")])
                if self._cur is not None:
                    self._step(X.NOMERGE, start, end, None, refs)
            return None
        pglen = (end - start) >> _PS
        rule = self._close_rule
        left_anon = anon
        if legacy_mmap:
            # 6.1-6.11 mmap_region(): next first; prev is then checked with next's anon_vma
            right = (nxt is not None and not ((nxt.flags ^ flags) & self._merge_mask)
                     and self._mergeable(nxt, flags, file, pgoff + pglen == nxt.pgoff, anon, src,
                                         name, policy, uffd, copied_from))
            if right:
                left_anon = self._anon(nxt)  # type: ignore[arg-type]
            left = prev is not None and not ((prev.flags ^ flags) & self._merge_mask) and self._mergeable(
                prev, flags, file, prev.pgoff + ((prev.end - prev.start) >> _PS) == pgoff,
                left_anon, src, name, policy, uffd, copied_from)
        else:
            left = prev is not None and not ((prev.flags ^ flags) & self._merge_mask) and (
                self._mergeable(
                    prev, flags, file, prev.pgoff + ((prev.end - prev.start) >> _PS) == pgoff,
                    anon, src, name, policy, uffd, copied_from))
            right = (not just_expand and nxt is not None
                     and not ((nxt.flags ^ flags) & self._merge_mask) and self._mergeable(
                nxt, flags, file, pgoff + pglen == nxt.pgoff, anon, src, name, policy, uffd,
                copied_from) and (not left or self._prev_next_ok(prev, nxt)))  # type: ignore[arg-type]
        refusals: list[X.Refusal] = []
        if right and nxt.close and rule is CloseRule.REMOVABLE:  # type: ignore[union-attr]
            right = False
            if self._cur is not None:
                refusals.append(X.Refusal("next", nxt.rng, "close",  # type: ignore[union-attr]
                                          "next may be removed and has vm_ops->close"))
        if self._cur is not None:
            if not left:
                refusals += self._refusals("prev", prev, flags, file, prev is not None and (
                    prev.pgoff + prev.pages == pgoff), left_anon, src, name, policy, uffd,
                    copied_from)
            if not right and not refusals_has(refusals, "next"):
                if just_expand and nxt is not None:
                    refusals.append(X.Refusal("next", nxt.rng, "just_expand"))
                else:
                    r = self._refusals("next", nxt, flags, file, nxt is not None and (
                        pgoff + pglen == nxt.pgoff), anon, src, name, policy, uffd, copied_from)
                    if not r and left and nxt is not None:
                        r = [X.Refusal("next", nxt.rng, "anon_vma_prev_next",
                                       "prev and next have different anon_vmas")]
                    refusals += r
        if not left and not right:
            if self._cur is not None:
                self._step(X.NOMERGE, start, end, None, refusals)
            return None
        ignored_src = flags & self._ignored
        if left:
            if TYPE_CHECKING:  # narrowing only (checked above)
                assert prev is not None
            target = prev
            if right and nxt.close and rule is CloseRule.DELETION:  # type: ignore[union-attr]
                # can_merge_remove_vma(next) fails: shrink to a merge with prev only
                right = False
                if self._cur is not None:
                    refusals.append(X.Refusal("next", nxt.rng, "close",  # type: ignore[union-attr]
                                              "next would be deleted and has vm_ops->close"))
            if right:
                if TYPE_CHECKING:  # narrowing only (checked above)
                    assert nxt is not None
                # vma_expand() with remove_next: target takes next's anon_vma if it has none
                self._dup_anon_vma(target, nxt)
                new_end = nxt.end
                if self._sticky:
                    target.flags |= nxt.flags & VM_STICKY
                self._unlink(nxt)
                target.end = new_end
                path = X.MERGE_BOTH
            else:
                target.end = end
                path = X.EXPAND_PREV
        else:
            if TYPE_CHECKING:  # narrowing only (checked above)
                assert nxt is not None
            target = nxt
            self._set_start(target, start)
            target.pgoff = pgoff
            path = X.EXPAND_NEXT
        if copied_from is not None and self.profile.copied_from_propagation:
            # 61f67c230a5e: vma_expand() also dups the anon_vma of the VMA mremap copied
            self._dup_anon_vma(target, copied_from)
        if self._sticky:
            target.flags |= ignored_src & VM_STICKY
        if self._cur is not None:
            self._step(path, start, end, target, refusals)
        return target

    def _merge_existing_range(self, middle: Vma, start: int, end: int, flags: int,
                              name: str | None, policy: object, uffd: object,
                              anon: AnonVma | Unknown | None = UNKNOWN) -> Vma | None:
        """Mirrors vma_merge_existing_range() + commit_merge(): merge [start,end) of middle.

        ``anon`` is vmg->anon_vma (default: middle's own, as VMG_VMA_STATE seeds it; the kernel's
        test harness sometimes leaves it unset). Returns the merged VMA or None.
        """
        left_side = start == middle.start
        right_side = end == middle.end
        if flags & VM_SPECIAL or not (left_side or right_side):
            if self._cur is not None:
                self._step(X.NOMERGE, start, end, None, [X.Refusal(
                    "middle", middle.rng, "special" if flags & VM_SPECIAL else "interior")])
            return None
        if anon is UNKNOWN:
            a = middle.anon_vma  # self._anon(middle) unless there is something to note
            anon = self._anon(middle) if a is not None and a.unknown else a  # type: ignore[assignment]
        if TYPE_CHECKING:  # a type narrowing only: anon is resolved above
            assert not isinstance(anon, Unknown)
        file = middle.file
        pgoff = middle.pgoff + ((start - middle.start) >> _PS)
        prev = middle.prev if left_side else None
        nxt = middle.next if right_side else None
        if prev is not None and prev.end != start:
            prev = None
        if nxt is not None and nxt.start != end:
            nxt = None
        rule = self._close_rule
        left = prev is not None and not ((prev.flags ^ flags) & self._merge_mask) and self._mergeable(
            prev, flags, file, prev.pgoff + ((prev.end - prev.start) >> _PS) == pgoff, anon,
            middle, name, policy, uffd, None)
        right = nxt is not None and not ((nxt.flags ^ flags) & self._merge_mask) and self._mergeable(
            nxt, flags, file, pgoff + ((end - start) >> _PS) == nxt.pgoff, anon, middle, name,
            policy, uffd, None) and (not left or self._prev_next_ok(prev, nxt))  # type: ignore[arg-type]
        refusals: list[X.Refusal] = []
        if self._cur is not None:
            if left_side and not left:
                refusals += self._refusals("prev", prev, flags, file, prev is not None and (
                    prev.pgoff + prev.pages == pgoff), anon, middle, name, policy, uffd, None)
            if right_side and not right:
                r = self._refusals("next", nxt, flags, file, nxt is not None and (
                    pgoff + ((end - start) >> _PS) == nxt.pgoff), anon, middle, name, policy,
                    uffd, None)
                if not r and left and nxt is not None:
                    r = [X.Refusal("next", nxt.rng, "anon_vma_prev_next",
                                   "prev and next have different anon_vmas")]
                refusals += r
        remove_middle = left_side and right_side
        if right and nxt.close and rule is CloseRule.REMOVABLE:  # type: ignore[union-attr]
            right = False
            if self._cur is not None:
                refusals.append(X.Refusal("next", nxt.rng, "close",  # type: ignore[union-attr]
                                          "next may be removed and has vm_ops->close"))
        if not left and not right:
            if self._cur is not None:
                self._step(X.NOMERGE, start, end, None, refusals)
            return None
        if remove_middle and middle.close and rule is not CloseRule.TARGET:
            if self._cur is not None:
                refusals.append(X.Refusal("middle", middle.rng, "close",
                                          "middle would be deleted and has vm_ops->close"))
            if self._cur is not None:
                self._step(X.NOMERGE, start, end, None, refusals)
            return None
        if left and right and rule is CloseRule.DELETION and nxt.close:  # type: ignore[union-attr]
            right = False
            if self._cur is not None:
                refusals.append(X.Refusal("next", nxt.rng, "close",  # type: ignore[union-attr]
                                          "next would be deleted and has vm_ops->close"))
        sticky = self._sticky
        if left and right:
            if TYPE_CHECKING:  # narrowing only (checked above)
                assert prev is not None and nxt is not None
            target = prev
            # commit_merge(): dup from next if faulted, else from middle
            if nxt.anon_vma is not None:
                self._dup_anon_vma(target, nxt)
            self._dup_anon_vma(target, middle)
            if sticky:
                target.flags |= (flags | middle.flags | nxt.flags) & VM_STICKY
            new_end = nxt.end
            self._unlink(middle)
            self._unlink(nxt)
            target.end = new_end
            path = X.MERGE_BOTH
        elif left:
            if TYPE_CHECKING:  # narrowing only (checked above)
                assert prev is not None
            target = prev
            self._dup_anon_vma(target, middle)
            if sticky:
                target.flags |= (flags | middle.flags) & VM_STICKY
            if right_side:
                self._unlink(middle)
                target.end = end
                path = X.MERGE_LEFT
            else:  # __adjust_middle_start
                target.end = end
                middle.pgoff += (end - middle.start) >> _PS
                self._set_start(middle, end)
                path = X.ADJUST_MIDDLE_START
        else:
            if TYPE_CHECKING:  # narrowing only (checked above)
                assert nxt is not None
            target = nxt
            self._dup_anon_vma(target, middle)
            if sticky:
                target.flags |= (flags | middle.flags) & VM_STICKY
            if left_side:
                self._unlink(middle)
                self._set_start(target, start)
                target.pgoff = pgoff
                path = X.MERGE_RIGHT
            else:  # __adjust_next_start
                middle.end = start
                self._set_start(target, start)
                target.pgoff = pgoff
                path = X.ADJUST_NEXT_START
        if self._cur is not None:
            self._step(path, start, end, target, refusals)
        return target

    def _split(self, v: Vma, addr: int, *, check_count: bool = True) -> Vma:
        """split_vma()/__split_vma() at addr; v keeps [v.start, addr), returns [addr, v.end)."""
        if check_count and self.map_count >= self.max_map_count:
            raise _err(E.ENOMEM, "split would exceed vm.max_map_count")
        new = Vma(addr, v.end, v.pgoff + ((addr - v.start) >> _PS), v.flags, v.file, v.anon_vma,
                  v.avc, v.anon_name, v.policy, v.uffd_ctx, v.close, v.label)
        v.end = addr
        self._link(new, v)
        bounds = self._nomerge_bounds
        bounds.add(addr)
        if len(bounds) > self._bounds_cap:
            self._prune_bounds()
        if self._cur is not None:
            self._step(X.SPLIT, v.start, new.end, None, note=f"at {addr:#x}")
        return new

    def _prune_bounds(self) -> None:
        """Forget no-merge boundaries that are no longer between two VMAs, so that the set stays
        O(VMAs) over a long replay (a later boundary at the same address is a new one)."""
        live: set[int] = set()
        for v in self._index:
            live.add(v.start)
            live.add(v.end)
        self._nomerge_bounds &= live
        self._bounds_cap = max(_BOUNDS_CAP_MIN, 4 * len(self._nomerge_bounds))

    def _vma_modify(self, middle: Vma, start: int, end: int, flags: int, name: str | None, *,
                    write: bool = True) -> tuple[Vma, bool]:
        """vma_modify(): merge [start,end) of middle with a neighbour, else split it out of
        middle; then, with ``write``, the caller's write-back of the new flags and name (as
        vma_modify_flags()/vma_modify_name() callers do). Returns (vma for the range, merged?).
        """
        merged = self._merge_existing_range(middle, start, end, flags, name, middle.policy,
                                            middle.uffd_ctx)
        if merged is not None:
            if write:
                # vma_modify_flags() hands back the merged VMA's flags (residual sticky bits)
                merged.flags = flags | (merged.flags & VM_STICKY) if self._sticky else flags
                merged.anon_name = name
            return merged, True
        if start > middle.start:
            middle = self._split(middle, start)
        if end < middle.end:
            self._split(middle, end)
        if write:
            middle.flags = flags
            middle.anon_name = name
        return middle, False

    # ------------------------------------------------------------------ faults
    def _anon_vma_prepare(self, v: Vma) -> None:
        """anon_vma_prepare() with find_mergeable_anon_vma(): reuse next's, then prev's."""
        a = v.anon_vma
        if a is not None:
            if a.unknown:
                # the fault proves it is (now) faulted; identity stays unknown
                v.anon_vma = AnonVma(snapshot=True)
                v.avc = 1
                self._note_unknown(v, "faulted now; was it before?")
            return
        ign = self._reuse_ignore
        for nb, a_, b_ in ((v.next, v, v.next), (v.prev, v.prev, v)):
            if nb is None or a_ is None or b_ is None:
                continue
            # anon_vma_compatible(a, b) + reusable_anon_vma()
            if (a_.end == b_.start and a_.policy == b_.policy and a_.file is b_.file
                    and not ((a_.flags ^ b_.flags) & ~ign)
                    and b_.pgoff == a_.pgoff + ((b_.start - a_.start) >> _PS)):
                na = nb.anon_vma
                if na is not None and na.unknown:
                    self._note_unknown(nb, "reusable at fault time?")
                    continue
                if na is not None and nb.avc == 1:
                    v.anon_vma = na
                    v.avc = 1
                    self._nomerge_bounds.update((v.start, v.end))
                    if self._cur is not None:
                        self._step(X.ANON_REUSE, v.start, v.end, v, note=f"from {nb.rng[0]:#x}")
                    return
        v.anon_vma = AnonVma()
        v.avc = 1
        if self._cur is not None:
            self._step(X.ANON_PREPARE, v.start, v.end, v)

    def _populate(self, start: int, end: int, write: bool | None = None, *,
                  strict: bool = False) -> None:
        """populate_vma_page_range()/__mm_populate(): write-fault private writable memory.

        ``strict``: mlock's __mm_populate(ignore_errors=0), which fails (ENOMEM) at a PROT_NONE
        VMA; other callers ignore errors.
        """
        v = self._find(start)
        while v is not None and v.start < end:
            fl = v.flags
            if strict and not fl & (VM_IO | VM_PFNMAP | VM_LOCKONFAULT):
                if not fl & VM_ACCESS_FLAGS or (
                        fl & VM_PKEY_MASK == _EXEC_ONLY_PKEY_BITS
                        and not fl & (VM_READ | VM_WRITE)):
                    raise _err(E.ENOMEM, "mlock populate of a PROT_NONE VMA")
                if self.guard_pages and self.guard_pages.overlaps(max(start, v.start),
                                                                  min(end, v.end)):
                    raise _err(E.ENOMEM, "mlock populate hit a guard page")
                if self._beyond_eof(v, min(end, v.end)):
                    raise _err(E.ENOMEM, "mlock populate beyond the end of the file (SIGBUS)")
            if not fl & (VM_IO | VM_PFNMAP | VM_LOCKONFAULT) and fl & VM_ACCESS_FLAGS:
                w = (fl & (VM_WRITE | VM_SHARED)) == VM_WRITE if write is None else write
                if w and not fl & VM_SHARED and fl & VM_WRITE:
                    self._anon_vma_prepare(v)
                elif not w:
                    self._read_fault(v, max(start, v.start))
            v = v.next

    @staticmethod
    def _beyond_eof(v: Vma, end: int) -> bool:
        """Does [.., end) of v reach past the end of its file (a SIGBUS for faults)?"""
        f = v.file
        return (f is not None and f.size is not None
                and v.pgoff + ((end - v.start) >> _PS) > f.size)

    def _read_fault(self, v: Vma, addr: int) -> None:
        """A read fault: no anon_vma, except a huge-PMD anonymous fault (THP)."""
        if v.file is not None or v.flags & VM_SHARED or self.thp in ("never", "unconfigured"):
            return
        if self.thp == "madvise" and not v.flags & VM_HUGEPAGE:
            return
        if v.flags & (VM_NOHUGEPAGE | VM_SPECIAL | VM_HUGETLB):
            return
        hs = addr & ~(PMD_SIZE - 1)
        if hs >= v.start and hs + PMD_SIZE <= v.end:
            self._anon_vma_prepare(v)

    # ------------------------------------------------------------------ unmap
    def _gather(self, start: int, end: int) -> list[Vma]:
        out = []
        v = self._find(start)
        while v is not None and v.start < end:
            out.append(v)
            v = v.next
        return out

    def _do_munmap(self, start: int, end: int, first: Vma | None = None) -> Vma | None:
        """do_vmi_align_munmap(): split the edges, remove everything in [start,end).

        ``first`` is find_vma(start) if the caller has it. Returns the VMA before the hole (prev)
        for the caller. Never merges. (A split whose upper or lower piece is removed at once is
        done as a trim: same result, no new VMA.)
        """
        if first is None:
            first = self._find(start)
        if first is None or first.start >= end:
            return self._prev_of(start)
        # mirrors vms_gather_munmap_vmas(): split the first VMA, then check each VMA's seal
        # (can_modify_vma()) as it is detached; an EPERM leaves the split in place
        split_first = first.start < start
        if split_first:
            if first.flags & VM_SEALED:
                raise _err(E.EPERM, f"sealed VMA [{first.start:#x},{first.end:#x})")
            if end < first.end and self.map_count >= self.max_map_count:
                raise _err(E.ENOMEM, "munmap split would exceed vm.max_map_count")
        if self.sealed_ever:
            v: Vma | None = first
            while v is not None and v.start < end:
                if v.flags & VM_SEALED:
                    if split_first:
                        self._split(first, start, check_count=False)
                    raise _err(E.EPERM, f"sealed VMA [{v.start:#x},{v.end:#x})")
                v = v.next
        cur = self._cur
        if split_first:
            if first.end > end:
                # one VMA, hole in its interior: the tail becomes a new VMA
                tail = Vma(end, first.end, first.pgoff + ((end - first.start) >> _PS),
                           first.flags, first.file, first.anon_vma, first.avc, first.anon_name,
                           first.policy, first.uffd_ctx, first.close, first.label)
                first.end = start
                self._link(tail, first)
                if cur is not None:
                    self._step(X.SPLIT, first.start, tail.end, note=f"at {start:#x}")
                    self._step(X.SPLIT, first.start, tail.end, note=f"at {end:#x}")
                    self._step(X.UNMAP, start, end)
                if self.guard_pages:
                    self._drop_guards(start, end)
                return first
            if cur is not None:
                self._step(X.SPLIT, first.start, first.end, note=f"at {start:#x}")
                self._step(X.UNMAP, start, first.end)
            first.end = start
            prev: Vma | None = first
            v = head = first.next
        else:
            prev = first.prev
            v = head = first
        # the VMAs removed whole, then perhaps one whose head is trimmed
        count = 0
        last = None
        while v is not None and v.end <= end:
            if cur is not None:
                self._step(X.UNMAP, v.start, v.end)
            last = v
            count += 1
            v = v.next
        if v is not None and v.start < end:
            if cur is not None:
                self._step(X.SPLIT, v.start, v.end, note=f"at {end:#x}")
                self._step(X.UNMAP, v.start, end)
            v.pgoff += (end - v.start) >> _PS
            self._set_start(v, end)
        if count:
            self._unlink_run(head, last, count)  # type: ignore[arg-type]
        if self.guard_pages:
            self._drop_guards(start, end)
        return prev

    def _drop_guards(self, start: int, end: int) -> None:
        self.guard_pages.remove(start, end)

    # ------------------------------------------------------------------ unmapped area
    def _gap_ok(self, addr: int, length: int) -> bool:
        end = addr + length
        v = self._find(addr)
        if v is not None:
            vs = v.start - STACK_GUARD_GAP if v.flags & VM_GROWSDOWN else v.start
            if vs < end:
                return False
        return True

    def _get_unmapped_area(self, hint: int, length: int, align: int = 0) -> int:
        """Mirrors mm_get_unmapped_area() topdown (generic_get_unmapped_area_topdown())."""
        if length > TASK_SIZE - MMAP_MIN_ADDR:
            raise _err(E.ENOMEM, "length exceeds TASK_SIZE")
        if hint:
            hint = _page_align(hint)
            if TASK_SIZE - length >= hint and hint >= MMAP_MIN_ADDR and self._gap_ok(hint,
                                                                                      length):
                return hint
        low = max(_P, MMAP_MIN_ADDR)
        need = length + align
        high = min(self.mmap_base, TASK_SIZE)
        # walk down from the VMA at/after high
        v = self._find(high)
        if v is None:
            upper = high
            cur = self._index.last()
        else:
            # (a VMA straddling high puts the gap below it; VMAs of cur's walk that start above
            # upper fail the gap test and only lower it)
            upper = min(high, _start_gap(v))
            cur = v.prev
        while True:
            lower = cur.end if cur is not None else low
            if upper >= lower and upper - lower >= need and upper - need >= low:
                addr = upper - need
                if align:
                    addr = (addr + align - 1) & ~(align - 1)
                return addr
            if cur is None:
                break
            upper = min(upper, _start_gap(cur))
            cur = cur.prev
        # fallback: bottom-up from TASK_UNMAPPED_BASE
        addr = _page_align(TASK_SIZE // 3)
        while addr + length <= TASK_SIZE:
            v = self._find(addr)
            if v is None or _start_gap(v) >= addr + length:
                return addr
            addr = v.end
        raise _err(E.ENOMEM, "no unmapped area")

    # ------------------------------------------------------------------ files
    def open_file(self, path: str, *, writable: bool = True, readable: bool = True,
                  close_hook: bool = False, shmem: bool = False, dev: str = "fe:00",
                  ino: int | None = None, size: int | None = None) -> int:
        """open(2): a new open file description; returns the lowest free fd >= 3. ``size``:
        the file's size in pages (None: large enough), for faults beyond EOF (SIGBUS)."""
        if ino is None:
            ino = self._inodes.setdefault(path, 1000 + len(self._inodes))
        f = OpenFile(path, dev=dev, ino=ino, readable=readable, writable=writable,
                     close=close_hook, shmem=shmem, size=size)
        return self._install_fd(f)

    def memfd_create(self, name: str, *, size: int | None = None) -> int:
        """memfd_create(2): a new shmem file (``size`` in pages, as after ftruncate())."""
        return self.open_file(f"/memfd:{name} (deleted)", shmem=True, dev="00:01",
                              ino=next(_ids), size=size)

    def _install_fd(self, f: OpenFile) -> int:
        fd = 3
        while fd in self.files:
            fd += 1
        self.files[fd] = f
        return fd

    def dup(self, fd: int) -> int:
        """dup(2): the new fd shares the open file description."""
        f = self.files.get(fd)
        if f is None:
            raise _err(E.EBADF, f"fd {fd}")
        return self._install_fd(f)

    def close(self, fd: int) -> None:
        """close(2): mappings keep their file."""
        if self.files.pop(fd, None) is None:
            raise _err(E.EBADF, f"fd {fd}")

    # ================================================================== syscalls
    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1,
             offset: int = 0) -> int:
        """mmap(2) (do_mmap() + __mmap_region()). Returns the address."""
        if not self.explain:
            return self._mmap(addr, length, prot, flags, fd, offset)
        return self._run("mmap", (addr, length, prot, flags, fd, offset), self._mmap, addr,
                         length, prot, flags, fd, offset)

    def _mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        if (addr | length | offset) < 0:  # the kernel's unsigned long view of a negative value
            addr, length, offset = addr & _U64, length & _U64, offset & _U64
        # the checks in the order of sys_mmap(), ksys_mmap_pgoff() and do_mmap()
        if offset & _OFF:
            raise _err(E.EINVAL, "offset not page aligned")
        if flags & MAP_ANONYMOUS:
            anonymous = True
            file: OpenFile | None = None
        else:
            anonymous = False
            file = self.files.get(fd)
            if file is None:
                raise _err(E.EBADF, f"fd {fd}")
        if flags & MAP_HUGETLB and not anonymous:
            raise _err(E.EINVAL, "MAP_HUGETLB of a file that is not on hugetlbfs")
        if not length:
            raise _err(E.EINVAL, "length is 0")
        if flags & MAP_HUGETLB:
            # ksys_mmap_pgoff() sets up a hugetlbfs file; the model has no huge page pool (as
            # vm.nr_hugepages=0): a fixed address that is not huge-page aligned is refused by
            # hugetlb_get_unmapped_area(), anything else when hugetlb_reserve_pages() fails
            if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) and addr & (PMD_SIZE - 1):
                raise _err(E.EINVAL, "MAP_HUGETLB at an address not aligned to the huge page")
            raise _err(E.ENOMEM, "MAP_HUGETLB: no huge pages reserved")
        length = (length + _OFF) & ~_OFF
        if length > TASK_SIZE:
            raise _err(E.ENOMEM, "length too large")
        # (do_mmap()'s pgoff overflow check cannot fire: offset and length are below 2**64)
        pgoff = offset >> _PS
        if self.map_count > self.max_map_count:
            raise _err(E.ENOMEM, "vm.max_map_count reached")
        vm_flags = (prot & _PROT_RWX) | _VM_MAY_RWX | self.def_flags
        if flags & (MAP_GROWSDOWN | MAP_LOCKED | MAP_STACK):
            if flags & MAP_GROWSDOWN:
                vm_flags |= VM_GROWSDOWN
            if flags & MAP_LOCKED:
                vm_flags |= VM_LOCKED
            # calc_vm_flag_bits(): MAP_STACK -> VM_NOHUGEPAGE where THP is configured
            if flags & MAP_STACK and self.profile.map_stack_nohugepage and \
                    self.thp != "unconfigured":
                vm_flags |= VM_NOHUGEPAGE
        if self.pkeys and prot & 7 == PROT_EXEC:
            vm_flags |= _EXEC_ONLY_PKEY_BITS  # execute_only_pkey()
        mtype = flags & MAP_TYPE
        # placement: __get_unmapped_area()
        if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
            if addr & _OFF:
                raise _err(E.EINVAL, "MAP_FIXED address not page aligned")
            if addr + length > TASK_SIZE:
                raise _err(E.ENOMEM, "beyond TASK_SIZE")
            if addr < MMAP_MIN_ADDR:
                raise _err(E.EPERM, "below vm.mmap_min_addr")
            if flags & MAP_FIXED_NOREPLACE:
                v = self._find(addr)
                if v is not None and v.start < addr + length:
                    raise _err(E.EEXIST, "MAP_FIXED_NOREPLACE over an existing mapping")
        else:
            align = 0
            if (self.profile.thp_align_anon and anonymous and mtype == MAP_PRIVATE
                    and not length % PMD_SIZE and not (addr and self._gap_ok(
                        _page_align(addr), length))):
                align = PMD_SIZE
            addr = self._get_unmapped_area(addr, length, align)
        # the mapping type (do_mmap()'s switch)
        if file is not None:
            # file_mmap_ok(): the range must end below the largest file offset
            if length > MAX_LFS_FILESIZE or pgoff > (MAX_LFS_FILESIZE - length) >> _PS:
                raise _err(E.EOVERFLOW, "offset + length beyond MAX_LFS_FILESIZE")
            if mtype in (MAP_SHARED, MAP_SHARED_VALIDATE):
                if mtype == MAP_SHARED_VALIDATE and flags & ~MAP_KNOWN & ~MAP_TYPE:
                    raise _err(E.EOPNOTSUPP, "unknown flags with MAP_SHARED_VALIDATE")
                if flags & MAP_SYNC and mtype == MAP_SHARED_VALIDATE:
                    raise _err(E.EOPNOTSUPP, "MAP_SYNC needs DAX")
                if prot & PROT_WRITE and not file.writable:
                    raise _err(E.EACCES, "shared writable mapping of a read-only file")
                vm_flags |= VM_SHARED | VM_MAYSHARE
                if not file.writable:
                    vm_flags &= ~(VM_MAYWRITE | VM_SHARED)
                mtype = MAP_SHARED
            elif mtype != MAP_PRIVATE:
                raise _err(E.EINVAL, "bad mapping type for a file")
            if not file.readable:
                raise _err(E.EACCES, "file not open for reading")
        elif mtype == MAP_PRIVATE:
            pgoff = addr >> _PS
        elif mtype == MAP_SHARED:
            if vm_flags & VM_GROWSDOWN:
                raise _err(E.EINVAL, "shared GROWSDOWN")
            vm_flags |= VM_SHARED | VM_MAYSHARE
            pgoff = 0
        elif mtype == MAP_DROPPABLE:
            vm_flags |= VM_WIPEONFORK | VM_DROPPABLE | VM_DONTDUMP | VM_NORESERVE
            pgoff = addr >> _PS
        else:
            raise _err(E.EINVAL, "bad mapping type")
        if flags & MAP_NORESERVE and self.overcommit_memory != 2:
            vm_flags |= VM_NORESERVE
        # mmap_zero(): a shared mapping of /dev/zero becomes a new shmem object, as MAP_SHARED |
        # MAP_ANONYMOUS does (shmem_zero_setup()), but it keeps the page offset it was given
        shared_zero = file is not None and mtype == MAP_SHARED and file.path == "/dev/zero"
        return self._mmap_region(addr, length, vm_flags, pgoff, file, (anonymous and mtype ==
                                 MAP_SHARED) or shared_zero, flags & MAP_POPULATE)

    def _mmap_region(self, addr: int, length: int, vm_flags: int, pgoff: int,
                     file: OpenFile | None, shared_anon: bool, populate: int) -> int:
        """Mirrors __mmap_region(): unmap what is under, try a new-range merge, else new VMA."""
        end = addr + length
        # accountable_mapping()
        if (vm_flags & (VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE:
            vm_flags |= VM_ACCOUNT
        first = self._find(addr)
        if first is not None and first.start < end:
            prev = self._do_munmap(addr, end, first)
            nxt = prev.next if prev is not None else self._index.first()
        else:
            nxt = first  # the first VMA after the range, or None
            prev = first.prev if first is not None else self._index.last()
        ksm_eligible = self.ksm_merge_any and not vm_flags & VM_KSM_INCOMPATIBLE
        if ksm_eligible and self.profile.ksm_early:
            vm_flags |= VM_MERGEABLE
        if shared_anon:
            # shmem_zero_setup(): its own file; the merge attempt itself saw file == NULL
            file_for_merge = None
            file = OpenFile("/dev/zero (deleted)", dev="00:01", ino=next(_ids), shmem=True,
                            size=length >> _PS)
        else:
            file_for_merge = file
        close = file.close if file is not None else False
        v: Vma | None = None
        if not close or not self._close_target:
            v = self._merge_new_range(addr, end, vm_flags, file_for_merge, pgoff, None, None,
                                      None, None, prev, nxt,
                                      legacy_mmap=self._legacy_mmap)
        if shared_anon and v is not None:  # pragma: no cover - cannot merge (file differs)
            v = None
        if v is None:
            v = Vma(addr, end, pgoff, vm_flags, file, close=close)
            self._link(v, prev)
            if self._cur is not None:
                self._step(X.NEW_VMA, addr, end, v)
        if ksm_eligible and not self.profile.ksm_early:
            v.flags |= VM_MERGEABLE  # ksm_add_vma() after the merge attempt
            self._nomerge_bounds.update((v.start, v.end))
        if self.soft_dirty:
            v.flags |= VM_SOFTDIRTY
        if populate or (vm_flags & VM_LOCKED and not vm_flags & VM_LOCKONFAULT):
            self._populate(addr, end)
        return addr

    # ------------------------------------------------------------------ munmap
    def munmap(self, addr: int, length: int) -> None:
        """munmap(2). Never merges the neighbours afterwards."""
        if not self.explain:
            return self._munmap(addr, length)
        return self._run("munmap", (addr, length), self._munmap, addr, length)

    def _munmap(self, addr: int, length: int) -> None:
        if (addr | length) < 0:  # the kernel's unsigned long view of a negative value
            addr, length = addr & _U64, length & _U64
        if addr & _OFF or addr > TASK_SIZE or length > TASK_SIZE - addr:
            raise _err(E.EINVAL, "bad range")
        length = (length + _OFF) & ~_OFF
        if not length:
            raise _err(E.EINVAL, "length is 0")
        self._do_munmap(addr, addr + length)

    # ------------------------------------------------------------------ mprotect
    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """mprotect(2) (do_mprotect_pkey() + mprotect_fixup())."""
        if not self.explain:
            return self._mprotect(addr, length, prot, -1)
        return self._run("mprotect", (addr, length, prot), self._mprotect, addr, length, prot,
                         -1)

    def pkey_mprotect(self, addr: int, length: int, prot: int, pkey: int) -> None:
        """pkey_mprotect(2); needs ``pkeys=True`` (this model's machines have no PKU)."""
        self._run("pkey_mprotect", (addr, length, prot, pkey), self._mprotect, addr, length,
                  prot, pkey)

    def _mprotect(self, start: int, length: int, prot: int, pkey: int) -> None:
        if (start | length) < 0:  # the kernel's unsigned long view of a negative value
            start, length = start & _U64, length & _U64
        grows = prot & _PROT_GROWS
        if grows:
            prot &= ~_PROT_GROWS
            if grows == _PROT_GROWS:
                raise _err(E.EINVAL, "both GROWSDOWN and GROWSUP")
        if start & _OFF:
            raise _err(E.EINVAL, "address not page aligned")
        if not length:
            return
        length = (length + _OFF) & ~_OFF
        end = start + length
        if end > _U64:  # start + len wrapped (or PAGE_ALIGN(len) did)
            raise _err(E.ENOMEM, "range wraps")
        if prot & _PROT_UNKNOWN:
            raise _err(E.EINVAL, "unknown prot bits")
        if pkey != -1 and (not self.pkeys or not 0 <= pkey < 16):
            raise _err(E.EINVAL, "protection keys unavailable")
        vma = self._find(start)
        if vma is None:
            raise _err(E.ENOMEM, "no VMA")
        if grows & PROT_GROWSDOWN:
            if vma.start >= end:
                raise _err(E.ENOMEM, "no VMA")
            start = vma.start
            if not vma.flags & VM_GROWSDOWN:
                raise _err(E.EINVAL, "PROT_GROWSDOWN on a non-GROWSDOWN VMA")
        elif vma.start > start:
            raise _err(E.ENOMEM, "range starts in a hole")
        newprot = prot & _VM_RWX
        tmp = start
        while True:
            if vma.start > tmp:
                raise _err(E.ENOMEM, "hole in range")
            vend = vma.end
            new_flags = (vma.flags & ~_VM_RWX) | newprot
            if self.pkeys:
                new_flags = (new_flags & ~VM_PKEY_MASK) | (
                    self._override_pkey(vma, prot & 7, pkey) * VM_PKEY_BIT0)
            if (new_flags & ~(new_flags >> 4)) & VM_ACCESS_FLAGS:
                raise _err(E.EACCES, "prot exceeds VM_MAY*")
            seg_end = end if end < vend else vend
            vma = self._mprotect_fixup(vma, tmp, seg_end, new_flags)
            tmp = vma.end if vma.end > seg_end else seg_end  # vma_iter_end() after a merge
            if tmp >= end:
                return
            nv = vma.next  # find_vma(tmp): vma ends exactly at tmp here
            if nv is None or nv.start >= end:
                raise _err(E.ENOMEM, "hole at end of range")
            vma = nv

    def _override_pkey(self, vma: Vma | None, prot: int, pkey: int) -> int:
        """arch_override_mprotect_pkey() (x86 with PKU): PROT_EXEC alone gets the
        execute-only pkey; leaving PROT_EXEC-only drops it; otherwise the VMA keeps its key."""
        if not self.pkeys:
            return 0
        if pkey != -1:
            return pkey
        if prot == PROT_EXEC:
            return EXEC_ONLY_PKEY
        cur = ((vma.flags & VM_PKEY_MASK) // VM_PKEY_BIT0) if vma is not None else 0
        return 0 if cur == EXEC_ONLY_PKEY else cur

    def _mprotect_fixup(self, vma: Vma, start: int, end: int, new_flags: int) -> Vma:
        """Mirrors mprotect_fixup()."""
        old = vma.flags
        if vma.flags & VM_SEALED:
            raise _err(E.EPERM, f"sealed VMA [{vma.start:#x},{vma.end:#x})")
        if new_flags == old:
            if self._cur is not None:
                self._step(X.UNCHANGED, start, end, vma)
            return vma
        if new_flags & VM_WRITE:
            if not old & (VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE):
                new_flags |= VM_ACCOUNT
        elif (self._unaccount and old & VM_ACCOUNT
              and vma.file is None and self._anon(vma) is None):
            new_flags &= ~VM_ACCOUNT
        v, merged = self._vma_modify(vma, start, end, new_flags, vma.anon_name)
        if not merged and self._cur is not None:
            self._step(X.MODIFY, start, end, v)
        if (old & (VM_WRITE | VM_SHARED | VM_LOCKED)) == VM_LOCKED and new_flags & VM_WRITE:
            self._populate(start, end)
        return v

    # ------------------------------------------------------------------ generic per-VMA walker
    def _walk_modify(self, start: int, end: int, compute: Any, *, name_change: bool = False,
                     new_name: str | None = None, stop_at_hole: bool = False,
                     first: Vma | None = None) -> bool:
        """madvise_walk_vmas()-style loop. ``compute(vma) -> new flags | None (skip)``.

        ``first``: find_vma(start), if the caller has it. Returns True if there was a hole (the
        caller decides the errno).
        """
        hole = False
        vma = self._find(start) if first is None else first
        if vma is None or vma.start >= end:
            return True
        if vma.start > start:
            hole = True
            tmp = vma.start
        else:
            tmp = start
        while vma is not None and vma.start < end:
            if vma.start > tmp:
                hole = True
                if stop_at_hole:
                    return True
            seg_s = tmp if tmp > vma.start else vma.start
            seg_e = end if end < vma.end else vma.end
            new_flags = compute(vma)
            if new_flags is not None:
                name = new_name if name_change else vma.anon_name
                if new_flags == vma.flags and name == vma.anon_name:
                    if self._cur is not None:
                        self._step(X.UNCHANGED, seg_s, seg_e, vma)
                else:
                    v, merged = self._vma_modify(vma, seg_s, seg_e, new_flags, name)
                    if not merged and self._cur is not None:
                        self._step(X.MODIFY, seg_s, seg_e, v)
                    vma = v
            tmp = vma.end if vma.end > seg_e else seg_e
            if tmp >= end:
                break
            vma = vma.next  # find_vma(tmp): vma ends exactly at tmp here
        if tmp < end:
            hole = True
        return hole

    # ------------------------------------------------------------------ madvise
    def madvise(self, addr: int, length: int, advice: int) -> None:
        """madvise(2)."""
        if not self.explain:
            return self._madvise(addr, length, advice)
        return self._run("madvise", (addr, length, advice), self._madvise, addr, length, advice)

    def _madvise(self, start: int, length: int, advice: int) -> None:
        if (start | length) < 0:  # the kernel's unsigned long view of a negative value
            start, length = start & _U64, length & _U64
        if advice not in _MADV_KNOWN and not (
                self.profile.guard_install_available
                and advice in (MADV_GUARD_INSTALL, MADV_GUARD_REMOVE)):
            raise _err(E.EINVAL, f"unknown advice {advice}")
        if start & _OFF:
            raise _err(E.EINVAL, "address not page aligned")
        length = (length + _OFF) & ~_OFF
        end = start + length
        if end > _U64:  # start + len wrapped (or PAGE_ALIGN(len) did)
            raise _err(E.EINVAL, "range wraps")
        if end == start:
            return
        compute = _FLAG_FNS.get(advice)
        if compute is not None:
            if self._walk_modify(start, end, compute):
                raise _err(E.ENOMEM, "range not fully mapped")
            return None
        if advice in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
            return self._madvise_populate(start, end, advice == MADV_POPULATE_WRITE)
        if advice == MADV_GUARD_INSTALL:
            return self._guard_install(start, end)
        if advice == MADV_GUARD_REMOVE:
            self._drop_guards(start, end)
            if self._walk_nochange(start, end):
                raise _err(E.ENOMEM, "range not fully mapped")
            return None
        # non-VMA-changing advice: per VMA in walk order, the seal check of
        # madvise_vma_behavior() (EPERM) and then the advice's own checks (EINVAL)
        vmas = self._gather(start, end)
        discard = advice in _MADV_DISCARD
        for v in vmas:
            if discard:
                _check_discard_seal(v)
            fl = v.flags
            if advice in (MADV_DONTNEED, MADV_FREE) and fl & (
                    VM_LOCKED | VM_PFNMAP | VM_HUGETLB):
                raise _err(E.EINVAL, "MADV_DONTNEED/FREE on a locked or special VMA")
            if advice == MADV_REMOVE:
                # madvise_remove(): locked or without a file EINVAL, then not shared-writable
                # EACCES (vma_is_shared_maywrite())
                if fl & VM_LOCKED or v.file is None:
                    raise _err(E.EINVAL, "MADV_REMOVE on a locked or anonymous VMA")
                if fl & (VM_SHARED | VM_MAYWRITE) != VM_SHARED | VM_MAYWRITE:
                    raise _err(E.EACCES, "MADV_REMOVE on a mapping that is not shared-writable")
            if advice in (MADV_COLD, MADV_PAGEOUT) and fl & (
                    VM_LOCKED | VM_PFNMAP | VM_HUGETLB):
                raise _err(E.EINVAL, "MADV_COLD/PAGEOUT on a locked VMA (can_madv_lru_vma())")
            if advice == MADV_FREE and (v.file is not None or fl & VM_SHARED):
                raise _err(E.EINVAL, "MADV_FREE on a non-anonymous VMA")
        if self._walk_nochange(start, end, vmas):
            raise _err(E.ENOMEM, "range not fully mapped")
        return None

    def _walk_nochange(self, start: int, end: int, vmas: list[Vma] | None = None) -> bool:
        """Is there a hole in [start,end)? ``vmas``: the caller's _gather(start, end), if any."""
        tmp = start
        for v in self._gather(start, end) if vmas is None else vmas:
            if v.start > tmp:
                return True
            tmp = v.end
        return tmp < end

    def _madvise_populate(self, start: int, end: int, write: bool) -> None:
        """MADV_POPULATE_READ/WRITE: faultin_page_range(); holes are ENOMEM."""
        tmp = start
        hole = False
        in_walk = self.profile.madvise_populate_in_walk
        for v in self._gather(start, end):
            if v.start > tmp:
                if not in_walk:
                    raise _err(E.ENOMEM, "hole in range")
                hole = True
            fl = v.flags
            if fl & (VM_IO | VM_PFNMAP) or not fl & VM_ACCESS_FLAGS or (
                    write and not fl & VM_WRITE) or (not write and not fl & VM_READ):
                raise _err(E.EINVAL, "incompatible mapping for populate")
            s = max(start, v.start)
            if self.guard_pages and self.guard_pages.overlaps(s, min(end, v.end)):
                raise _err(E.EFAULT, "populate hit a guard page")
            if self._beyond_eof(v, min(end, v.end)):
                raise _err(E.EFAULT, "populate beyond the end of the file (SIGBUS)")
            if write and not fl & VM_SHARED:
                self._anon_vma_prepare(v)
            elif not write:
                self._read_fault(v, s)
            tmp = v.end
        if tmp < end or hole:
            raise _err(E.ENOMEM, "hole in range")

    def _guard_install(self, start: int, end: int) -> None:
        """MADV_GUARD_INSTALL: no split, no merge; anon_vma_prepare (+ VM_MAYBE_GUARD, 6.19)."""
        vmas = self._gather(start, end)
        sets_flag = self.profile.guard_install_sets_maybe_guard
        for v in vmas:
            _check_discard_seal(v)
            if v.flags & (VM_SPECIAL | VM_HUGETLB | VM_LOCKED | VM_DROPPABLE):
                raise _err(E.EINVAL, "guard regions not allowed here")
            if sets_flag:
                if v.file is None:
                    self._anon_vma_prepare(v)
                if not v.flags & VM_MAYBE_GUARD:
                    v.flags |= VM_MAYBE_GUARD
                    self._nomerge_bounds.add(v.start)
                    self._nomerge_bounds.add(v.end)
                    if self._cur is not None:
                        self._step(X.FLAG_SET, v.start, v.end, v, note="VM_MAYBE_GUARD")
            else:
                self._anon_vma_prepare(v)
            self.guard_pages.add(max(start, v.start), min(end, v.end))
        if self._walk_nochange(start, end):
            raise _err(E.ENOMEM, "range not fully mapped")

    # ------------------------------------------------------------------ mlock
    def mlock(self, addr: int, length: int, flags: int = 0) -> None:
        """mlock(2) / mlock2(2) (flags=MLOCK_ONFAULT)."""
        if not self.explain:
            return self._mlock(addr, length, flags, True)
        return self._run("mlock", (addr, length, flags), self._mlock, addr, length, flags, True)

    def mlock2(self, addr: int, length: int, flags: int = 0) -> None:
        self._run("mlock2", (addr, length, flags), self._mlock, addr, length, flags, True)

    def munlock(self, addr: int, length: int) -> None:
        """munlock(2)."""
        if not self.explain:
            return self._mlock(addr, length, 0, False)
        return self._run("munlock", (addr, length), self._mlock, addr, length, 0, False)

    def _mlock(self, addr: int, length: int, flags: int, lock: bool) -> None:
        if (addr | length) < 0:  # the kernel's unsigned long view of a negative value
            addr, length = addr & _U64, length & _U64
        if flags & ~MLOCK_ONFAULT:
            raise _err(E.EINVAL, "unknown mlock2 flags")
        length = _page_align(length + (addr & _OFF))
        start = addr & ~_OFF
        end = start + length
        if end > _U64:  # start + len wrapped (or PAGE_ALIGN(len) did)
            raise _err(E.EINVAL, "range wraps")
        if end == start:
            return
        to_add = (VM_LOCKED | (VM_LOCKONFAULT if flags & MLOCK_ONFAULT else 0)) if lock else 0
        vma = self._find(start)
        if vma is None or vma.start > start:
            raise _err(E.ENOMEM, "range starts in a hole")

        def compute(v: Vma) -> int | None:
            if v.flags & (VM_SPECIAL | VM_HUGETLB | VM_DROPPABLE):
                if self._cur is not None:
                    self._step(X.SKIP, v.start, v.end, v, note="mlock_fixup() skips this VMA")
                return None
            return (v.flags & ~VM_LOCKED_MASK) | to_add

        if self._walk_modify(start, end, compute, stop_at_hole=True, first=vma):
            raise _err(E.ENOMEM, "hole in range")
        if lock:
            # __mm_populate(ignore_errors=0): GUP fails on PROT_NONE (-EFAULT -> ENOMEM)
            self._populate(start, end, strict=True)

    def mlockall(self, flags: int) -> None:
        """mlockall(2)."""
        self._run("mlockall", (flags,), self._mlockall, flags)

    def _mlockall(self, flags: int) -> None:
        if not flags or flags & ~(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) or flags == MCL_ONFAULT:
            raise _err(E.EINVAL, "bad mlockall flags")
        self.def_flags &= ~VM_LOCKED_MASK
        to_add = VM_LOCKED | (VM_LOCKONFAULT if flags & MCL_ONFAULT else 0)
        if flags & MCL_FUTURE:
            self.def_flags |= to_add
        if flags & MCL_CURRENT:
            self._apply_all_lock(to_add)
            if not flags & MCL_ONFAULT:
                first = self._index.first()
                if first is not None:
                    self._populate(first.start, TASK_SIZE)

    def munlockall(self) -> None:
        """munlockall(2)."""
        self._run("munlockall", (), self._munlockall)

    def _munlockall(self) -> None:
        self.def_flags &= ~VM_LOCKED_MASK
        self._apply_all_lock(0)

    def _apply_all_lock(self, to_add: int) -> None:
        # apply_mlockall_flags(): mlock_fixup() over each whole VMA, in order
        v = self._index.first()
        while v is not None:
            nxt_start = v.end
            if not v.flags & (VM_SPECIAL | VM_HUGETLB | VM_DROPPABLE):
                nf = (v.flags & ~VM_LOCKED_MASK) | to_add
                if nf != v.flags:
                    t, _ = self._vma_modify(v, v.start, v.end, nf, v.anon_name)
                    nxt_start = max(nxt_start, t.end)
            v = self._find(nxt_start)

    # ------------------------------------------------------------------ mseal
    def mseal(self, addr: int, length: int, flags: int = 0) -> None:
        """mseal(2) (6.10+)."""
        self._run("mseal", (addr, length, flags), self._mseal, addr, length, flags)

    def _mseal(self, start: int, length: int, flags: int) -> None:
        if (start | length) < 0:  # the kernel's unsigned long view of a negative value
            start, length = start & _U64, length & _U64
        if not self.profile.mseal_available:
            raise _err(E.ENOSYS, "mseal does not exist in this kernel")
        if flags:
            raise _err(E.EINVAL, "flags must be 0")
        if start & _OFF:
            raise _err(E.EINVAL, "address not page aligned")
        length = (length + _OFF) & ~_OFF
        end = start + length
        if end > _U64:  # start + len wrapped (or PAGE_ALIGN(len) did)
            raise _err(E.EINVAL, "range wraps")
        if end == start:
            return
        if self._walk_nochange(start, end):
            raise _err(E.ENOMEM, "range not fully mapped")
        self.sealed_ever = True
        self._walk_modify(start, end, lambda v: None if v.flags & VM_SEALED else
                          v.flags | VM_SEALED)

    # ------------------------------------------------------------------ anon names
    def prctl_set_vma_anon_name(self, addr: int, length: int, name: str | None) -> None:
        """prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, addr, len, name)."""
        self._run("prctl_set_vma_anon_name", (addr, length, name), self._set_anon_name, addr,
                  length, name)

    def _set_anon_name(self, start: int, length: int, name: str | None) -> None:
        if (start | length) < 0:  # the kernel's unsigned long view of a negative value
            start, length = start & _U64, length & _U64
        if name is not None:
            if len(name) >= 80 or any(c in name for c in "\\`$[]") or not name.isprintable():
                raise _err(E.EINVAL, "bad anon name")
            if name == "":
                name = None
        if start & _OFF:
            raise _err(E.EINVAL, "address not page aligned")
        length = (length + _OFF) & ~_OFF
        end = start + length
        if end > _U64:  # start + len wrapped (or PAGE_ALIGN(len) did)
            raise _err(E.EINVAL, "range wraps")
        if end == start:
            return

        def compute(v: Vma) -> int:
            if v.file is not None and not (v.file.shmem and v.file.path.startswith("/dev/zero")):
                raise _err(E.EBADF, "anon name on a file mapping")
            return v.flags

        if self._walk_modify(start, end, compute, name_change=True, new_name=name):
            raise _err(E.ENOMEM, "range not fully mapped")

    # ------------------------------------------------------------------ KSM
    def prctl_set_memory_merge(self, on: bool) -> None:
        """prctl(PR_SET_MEMORY_MERGE): flag every eligible VMA VM_MERGEABLE (no merges)."""
        self._begin("prctl_set_memory_merge", (on,))
        self.ksm_merge_any = bool(on)
        for v in self._index:
            if on and not v.flags & (VM_KSM_INCOMPATIBLE | VM_MERGEABLE):
                v.flags |= VM_MERGEABLE
                self._nomerge_bounds.update((v.start, v.end))
                if self._cur is not None:
                    self._step(X.FLAG_SET, v.start, v.end, v, note="VM_MERGEABLE")
            elif not on and v.flags & VM_MERGEABLE:
                v.flags &= ~VM_MERGEABLE
                self._nomerge_bounds.update((v.start, v.end))
        self._end()

    # ------------------------------------------------------------------ touch / stack
    def touch(self, addr: int, write: bool = True) -> None:
        """Access one byte at addr (a page fault). Raises EFAULT where the process gets SIGSEGV."""
        if not self.explain:
            return self._touch(addr, write)
        return self._run("touch", (addr, write), self._touch, addr, write)

    def _touch(self, addr: int, write: bool) -> None:
        if addr < 0:  # the kernel's unsigned long view of a negative value
            addr &= _U64
        v = self._find(addr)
        if v is None:
            raise _err(E.EFAULT, "unmapped address (SIGSEGV)")
        if v.start > addr:
            if not v.flags & VM_GROWSDOWN:
                raise _err(E.EFAULT, "unmapped address (SIGSEGV)")
            try:
                self._expand_downwards(v, addr)
            except OSError as e:
                raise _err(E.EFAULT, f"stack expansion refused ({e.strerror}) (SIGSEGV)") from e
        fl = v.flags
        if not fl & (VM_WRITE if write else VM_ACCESS_FLAGS):
            raise _err(E.EFAULT, "access not permitted (SIGSEGV)")
        if fl & VM_PKEY_MASK == _EXEC_ONLY_PKEY_BITS and not fl & (VM_READ | VM_WRITE):
            raise _err(E.EFAULT, "execute-only protection key (SIGSEGV)")
        if self.guard_pages and addr in self.guard_pages:
            raise _err(E.EFAULT, "guard page (SIGSEGV)")
        f = v.file
        if f is not None and f.size is not None and v.pgoff + ((addr - v.start) >> _PS) >= f.size:
            raise _err(E.EFAULT, "beyond end of file (SIGBUS)")
        if write:
            if not fl & VM_SHARED:
                a = v.anon_vma
                if a is None or a.unknown:
                    self._anon_vma_prepare(v)
        elif self.thp == "always" or fl & VM_HUGEPAGE:
            self._read_fault(v, addr)

    def grow_stack(self, addr: int) -> None:
        """expand_stack(): grow the GROWSDOWN VMA above addr down to cover it."""
        def go() -> None:
            v = self._find(addr)
            if v is None or not v.flags & VM_GROWSDOWN:
                raise _err(E.EFAULT, "no GROWSDOWN VMA above")
            if v.start > addr:
                self._expand_downwards(v, addr)
        self._run("grow_stack", (addr,), go)

    def _expand_downwards(self, v: Vma, addr: int) -> None:
        """Mirrors expand_downwards(): never merges; always ensures an anon_vma."""
        addr &= ~_OFF
        if addr < MMAP_MIN_ADDR:
            raise _err(E.EPERM, "below mmap_min_addr")
        prev = v.prev
        if prev is not None and not prev.flags & VM_GROWSDOWN and prev.flags & VM_ACCESS_FLAGS \
                and addr - prev.end < STACK_GUARD_GAP:
            raise _err(E.ENOMEM, "stack_guard_gap to the previous VMA")
        if prev is not None and prev.end > addr:
            raise _err(E.ENOMEM, "would overlap the previous VMA")
        self._anon_vma_prepare(v)
        grow = (v.start - addr) >> _PS
        old = v.start
        self._set_start(v, addr)
        v.pgoff -= grow
        self._nomerge_bounds.add(addr)
        if self._cur is not None:
            self._step(X.STACK_GROW, addr, old, v)

    # ------------------------------------------------------------------ brk
    def set_brk_base(self, start_brk: int) -> None:
        """Set mm->start_brk = mm->brk (what execve's ELF loader does)."""
        self.start_brk = start_brk
        self.cur_brk = start_brk

    def brk(self, addr: int) -> int:
        """brk(2): returns the new break, or the old one on failure (never raises)."""
        self._begin("brk", (addr,))
        try:
            return self._brk(addr)
        finally:
            self._end()

    def _brk(self, brk: int) -> int:
        brk &= _U64  # the kernel's unsigned long view of a negative value
        if self.start_brk is None:
            return self.cur_brk
        if brk < self.start_brk:
            return self.cur_brk
        newbrk = _page_align(brk)
        oldbrk = _page_align(self.cur_brk)
        if oldbrk == newbrk:
            self.cur_brk = brk
            return brk
        if brk <= self.cur_brk:
            try:
                self._do_munmap(newbrk, oldbrk)
            except OSError:
                return self.cur_brk
            self.cur_brk = brk
            return brk
        if newbrk > TASK_SIZE:
            # check_brk_limits(): get_unmapped_area(MAP_FIXED) refuses a range past TASK_SIZE
            return self.cur_brk
        nxt = self._find(oldbrk)
        if nxt is not None and nxt.start < newbrk + _P + STACK_GUARD_GAP and \
                newbrk + _P > _start_gap(nxt):
            return self.cur_brk
        if self.map_count > self.max_map_count:
            return self.cur_brk
        # brkvma = vma_prev_limit(&vmi, mm->start_brk)
        brkvma = self._prev_of(oldbrk)
        if brkvma is not None and brkvma.start < self.start_brk:
            brkvma = None
        self._do_brk_flags(brkvma, oldbrk, newbrk - oldbrk)
        self.cur_brk = brk
        if self.def_flags & VM_LOCKED:
            self._populate(oldbrk, newbrk)
        return brk

    def _do_brk_flags(self, vma: Vma | None, addr: int, length: int) -> None:
        """Mirrors do_brk_flags(): just-expand the brk VMA, else a new anonymous VMA."""
        flags = VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT | self.def_flags
        end = addr + length
        v = None
        if vma is not None and vma.end == addr:
            v = self._merge_new_range(addr, end, flags, None, addr >> _PS, None, None, None,
                                      None, vma, vma.next, just_expand=True)
        if v is None:
            # a new VMA with no merge attempt at all (not even with a mergeable prev)
            prev = self._prev_of(addr)
            v = Vma(addr, end, addr >> _PS, flags)
            self._link(v, prev)
            self._nomerge_bounds.update((addr, end))
            if self._cur is not None:
                self._step(X.NEW_VMA, addr, end, v)
        if self.soft_dirty:
            v.flags |= VM_SOFTDIRTY

    # ------------------------------------------------------------------ mremap
    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0,
               new_addr: int = 0) -> int:
        """mremap(2): shrink, expand in place (absorbing next), move, FIXED, DONTUNMAP."""
        if not self.explain:
            return self._mremap(old_addr, old_len, new_len, flags, new_addr)
        return self._run("mremap", (old_addr, old_len, new_len, flags, new_addr), self._mremap,
                         old_addr, old_len, new_len, flags, new_addr)

    def _mremap(self, addr: int, old_len: int, new_len: int, flags: int, new_addr: int) -> int:
        if (addr | old_len | new_len | new_addr) < 0:  # the kernel's unsigned long view of a negative value
            addr, old_len, new_len, new_addr = (
                addr & _U64, old_len & _U64, new_len & _U64, new_addr & _U64)
        if not self.profile.mremap_checks_first:
            return self._mremap_old(addr, old_len, new_len, flags, new_addr)
        return self._mremap_vrm(addr, old_len, new_len, flags, new_addr)

    def _mremap_old(self, addr: int, old_len: int, new_len: int, flags: int,
                    new_addr: int) -> int:
        """Mirrors the pre-6.17 sys_mremap() / mremap_to() / vma_to_resize() order (6.16
        moves as the refactored move_vma() does, through the profile's DONTUNMAP fields)."""
        if flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP):
            raise _err(E.EINVAL, "unknown flags")
        if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
            raise _err(E.EINVAL, "MREMAP_FIXED without MREMAP_MAYMOVE")
        if flags & MREMAP_DONTUNMAP and (not flags & MREMAP_MAYMOVE or old_len != new_len):
            raise _err(E.EINVAL, "MREMAP_DONTUNMAP needs MAYMOVE and old_len == new_len")
        if addr & _OFF:
            raise _err(E.EINVAL, "address not page aligned")
        old_len = (old_len + _OFF) & ~_OFF
        new_len = (new_len + _OFF) & ~_OFF
        if not new_len:
            raise _err(E.EINVAL, "new_len is 0")
        vma = self._lookup(addr)
        if vma is None:
            raise _err(E.EFAULT, "no VMA at old address")
        if vma.flags & VM_SEALED:
            raise _err(E.EPERM, "sealed VMA")
        if flags & (MREMAP_FIXED | MREMAP_DONTUNMAP):
            # mremap_to()
            if new_addr & _OFF:
                raise _err(E.EINVAL, "new address not page aligned")
            if new_len > TASK_SIZE or new_addr > TASK_SIZE - new_len:
                raise _err(E.EINVAL, "new range beyond TASK_SIZE")
            if addr + old_len > new_addr and new_addr + new_len > addr:
                raise _err(E.EINVAL, "old and new ranges overlap")
            if self.map_count + 2 >= self.max_map_count - 3:
                raise _err(E.ENOMEM, "vm.max_map_count")
            if flags & MREMAP_FIXED:
                self._do_munmap(new_addr, new_addr + new_len)
            if old_len > new_len:
                self._munmap(addr + new_len, old_len - new_len)
                old_len = new_len
            vma = self._lookup(addr)  # vma_to_resize()
            self._check_prep_vma(vma, addr, old_len, new_len, flags | MREMAP_FIXED)
            assert vma is not None
            dest = new_addr if flags & MREMAP_FIXED else self._get_unmapped_area(0, new_len)
            if self.map_count >= self.max_map_count - 3:
                raise _err(E.ENOMEM, "vm.max_map_count")
            return self._move_vma(vma, addr, old_len, new_len, dest, flags)
        if old_len >= new_len:
            if old_len > new_len:
                self._munmap(addr + new_len, old_len - new_len)
            return addr
        self._check_prep_vma(vma, addr, old_len, new_len, flags)
        return self._expand_vma(vma, addr, old_len, new_len, flags, recheck_count=True)

    def _mremap_vrm(self, addr: int, old_len: int, new_len: int, flags: int,
                    new_addr: int) -> int:
        # mirrors check_mremap_params()
        if flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP):
            raise _err(E.EINVAL, "unknown flags")
        if addr & _OFF:
            raise _err(E.EINVAL, "address not page aligned")
        old_len = (old_len + _OFF) & ~_OFF
        new_len = (new_len + _OFF) & ~_OFF
        if not new_len or new_len > TASK_SIZE:
            raise _err(E.EINVAL, "bad new_len")
        implies_new = bool(flags & (MREMAP_FIXED | MREMAP_DONTUNMAP))
        if implies_new:
            if new_addr > TASK_SIZE - new_len:
                raise _err(E.EINVAL, "new range beyond TASK_SIZE")
            if new_addr & _OFF:
                raise _err(E.EINVAL, "new address not page aligned")
            if not flags & MREMAP_MAYMOVE:
                raise _err(E.EINVAL, "MREMAP_FIXED/DONTUNMAP without MREMAP_MAYMOVE")
            if flags & MREMAP_DONTUNMAP and old_len != new_len:
                raise _err(E.EINVAL, "MREMAP_DONTUNMAP cannot resize")
            if flags & MREMAP_FIXED and new_addr < addr + old_len and addr < new_addr + new_len:
                raise _err(E.EINVAL, "old and new ranges overlap")
        # check_map_count_against_split_early() / the old "map_count >= max - 3" checks
        if self.map_count >= self.max_map_count - 3:
            raise _err(E.ENOMEM, "vm.max_map_count")
        if flags & MREMAP_FIXED and old_len == new_len and self.profile.mremap_multi_vma:
            return self._remap_move(addr, old_len, flags, new_addr)
        vma = self._lookup(addr)
        self._check_prep_vma(vma, addr, old_len, new_len, flags)
        assert vma is not None
        if implies_new:
            return self._mremap_to(vma, addr, old_len, new_len, flags, new_addr)
        # mirrors mremap_at()
        if new_len == old_len:
            return addr
        if new_len < old_len:
            self._munmap(addr + new_len, old_len - new_len)  # shrink_vma()
            return addr
        return self._expand_vma(vma, addr, old_len, new_len, flags)

    def _expand_vma(self, vma: Vma, addr: int, old_len: int, new_len: int, flags: int, *,
                    recheck_count: bool = False) -> int:
        """expand_vma(): grow in place if [addr, addr+old_len) is the VMA's suffix and the space
        above is free, else move (MREMAP_MAYMOVE) to a new area. ``recheck_count``: the pre-6.16
        move path checks vm.max_map_count again after the search."""
        delta = new_len - old_len
        if vma.end - addr == old_len:
            nxt = vma.next
            if (nxt is None or nxt.start >= vma.end + delta) and vma.end + delta <= TASK_SIZE:
                self._merge_extend(vma, delta)
                return addr
        if not flags & MREMAP_MAYMOVE:
            raise _err(E.ENOMEM, "cannot grow in place and MREMAP_MAYMOVE not given")
        dest = self._get_unmapped_area(0, new_len)
        if recheck_count and self.map_count >= self.max_map_count - 3:
            raise _err(E.ENOMEM, "vm.max_map_count")
        return self._move_vma(vma, addr, old_len, new_len, dest, flags)

    def _check_prep_vma(self, vma: Vma | None, addr: int, old_len: int, new_len: int,
                        flags: int) -> None:
        """Mirrors check_prep_vma()."""
        if vma is None:
            raise _err(E.EFAULT, "no VMA at old address")
        if vma.flags & VM_SEALED:
            raise _err(E.EPERM, "sealed VMA")
        implies_new = bool(flags & (MREMAP_FIXED | MREMAP_DONTUNMAP))
        if not (new_len > old_len or implies_new):
            return
        if not old_len and not vma.flags & (VM_SHARED | VM_MAYSHARE):
            raise _err(E.EINVAL, "old_len 0 on a private mapping")
        if flags & MREMAP_DONTUNMAP and vma.flags & (VM_DONTEXPAND | VM_PFNMAP):
            raise _err(E.EINVAL, "MREMAP_DONTUNMAP on a special mapping")
        if new_len < old_len:
            old_len = new_len
        if old_len > vma.end - addr:
            raise _err(E.EFAULT, "old range spans more than one VMA")
        if new_len == old_len:
            return
        if vma.flags & (VM_DONTEXPAND | VM_PFNMAP):
            raise _err(E.EFAULT, "VM_DONTEXPAND/VM_PFNMAP cannot grow")

    def _remap_move(self, start: int, length: int, flags: int, new_addr: int) -> int:
        """Mirrors remap_move() (6.17+): a FIXED same-size move of every VMA in the range,
        keeping the gaps between them; no gap allowed at the start."""
        end = start + length
        cur = start
        seen = False
        while cur < end:
            v = self._find(cur)
            if v is None or v.start >= end:
                break
            if not seen and start < v.start:
                raise _err(E.EFAULT, "no VMA at old address")
            piece = max(v.start, start)
            plen = min(end, v.end) - piece
            if v.uffd_ctx is not None and (seen or v.end < end):
                raise _err(E.EFAULT, "userfaultfd VMA in a multi-VMA move")
            self._check_prep_vma(v, piece, plen, plen, flags)
            self._mremap_to(v, piece, plen, plen, flags, new_addr + (piece - start))
            seen = True
            cur = piece + plen
        if not seen:
            raise _err(E.EFAULT, "no VMA at old address")
        return new_addr

    def _merge_extend(self, vma: Vma, delta: int) -> Vma:
        """Mirrors vma_merge_extend(): the extension is a new range with vma as prev."""
        start = vma.end
        end = start + delta
        anon = self._anon(vma)
        merged = self._merge_new_range(start, end, vma.flags, vma.file,
                                       vma.pgoff + vma.pages, anon, vma.anon_name, vma.policy,
                                       vma.uffd_ctx, vma, vma.next)
        if merged is None:
            raise _err(E.ENOMEM, "vma_merge_extend() failed")
        if self._cur is not None:
            self._step(X.EXPAND_IN_PLACE, start, end, merged)
        if vma.flags & VM_LOCKED and not vma.flags & VM_LOCKONFAULT:
            self._populate(start, end)
        return merged

    def _mremap_to(self, vma: Vma, addr: int, old_len: int, new_len: int, flags: int,
                   new_addr: int) -> int:
        """Mirrors mremap_to(): FIXED unmaps the destination; DONTUNMAP without FIXED picks one."""
        if flags & MREMAP_FIXED:
            self._do_munmap(new_addr, new_addr + new_len)
        if new_len < old_len:
            self._munmap(addr + new_len, old_len - new_len)
            old_len = new_len
        if flags & MREMAP_FIXED:
            dest = new_addr
        else:
            dest = self._get_unmapped_area(0, new_len)
        src = self._lookup(addr)
        if src is None:  # pragma: no cover - the ranges do not overlap
            raise _err(E.EFAULT, "source vanished")
        return self._move_vma(src, addr, old_len, new_len, dest, flags)

    def _move_vma(self, vma: Vma, addr: int, old_len: int, new_len: int, new_addr: int,
                  flags: int) -> int:
        """Mirrors move_vma(): copy_vma() at the destination, then unmap (or keep) the source."""
        if self._cur is not None:
            self._step(X.MOVE, addr, addr + old_len, note=f"to {new_addr:#x}")
        moved_guards: list[tuple[int, int]] = []
        if self.guard_pages:
            # guard markers live in the page tables, which move with the range
            moved_guards = self.guard_pages.within(addr, addr + old_len)
            self.guard_pages.remove(addr, addr + old_len)
        new_end = new_addr + new_len
        if (flags & MREMAP_DONTUNMAP and vma.flags & VM_LOCKED_MASK
                and not self.profile.dontunmap_unlocks_whole_source):
            # before 6.16 and since 7.2 a locked source has the moved range split out of it
            # *before* the copy (qemu-checked): the copy may merge with the rest
            if vma.start < addr:
                vma = self._split(vma, addr, check_count=False)
            if vma.end > addr + old_len:
                self._split(vma, addr + old_len, check_count=False)
        new_pgoff = vma.pgoff + ((addr - vma.start) >> _PS)
        anon = self._anon(vma)
        if vma.file is None and not vma.flags & VM_SHARED and anon is None:
            new_pgoff = new_addr >> _PS  # unfaulted anonymous: pgoff follows the address
        prev = link_prev = self._prev_of(new_addr)
        nxt = prev.next if prev is not None else self._index.first()
        if flags & MREMAP_DONTUNMAP:
            rule = self.profile.dontunmap_copy_merges
            if rule == "no_source_neighbour":
                if (prev is vma and prev.end == new_addr) or (nxt is vma and nxt.start == new_end):
                    prev = nxt = None
            elif rule == "not_source":
                if prev is vma:
                    prev = None
                if nxt is vma:
                    nxt = None
        copied_from = vma if self.profile.copied_from_propagation else None
        # mirrors copy_vma(): a new-range merge with the source's attributes
        new_vma = self._merge_new_range(new_addr, new_end, vma.flags, vma.file, new_pgoff, anon,
                                        vma.anon_name, vma.policy, vma.uffd_ctx, prev, nxt,
                                        copied_from=copied_from)
        if new_vma is None:
            new_vma = Vma(new_addr, new_end, new_pgoff, vma.flags, vma.file, vma.anon_vma,
                          vma.avc, vma.anon_name, vma.policy, vma.uffd_ctx, vma.close)
            self._link(new_vma, link_prev)
            if self._cur is not None:
                self._step(X.NEW_VMA, new_addr, new_end, new_vma)
            if flags & MREMAP_DONTUNMAP and self.profile.dontunmap_copy_merges != "any":
                # the era's copy skipped (some) merge candidates: a legitimate unmerged pair
                self._nomerge_bounds.update((new_addr, new_end))
        if flags & MREMAP_DONTUNMAP:
            # dontunmap_complete(): the whole source VMA loses VM_LOCKED*; if it was moved
            # entirely it loses its anon_vma (unlink_anon_vmas()). VM_ACCOUNT stays (cleared
            # only between b714ccb02a76 and its stable fix "correctly account old mapping after
            # MREMAP_DONTUNMAP remap"; out of scope).
            src = self._lookup(addr)
            if (src is not None and src.flags & VM_LOCKED_MASK
                    and not self.profile.dontunmap_unlocks_whole_source
                    and src is not new_vma):
                # before 6.16 and since 7.2 only the moved range is unlocked: it is split out
                # of a locked source first (qemu-checked)
                if src.start < addr:
                    src = self._split(src, addr, check_count=False)
                if src.end > addr + old_len:
                    self._split(src, addr + old_len, check_count=False)
            if src is not None:
                src.flags &= ~(VM_LOCKED_MASK | VM_ACCOUNT) if \
                    self.profile.dontunmap_clears_account else ~VM_LOCKED_MASK
                if src is not new_vma and src.start == addr and src.end == addr + old_len:
                    src.anon_vma = None
                    src.avc = 0
                self._nomerge_bounds.update((src.start, src.end))
                if self._cur is not None:
                    self._step(X.DONTUNMAP, src.start, src.end, src)
        elif old_len:
            # the source range is unmapped (split if partial); the moved range may have merged
            # into the source's own remainder, so unmap exactly [addr, addr+old_len)
            for v in self._gather(addr, addr + old_len):
                v.flags &= ~VM_SEALED  # cannot be sealed (checked)
            self._do_munmap(addr, addr + old_len)
        for gs, ge in moved_guards:
            self.guard_pages.add(gs - addr + new_addr, ge - addr + new_addr)
        if new_vma.flags & VM_LOCKED and new_len > old_len:
            self._populate(new_addr + old_len, new_end)
        return new_addr

    # ------------------------------------------------------------------ fork / exec
    def fork(self) -> AddressSpace:
        """fork(2): the child's address space (dup_mmap() + anon_vma_fork())."""
        self._begin("fork", ())
        child = AddressSpace.__new__(AddressSpace)
        for k, val in self.__dict__.items():
            child.__dict__[k] = val
        child.history = deque(maxlen=self.history.maxlen)
        child.last_explanation = None
        child._init_state()
        child.files = dict(self.files)
        child._inodes = self._inodes
        child.start_brk = self.start_brk
        child.cur_brk = self.cur_brk
        child.start_stack = self.start_stack
        child.ksm_merge_any = self.ksm_merge_any
        child.def_flags = self.def_flags & ~VM_LOCKED_MASK
        prev: Vma | None = None
        for v in self._index:
            if v.flags & VM_DONTCOPY:
                continue
            c = Vma(v.start, v.end, v.pgoff, v.flags & ~(VM_LOCKED_MASK | VM_UFFD_FLAGS), v.file,
                    None, 0, v.anon_name, v.policy, None, v.close, v.label)
            a = v.anon_vma
            if a is not None and not v.flags & VM_WIPEONFORK:
                if a.unknown:
                    c.anon_vma = UnknownAnonVma()
                else:
                    # anon_vma_fork(): links to the parent's chain plus a fresh anon_vma
                    c.anon_vma = AnonVma()
                    c.avc = v.avc + 1
            child._link(c, prev)
            prev = c
        child._nomerge_bounds = set(self._nomerge_bounds)
        for v in child._index:
            child._nomerge_bounds.update((v.start, v.end))
        # guard markers are copied with the page tables, except where WIPEONFORK empties them
        if self.guard_pages:
            for cv in child._index:
                if not cv.flags & VM_WIPEONFORK:
                    for gs, ge in self.guard_pages.within(cv.start, cv.end):
                        child.guard_pages.add(gs, ge)
        if self._cur is not None:
            self._step(X.FORK, 0, 0, note=f"child has {child.map_count} VMAs")
        self._end()
        return child

    def exec(self) -> None:
        """execve(2): a fresh, empty address space (open files are kept)."""
        self._begin("exec", ())
        self._init_state()
        if self._cur is not None:
            self._step(X.EXEC, 0, 0)
        self._end()

    # ------------------------------------------------------------------ snapshots
    @classmethod
    def from_snapshot(cls, frame: pl.DataFrame, kernel: str | KernelProfile = "6.19",
                      **kw: Any) -> AddressSpace:
        """Build an address space from a /proc snapshot frame (see :mod:`replay.snapshot`)."""
        from replay.snapshot import build_from_snapshot

        return build_from_snapshot(cls, frame, kernel, **kw)

    def narrow_from_snapshot(self, frame: pl.DataFrame) -> tuple[list[VmaView], list[str]]:
        """Resolve UNKNOWN anon_vma state from a later snapshot; see :mod:`replay.snapshot`."""
        from replay.snapshot import narrow

        return narrow(self, frame)

    # ------------------------------------------------------------------ invariants
    def check(self) -> None:
        """Raise AssertionError unless the model's invariants hold (see docs/model.md). Forgets
        the no-merge boundaries that are no longer between two VMAs first (_prune_bounds())."""
        from replay.validate import check_mm

        self._prune_bounds()
        check_mm(self)


def _madvise_flag_fn(advice: int) -> Any:
    """madvise_behavior(): the flag change of a flag advice, or None."""
    def setf(bit: int, clear: int = 0) -> Any:
        return lambda v: (v.flags & ~clear) | bit

    def clrf(bit: int) -> Any:
        return lambda v: v.flags & ~bit

    if advice == MADV_NORMAL:
        return clrf(VM_RAND_READ | VM_SEQ_READ)
    if advice == MADV_RANDOM:
        return setf(VM_RAND_READ, VM_SEQ_READ)
    if advice == MADV_SEQUENTIAL:
        return setf(VM_SEQ_READ, VM_RAND_READ)
    if advice == MADV_DONTFORK:
        def dontfork(v: Vma) -> int:
            _check_discard_seal(v)
            return v.flags | VM_DONTCOPY
        return dontfork
    if advice == MADV_DOFORK:
        def dofork(v: Vma) -> int:
            if v.flags & VM_IO:
                raise _err(E.EINVAL, "MADV_DOFORK on VM_IO")
            return v.flags & ~VM_DONTCOPY
        return dofork
    if advice == MADV_WIPEONFORK:
        def wipe(v: Vma) -> int:
            _check_discard_seal(v)
            if v.file is not None or v.flags & VM_SHARED:
                raise _err(E.EINVAL, "MADV_WIPEONFORK on a file or shared mapping")
            return v.flags | VM_WIPEONFORK
        return wipe
    if advice == MADV_KEEPONFORK:
        def keep(v: Vma) -> int:
            if v.flags & VM_DROPPABLE:
                raise _err(E.EINVAL, "MADV_KEEPONFORK on VM_DROPPABLE")
            return v.flags & ~VM_WIPEONFORK
        return keep
    if advice == MADV_DONTDUMP:
        return setf(VM_DONTDUMP)
    if advice == MADV_DODUMP:
        def dodump(v: Vma) -> int:
            if v.flags & VM_SPECIAL or v.flags & VM_DROPPABLE:
                raise _err(E.EINVAL, "MADV_DODUMP on a special mapping")
            return v.flags & ~VM_DONTDUMP
        return dodump
    if advice == MADV_HUGEPAGE:
        return setf(VM_HUGEPAGE, VM_NOHUGEPAGE)
    if advice == MADV_NOHUGEPAGE:
        return setf(VM_NOHUGEPAGE, VM_HUGEPAGE)
    if advice == MADV_MERGEABLE:
        def merge(v: Vma) -> int | None:
            if v.flags & VM_KSM_INCOMPATIBLE:
                return None  # ksm_madvise(): silently ignored
            return v.flags | VM_MERGEABLE
        return merge
    if advice == MADV_UNMERGEABLE:
        return clrf(VM_MERGEABLE)
    return None  # WILLNEED, DONTNEED, FREE, COLD, PAGEOUT, COLLAPSE, REMOVE ...


_MADV_KNOWN = frozenset({
    MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_DONTNEED, MADV_FREE,
    MADV_REMOVE, MADV_DONTFORK, MADV_DOFORK, MADV_MERGEABLE, MADV_UNMERGEABLE, MADV_HUGEPAGE,
    MADV_NOHUGEPAGE, MADV_DONTDUMP, MADV_DODUMP, MADV_WIPEONFORK, MADV_KEEPONFORK, MADV_COLD,
    MADV_PAGEOUT, MADV_POPULATE_READ, MADV_POPULATE_WRITE, MADV_DONTNEED_LOCKED, MADV_COLLAPSE})


def _check_discard_seal(v: Vma) -> None:
    """can_madvise_modify(): discard advice on sealed, read-only, private anonymous memory."""
    if v.flags & VM_SEALED and v.file is None and not v.flags & (VM_WRITE | VM_SHARED):
        raise _err(E.EPERM, "discard advice on sealed read-only anonymous memory")


_MADV_DISCARD = frozenset({MADV_DONTNEED, MADV_FREE, MADV_DONTNEED_LOCKED, MADV_REMOVE})
_FLAG_FNS: dict[int, Any] = {
    a: f for a in _MADV_KNOWN if (f := _madvise_flag_fn(a)) is not None}


def refusals_has(refs: list[X.Refusal], side: str) -> bool:
    return any(r.side == side for r in refs)


def _start_gap(v: Vma) -> int:
    """vm_start_gap(): a GROWSDOWN VMA claims stack_guard_gap below its start."""
    if v.flags & VM_GROWSDOWN:
        return v.start - STACK_GUARD_GAP if v.start > STACK_GUARD_GAP else 0  # no wrap below 0
    return v.start


def _cpu_has_pku() -> bool:
    """Does this CPU and kernel have memory protection keys (ospke)?"""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return " ospke" in line or " pku " in line
    except OSError:  # pragma: no cover
        pass
    return False


def _own_soft_dirty() -> bool:
    """Does this kernel have CONFIG_MEM_SOFT_DIRTY? (any ``sd`` in our own smaps)."""
    try:
        with open("/proc/self/smaps") as f:
            return any(line.startswith("VmFlags:") and " sd" in line for line in f)
    except OSError:  # pragma: no cover
        return False
