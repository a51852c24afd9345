"""What every file of the model shares (the role of the kernel's mm/internal.h): the address
space's state (:class:`MmCore`: the fields of struct mm_struct the model keeps, the VMA index and
list, the explanation being built), the lookups (find_vma(), vma_lookup(), vma_prev()), linking
and unlinking VMAs, the /proc views, and small helpers.

:class:`replay.AddressSpace` is :class:`MmCore` plus one mixin per kernel file (replay/vma.py for
mm/vma.c, replay/mmap.py for mm/mmap.c, ...): a method lives in the file named after the kernel
file that holds its kernel function, and calls between the files are plain method calls on
``self`` (no wrapper frame).
"""

from __future__ import annotations

import errno as E
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from replay import explain as X
from replay.flags import (
    DEFAULT_MAX_MAP_COUNT,
    DEFAULT_MMAP_BASE,
    PAGE_SHIFT,
    PAGE_SIZE,
    STACK_GUARD_GAP,
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_GROWSDOWN,
    VM_SEALED,
    VM_SOFTDIRTY,
    VM_STICKY,
    mnemonics,
    perms,
)
from replay.mm_types import UNKNOWN, AnonVma, OpenFile, Unknown, Vma, VmaView
from replay.profiles import AnonRule, CloseRule, KernelProfile, get_profile
from replay.ranges import Ranges
from replay.tree import VmaIndex

__all__ = ["BOUNDS_CAP_MIN", "PAGE_OFF", "U64", "MmCore", "err", "page_align", "refusals_has",
           "vm_start_gap"]

PAGE_OFF = PAGE_SIZE - 1  # the offset bits of an address within its page
U64 = (1 << 64) - 1  # the kernel's unsigned long
BOUNDS_CAP_MIN = 4096  # the no-merge boundary set is pruned when it grows past max(this, 4x)


def page_align(x: int) -> int:
    return (x + PAGE_OFF) & ~PAGE_OFF


def err(code: int, what: str) -> OSError:
    return OSError(code, f"{E.errorcode.get(code, code)}: {what}")


def refusals_has(refs: list[X.Refusal], side: str) -> bool:
    return any(r.side == side for r in refs)


def vm_start_gap(v: Vma) -> int:
    """vm_start_gap(): a GROWSDOWN VMA claims stack_guard_gap below its start."""
    if v.flags & VM_GROWSDOWN:
        return v.start - STACK_GUARD_GAP if v.start > STACK_GUARD_GAP else 0  # no wrap below 0
    return v.start


