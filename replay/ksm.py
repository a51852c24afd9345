"""mm/ksm.c: prctl(PR_SET_MEMORY_MERGE) (ksm_enable_merge_any()/ksm_disable_merge_any())."""

from __future__ import annotations

from replay import explain as X
from replay.flags import VM_KSM_INCOMPATIBLE, VM_MERGEABLE
from replay.internal import MmCore


class KsmMixin(MmCore):
    """KSM merge-any (mm/ksm.c)."""

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
