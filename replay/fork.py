"""kernel/fork.c and fs/exec.c: fork(2) (dup_mmap() + anon_vma_fork()) and execve(2)."""

from __future__ import annotations

from collections import deque
from typing import Self

from replay import explain as X
from replay.flags import VM_DONTCOPY, VM_LOCKED_MASK, VM_UFFD_FLAGS, VM_WIPEONFORK
from replay.internal import MmCore
from replay.mm_types import AnonVma, UnknownAnonVma, Vma


class ForkMixin(MmCore):
    """fork and exec."""

    def fork(self) -> Self:
        """fork(2): the child's address space (dup_mmap() + anon_vma_fork())."""
        self._begin("fork", ())
        child = type(self).__new__(type(self))
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
                    None, 0, v.anon_name, v.policy, None, v.has_close_hook, v.label)
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
