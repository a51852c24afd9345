"""mm/vma.c: the merge engine (vma_merge_new_range(), vma_merge_existing_range(), vma_modify(),
vma_expand(), vma_shrink(), split_vma()) and do_vmi_align_munmap()."""

from __future__ import annotations

import errno as E
from typing import TYPE_CHECKING

from replay import explain as X
from replay.flags import PAGE_SHIFT, VM_SEALED, VM_SPECIAL, VM_STICKY, mnemonics
from replay.internal import MmCore, err, refusals_has
from replay.mm_types import UNKNOWN, AnonVma, OpenFile, Unknown, Vma
from replay.profiles import CloseRule


class VmaMixin(MmCore):
    """The merge engine and unmapping (mm/vma.c)."""

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
                and t.uffd_ctx is uffd and not (t.has_close_hook and self._close_target)
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
        if self._close_rule is CloseRule.TARGET and t.has_close_hook:
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
        pglen = (end - start) >> PAGE_SHIFT
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
                prev, flags, file, prev.pgoff + ((prev.end - prev.start) >> PAGE_SHIFT) == pgoff,
                left_anon, src, name, policy, uffd, copied_from)
        else:
            left = prev is not None and not ((prev.flags ^ flags) & self._merge_mask) and (
                self._mergeable(
                    prev, flags, file, prev.pgoff + ((prev.end - prev.start) >> PAGE_SHIFT) == pgoff,
                    anon, src, name, policy, uffd, copied_from))
            right = (not just_expand and nxt is not None
                     and not ((nxt.flags ^ flags) & self._merge_mask) and self._mergeable(
                nxt, flags, file, pgoff + pglen == nxt.pgoff, anon, src, name, policy, uffd,
                copied_from) and (not left or self._prev_next_ok(prev, nxt)))  # type: ignore[arg-type]
        refusals: list[X.Refusal] = []
        if right and nxt.has_close_hook and rule is CloseRule.REMOVABLE:  # type: ignore[union-attr]
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
            if right and nxt.has_close_hook and rule is CloseRule.DELETION:  # type: ignore[union-attr]
                # can_merge_remove_vma(next) fails: shrink to a merge with prev only
                right = False
                if self._cur is not None:
                    refusals.append(X.Refusal("next", nxt.rng, "close",  # type: ignore[union-attr]
                                              "next would be deleted and has vm_ops->close"))
            if right:
                if TYPE_CHECKING:  # narrowing only (checked above)
                    assert nxt is not None
                self._vma_expand(target, target.start, nxt.end, target.pgoff, nxt)
                path = X.MERGE_BOTH
            else:
                self._vma_expand(target, target.start, end, target.pgoff)
                path = X.EXPAND_PREV
        else:
            if TYPE_CHECKING:  # narrowing only (checked above)
                assert nxt is not None
            target = nxt
            self._vma_expand(target, start, target.end, pgoff)
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
        pgoff = middle.pgoff + ((start - middle.start) >> PAGE_SHIFT)
        prev = middle.prev if left_side else None
        nxt = middle.next if right_side else None
        if prev is not None and prev.end != start:
            prev = None
        if nxt is not None and nxt.start != end:
            nxt = None
        rule = self._close_rule
        left = prev is not None and not ((prev.flags ^ flags) & self._merge_mask) and self._mergeable(
            prev, flags, file, prev.pgoff + ((prev.end - prev.start) >> PAGE_SHIFT) == pgoff, anon,
            middle, name, policy, uffd, None)
        right = nxt is not None and not ((nxt.flags ^ flags) & self._merge_mask) and self._mergeable(
            nxt, flags, file, pgoff + ((end - start) >> PAGE_SHIFT) == nxt.pgoff, anon, middle, name,
            policy, uffd, None) and (not left or self._prev_next_ok(prev, nxt))  # type: ignore[arg-type]
        refusals: list[X.Refusal] = []
        if self._cur is not None:
            if left_side and not left:
                refusals += self._refusals("prev", prev, flags, file, prev is not None and (
                    prev.pgoff + prev.pages == pgoff), anon, middle, name, policy, uffd, None)
            if right_side and not right:
                r = self._refusals("next", nxt, flags, file, nxt is not None and (
                    pgoff + ((end - start) >> PAGE_SHIFT) == nxt.pgoff), anon, middle, name, policy,
                    uffd, None)
                if not r and left and nxt is not None:
                    r = [X.Refusal("next", nxt.rng, "anon_vma_prev_next",
                                   "prev and next have different anon_vmas")]
                refusals += r
        remove_middle = left_side and right_side
        if right and nxt.has_close_hook and rule is CloseRule.REMOVABLE:  # type: ignore[union-attr]
            right = False
            if self._cur is not None:
                refusals.append(X.Refusal("next", nxt.rng, "close",  # type: ignore[union-attr]
                                          "next may be removed and has vm_ops->close"))
        if not left and not right:
            if self._cur is not None:
                self._step(X.NOMERGE, start, end, None, refusals)
            return None
        if remove_middle and middle.has_close_hook and rule is not CloseRule.TARGET:
            if self._cur is not None:
                refusals.append(X.Refusal("middle", middle.rng, "close",
                                          "middle would be deleted and has vm_ops->close"))
            if self._cur is not None:
                self._step(X.NOMERGE, start, end, None, refusals)
            return None
        if left and right and rule is CloseRule.DELETION and nxt.has_close_hook:  # type: ignore[union-attr]
            right = False
            if self._cur is not None:
                refusals.append(X.Refusal("next", nxt.rng, "close",  # type: ignore[union-attr]
                                          "next would be deleted and has vm_ops->close"))
        if self._fail_prealloc:
            # commit_merge()'s vma_iter_prealloc() failed: the kernel unlinks the anon_vma it
            # dup'ed into the target (unlink_anon_vmas() leaves the target unfaulted again), so
            # nothing has changed; vmg->state is VMA_MERGE_ERROR_NOMEM, callers return ENOMEM
            self._fail_prealloc = False
            raise err(E.ENOMEM, "vma_iter_prealloc() failed")
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
                middle.pgoff += (end - middle.start) >> PAGE_SHIFT
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

    def _vma_expand(self, target: Vma, start: int, end: int, pgoff: int,
                    remove_next: Vma | None = None) -> None:
        """Mirrors vma_expand(): target becomes [start, end) at pgoff, removing ``remove_next``
        (the next VMA, which the new range covers) after target takes its anon_vma
        (dup_anon_vma()) and, with sticky flags, its sticky bits.

        A failed vma_iter_prealloc() (fault injection) raises ENOMEM with nothing changed: the
        kernel undoes the anon_vma it dup'ed (unlink_anon_vmas()).
        """
        if self._fail_prealloc:
            self._fail_prealloc = False
            raise err(E.ENOMEM, "vma_iter_prealloc() failed")
        if remove_next is not None:
            self._dup_anon_vma(target, remove_next)
            if self._sticky:
                target.flags |= remove_next.flags & VM_STICKY
            self._unlink(remove_next)
        if start != target.start:
            self._index.rekey(target.start, start)  # (_set_start(), one call less: a hot path)
            target.start = start
        target.end = end
        target.pgoff = pgoff

    def _vma_shrink(self, vma: Vma, start: int, end: int, pgoff: int) -> None:
        """Mirrors vma_shrink(): vma becomes [start, end) at pgoff, a range inside its own.
        Unmapping trims a VMA's head with it where the split-off piece is freed at once."""
        if start != vma.start:
            self._index.rekey(vma.start, start)  # (_set_start(), one call less: a hot path)
            vma.start = start
        vma.end = end
        vma.pgoff = pgoff

    def _split(self, v: Vma, addr: int, *, new_below: bool = False,
               check_count: bool = True) -> Vma:
        """Mirrors __split_vma(vma, addr, new_below): a new VMA takes [v.start, addr) if
        ``new_below``, else [addr, v.end); v keeps the other part. Returns the new VMA."""
        if check_count and self.map_count >= self.max_map_count:
            raise err(E.ENOMEM, "split would exceed vm.max_map_count")
        whole_start, whole_end = v.start, v.end
        if new_below:
            new = Vma(whole_start, addr, v.pgoff, v.flags, v.file, v.anon_vma, v.avc, v.anon_name,
                      v.policy, v.uffd_ctx, v.has_close_hook, v.label)
            v.pgoff += (addr - whole_start) >> PAGE_SHIFT
            v.start = addr
            # _link(new, v.prev) with v's rekey, in one index lookup (a hot path: every flag
            # change that starts inside a VMA); new has v's flags, so sealed_ever stands
            self._index.split_below(whole_start, addr, new)
            p = new.prev = v.prev
            new.next = v
            v.prev = new
            if p is not None:
                p.next = new
            self.map_count += 1
        else:
            new = Vma(addr, whole_end, v.pgoff + ((addr - whole_start) >> PAGE_SHIFT), v.flags,
                      v.file, v.anon_vma, v.avc, v.anon_name, v.policy, v.uffd_ctx,
                      v.has_close_hook, v.label)
            v.end = addr
            self._link(new, v)
        bounds = self._nomerge_bounds
        bounds.add(addr)
        if len(bounds) > self._bounds_cap:
            self._prune_bounds()
        if self._cur is not None:
            self._step(X.SPLIT, whole_start, whole_end, None, note=f"at {addr:#x}")
        return new

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
        # as vma_modify(): the VMA itself becomes the range, new VMAs take what is around it
        if start > middle.start:
            self._split(middle, start, new_below=True)
        if end < middle.end:
            self._split(middle, end)
        if write:
            middle.flags = flags
            middle.anon_name = name
        return middle, False

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
                raise err(E.EPERM, f"sealed VMA [{first.start:#x},{first.end:#x})")
            if end < first.end and self.map_count >= self.max_map_count:
                raise err(E.ENOMEM, "munmap split would exceed vm.max_map_count")
        if self.sealed_ever:
            v: Vma | None = first
            while v is not None and v.start < end:
                if v.flags & VM_SEALED:
                    if split_first:
                        self._split(first, start, check_count=False)
                    raise err(E.EPERM, f"sealed VMA [{v.start:#x},{v.end:#x})")
                v = v.next
        cur = self._cur
        if split_first:
            if first.end > end:
                # one VMA, hole in its interior: the tail becomes a new VMA
                tail = Vma(end, first.end, first.pgoff + ((end - first.start) >> PAGE_SHIFT),
                           first.flags, first.file, first.anon_vma, first.avc, first.anon_name,
                           first.policy, first.uffd_ctx, first.has_close_hook, first.label)
                first.end = start  # (vma_shrink() of the tail: an attribute, on a hot path)
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
            first.end = start  # (vma_shrink() of the tail: an attribute, on a hot path)
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
            self._vma_shrink(v, end, v.end, v.pgoff + ((end - v.start) >> PAGE_SHIFT))
        if count:
            self._unlink_run(head, last, count)  # type: ignore[arg-type]
        if self.guard_pages:
            self._drop_guards(start, end)
        return prev
