"""What a trace replay found: plain data that reports read (they never see the engine's internals).

Every class here is a dataclass of numbers, strings and lists, so a result can be turned into the
``--json`` contract (:func:`to_json`) or pickled between worker processes.
"""

from __future__ import annotations

from array import array
from dataclasses import asdict, dataclass, field
from typing import Any

#: Divergence kinds: the real kernel has separate VMAs where the model merged (``fragmented``),
#: the reverse (``merged``), or bounds, perms or VmFlags differ (``other``); at a deep snapshot
#: also the hidden state of VMAs with the same bounds: which have an anon_vma and which share one
#: (``anon_vma``), and which are fork children (``fork_child``: anon_vma_chain not singular).
KINDS = ("fragmented", "merged", "other", "anon_vma", "fork_child")
#: The kinds only a deep snapshot can show.
HIDDEN_KINDS = ("anon_vma", "fork_child")

# Probable causes of a divergence, most specific first (docs/replay.md explains each).
CAUSE_LOST = "lost events"
CAUSE_RESULT = "the model disagreed on a call's result"
CAUSE_UNKNOWN_ANON = "unknown anon_vma state at the seed"
CAUSE_NOT_COVERED = "a call the model does not cover"
CAUSE_STACK = "stack growth"
CAUSE_RACED = "events during the snapshot read"
CAUSE_UNTRACED = "no traced event touched it"
CAUSE_PROFILE = "a behaviour the profile lacks"
CAUSES = (CAUSE_LOST, CAUSE_RESULT, CAUSE_UNKNOWN_ANON, CAUSE_NOT_COVERED, CAUSE_STACK,
          CAUSE_RACED, CAUSE_UNTRACED, CAUSE_PROFILE)
#: Causes that explain a divergence by what the trace or /proc could not tell; the last two of
#: CAUSES do not.
EXPLAINED = frozenset(CAUSES[:6])


@dataclass
class Divergence:
    """One region where the model and a real snapshot disagree."""

    pid: int
    snapshot_id: int
    kind: str  # one of KINDS
    start: int
    end: int
    detail: str
    cause: str
    events: list[int] = field(default_factory=list)  # seq of the events that touched the region
    events_total: int = 0  # how many touched it (``events`` keeps the last few)

    @property
    def explained(self) -> bool:
        return self.cause in EXPLAINED


@dataclass
class ResultMismatch:
    """A call whose success or errno differs between the kernel and the model."""

    pid: int
    seq: int
    kind: str
    kernel_ret: int
    model_ret: int | None  # None: the model raised something other than an errno
    detail: str = ""


@dataclass
class ProcessRun:
    """One process under one profile."""

    pid: int
    comm: str
    seeded_by: str  # "snapshot N", "fork of PID at seq S", "not seeded"
    events_applied: int = 0
    events_skipped: int = 0  # before the first exact state, or not modelled
    final_vma_count: int | None = None  # the model's count at the process's last snapshot
    peak_vma_count: int = 0
    resyncs: int = 0
    snapshots_compared: int = 0
    deep_snapshots_compared: int = 0  # of those, deep ones (hidden state compared too)
    divergences: list[Divergence] = field(default_factory=list)
    mismatches: list[ResultMismatch] = field(default_factory=list)
    fork_child_boundaries: int = 0  # adjacent VMAs kept apart only because one is a fork child
    # the model's VMA count after every event that changed it: count_seqs[i] is the event's seq,
    # count_values[i] the count after it (compact arrays: a long trace changes it a million times)
    count_seqs: array = field(default_factory=lambda: array("Q"))
    count_values: array = field(default_factory=lambda: array("I"))

    @property
    def counts(self) -> list[tuple[int, int]]:
        """(seq, VMA count) after every event that changed the count."""
        return list(zip(self.count_seqs, self.count_values, strict=True))


@dataclass
class ProfileRun:
    """The whole trace under one profile."""

    label: str  # what the user asked for ("6.15", "6.19-without-fix", "6.19+what-if")
    kernel: str  # the profile's name
    fields: dict[str, Any]
    processes: list[ProcessRun] = field(default_factory=list)
    judged: bool = False  # resynced from every snapshot; the others run free (see ProfileSpec)

    def process(self, pid: int) -> ProcessRun | None:
        return next((p for p in self.processes if p.pid == pid), None)

    def divergence_counts(self) -> dict[str, int]:
        out = dict.fromkeys(KINDS, 0)
        for p in self.processes:
            for d in p.divergences:
                out[d.kind] += 1
        return out

    def cause_counts(self) -> dict[str, int]:
        out = dict.fromkeys(CAUSES, 0)
        for p in self.processes:
            for d in p.divergences:
                out[d.cause] += 1
        return out


@dataclass
class FixEvent:
    """An event at which the 6.16 anon-merge rule merged what the old rule kept apart."""

    pid: int
    seq: int
    kind: str
    saved: int  # VMAs the fix saved at this event
    stack_id: int | None


@dataclass
class FixFigures:
    pid: int
    without_fix: int | None
    with_fix: int | None
    saved_final: int | None
    saved_peak: int
    events_merged_by_fix: int
    fork_child_boundaries: int  # what the fix cannot merge (fork children), with the fix


@dataclass
class RealProcess:
    pid: int
    comm: str
    snapshots: list[tuple[int, str, int, int]]  # (snapshot_id, reason, t_start_ns, vma_count)

    @property
    def final_vma_count(self) -> int | None:
        """The count at the last snapshot after the process's start (exit, end of recording or
        periodic); None when the trace has none (its start snapshot is no final state)."""
        later = [s for s in self.snapshots if s[1] != "start"]
        return later[-1][3] if later else None

    @property
    def peak_vma_count(self) -> int | None:
        return max(s[3] for s in self.snapshots) if self.snapshots else None


