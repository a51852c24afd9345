"""The trace replay engine: a recorded trace fed through the model, one profile at a time.

For each process of the trace (docs/replay.md has the whole story):

* its model is seeded at its first exact state: the snapshot after its exec (or at attach), with
  the brk base; a fork child continues from its parent's model at the fork event instead (its own
  start snapshot cannot show that its VMAs are forked); threads share their process's model; an
  exec starts again from the post-exec snapshot;
* every event is applied in trace order; the kernel's own result decides where a non-fixed mmap
  or a moving mremap landed and whether a call failed, and a model that disagrees on success or
  errno is reported as a result mismatch;
* at every later snapshot the model is compared with the real layout region by region (at a deep
  snapshot also on anon_vma sharing and fork-child status), each divergence gets the events that
  touched its region and a probable cause, and the model is rebuilt from the snapshot (a resync)
  so that one divergence does not cascade; a deep snapshot's hidden state is taken as it is.

The engine reads the trace format and the model only: it never imports a collector.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import os
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import polars as pl

from replay.flags import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_PRIVATE,
    MAP_TYPE,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PR_SET_MEMORY_MERGE,
    PR_SET_VMA,
    PR_SET_VMA_ANON_NAME,
    PROT_WRITE,
    TASK_SIZE,
    VM_GROWSDOWN,
    VM_MAYSHARE,
    VM_SHARED,
    VM_SOFTDIRTY,
)
from replay.mm import AddressSpace
from replay.mm_types import OpenFile, Unknown, VmaView
from replay.profiles import AnonRule, KernelProfile, get_profile
from replay.results import (
    CAUSE_LOST,
    CAUSE_NOT_COVERED,
    CAUSE_PROFILE,
    CAUSE_RACED,
    CAUSE_RESULT,
    CAUSE_STACK,
    CAUSE_UNKNOWN_ANON,
    CAUSE_UNTRACED,
    Divergence,
    FixEvent,
    FixFigures,
    ProcessRun,
    ProfileRun,
    RealProcess,
    ReplayResult,
    ResultMismatch,
)
from vmatrace.base.errors import UsageError, VmatraceError
from vmatrace.base.events import EVENT_KINDS
from vmatrace.base.trace import Trace

__all__ = ["ProfileSpec", "apply_what_if", "default_profiles", "replay_trace"]

_PAGE = 4096
_U64 = (1 << 64) - 1
# Calls the model does not replay (their effect is only seen at the next snapshot).
_NOT_COVERED = frozenset({"shmat", "shmdt", "process_madvise"})
_IGNORED = frozenset({"execve", "exit_group", "exit"})
_EVENTS_KEPT = 8  # event seqs listed per divergence
_SOFT_DIRTY = VM_SOFTDIRTY
_FLAGS_IGNORED = frozenset({"sd"})  # soft-dirty: a kernel config, never a merge decision


# ---------------------------------------------------------------------------------------------
# Profiles


@dataclass(frozen=True)
class ProfileSpec:
    """A profile to replay under, with the label it is reported by.

    The *judged* profile (the recording kernel's, or the first ``--kernel``) is resynced from every
    snapshot it disagrees with, so that one divergence does not cascade. The others run free from
    their seeds: they answer "what would this kernel have done with the same calls", so the real
    kernel's layout must not be forced on them; their divergences are counted all the same.
    """

    label: str
    profile: KernelProfile
    judged: bool = False


def apply_what_if(profile: KernelProfile, assignments: Sequence[str]) -> KernelProfile:
    """``profile`` with fields changed by ``NAME=VALUE`` strings (the ``--what-if`` option).

    Values are parsed by the field's type: booleans (``true/false/1/0/yes/no``), enums by value
    or name, strings as given. An unknown field or a bad value is a :class:`UsageError`.
    """
    fields = {f.name: f for f in dataclasses.fields(KernelProfile)}
    changes: dict[str, Any] = {}
    for a in assignments:
        name, sep, raw = a.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise UsageError(f"--what-if {a!r}: expected NAME=VALUE")
        if name not in fields or name == "name":
            known = ", ".join(n for n in fields if n != "name")
            raise UsageError(f"--what-if {name!r}: not a profile field (fields: {known})")
        current = getattr(profile, name)
        raw = raw.strip()
        value: Any
        if isinstance(current, bool):
            low = raw.lower()
            if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise UsageError(f"--what-if {name}={raw!r}: expected true or false")
            value = low in ("true", "1", "yes", "on")
        elif isinstance(current, Enum):
            enum_t = type(current)
            try:
                value = enum_t(raw.lower())
            except ValueError:
                try:
                    value = enum_t[raw.upper()]
                except KeyError:
                    choices = ", ".join(str(m.value) for m in enum_t)
                    raise UsageError(f"--what-if {name}={raw!r}: expected one of {choices}") from None
        elif isinstance(current, int):
            try:
                value = int(raw, 0)
            except ValueError:
                raise UsageError(f"--what-if {name}={raw!r}: expected an integer") from None
        else:
            value = raw
        changes[name] = value
    if not changes:
        return profile
    desc = ",".join(f"{k}={v.value if hasattr(v, 'value') else v}" for k, v in changes.items())
    return dataclasses.replace(profile, name=f"{profile.name}+what-if({desc})", **changes)


def recording_profile(meta: dict[str, Any]) -> tuple[KernelProfile | None, str]:
    """The profile of the kernel that recorded the trace, and how it was chosen.

    The recorder stores the live kernel's probed behaviour (``meta.kernel_probe``) where it could
    probe it; otherwise the release is looked up in the profile table.
    """
    probe = meta.get("kernel_probe")
    release = meta.get("kernel_release")
    if isinstance(probe, dict) and isinstance(probe.get("profile"), str):
        try:
            base = get_profile(probe["profile"], sticky=probe.get("sticky"))
            return base, f"probed on the recording kernel {release}"
        except ValueError:
            pass
    if isinstance(release, str) and release not in ("", "unknown"):
        try:
            return get_profile(release), f"release table for {release} (no probe in the trace)"
        except ValueError as e:
            return None, f"kernel {release!r}: {e}"
    return None, "the trace does not name its kernel"


def without_fix(profile: KernelProfile) -> KernelProfile:
    """``profile`` with the anon_vma rule from before 879bca0a2c4f (the counterfactual)."""
    return dataclasses.replace(profile, name=f"{profile.name}-without-879bca0a2c4f", anon_rule=AnonRule.OLD)


def with_fix(profile: KernelProfile) -> KernelProfile:
    return dataclasses.replace(profile, name=f"{profile.name}+879bca0a2c4f", anon_rule=AnonRule.NEW)


def default_profiles(meta: dict[str, Any], kernels: Sequence[str] = (),
                     what_if: Sequence[str] = ()) -> tuple[list[ProfileSpec], tuple[str, str], list[str]]:
    """The profiles to replay under, the (without fix, with fix) pair, and notes.

    With no ``kernels``: the recording kernel's profile (6.19 when the trace does not say), a
    pre-6.16 profile (6.15), and the counterfactual of the recording profile with the other
    anon_vma rule, so that the fix is measured on exactly the recording kernel's other behaviour.
    With ``kernels``, those; the first one is the base of the fix pair and of ``what_if``.
    """
    notes: list[str] = []
    specs: list[ProfileSpec] = []
    if kernels:
        for k in kernels:
            try:
                specs.append(ProfileSpec(k, get_profile(k), judged=not specs))
            except ValueError as e:
                raise UsageError(f"--kernel {k}: {e}") from None
        base = specs[0].profile
    else:
        rec, how = recording_profile(meta)
        notes.append(f"recording kernel's profile: {how}")
        base = rec if rec is not None else get_profile("6.19")
        specs.append(ProfileSpec(f"{base.name} (recording kernel)" if rec is not None else base.name, base,
                                 judged=True))
        if base.name != "6.15":
            specs.append(ProfileSpec("6.15", get_profile("6.15")))
    if what_if:
        wi = apply_what_if(base, what_if)
        specs.append(ProfileSpec(wi.name, wi))
    if base.anon_rule is AnonRule.NEW:
        other = ProfileSpec(f"{base.name} without the fix", without_fix(base))
        pair = (other.label, specs[0].label)
    else:
        other = ProfileSpec(f"{base.name} with the fix", with_fix(base))
        pair = (specs[0].label, other.label)
    specs.append(other)
    return specs, pair, notes


# ---------------------------------------------------------------------------------------------
# The plan: which events and snapshots belong to which process, in which order (profile-free)


@dataclass
class _Snap:
    sid: int
    reason: str
    t_start: int
    t_end: int
    pos: int  # the snapshot follows this many of the process's events
    rows: list[tuple[int, int, str, str | None, str | None, int]] | None = None  # lazily
    hidden: dict[int, tuple[int, int | None, bool, int]] | None = None  # deep: start -> (end, anon_vma_id, fork child, avc)
    start_brk: int | None = None
    brk: int | None = None


@dataclass
class _Proc:
    pid: int
    comm: str
    events: Any = None  # numpy int64 array: the process's rows of the events table, in seq order
    snaps: list[_Snap] = field(default_factory=list)
    parent: int | None = None  # forked from (a fork event in the parent's stream)
    fork_row: int | None = None
    vfork_shared: bool = False


class _Rows:
    """A snapshot frame as plain Python rows, with the two members the model's snapshot code uses
    (``columns``, ``to_dicts()``): replay workers are forked processes, and polars must not run in
    a child forked from a process whose polars threads hold locks."""

    __slots__ = ("columns", "deep", "rows")

    def __init__(self, frame: pl.DataFrame) -> None:
        self.columns = list(frame.columns)
        self.rows = frame.to_dicts()
        # a deep snapshot (record --deep): its hidden-state columns are filled (a plain snapshot of
        # a trace that also has deep ones carries them all null)
        self.deep = "anon_vma_id" in self.columns and bool(self.rows) and self.rows[0].get("vm_flags") is not None

    def to_dicts(self) -> list[dict[str, Any]]:
        return self.rows


# Kind codes of the plan's numpy columns (the order of the base layer's vocabulary, then unknown).
_KIND_NAMES: tuple[str, ...] = (*EVENT_KINDS, "unknown")
_K = {k: i for i, k in enumerate(_KIND_NAMES)}
_K_FAULT, _K_MMAP, _K_MUNMAP, _K_MPROTECT = _K["fault"], _K["mmap"], _K["munmap"], _K["mprotect"]
_K_MADVISE, _K_MREMAP, _K_BRK, _K_FORK, _K_EXEC = _K["madvise"], _K["mremap"], _K["brk"], _K["fork"], _K["exec"]
_K_IGNORED = frozenset(_K[k] for k in _IGNORED)
_CHUNK = 1 << 16  # events decoded to Python values at a time


@dataclass
class _Plan:
    """The trace as the replay needs it, in numpy columns (no Python object per event, so that a
    forked worker shares them with its parent) and sparse dicts for the rare string values."""

    cols: dict[str, Any]  # seq, ts_ns, pid, kind (codes), a0..a5, ret, stack_id (-1: none)
    sparse: dict[str, dict[int, Any]]  # text, file_id, file_dev, file_ino, file_path: row -> value
    procs: dict[int, _Proc]
    order: list[int]  # parents before children
    frames: dict[int, _Rows]
    losses: list[tuple[int, int, int]]
    meta: dict[str, Any]
    has_file_ids: bool

    def kind(self, row: int) -> str:
        return _KIND_NAMES[int(self.cols["kind"][row])]


def _plan(trace: Trace) -> _Plan:
    import numpy as np

    ev = trace.events
    cols: dict[str, Any] = {}
    for c in ("seq", "ts_ns", "a0", "a1", "a2", "a3", "a4", "a5"):
        cols[c] = ev.get_column(c).fill_null(0).cast(pl.UInt64).to_numpy()
    cols["pid"] = ev.get_column("pid").fill_null(0).cast(pl.Int64).to_numpy()
    cols["ret"] = ev.get_column("ret").fill_null(0).cast(pl.Int64).to_numpy()
    cols["stack_id"] = ev.get_column("stack_id").fill_null(-1).cast(pl.Int64).to_numpy()
    cols["kind"] = (ev.get_column("kind").replace_strict(_K, default=_K["unknown"], return_dtype=pl.UInt8)
                    .to_numpy() if ev.height else np.zeros(0, np.uint8))
    sparse: dict[str, dict[int, Any]] = {}
    for name in ("text", "file_id", "file_dev", "file_ino", "file_path"):
        if name in ev.columns:
            nn = ev.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("i"), pl.col(name)).filter(
                pl.col(name).is_not_null())
            sparse[name] = dict(zip(nn["i"].to_list(), nn[name].to_list(), strict=True))
        else:
            sparse[name] = {}
    has_file_ids = bool(sparse["file_id"])
    comms: dict[int, str] = {}
    for r in trace.procs.iter_rows(named=True):
        comms[int(r["pid"])] = r["comm"] or ""
    procs: dict[int, _Proc] = {}

    def proc(pid: int) -> _Proc:
        p = procs.get(pid)
        if p is None:
            p = procs[pid] = _Proc(pid, comms.get(pid, ""), np.zeros(0, np.int64))
        return p

    pids = cols["pid"]
    if len(pids):
        order_rows = np.argsort(pids, kind="stable")
        uniq, starts = np.unique(pids[order_rows], return_index=True)
        bounds = [*starts.tolist(), len(order_rows)]
        for k, pid in enumerate(uniq.tolist()):
            proc(int(pid)).events = order_rows[bounds[k]:bounds[k + 1]].astype(np.int64)
    for i in np.nonzero(cols["kind"] == _K_FORK)[0].tolist():
        parent, child = int(pids[i]), int(cols["a1"][i])
        if child != parent:  # a thread of the same process shares its model
            cp = proc(child)
            if cp.parent is None:
                cp.parent, cp.fork_row = parent, i
                cp.vfork_shared = bool(cols["a2"][i])
    # snapshots, placed in their process's event stream
    recon_after = [(rc["pid"], rc["after_seq"]) for rc in trace.meta.get("reconstructions") or []
                   if isinstance(rc, dict) and isinstance(rc.get("pid"), int) and isinstance(rc.get("after_seq"), int)]
    idx = trace.snapshot_index.sort("snapshot_id")
    frames: dict[int, _Rows] = {}
    has_brk = "start_brk" in idx.columns
    rows_of: dict[int, int] = (dict(trace.snapshots.group_by("snapshot_id").len().iter_rows())
                               if trace.snapshots.height else {})
    used_after: set[tuple[int, int]] = set()
    for r in idx.iter_rows(named=True):
        pid, sid = int(r["pid"]), int(r["snapshot_id"])
        if r["vma_count"] is not None and rows_of.get(sid, 0) != int(r["vma_count"]):
            continue  # not a whole state: its rows were in a damaged chunk (read_trace warned)
        p = proc(pid)
        t0 = int(r["t_start_ns"] or 0)
        t1 = int(r["t_end_ns"] or t0)
        seqs_p = cols["seq"][p.events]
        after = None
        if r["method"] == "elf-reconstruction":
            after = next((a for a in recon_after if a[0] == pid and a not in used_after), None)
        if after is not None:
            used_after.add(after)
            pos = int(np.searchsorted(seqs_p, after[1], side="right"))
        else:
            # timestamps follow seq closely but not exactly (seq is the mmap_lock order): the
            # snapshot follows the last event that happened before its read began
            hits = np.nonzero(cols["ts_ns"][p.events] <= t0)[0]
            pos = int(hits[-1]) + 1 if len(hits) else 0
        s = _Snap(sid, str(r["reason"]), t0, t1, pos)
        if has_brk:
            s.start_brk, s.brk = r.get("start_brk"), r.get("brk")
        p.snaps.append(s)
    for p in procs.values():
        p.snaps.sort(key=lambda s: (s.pos, s.t_start, s.sid))
    if trace.snapshots.height:
        for (sid,), f in trace.snapshots.partition_by("snapshot_id", as_dict=True).items():
            frames[int(sid)] = _Rows(f.sort("start"))
    order = _tree_order(procs)
    losses = [(int(r["count"]), int(r["t_from_ns"] or 0), int(r["t_to_ns"] or 0))
              for r in trace.losses.iter_rows(named=True)]
    return _Plan(cols, sparse, procs, order, frames, losses, trace.meta, has_file_ids)


def _tree_order(procs: dict[int, _Proc]) -> list[int]:
    kids: dict[int, list[int]] = {}
    roots = []
    for pid, p in procs.items():
        if p.parent is not None and p.parent in procs and p.parent != pid:
            kids.setdefault(p.parent, []).append(pid)
        else:
            roots.append(pid)
    out: list[int] = []
    seen: set[int] = set()
    stack = sorted(roots, reverse=True)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        stack.extend(sorted(kids.get(pid, []), reverse=True))
    out += [pid for pid in procs if pid not in seen]  # a fork cycle cannot happen; be safe
    return out


def _event_range(kind: int, a0: int, a1: int, a2: int, a3: int, ret: int) -> tuple[int, ...] | None:
    """The address range(s) an event touched, for naming the events behind a divergence."""
    if kind == _K_FAULT:
        lo = a0 & ~(_PAGE - 1)
        return (lo, lo + _PAGE)
    if kind == _K_MMAP:
        lo = ret if ret >= 0 else a0
        return (lo, lo + max(a1, _PAGE))
    if _KIND_NAMES[kind] == "shmat":  # shmat(shmid, addr, flags) = addr: the size is not traced
        return (ret, ret + _PAGE) if ret >= 0 else None
    if kind == _K_MREMAP:
        dst = ret if ret >= 0 else a0
        return (a0, a0 + max(a1, _PAGE), dst, dst + max(a2, _PAGE))
    if kind == _K_BRK:
        return (min(a0, ret) if ret > 0 and a0 else a0, max(a0, ret) + _PAGE) if a0 or ret > 0 else None
    if _KIND_NAMES[kind] in ("mlockall", "munlockall"):
        return (0, TASK_SIZE)
    if _KIND_NAMES[kind] == "prctl":
        return (a2, a2 + max(a3, _PAGE)) if a0 == PR_SET_VMA else (0, TASK_SIZE)  # addr, len of PR_SET_VMA
    return (a0, a0 + max(a1, _PAGE))


def _snap_rows(frame: _Rows) -> list[tuple[int, int, str, str | None, str | None, int]]:
    return [(r["start"], r["end"], r["perms"], r.get("vmflags"), r.get("path"), r.get("anonymous_kb") or 0)
            for r in frame.rows if r["start"] < TASK_SIZE]


class _Replayer:
    """One profile over the whole plan."""

    def __init__(self, plan: _Plan, spec: ProfileSpec, *, explain: bool = False,
                 explain_limit: int = 2000, counts: bool = True) -> None:
        self.plan = plan
        self.spec = spec
        self.profile = spec.profile
        self.explain = explain
        self.explain_limit = explain_limit
        self.explanations: list[str] = []
        self.keep_counts = counts
        self.files: dict[Any, OpenFile] = {}  # file identity -> the one OpenFile of the trace
        # a deep snapshot's file_id -> its OpenFile: one object per open file for the whole trace
        # (the deep collector's ids are stable within a trace), so that every seed and resync from
        # a deep snapshot, in every process, agrees on which VMAs map one open file
        self.deep_files: dict[int, OpenFile] = {}
        # the recorder numbered open files once for its events and its deep snapshots (meta
        # file_ids_shared): an event's file_id and a deep snapshot's name the same open file.
        # Older traces number them apart, and a resync bridges them (_keep_file_identities).
        self.shared_ids = bool(plan.meta.get("file_ids_shared"))
        self.forked: dict[int, AddressSpace] = {}
        # per process, the ranges of calls the model did not replay (seq, lo, hi): a fork child
        # inherits its parent's, since the VMAs they made are copied into it
        self.uncovered: dict[int, list[tuple[int, int, int]]] = {}

    # -- seeding --------------------------------------------------------------------------------
    def _seed(self, s: _Snap) -> AddressSpace:
        frame = self.plan.frames.get(s.sid) or _EMPTY
        mm = AddressSpace.from_snapshot(frame, self.profile, explain=self.explain, soft_dirty=True,  # type: ignore[arg-type]
                                        deep_files=self.deep_files)
        if s.start_brk:
            mm.start_brk = int(s.start_brk)
            # brk unknown (a process attached with -p: /proc gives only start_brk): the end of
            # [heap], which /proc names from start_brk to brk, else no heap yet
            heap_end = mm.cur_brk if mm.cur_brk and mm.cur_brk > mm.start_brk else mm.start_brk
            mm.cur_brk = int(s.brk) if s.brk else heap_end
        return mm

    def _keep_file_identities(self, old: AddressSpace, frame: _Rows) -> None:
        """Before a resync from a deep snapshot: an open file the deep snapshot names for the first
        time (its file_id) takes the old model's OpenFile of the VMA with the same bounds and file
        offset, so that later mmap events of that file (which name it by the recorder's own file
        ids) still map the same OpenFile. Which VMAs share one open file comes from the snapshot
        alone: an OpenFile is taken for at most one file_id."""
        taken = {f.id for f in self.deep_files.values()}
        olds = {v.start: v for v in old.raw_vmas()}
        for r in frame.rows:
            fid = r.get("file_id")
            if fid is None or int(fid) in self.deep_files:
                continue
            o = olds.get(int(r["start"]))
            if (o is None or o.file is None or o.end != int(r["end"]) or o.pgoff != int(r["pgoff"])
                    or o.file.id in taken):
                continue
            self.deep_files[int(fid)] = o.file
            taken.add(o.file.id)

    # -- file identity --------------------------------------------------------------------------
    def _file(self, pid: int, row: int, fd: int) -> tuple[OpenFile, bool]:
        """The open file an mmap event maps, and whether its identity is known."""
        sp = self.plan.sparse
        fid = sp["file_id"].get(row)
        if fid is not None:
            key: Any = ("id", fid)
            known = True
            if self.shared_ids and int(fid) in self.deep_files:  # mapped before, at a deep snapshot
                return self.deep_files[int(fid)], known
        else:
            key = ("fd", pid, fd)
            known = False
        f = self.files.get(key)
        if f is None:
            path = sp["file_path"].get(row) or f"<fd {fd} of {pid}>"
            dev = sp["file_dev"].get(row) or "00:00"
            ino = sp["file_ino"].get(row) or 0
            shm = path.startswith(("/memfd:", "/dev/shm/", "/SYSV", "/dev/zero"))
            f = self.files[key] = OpenFile(path, dev=dev, ino=int(ino), shmem=shm, writable=shm)
            if self.shared_ids and fid is not None:
                self.deep_files[int(fid)] = f  # a later deep snapshot names this open file by fid
        return f, known

    # -- one process ----------------------------------------------------------------------------
    def run_process(self, p: _Proc) -> ProcessRun:
        plan = self.plan
        c = plan.cols
        run = ProcessRun(p.pid, p.comm, "not seeded")
        mm: AddressSpace | None = None
        if p.parent is not None and p.pid in self.forked:
            mm = self.forked.pop(p.pid)
            run.seeded_by = (f"fork of {p.parent} at seq {int(c['seq'][p.fork_row])}"
                             if p.fork_row is not None else "fork")
        snaps = p.snaps
        si = 0
        k_sync = 0  # the process's events since the last snapshot start here
        flags_w: list[tuple[int, str]] = []  # (seq, cause): not-covered calls and mismatches since then
        last_sync_t = 0
        need_brk_base = mm is not None and mm.start_brk is None
        awaiting = False  # an exec happened: the next post-exec snapshot seeds
        count_seqs, count_values = run.count_seqs, run.count_values
        keep_counts = self.keep_counts
        mismatches = run.mismatches
        peak = 0
        idx = p.events
        n_events = len(idx)
        explain = self.explain
        uncovered = self.uncovered.setdefault(p.pid, [])

        def at_snapshot(s: _Snap, k: int) -> None:
            nonlocal mm, last_sync_t, need_brk_base, k_sync, flags_w, awaiting
            if mm is None or awaiting:
                if not awaiting or s.reason in ("start", "reconstructed"):
                    mm = self._seed(s)
                    need_brk_base = mm.start_brk is None
                    awaiting = False
                    if run.seeded_by == "not seeded":
                        run.seeded_by = f"snapshot {s.sid} ({s.reason})"
                    last_sync_t, k_sync, flags_w = s.t_end, k, []
                return
            if s.reason == "reconstructed":
                return  # a rebuilt layout, never compared (it is not a reading of the kernel)
            frame = plan.frames.get(s.sid)
            if frame is None:
                return
            if s.rows is None:
                s.rows = _snap_rows(frame)
            run.snapshots_compared += 1
            model = mm.vmas()
            run.final_vma_count = len(model)
            divs = _compare(model, s.rows)
            if frame.deep:  # the hidden state too: anon_vma sharing and fork-child status
                if s.hidden is None:
                    s.hidden = _hidden_rows(frame)
                run.deep_snapshots_compared += 1
                hidden = _compare_hidden(model, s.hidden)
                if hidden:
                    divs = _coalesce(divs + hidden)
            if divs:
                lost = any(cnt and t_to >= last_sync_t and t_from <= s.t_end for cnt, t_from, t_to in plan.losses)
                index = _WindowIndex(self._window(idx[k_sync:k]))
                # the snapshot stands after the last event made before its read began; the events
                # made while it was read follow it, and may or may not be in what it shows
                k_read = _read_end(c["ts_ns"], idx, k, s.t_end)
                during = _WindowIndex(self._window(idx[k:k_read])) if k_read > k else None
                for kind, lo, hi, detail in divs:
                    touching = index.touching(lo, hi)
                    seqs_touching = [w[0] for w in touching]
                    raced = [w for w in touching if s.t_start <= w[4] <= s.t_end]
                    if during is not None and (read := during.touching(lo, hi)):
                        raced += read
                        seqs_touching += [w[0] for w in read]
                    cause = _cause(lost, touching, flags_w, model, lo, hi, raced, s.rows)
                    if not touching:
                        inherited = [u for u in uncovered if u[1] < hi and u[2] > lo]
                        if inherited:
                            cause = CAUSE_NOT_COVERED
                            seqs_touching = [u[0] for u in inherited]
                    run.divergences.append(Divergence(p.pid, s.sid, kind, lo, hi, detail, cause,
                                                      seqs_touching[-_EVENTS_KEPT:], len(seqs_touching)))
                if self.spec.judged:
                    run.resyncs += 1
                    if frame.deep:
                        self._keep_file_identities(mm, frame)
                    fresh = self._seed(s)
                    _carry_over(mm, fresh, exact=frame.deep)
                    mm = fresh
                    if mm.start_brk is None:
                        need_brk_base = True
            else:
                mm.narrow_from_snapshot(frame)  # type: ignore[arg-type]
            last_sync_t, k_sync, flags_w = s.t_end, k, []

        next_pos = snaps[0].pos if snaps else n_events + 1
        cs = c["seq"]
        for start in range(0, max(n_events, 1), _CHUNK):
            ix = idx[start:start + _CHUNK]
            rows = ix.tolist()
            chunk = zip(rows, c["kind"][ix].tolist(), c["a0"][ix].tolist(), c["a1"][ix].tolist(),
                        c["a2"][ix].tolist(), c["a3"][ix].tolist(), c["a4"][ix].tolist(), c["a5"][ix].tolist(),
                        c["ret"][ix].tolist(), cs[ix].tolist(), strict=True)
            for k, (row, kind, a0, a1, a2, a3, a4, a5, ret, seq) in enumerate(chunk, start):
                while k >= next_pos:
                    at_snapshot(snaps[si], k)
                    si += 1
                    next_pos = snaps[si].pos if si < len(snaps) else n_events + 1
                if kind == _K_EXEC:  # a new address space: the post-exec snapshot seeds it
                    mm, awaiting, k_sync, flags_w = None, True, k + 1, []
                    continue
                if mm is None or awaiting or kind in _K_IGNORED:
                    if kind != _K_FORK:
                        run.events_skipped += 1
                    continue
                if kind == _K_FORK:
                    if a1 != p.pid and not a2:
                        self.forked[a1] = mm.fork()
                        self.uncovered[a1] = uncovered[-1000:]
                    continue
                if p.vfork_shared and run.seeded_by.startswith("fork"):
                    # a vfork/CLONE_VM child runs on its parent's mm until it execs: not modelled
                    run.events_skipped += 1
                    flags_w.append((seq, CAUSE_NOT_COVERED))
                    continue
                before = mm.map_count
                shot = mm.vmas() if explain and len(self.explanations) < self.explain_limit else None
                kernel_ok = not -4096 < ret < 0
                if ret < 0 and kind == _K_MMAP and ret < -4095:
                    ret &= _U64
                try:
                    if kind == _K_FAULT:
                        # an OSError: the process took SIGSEGV/SIGBUS, or the model lacks the VMA
                        # (the next snapshot shows which)
                        with contextlib.suppress(OSError):
                            mm.touch(a0, bool(a2 & 2))
                    elif kind == _K_MPROTECT:
                        mm.mprotect(a0, a1, a2)
                    elif kind == _K_MMAP:
                        self._mmap(mm, p.pid, row, a0, a1, a2, a3, a4, a5, ret, kernel_ok, flags_w, seq)
                    elif kind == _K_MUNMAP:
                        mm.munmap(a0, a1)
                    elif kind == _K_MADVISE:
                        mm.madvise(a0, a1, a2)
                    elif kind == _K_MREMAP:
                        if kernel_ok and ret != a0 and a3 & MREMAP_MAYMOVE and not a3 & MREMAP_FIXED:
                            a3 |= MREMAP_FIXED  # the kernel moved it: to where it says
                            a4 = ret
                        mm.mremap(a0, a1, a2, a3, a4)
                    elif kind == _K_BRK:
                        if need_brk_base and mm.start_brk is None:
                            if a0 == 0 and ret > 0:
                                mm.set_brk_base(ret)
                                need_brk_base = False
                                run.events_applied += 1
                                continue
                            raise _NotCovered  # a brk before its base is known
                        need_brk_base = False
                        got = mm.brk(a0)
                        if got != ret:
                            mismatches.append(ResultMismatch(p.pid, seq, "brk", ret, got, "a different result"))
                            flags_w.append((seq, CAUSE_RESULT))
                        kernel_ok = True
                    else:
                        self._other(mm, kind, a0, a1, a2, a3, a4, row)
                except OSError as e:
                    if kernel_ok or -ret != e.errno:
                        mismatches.append(ResultMismatch(p.pid, seq, _KIND_NAMES[kind], ret, -(e.errno or 0)))
                        flags_w.append((seq, CAUSE_RESULT))
                except _NotCovered:
                    run.events_skipped += 1
                    flags_w.append((seq, CAUSE_NOT_COVERED))
                    rng = _event_range(kind, a0, a1, a2, a3, ret)
                    if rng is not None:
                        uncovered.append((seq, rng[0], rng[1]))
                    continue
                except (VmatraceError, ValueError, AssertionError, RuntimeError, KeyError, TypeError) as e:
                    mismatches.append(ResultMismatch(p.pid, seq, _KIND_NAMES[kind], ret, None, f"{type(e).__name__}: {e}"))
                    flags_w.append((seq, CAUSE_RESULT))
                else:
                    if not kernel_ok and kind != _K_FAULT:
                        mismatches.append(ResultMismatch(p.pid, seq, _KIND_NAMES[kind], ret, 0,
                                                         "the model succeeded where the kernel failed"))
                        flags_w.append((seq, CAUSE_RESULT))
                run.events_applied += 1
                after = mm.map_count
                if after != before:
                    if after > peak:
                        peak = after
                    if keep_counts:
                        count_seqs.append(seq)
                        count_values.append(after)
                if shot is not None:
                    ex = mm.last_explanation
                    if ex is not None:
                        rng = _event_range(kind, a0, a1, a2, a3, ret)
                        pic = explain_diagram(shot, mm.vmas(), rng[0], rng[1]) if rng else ""
                        self.explanations.append(f"[pid {p.pid} seq {seq}] {ex}" + (f"\n  {pic}" if pic else ""))
        while si < len(snaps):
            at_snapshot(snaps[si], n_events)
            si += 1
        if mm is not None:
            peak = max(peak, mm.map_count)
        run.peak_vma_count = max(peak, run.final_vma_count or 0)
        if mm is not None:
            run.fork_child_boundaries = fork_child_boundaries(mm.vmas())
            if run.final_vma_count is None:
                run.final_vma_count = mm.map_count
        return run

    def _window(self, rows: Any) -> list[tuple[int, str, int, int, int]]:
        """(seq, kind, lo, hi, ts) of the given events: the ranges each touched."""
        c = self.plan.cols
        out: list[tuple[int, str, int, int, int]] = []
        for kind, a0, a1, a2, a3, ret, seq, ts in zip(
                c["kind"][rows].tolist(), c["a0"][rows].tolist(), c["a1"][rows].tolist(), c["a2"][rows].tolist(),
                c["a3"][rows].tolist(), c["ret"][rows].tolist(), c["seq"][rows].tolist(), c["ts_ns"][rows].tolist(),
                strict=True):
            if kind in (_K_FORK, _K_EXEC) or kind in _K_IGNORED:
                continue
            rng = _event_range(kind, a0, a1, a2, a3, ret if ret >= -4095 else ret & _U64)
            if rng is None:
                continue
            name = _KIND_NAMES[kind]
            out.append((seq, name, rng[0], rng[1], ts))
            if len(rng) == 4:
                out.append((seq, name, rng[2], rng[3], ts))
        return out

    def _mmap(self, mm: AddressSpace, pid: int, row: int, addr: int, length: int, prot: int, flags: int,
              fd: int, off: int, ret: int, kernel_ok: bool, flags_w: list[tuple[int, str]], seq: int) -> None:
        if kernel_ok and not flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
            # the kernel chose the address: place it there (the range was free in the kernel)
            flags |= MAP_FIXED_NOREPLACE
            addr = ret
        if flags & MAP_ANONYMOUS:
            mm.mmap(addr, length, prot, flags, -1, off)
            return
        f, known = self._file(pid, row, fd)
        if not known:
            flags_w.append((seq, CAUSE_NOT_COVERED))
        # The open mode is not in the trace: a file is taken as read-only until the kernel accepts
        # a shared writable mapping of it (do_mmap() refuses that with EACCES).
        if kernel_ok and flags & MAP_TYPE != MAP_PRIVATE and prot & PROT_WRITE:
            f.writable = True
        mfd = mm._install_fd(f)
        try:
            mm.mmap(addr, length, prot, flags, mfd, off)
        finally:
            mm.files.pop(mfd, None)

    def _other(self, mm: AddressSpace, kind: int, a0: int, a1: int, a2: int, a3: int, a4: int, row: int) -> None:
        name = _KIND_NAMES[kind]
        if name in ("mlock", "munlock"):
            getattr(mm, name)(a0, a1)
        elif name == "pkey_mprotect":
            mm.pkey_mprotect(a0, a1, a2, a3)
        elif name == "mlock2":
            mm.mlock2(a0, a1, a2)
        elif name == "mlockall":
            mm.mlockall(a0)
        elif name == "munlockall":
            mm.munlockall()
        elif name == "mseal":
            mm.mseal(a0, a1, a2)
        elif name == "prctl" and a0 == PR_SET_VMA and a1 == PR_SET_VMA_ANON_NAME:
            mm.prctl_set_vma_anon_name(a2, a3, self.plan.sparse["text"].get(row) if a4 else None)
        elif name == "prctl" and a0 == PR_SET_MEMORY_MERGE:
            mm.prctl_set_memory_merge(bool(a1))
        else:
            raise _NotCovered


def _carry_over(old: AddressSpace, new: AddressSpace, *, exact: bool = False) -> None:
    """After a resync, keep what /proc cannot show wherever the snapshot agrees with the old model.

    A VMA of the snapshot with the same bounds and flags as one of the old model keeps that VMA's
    anon_vma, avc (fork-child status), open file and anonymous pgoff: only the regions that
    diverged start again from the snapshot's guesses.

    ``exact``: ``new`` was built from a deep snapshot, which shows that state as the kernel has it
    (anon_vma identity, avc, open file, pgoff): nothing of it is taken from the old model, only
    the brk base where the snapshot does not give one.
    """
    if exact:
        if new.start_brk is None and old.start_brk is not None:
            new.start_brk, new.cur_brk = old.start_brk, old.cur_brk
        return
    old_list = old.raw_vmas()
    olds = {v.start: v for v in old_list}
    old_starts = [v.start for v in old_list]
    for v in new.raw_vmas():
        o = olds.get(v.start)
        if o is None or o.end != v.end or (o.flags ^ v.flags) & ~_SOFT_DIRTY:
            # rebuilt from the snapshot: a faulted VMA over pages of a fork child's VMA is still a
            # fork child (its anon_vma chain came from the parent), whatever /proc cannot say
            if v.anon_vma is not None and not v.anon_vma.unknown:
                k = max(0, bisect_right(old_starts, v.start) - 1)
                while k < len(old_list) and old_list[k].start < v.end:
                    ov = old_list[k]
                    if ov.end > v.start and ov.avc > 1 and ov.file is v.file:
                        v.avc = max(v.avc, ov.avc)
                    k += 1
            continue
        if (o.file is None) != (v.file is None):
            continue
        v.anon_vma, v.avc = o.anon_vma, o.avc
        if o.file is None:
            v.pgoff = o.pgoff
        elif o.pgoff == v.pgoff:
            v.file = o.file
    if new.start_brk is None and old.start_brk is not None:
        new.start_brk, new.cur_brk = old.start_brk, old.cur_brk


class _NotCovered(Exception):
    pass



class _WindowIndex:
    """The events since the last snapshot by 64 KiB granule, so that finding the events that
    touched a divergence's region costs what they are, not the whole window."""

    GRANULE = 16  # 64 KiB
    WIDE = 32  # ranges over more granules than this are kept aside and always checked

    def __init__(self, window: list[tuple[int, str, int, int, int]]) -> None:
        self.window = window
        self.by_granule: dict[int, list[int]] = {}
        self.wide: list[int] = []
        g = self.GRANULE
        for k, w in enumerate(window):
            first, last = w[2] >> g, (max(w[3], w[2] + 1) - 1) >> g
            if last - first > self.WIDE:
                self.wide.append(k)
                continue
            for gr in range(first, last + 1):
                self.by_granule.setdefault(gr, []).append(k)

    def touching(self, lo: int, hi: int) -> list[tuple[int, str, int, int, int]]:
        g = self.GRANULE
        first, last = lo >> g, (max(hi, lo + 1) - 1) >> g
        if last - first > 4096:
            cand: set[int] | list[int] = range(len(self.window))  # type: ignore[assignment]
        else:
            cand = set(self.wide)
            for gr in range(first, last + 1):
                cand.update(self.by_granule.get(gr, ()))
        w = self.window
        return [w[k] for k in sorted(cand) if w[k][2] < hi and w[k][3] > lo]


# ---------------------------------------------------------------------------------------------
# Comparing the model with a snapshot


def _compare(model: list[VmaView], rows: list[tuple[int, int, str, str | None, str | None, int]]
             ) -> list[tuple[str, int, int, str]]:
    """Divergences between the model's VMAs and a snapshot's: (kind, lo, hi, detail)."""
    out: list[tuple[str, int, int, str]] = []
    m_start = {v.start: v for v in model}
    r_start = {r[0]: r for r in rows}
    m_bounds = _inner_bounds([(v.start, v.end) for v in model])
    r_bounds = _inner_bounds([(r[0], r[1]) for r in rows])
    m_cov = _coverage([(v.start, v.end) for v in model])
    r_cov = _coverage([(r[0], r[1]) for r in rows])
    # 1. mapped in one, not the other
    for lo, hi in _subtract(r_cov, m_cov):
        out.append(("other", lo, hi, "mapped in the real process, not in the model"))
    for lo, hi in _subtract(m_cov, r_cov):
        out.append(("other", lo, hi, "mapped in the model, not in the real process"))
    # 2. boundaries inside what both map
    r_starts = sorted(r_start)
    m_starts = sorted(m_start)
    for b in sorted(r_bounds - m_bounds):
        if _covered(m_cov, b - 1) and _covered(m_cov, b):
            lo, hi = _span(rows, r_starts, b)
            out.append(("fragmented", lo, hi, f"the kernel kept a boundary at {b:#x} that the model merged"))
    for b in sorted(m_bounds - r_bounds):
        if _covered(r_cov, b - 1) and _covered(r_cov, b):
            lo, hi = _span_m(model, m_starts, b)
            out.append(("merged", lo, hi, f"the kernel merged across {b:#x}, where the model kept two VMAs"))
    # 3. same bounds, other perms or flags
    for r in rows:
        v = m_start.get(r[0])
        if v is None or v.end != r[1]:
            continue
        if v.perms != r[2]:
            out.append(("other", r[0], r[1], f"perms: model {v.perms}, kernel {r[2]}"))
            continue
        if r[3] is not None:
            real = frozenset(r[3].split()) - _FLAGS_IGNORED
            mod = frozenset(v.vmflags) - _FLAGS_IGNORED
            if real != mod:
                extra = " ".join(sorted(mod - real))
                missing = " ".join(sorted(real - mod))
                out.append(("other", r[0], r[1], "VmFlags: model has " + (extra or "-")
                            + ", kernel has " + (missing or "-")))
    return _coalesce(out)


def _hidden_rows(frame: _Rows) -> dict[int, tuple[int, int | None, bool, int]]:
    """A deep snapshot's hidden state by VMA start: (end, anon_vma_id, fork child, avc)."""
    return {int(r["start"]): (int(r["end"]), None if r["anon_vma_id"] is None else int(r["anon_vma_id"]),
                              bool(r["fork_child"]), int(r["avc"] or 0))
            for r in frame.rows if r["start"] < TASK_SIZE}


def _regions(spans: list[tuple[int, int]], limit: int = 3) -> str:
    shown = ", ".join(f"[{a:#x},{b:#x})" for a, b in spans[:limit])
    return shown + (f" and {len(spans) - limit} more" if len(spans) > limit else "")


def _compare_hidden(model: list[VmaView], hidden: dict[int, tuple[int, int | None, bool, int]]
                    ) -> list[tuple[str, int, int, str]]:
    """Divergences of the hidden state between the model and a deep snapshot: (kind, lo, hi, detail).

    Only VMAs with the same bounds on both sides are compared (the layout comparison reports the
    others), and only where the model knows its anon_vma state (a VMA seeded from /proc with an
    UnknownAnonVma makes no claim).

    * ``anon_vma``: one side has an anon_vma and the other none; or the identity classes differ
      (which VMAs share one anon_vma: the numbers themselves mean nothing). A class difference is
      a set of VMA pairs shared on one side and apart on the other; the VMAs reported are a small
      cover of those pairs, the VMA in most of them first, so that one VMA with the wrong
      anon_vma is reported once, not with every VMA of its class.
    * ``fork_child``: one side's anon_vma_chain is singular and the other's is not
      (vma_is_fork_child()), for VMAs that both have an anon_vma.
    """
    out: list[tuple[str, int, int, str]] = []
    both: list[tuple[int, int, int, int]] = []  # (start, end, kernel anon id, model anon id)
    for v in model:
        h = hidden.get(v.start)
        if h is None or h[0] != v.end or isinstance(v.faulted, Unknown):
            continue
        _, kid, kfork, kavc = h
        if (kid is None) != (v.anon_id is None):
            out.append(("anon_vma", v.start, v.end,
                        "the kernel's VMA has an anon_vma, the model's has none" if kid is not None
                        else "the model's VMA has an anon_vma, the kernel's has none"))
            continue
        if kid is None or v.anon_id is None:
            continue
        both.append((v.start, v.end, kid, v.anon_id))
        mfork = v.forked is True
        if kfork != mfork:
            out.append(("fork_child", v.start, v.end,
                        f"the kernel's anon_vma_chain has {kavc} entries ("
                        + ("a fork child" if kfork else "not a fork child")
                        + f"), the model's {v.avc} (" + ("a fork child" if mfork else "not a fork child") + ")"))
    # identity classes over the VMAs that have an anon_vma on both sides
    k_class: dict[int, set[int]] = {}
    m_class: dict[int, set[int]] = {}
    for i, (_, _, kid, mid) in enumerate(both):
        k_class.setdefault(kid, set()).add(i)
        m_class.setdefault(mid, set()).add(i)
    k_of = [k_class[b[2]] for b in both]
    m_of = [m_class[b[3]] for b in both]
    odd = {i for i in range(len(both)) if k_of[i] != m_of[i]}
    removed: set[int] = set()

    def degree(i: int) -> int:
        return len((k_of[i] ^ m_of[i]) - removed)

    while odd:
        i = max(sorted(odd), key=degree)
        if degree(i) == 0:
            break
        s, e = both[i][0], both[i][1]
        k_only = sorted((both[j][0], both[j][1]) for j in k_of[i] - m_of[i] - removed)
        m_only = sorted((both[j][0], both[j][1]) for j in m_of[i] - k_of[i] - removed)
        parts = []
        if k_only:
            parts.append(f"the kernel's anon_vma is shared with {_regions(k_only)}, the model's is not")
        if m_only:
            parts.append(f"the model's anon_vma is shared with {_regions(m_only)}, the kernel's is not")
        out.append(("anon_vma", s, e, "anon_vma classes differ: " + "; ".join(parts)))
        removed.add(i)
        odd = {j for j in odd - removed if degree(j) > 0}
    return out


def _inner_bounds(spans: list[tuple[int, int]]) -> set[int]:
    return {a[1] for a, b in itertools.pairwise(spans) if a[1] == b[0]}


def _coverage(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in spans:
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def _subtract(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    j = 0
    for s, e in a:
        cur = s
        while j < len(b) and b[j][1] <= cur:
            j += 1
        k = j
        while cur < e:
            if k < len(b) and b[k][0] < e:
                bs, be = b[k]
                if bs > cur:
                    out.append((cur, min(bs, e)))
                cur = max(cur, be)
                k += 1
            else:
                out.append((cur, e))
                break
    return out


def _covered(cov: list[tuple[int, int]], addr: int) -> bool:
    i = bisect_right(cov, (addr, 1 << 70)) - 1
    return i >= 0 and cov[i][0] <= addr < cov[i][1]


def _span(rows: list[tuple[int, int, str, str | None, str | None, int]], starts: list[int], b: int) -> tuple[int, int]:
    i = bisect_right(starts, b) - 1
    nxt = rows[i]
    prev = rows[i - 1] if i > 0 else nxt
    return prev[0], nxt[1]


def _span_m(model: list[VmaView], starts: list[int], b: int) -> tuple[int, int]:
    i = bisect_right(starts, b) - 1
    return model[i - 1].start if i > 0 else model[i].start, model[i].end


def _read_end(ts: Any, idx: Any, k: int, t_end: int) -> int:
    """Where the events a process made until ``t_end`` end, from its event ``k`` on (timestamps
    follow the event order closely but not exactly: looked at in blocks until one is all later)."""
    import numpy as np

    end = k
    while end < len(idx):
        block = ts[idx[end:end + 1024]]
        hits = np.flatnonzero(block <= t_end)
        if not hits.size:
            break
        end += int(hits[-1]) + 1
        if hits[-1] + 1 < len(block):
            break
    return end


def _coalesce(divs: list[tuple[str, int, int, str]]) -> list[tuple[str, int, int, str]]:
    divs.sort(key=lambda d: (d[1], d[0]))
    out: list[tuple[str, int, int, str]] = []
    for d in divs:
        if out and out[-1][0] == d[0] and d[1] < out[-1][2]:
            k, lo, hi, detail = out[-1]
            out[-1] = (k, lo, max(hi, d[2]), detail if detail == d[3] else f"{detail}; {d[3]}")
        else:
            out.append(d)
    return out


def _cause(lost: bool, touching: list[tuple[int, str, int, int, int]], flags: list[tuple[int, str]],
           model: list[VmaView], lo: int, hi: int, raced: list[tuple[int, str, int, int, int]],
           rows: list[tuple[int, int, str, str | None, str | None, int]]) -> str:
    """The probable cause of a divergence, most specific first."""
    if lost:
        return CAUSE_LOST
    flagged: set[str] = set()
    if flags:
        touched = {w[0] for w in touching}
        flagged = {c for s, c in flags if s in touched}
    if CAUSE_RESULT in flagged:
        return CAUSE_RESULT
    for v in model:
        if v.start < hi and v.end > lo and isinstance(v.faulted, Unknown):
            return CAUSE_UNKNOWN_ANON
    if CAUSE_NOT_COVERED in flagged:
        return CAUSE_NOT_COVERED
    for v in model:
        if v.start < hi and v.end > lo and v.flags & VM_GROWSDOWN:
            return CAUSE_STACK
    for r in rows:
        if r[0] < hi and r[1] > lo and r[4] == "[stack]":
            return CAUSE_STACK
    if raced:
        return CAUSE_RACED
    if not touching:
        return CAUSE_UNTRACED
    return CAUSE_PROFILE


def fork_child_boundaries(vmas: list[VmaView]) -> int:
    """Adjacent VMAs that would merge but for fork-child anon_vma state (what the fix cannot help).

    Counted where prev and next are contiguous, have the same flags, file and pgoff continuity and
    name, and one of them is a faulted fork child (vma_is_fork_child()) while the anon_vmas differ.
    """
    n = 0
    for a, b in itertools.pairwise(vmas):
        if a.end != b.start or a.flags != b.flags or a.file_id != b.file_id or a.anon_name != b.anon_name:
            continue
        if a.flags & (VM_SHARED | VM_MAYSHARE):
            continue
        if a.file_id is not None and a.pgoff + ((a.end - a.start) >> 12) != b.pgoff:
            continue
        if a.anon_id is not None and a.anon_id == b.anon_id:
            continue
        if a.forked is True or b.forked is True:
            n += 1
    return n


# ---------------------------------------------------------------------------------------------
# The whole replay


def _run_profile(plan: _Plan, spec: ProfileSpec, explain: bool) -> tuple[ProfileRun, list[str]]:
    r = _Replayer(plan, spec, explain=explain)
    # The plan holds millions of small objects (the decoded columns): with the cyclic collector on,
    # every full collection walks them all, which costs more than the model itself on a long
    # trace. The replay makes little cyclic garbage (unlinked VMAs); it is collected afterwards.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        runs = [r.run_process(plan.procs[pid]) for pid in plan.order]
    finally:
        if was_enabled:
            gc.enable()
    fields = {f.name: (getattr(spec.profile, f.name).value if hasattr(getattr(spec.profile, f.name), "value")
                       else getattr(spec.profile, f.name))
              for f in dataclasses.fields(KernelProfile)}
    return ProfileRun(spec.label, spec.profile.name, fields, runs, spec.judged), r.explanations


_EMPTY = _Rows(pl.DataFrame(schema={"start": pl.UInt64, "end": pl.UInt64, "perms": pl.Utf8,
                                     "offset": pl.UInt64, "dev": pl.Utf8, "inode": pl.UInt64, "path": pl.Utf8}))
_PLAN: _Plan | None = None  # the plan a forked worker inherits (copy-on-write, never pickled)


def _worker(args: tuple[ProfileSpec, bool]) -> tuple[ProfileRun, list[str]]:
    assert _PLAN is not None
    return _run_profile(_PLAN, args[0], args[1])


def replay_trace(trace: Trace, specs: Sequence[ProfileSpec], *, fix_pair: tuple[str, str] | None = None,
                 explain: bool = False, jobs: int | None = None, notes: Sequence[str] = ()) -> ReplayResult:
    """Replay ``trace`` under every profile of ``specs`` (in parallel worker processes when
    ``jobs`` > 1 and there is more than one profile) and compute the fix figures of ``fix_pair``."""
    global _PLAN
    if trace.snapshot_index.height == 0:
        raise VmatraceError(f"{trace.path} has no snapshot: replay needs at least one exact state to start from")
    plan = _plan(trace)
    warnings = list(trace.warnings) + list(notes)
    file_mmaps = (plan.cols["kind"] == _K_MMAP) & (plan.cols["a3"] & MAP_ANONYMOUS == 0)
    if not plan.has_file_ids and bool(file_mmaps.any()):  # (not a trace that maps no file)
        warnings.append("the trace's mmap events do not name their open files (a trace from an older "
                        "recorder): file mappings are told apart by pid and fd only")
    opts = trace.meta.get("record_options")
    faults_traced = trace.meta.get("collector") == "bcc" and not (isinstance(opts, dict) and opts.get("faults") is False)
    if not faults_traced:
        warnings.append("the trace has no page faults (an strace import, or record --no-faults): no VMA gets "
                        "an anon_vma from a write in the model, so merges that depend on faulted state (the "
                        "6.16 fix among them) are not seen; the fix figures are then a lower bound")
    if jobs is None:
        jobs = min(len(specs), os.cpu_count() or 1)
    results: list[tuple[ProfileRun, list[str]]]
    if jobs > 1 and len(specs) > 1 and not explain:
        import multiprocessing as mp

        _PLAN = plan
        try:
            ctx = mp.get_context("fork")
            with ctx.Pool(min(jobs, len(specs))) as pool:
                results = pool.map(_worker, [(s, False) for s in specs], chunksize=1)
        finally:
            _PLAN = None
    else:
        results = [_run_profile(plan, s, explain and k == 0) for k, s in enumerate(specs)]
    runs = [r[0] for r in results]
    explanations = results[0][1] if results else []
    real = []
    # processes that ended without an exit snapshot, as the recorder says (meta.exit_snapshot_missing)
    no_exit = {int(x) for x in trace.meta.get("exit_snapshot_missing") or [] if isinstance(x, int)}
    for pid in plan.order:
        p = plan.procs[pid]
        snaps = [(s.sid, s.reason, s.t_start, _real_count(plan.frames.get(s.sid))) for s in p.snaps
                 if s.reason != "reconstructed"]
        real.append(RealProcess(pid, p.comm, snaps))
        if pid in no_exit:
            last = f"snapshot {snaps[-1][0]} ({snaps[-1][1]})" if snaps else "its start"
            warnings.append(f"PID {pid}: it ended without an exit snapshot (the recorder could not take one): "
                            f"its layout after {last} is the model's alone, nothing compares it")
        elif p.events is not None and len(p.events) and snaps and all(sn[1] == "start" for sn in snaps):
            warnings.append(f"PID {pid}: no snapshot after its start (no exit snapshot was recorded): "
                            "its final layout is the model's alone, nothing compares it")
    main_pid = _main_pid(trace, plan)
    fix, fix_events = _fix_figures(plan, runs, fix_pair) if fix_pair else ([], [])
    lost = int(trace.losses["count"].sum()) if trace.losses.height else int(trace.meta.get("lost_count") or 0)
    if lost:
        warnings.append(f"{lost} events were lost while recording: state is unknown from each loss "
                        "to the next snapshot, and divergences there are put down to the loss")
    return ReplayResult(str(trace.path), trace.meta, trace.events.height, lost, main_pid, real, runs,
                        fix_pair, fix, fix_events, warnings, explanations)


def _real_count(frame: _Rows | None) -> int:
    return 0 if frame is None else sum(1 for r in frame.rows if r["start"] < TASK_SIZE)


def _main_pid(trace: Trace, plan: _Plan) -> int | None:
    pids = trace.meta.get("pids") or []
    for pid in pids:
        if isinstance(pid, int) and pid in plan.procs:
            return pid
    return plan.order[0] if plan.order else None


def _fix_figures(plan: _Plan, runs: list[ProfileRun], pair: tuple[str, str]
                 ) -> tuple[list[FixFigures], list[FixEvent]]:
    by_label = {r.label: r for r in runs}
    old, new = by_label.get(pair[0]), by_label.get(pair[1])
    if old is None or new is None:
        return [], []
    c = plan.cols
    seq_row = {int(s): i for i, s in enumerate(c["seq"].tolist())} if plan.procs else {}
    figs: list[FixFigures] = []
    events: list[FixEvent] = []
    for pid in plan.order:
        po, pn = old.process(pid), new.process(pid)
        if po is None or pn is None:
            continue
        merged = 0
        for seq, saved in _saving_events(po, pn):
            merged += 1
            i = seq_row.get(seq)
            sid = int(c["stack_id"][i]) if i is not None else -1
            events.append(FixEvent(pid, seq, plan.kind(i) if i is not None else "?", saved, sid if sid >= 0 else None))
        saved_final = (po.final_vma_count - pn.final_vma_count
                       if po.final_vma_count is not None and pn.final_vma_count is not None else None)
        figs.append(FixFigures(pid, po.final_vma_count, pn.final_vma_count, saved_final,
                               po.peak_vma_count - pn.peak_vma_count, merged, pn.fork_child_boundaries))
    return figs, events


def _saving_events(old: ProcessRun, new: ProcessRun) -> list[tuple[int, int]]:
    """Events after which the with-fix model's VMA count fell further behind the old rule's.

    Both runs hold (seq, count) at every event that changed their count; both models saw the
    same events, so the difference of the two counts is a step function of seq: walk both
    sequences in seq order (a merge of two sorted arrays).
    """
    os_, ov, ns, nv = old.count_seqs, old.count_values, new.count_seqs, new.count_values
    i = j = 0
    co = cn = -1
    diff = 0
    out = []
    while i < len(os_) or j < len(ns):
        s = min(os_[i] if i < len(os_) else 1 << 64, ns[j] if j < len(ns) else 1 << 64)
        if i < len(os_) and os_[i] == s:
            co = ov[i]
            i += 1
        if j < len(ns) and ns[j] == s:
            cn = nv[j]
            j += 1
        if co < 0 or cn < 0:
            continue
        d = co - cn
        if d > diff:
            out.append((s, d - diff))
        diff = d
    return out


def explain_diagram(before: list[VmaView], after: list[VmaView], lo: int, hi: int, width: int = 24) -> str:
    """``PPP|**|NNN -> PPPPPPPP``: the pages around [lo, hi) before and after an event.

    One character per page: ``*`` for a VMA over the event's range, ``P`` for a VMA before it, ``N``
    for one after it, a blank for no VMA, ``|`` between two VMAs. After the event, a VMA that holds
    pages of a P (or N) VMA is drawn with that letter. At most ``width`` pages (a wider window is
    cut in the middle with ``~``).
    """
    span_lo = max(0, lo - 3 * _PAGE)
    span_hi = hi + 3 * _PAGE

    def owner(vmas: list[VmaView], addr: int) -> VmaView | None:
        for v in vmas:
            if v.start <= addr < v.end:
                return v
        return None

    npages = (span_hi - span_lo) // _PAGE
    if npages > width:  # never build the whole range: it can be the whole address space
        keep = width // 2
        pages = [span_lo + i * _PAGE for i in range(keep)] + [-1] + \
            [span_hi - (keep - i) * _PAGE for i in range(keep)]
    else:
        pages = list(range(span_lo, span_hi, _PAGE))
    def draw(vmas: list[VmaView], letter: Callable[[VmaView], str]) -> str:
        out: list[str] = []
        last: VmaView | None = None
        for a in pages:
            if a < 0:
                out.append("~")
                last = None
                continue
            v = owner(vmas, a)
            if v is not None and last is not None and v is not last:
                out.append("|")  # a VMA boundary
            out.append(" " if v is None else letter(v))
            last = v
        return "".join(out)

    def before_letter(v: VmaView) -> str:
        return "P" if v.end <= lo else "N" if v.start >= hi else "*"

    def after_letter(v: VmaView) -> str:
        held = {before_letter(b) for b in before if b.start < v.end and b.end > v.start}
        return "P" if "P" in held else "N" if "N" in held else "*"

    return draw(before, before_letter) + " -> " + draw(after, after_letter)