class MmCore:
    """One process address space: state, lookups, links, views. See :class:`replay.AddressSpace`
    for the constructor's parameters."""

    def __init__(self, kernel: str | KernelProfile = "6.19", *, mmap_base: int = DEFAULT_MMAP_BASE,
                 explain: bool = True, history: int = 0, soft_dirty: bool | None = None,
                 overcommit_memory: int = 0, thp: str = "madvise",
                 max_map_count: int = DEFAULT_MAX_MAP_COUNT, pkeys: bool = False,
                 sticky: bool | None = None) -> None:
        # what resolved the profile found out (replay.live.live_address_space() fills it in)
        self.profile_findings: list[str] = []
        if isinstance(kernel, KernelProfile):
            profile = kernel
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
        self._bounds_cap = BOUNDS_CAP_MIN  # prune the set when it grows past this
        self._cur: X.Explanation | None = None
        # fault injection (the kernel's userland tests' fail_prealloc): the next
        # vma_iter_prealloc() of a merge or an expansion fails with ENOMEM
        self._fail_prealloc = False

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

    def vma_lookup(self, addr: int) -> Vma | None:
        """vma_lookup(): the VMA containing ``addr``, or None."""
        v: Vma | None = self._index.floor(addr)
        if v is not None and v.end > addr:
            return v
        return None

    def find_vma(self, addr: int) -> Vma | None:
        """find_vma(): the first VMA that ends above ``addr`` (the one containing it, else the next
        one), or None. The model's own code calls the index directly (``self._find``)."""
        return self._find(addr)

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

    def _gather(self, start: int, end: int) -> list[Vma]:
        out = []
        v = self._find(start)
        while v is not None and v.start < end:
            out.append(v)
            v = v.next
        return out

    def vmas(self) -> list[VmaView]:
        """All VMAs, sorted by address, as immutable views."""
        return [self._view(v) for v in self._index]

    def _view(self, v: Vma) -> VmaView:
        vmf = mnemonics(v.flags, soft_dirty=self.soft_dirty)
        if "lf" in vmf and self.profile.lockonfault_mnemonic != "lf":
            vmf = (vmf - {"lf"}) | {self.profile.lockonfault_mnemonic}
        return VmaView(v, vmf, self._vma_name(v))

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
            off = (v.pgoff << PAGE_SHIFT) if f is not None else 0
            dev = f.dev if f is not None else "00:00"
            ino = f.ino if f is not None else 0
            name = self._vma_name(v) or ""
            line = f"{v.start:x}-{v.end:x} {perms(v.flags)} {off:08x} {dev} {ino}"
            out.append(f"{line:<73}{name}" if name else f"{line} ")
        return out

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

    def _prune_bounds(self) -> None:
        """Forget no-merge boundaries that are no longer between two VMAs, so that the set stays
        O(VMAs) over a long replay (a later boundary at the same address is a new one)."""
        live: set[int] = set()
        for v in self._index:
            live.add(v.start)
            live.add(v.end)
        self._nomerge_bounds &= live
        self._bounds_cap = max(BOUNDS_CAP_MIN, 4 * len(self._nomerge_bounds))

    def _drop_guards(self, start: int, end: int) -> None:
        self.guard_pages.remove(start, end)

    # ------------------------------------------------------------------ across the files
    # What one file's code calls in another (as mm/internal.h declares it for mm/); mypy checks
    # that each mixin's definition matches. Nothing here exists at run time.
    if TYPE_CHECKING:  # pragma: no cover
        # vma.py
        def _merge_new_range(self, start: int, end: int, flags: int, file: OpenFile | None,
                             pgoff: int, anon: AnonVma | None, name: str | None, policy: object,
                             uffd: object, prev: Vma | None, nxt: Vma | None, *,
                             just_expand: bool = False, copied_from: Vma | None = None,
                             src: Vma | None = None, legacy_mmap: bool = False) -> Vma | None: ...

        def _merge_existing_range(self, middle: Vma, start: int, end: int, flags: int,
                                  name: str | None, policy: object, uffd: object,
                                  anon: AnonVma | Unknown | None = UNKNOWN) -> Vma | None: ...

        def _dup_anon_vma(self, dst: Vma, src: Vma) -> None: ...

        def _split(self, v: Vma, addr: int, *, new_below: bool = False,
                   check_count: bool = True) -> Vma: ...

        def _vma_expand(self, target: Vma, start: int, end: int, pgoff: int,
                        remove_next: Vma | None = None) -> None: ...

        def _vma_shrink(self, vma: Vma, start: int, end: int, pgoff: int) -> None: ...

        def _vma_modify(self, middle: Vma, start: int, end: int, flags: int, name: str | None, *,
                        write: bool = True) -> tuple[Vma, bool]: ...

        def _do_munmap(self, start: int, end: int, first: Vma | None = None) -> Vma | None: ...

        # memory.py
        def _anon_vma_prepare(self, v: Vma) -> None: ...

        def _populate(self, start: int, end: int, write: bool | None = None, *,
                      strict: bool = False) -> None: ...

        def _read_fault(self, v: Vma, addr: int) -> None: ...

        @staticmethod
        def _beyond_eof(v: Vma, end: int) -> bool: ...

        # mmap.py
        def _munmap(self, addr: int, length: int) -> None: ...

        def _get_unmapped_area(self, hint: int, length: int, align: int = 0) -> int: ...

        def _expand_downwards(self, v: Vma, addr: int) -> None: ...

        # madvise.py
        def _walk_modify(self, start: int, end: int, compute: Any, *, name_change: bool = False,
                         new_name: str | None = None, stop_at_hole: bool = False,
                         first: Vma | None = None) -> bool: ...

        def _walk_nochange(self, start: int, end: int, vmas: list[Vma] | None = None) -> bool: ...
