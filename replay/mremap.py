"""mm/mremap.c: mremap(2) in both eras (before 6.16, and the 6.16 rewrite), copy_vma(),
vma_merge_extend()."""

from __future__ import annotations

import errno as E

from replay import explain as X
from replay.flags import (
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE_SHIFT,
    TASK_SIZE,
    VM_ACCOUNT,
    VM_DONTEXPAND,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_LOCKONFAULT,
    VM_MAYSHARE,
    VM_PFNMAP,
    VM_SEALED,
    VM_SHARED,
)
from replay.internal import PAGE_OFF, U64, MmCore, err
from replay.mm_types import Vma


class MremapMixin(MmCore):
    """mremap (mm/mremap.c)."""

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
                addr & U64, old_len & U64, new_len & U64, new_addr & U64)
        if not self.profile.mremap_checks_first:
            return self._mremap_old(addr, old_len, new_len, flags, new_addr)
        return self._mremap_vrm(addr, old_len, new_len, flags, new_addr)

    def _mremap_old(self, addr: int, old_len: int, new_len: int, flags: int,
                    new_addr: int) -> int:
        """Mirrors the pre-6.17 sys_mremap() / mremap_to() / vma_to_resize() order (6.16
        moves as the refactored move_vma() does, through the profile's DONTUNMAP fields)."""
        if flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP):
            raise err(E.EINVAL, "unknown flags")
        if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
            raise err(E.EINVAL, "MREMAP_FIXED without MREMAP_MAYMOVE")
        if flags & MREMAP_DONTUNMAP and (not flags & MREMAP_MAYMOVE or old_len != new_len):
            raise err(E.EINVAL, "MREMAP_DONTUNMAP needs MAYMOVE and old_len == new_len")
        if addr & PAGE_OFF:
            raise err(E.EINVAL, "address not page aligned")
        old_len = (old_len + PAGE_OFF) & ~PAGE_OFF
        new_len = (new_len + PAGE_OFF) & ~PAGE_OFF
        if not new_len:
            raise err(E.EINVAL, "new_len is 0")
        vma = self.vma_lookup(addr)
        if vma is None:
            raise err(E.EFAULT, "no VMA at old address")
        if vma.flags & VM_SEALED:
            raise err(E.EPERM, "sealed VMA")
        if flags & (MREMAP_FIXED | MREMAP_DONTUNMAP):
            # mremap_to()
            if new_addr & PAGE_OFF:
                raise err(E.EINVAL, "new address not page aligned")
            if new_len > TASK_SIZE or new_addr > TASK_SIZE - new_len:
                raise err(E.EINVAL, "new range beyond TASK_SIZE")
            if addr + old_len > new_addr and new_addr + new_len > addr:
                raise err(E.EINVAL, "old and new ranges overlap")
            if self.map_count + 2 >= self.max_map_count - 3:
                raise err(E.ENOMEM, "vm.max_map_count")
            if flags & MREMAP_FIXED:
                self._do_munmap(new_addr, new_addr + new_len)
            if old_len > new_len:
                self._munmap(addr + new_len, old_len - new_len)
                old_len = new_len
            vma = self.vma_lookup(addr)  # vma_to_resize()
            self._check_prep_vma(vma, addr, old_len, new_len, flags | MREMAP_FIXED)
            assert vma is not None
            dest = new_addr if flags & MREMAP_FIXED else self._get_unmapped_area(0, new_len)
            if self.map_count >= self.max_map_count - 3:
                raise err(E.ENOMEM, "vm.max_map_count")
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
            raise err(E.EINVAL, "unknown flags")
        if addr & PAGE_OFF:
            raise err(E.EINVAL, "address not page aligned")
        old_len = (old_len + PAGE_OFF) & ~PAGE_OFF
        new_len = (new_len + PAGE_OFF) & ~PAGE_OFF
        if not new_len or new_len > TASK_SIZE:
            raise err(E.EINVAL, "bad new_len")
        implies_new = bool(flags & (MREMAP_FIXED | MREMAP_DONTUNMAP))
        if implies_new:
            if new_addr > TASK_SIZE - new_len:
                raise err(E.EINVAL, "new range beyond TASK_SIZE")
            if new_addr & PAGE_OFF:
                raise err(E.EINVAL, "new address not page aligned")
            if not flags & MREMAP_MAYMOVE:
                raise err(E.EINVAL, "MREMAP_FIXED/DONTUNMAP without MREMAP_MAYMOVE")
            if flags & MREMAP_DONTUNMAP and old_len != new_len:
                raise err(E.EINVAL, "MREMAP_DONTUNMAP cannot resize")
            if flags & MREMAP_FIXED and new_addr < addr + old_len and addr < new_addr + new_len:
                raise err(E.EINVAL, "old and new ranges overlap")
        # check_map_count_against_split_early() / the old "map_count >= max - 3" checks
        if self.map_count >= self.max_map_count - 3:
            raise err(E.ENOMEM, "vm.max_map_count")
        if flags & MREMAP_FIXED and old_len == new_len and self.profile.mremap_multi_vma:
            return self._remap_move(addr, old_len, flags, new_addr)
        vma = self.vma_lookup(addr)
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
            raise err(E.ENOMEM, "cannot grow in place and MREMAP_MAYMOVE not given")
        dest = self._get_unmapped_area(0, new_len)
        if recheck_count and self.map_count >= self.max_map_count - 3:
            raise err(E.ENOMEM, "vm.max_map_count")
        return self._move_vma(vma, addr, old_len, new_len, dest, flags)

    def _check_prep_vma(self, vma: Vma | None, addr: int, old_len: int, new_len: int,
                        flags: int) -> None:
        """Mirrors check_prep_vma()."""
        if vma is None:
            raise err(E.EFAULT, "no VMA at old address")
        if vma.flags & VM_SEALED:
            raise err(E.EPERM, "sealed VMA")
        implies_new = bool(flags & (MREMAP_FIXED | MREMAP_DONTUNMAP))
        if not (new_len > old_len or implies_new):
            return
        if not old_len and not vma.flags & (VM_SHARED | VM_MAYSHARE):
            raise err(E.EINVAL, "old_len 0 on a private mapping")
        if flags & MREMAP_DONTUNMAP and vma.flags & (VM_DONTEXPAND | VM_PFNMAP):
            raise err(E.EINVAL, "MREMAP_DONTUNMAP on a special mapping")
        if new_len < old_len:
            old_len = new_len
        if old_len > vma.end - addr:
            raise err(E.EFAULT, "old range spans more than one VMA")
        if new_len == old_len:
            return
        if vma.flags & (VM_DONTEXPAND | VM_PFNMAP):
            raise err(E.EFAULT, "VM_DONTEXPAND/VM_PFNMAP cannot grow")

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
                raise err(E.EFAULT, "no VMA at old address")
            piece = max(v.start, start)
            plen = min(end, v.end) - piece
            if v.uffd_ctx is not None and (seen or v.end < end):
                raise err(E.EFAULT, "userfaultfd VMA in a multi-VMA move")
            self._check_prep_vma(v, piece, plen, plen, flags)
            self._mremap_to(v, piece, plen, plen, flags, new_addr + (piece - start))
            seen = True
            cur = piece + plen
        if not seen:
            raise err(E.EFAULT, "no VMA at old address")
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
            raise err(E.ENOMEM, "vma_merge_extend() failed")
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
        src = self.vma_lookup(addr)
        if src is None:  # pragma: no cover - the ranges do not overlap
            raise err(E.EFAULT, "source vanished")
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
        new_pgoff = vma.pgoff + ((addr - vma.start) >> PAGE_SHIFT)
        anon = self._anon(vma)
        if vma.file is None and not vma.flags & VM_SHARED and anon is None:
            new_pgoff = new_addr >> PAGE_SHIFT  # unfaulted anonymous: pgoff follows the address
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
                          vma.avc, vma.anon_name, vma.policy, vma.uffd_ctx, vma.has_close_hook)
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
            src = self.vma_lookup(addr)
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