@dataclass
class ReplayResult:
    trace: str
    meta: dict[str, Any]
    events: int
    lost_events: int
    main_pid: int | None
    real: list[RealProcess]
    profiles: list[ProfileRun]
    fix_pair: tuple[str, str] | None  # labels of (without fix, with fix)
    fix: list[FixFigures]
    fix_events: list[FixEvent]
    warnings: list[str] = field(default_factory=list)
    explanations: list[str] = field(default_factory=list)

    def real_process(self, pid: int) -> RealProcess | None:
        return next((r for r in self.real if r.pid == pid), None)

    def profile(self, label: str) -> ProfileRun | None:
        return next((p for p in self.profiles if p.label == label), None)

    @property
    def snapshots_compared(self) -> int:
        return max((sum(p.snapshots_compared for p in pr.processes) for pr in self.profiles), default=0)

    @property
    def resyncs(self) -> int:
        return sum(p.resyncs for pr in self.profiles for p in pr.processes)

    @property
    def deep_snapshots_compared(self) -> int:
        """Deep snapshots the hidden state was compared at (0: the trace has none after a seed)."""
        return max((sum(p.deep_snapshots_compared for p in pr.processes) for pr in self.profiles), default=0)


def _fix_json(f: FixFigures | None) -> dict[str, Any]:
    if f is None:
        return {"without_fix": None, "with_fix": None, "saved_final": None, "saved_peak": None,
                "events_merged_by_fix": 0, "fork_child_boundaries": 0}
    return {"without_fix": f.without_fix, "with_fix": f.with_fix, "saved_final": f.saved_final,
            "saved_peak": f.saved_peak, "events_merged_by_fix": f.events_merged_by_fix,
            "fork_child_boundaries": f.fork_child_boundaries}


def to_json(r: ReplayResult, *, details: bool = True) -> dict[str, Any]:
    """The ``--json`` contract (format 1): these keys stay; more may be added."""
    main = r.real_process(r.main_pid) if r.main_pid is not None else None
    profiles = []
    for pr in r.profiles:
        mp = pr.process(r.main_pid) if r.main_pid is not None else None
        profiles.append({
            "label": pr.label, "kernel": pr.kernel, "judged": pr.judged,
            "final_vma_count": mp.final_vma_count if mp else None,
            "peak_vma_count": mp.peak_vma_count if mp else None,
            "divergences": pr.divergence_counts(),
            "causes": {k: v for k, v in pr.cause_counts().items() if v},
            "result_mismatches": sum(len(p.mismatches) for p in pr.processes),
            "resyncs": sum(p.resyncs for p in pr.processes),
            "deep_snapshots_compared": sum(p.deep_snapshots_compared for p in pr.processes),
        })
    fix_by_pid = {f.pid: f for f in r.fix}
    processes = []
    for rp in r.real:
        procs = []
        for pr in r.profiles:
            p = pr.process(rp.pid)
            if p is None:
                continue
            procs.append({"label": pr.label, "kernel": pr.kernel, "seeded_by": p.seeded_by,
                          "final_vma_count": p.final_vma_count, "peak_vma_count": p.peak_vma_count,
                          "events_applied": p.events_applied, "events_skipped": p.events_skipped,
                          "snapshots_compared": p.snapshots_compared,
                          "deep_snapshots_compared": p.deep_snapshots_compared, "resyncs": p.resyncs,
                          "divergences": {k: sum(d.kind == k for d in p.divergences) for k in KINDS}})
        processes.append({"pid": rp.pid, "comm": rp.comm,
                          "real": {"final_vma_count": rp.final_vma_count,
                                   "peak_vma_count": rp.peak_vma_count},
                          "profiles": procs, "anon_merge_fix": _fix_json(fix_by_pid.get(rp.pid))})
    out: dict[str, Any] = {
        "format": 1,
        "trace": r.trace,
        "kernel_release": r.meta.get("kernel_release"),
        "events": r.events,
        "lost_events": r.lost_events,
        "snapshots_compared": r.snapshots_compared,
        "deep_snapshots_compared": r.deep_snapshots_compared,
        "resyncs": r.resyncs,
        "main_pid": r.main_pid,
        "real": {"final_vma_count": main.final_vma_count if main else None,
                 "peak_vma_count": main.peak_vma_count if main else None},
        "profiles": profiles,
        "anon_merge_fix": {"profiles": list(r.fix_pair) if r.fix_pair else None,
                           **_fix_json(fix_by_pid.get(r.main_pid) if r.main_pid is not None else None),
                           "all_processes": _fix_json(_sum_fix(r.fix)) if r.fix else _fix_json(None)},
        "processes": processes,
        "warnings": r.warnings,
    }
    if details:
        out["divergences"] = [
            {"profile": pr.label, **asdict(d), "explained": d.explained}
            for pr in r.profiles for p in pr.processes for d in p.divergences]
        out["result_mismatches"] = [
            {"profile": pr.label, **asdict(m)} for pr in r.profiles for p in pr.processes
            for m in p.mismatches]
        out["fix_events"] = [asdict(e) for e in r.fix_events]
    return out


def _sum_fix(figs: list[FixFigures]) -> FixFigures:
    def total(xs: list[int | None]) -> int | None:
        known = [x for x in xs if x is not None]
        return sum(known) if known else None

    return FixFigures(
        pid=0, without_fix=total([f.without_fix for f in figs]), with_fix=total([f.with_fix for f in figs]),
        saved_final=total([f.saved_final for f in figs]), saved_peak=sum(f.saved_peak for f in figs),
        events_merged_by_fix=sum(f.events_merged_by_fix for f in figs),
        fork_child_boundaries=sum(f.fork_child_boundaries for f in figs))
