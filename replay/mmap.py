"""mm/mmap.c: mmap(2), munmap(2), brk(2), the top-down unmapped-area search and stack growth."""

from __future__ import annotations

import errno as E

from replay import explain as X
from replay.flags import (
    EXEC_ONLY_PKEY_BITS,
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
    MMAP_MIN_ADDR,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SIZE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    STACK_GUARD_GAP,
    TASK_SIZE,
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_DATA_DEFAULT_FLAGS,
    VM_DONTDUMP,
    VM_DROPPABLE,
    VM_GROWSDOWN,
    VM_KSM_INCOMPATIBLE,
    VM_LOCKED,
    VM_LOCKONFAULT,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_MERGEABLE,
    VM_NOHUGEPAGE,
    VM_NORESERVE,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_WIPEONFORK,
    VM_WRITE,
)
from replay.internal import PAGE_OFF, U64, MmCore, err, page_align, vm_start_gap
from replay.mm_types import OpenFile, Vma, new_id

MAX_LFS_FILESIZE = (1 << 63) - 1  # include/linux/fs.h
_PROT_RWX = PROT_READ | PROT_WRITE | PROT_EXEC
_VM_MAY_RWX = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC


class MmapMixin(MmCore):
    """mmap, munmap, brk, get_unmapped_area, expand_downwards (mm/mmap.c)."""

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1,
             offset: int = 0) -> int:
        """mmap(2) (do_mmap() + __mmap_region()). Returns the address."""
        if not self.explain:
            return self._mmap(addr, length, prot, flags, fd, offset)
        return self._run("mmap", (addr, length, prot, flags, fd, offset), self._mmap, addr,
                         length, prot, flags, fd, offset)

    def _mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        if (addr | length | offset) < 0:  # the kernel's unsigned long view of a negative value
            addr, length, offset = addr & U64, length & U64, offset & U64
        # the checks in the order of sys_mmap(), ksys_mmap_pgoff() and do_mmap()
        if offset & PAGE_OFF:
            raise err(E.EINVAL, "offset not page aligned")
        if flags & MAP_ANONYMOUS:
            anonymous = True
            file: OpenFile | None = None
        else:
            anonymous = False
            file = self.files.get(fd)
            if file is None:
                raise err(E.EBADF, f"fd {fd}")
        if flags & MAP_HUGETLB and not anonymous:
            raise err(E.EINVAL, "MAP_HUGETLB of a file that is not on hugetlbfs")
        if not length:
            raise err(E.EINVAL, "length is 0")
        if flags & MAP_HUGETLB:
            # ksys_mmap_pgoff() sets up a hugetlbfs file; the model has no huge page pool (as
            # vm.nr_hugepages=0): a fixed address that is not huge-page aligned is refused by
            # hugetlb_get_unmapped_area(), anything else when hugetlb_reserve_pages() fails
            if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) and addr & (PMD_SIZE - 1):
                raise err(E.EINVAL, "MAP_HUGETLB at an address not aligned to the huge page")
            raise err(E.ENOMEM, "MAP_HUGETLB: no huge pages reserved")
        length = (length + PAGE_OFF) & ~PAGE_OFF
        if length > TASK_SIZE:
            raise err(E.ENOMEM, "length too large")
        # (do_mmap()'s pgoff overflow check cannot fire: offset and length are below 2**64)
        pgoff = offset >> PAGE_SHIFT
        if self.map_count > self.max_map_count:
            raise err(E.ENOMEM, "vm.max_map_count reached")
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
            vm_flags |= EXEC_ONLY_PKEY_BITS  # execute_only_pkey()
        mtype = flags & MAP_TYPE
        # placement: __get_unmapped_area()
        if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
            if addr & PAGE_OFF:
                raise err(E.EINVAL, "MAP_FIXED address not page aligned")
            if addr + length > TASK_SIZE:
                raise err(E.ENOMEM, "beyond TASK_SIZE")
            if addr < MMAP_MIN_ADDR:
                raise err(E.EPERM, "below vm.mmap_min_addr")
            if flags & MAP_FIXED_NOREPLACE:
                v = self._find(addr)
                if v is not None and v.start < addr + length:
                    raise err(E.EEXIST, "MAP_FIXED_NOREPLACE over an existing mapping")
        else:
            align = 0
            if (self.profile.thp_align_anon and anonymous and mtype == MAP_PRIVATE
                    and not length % PMD_SIZE and not (addr and self._gap_ok(
                        page_align(addr), length))):
                align = PMD_SIZE
            addr = self._get_unmapped_area(addr, length, align)
        # the mapping type (do_mmap()'s switch)
        if file is not None:
            # file_mmap_ok(): the range must end below the largest file offset
            if length > MAX_LFS_FILESIZE or pgoff > (MAX_LFS_FILESIZE - length) >> PAGE_SHIFT:
                raise err(E.EOVERFLOW, "offset + length beyond MAX_LFS_FILESIZE")
            if mtype in (MAP_SHARED, MAP_SHARED_VALIDATE):
                if mtype == MAP_SHARED_VALIDATE and flags & ~MAP_KNOWN & ~MAP_TYPE:
                    raise err(E.EOPNOTSUPP, "unknown flags with MAP_SHARED_VALIDATE")
                if flags & MAP_SYNC and mtype == MAP_SHARED_VALIDATE:
                    raise err(E.EOPNOTSUPP, "MAP_SYNC needs DAX")
                if prot & PROT_WRITE and not file.writable:
                    raise err(E.EACCES, "shared writable mapping of a read-only file")
                vm_flags |= VM_SHARED | VM_MAYSHARE
                if not file.writable:
                    vm_flags &= ~(VM_MAYWRITE | VM_SHARED)
                mtype = MAP_SHARED
            elif mtype != MAP_PRIVATE:
                raise err(E.EINVAL, "bad mapping type for a file")
            if not file.readable:
                raise err(E.EACCES, "file not open for reading")
        elif mtype == MAP_PRIVATE:
            pgoff = addr >> PAGE_SHIFT
        elif mtype == MAP_SHARED:
            if vm_flags & VM_GROWSDOWN:
                raise err(E.EINVAL, "shared GROWSDOWN")
            vm_flags |= VM_SHARED | VM_MAYSHARE
            pgoff = 0
        elif mtype == MAP_DROPPABLE:
            vm_flags |= VM_WIPEONFORK | VM_DROPPABLE | VM_DONTDUMP | VM_NORESERVE
            pgoff = addr >> PAGE_SHIFT
        else:
            raise err(E.EINVAL, "bad mapping type")
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
            file = OpenFile("/dev/zero (deleted)", dev="00:01", ino=new_id(), shmem=True,
                            size=length >> PAGE_SHIFT)
        else:
            file_for_merge = file
        close = file.has_close_hook if file is not None else False
        v: Vma | None = None
        if not close or not self._close_target:
            v = self._merge_new_range(addr, end, vm_flags, file_for_merge, pgoff, None, None,
                                      None, None, prev, nxt,
                                      legacy_mmap=self._legacy_mmap)
        if shared_anon and v is not None:  # pragma: no cover - cannot merge (file differs)
            v = None
        if v is None:
            v = Vma(addr, end, pgoff, vm_flags, file, has_close_hook=close)
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

    def munmap(self, addr: int, length: int) -> None:
        """munmap(2). Never merges the neighbours afterwards."""
        if not self.explain:
            return self._munmap(addr, length)
        return self._run("munmap", (addr, length), self._munmap, addr, length)

    def _munmap(self, addr: int, length: int) -> None:
        if (addr | length) < 0:  # the kernel's unsigned long view of a negative value
            addr, length = addr & U64, length & U64
        if addr & PAGE_OFF or addr > TASK_SIZE or length > TASK_SIZE - addr:
            raise err(E.EINVAL, "bad range")
        length = (length + PAGE_OFF) & ~PAGE_OFF
        if not length:
            raise err(E.EINVAL, "length is 0")
        self._do_munmap(addr, addr + length)

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
            raise err(E.ENOMEM, "length exceeds TASK_SIZE")
        if hint:
            hint = page_align(hint)
            if TASK_SIZE - length >= hint and hint >= MMAP_MIN_ADDR and self._gap_ok(hint,
                                                                                      length):
                return hint
        low = max(PAGE_SIZE, MMAP_MIN_ADDR)
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
            upper = min(high, vm_start_gap(v))
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
            upper = min(upper, vm_start_gap(cur))
            cur = cur.prev
        # fallback: bottom-up from TASK_UNMAPPED_BASE
        addr = page_align(TASK_SIZE // 3)
        while addr + length <= TASK_SIZE:
            v = self._find(addr)
            if v is None or vm_start_gap(v) >= addr + length:
                return addr
            addr = v.end
        raise err(E.ENOMEM, "no unmapped area")

    def grow_stack(self, addr: int) -> None:
        """expand_stack(): grow the GROWSDOWN VMA above addr down to cover it."""
        def go() -> None:
            v = self._find(addr)
            if v is None or not v.flags & VM_GROWSDOWN:
                raise err(E.EFAULT, "no GROWSDOWN VMA above")
            if v.start > addr:
                self._expand_downwards(v, addr)
        self._run("grow_stack", (addr,), go)

    def _expand_downwards(self, v: Vma, addr: int) -> None:
        """Mirrors expand_downwards(): never merges; always ensures an anon_vma."""
        addr &= ~PAGE_OFF
        if addr < MMAP_MIN_ADDR:
            raise err(E.EPERM, "below mmap_min_addr")
        prev = v.prev
        if prev is not None and not prev.flags & VM_GROWSDOWN and prev.flags & VM_ACCESS_FLAGS \
                and addr - prev.end < STACK_GUARD_GAP:
            raise err(E.ENOMEM, "stack_guard_gap to the previous VMA")
        if prev is not None and prev.end > addr:
            raise err(E.ENOMEM, "would overlap the previous VMA")
        self._anon_vma_prepare(v)
        grow = (v.start - addr) >> PAGE_SHIFT
        old = v.start
        self._set_start(v, addr)
        v.pgoff -= grow
        self._nomerge_bounds.add(addr)
        if self._cur is not None:
            self._step(X.STACK_GROW, addr, old, v)

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
        brk &= U64  # the kernel's unsigned long view of a negative value
        if self.start_brk is None:
            return self.cur_brk
        if brk < self.start_brk:
            return self.cur_brk
        newbrk = page_align(brk)
        oldbrk = page_align(self.cur_brk)
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
        if nxt is not None and nxt.start < newbrk + PAGE_SIZE + STACK_GUARD_GAP and \
                newbrk + PAGE_SIZE > vm_start_gap(nxt):
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
            v = self._merge_new_range(addr, end, flags, None, addr >> PAGE_SHIFT, None, None, None,
                                      None, vma, vma.next, just_expand=True)
        if v is None:
            # a new VMA with no merge attempt at all (not even with a mergeable prev)
            prev = self._prev_of(addr)
            v = Vma(addr, end, addr >> PAGE_SHIFT, flags)
            self._link(v, prev)
            self._nomerge_bounds.update((addr, end))
            if self._cur is not None:
                self._step(X.NEW_VMA, addr, end, v)
        if self.soft_dirty:
            v.flags |= VM_SOFTDIRTY
