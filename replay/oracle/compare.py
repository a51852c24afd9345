"""Compare kernel results with model results: the first differing step, layout and VmFlags.

Comparison policy (docs/oracle.md, "Comparison policy"): at every step the errno, the return value
of mmap/mremap (as a window page), the layout (start, end, perms of every VMA in the window) and
the full VmFlags set are compared. No flag is ignored by default: `sd`, `mr mw me`, `ac`, `gu`
are all predictable from the kernel's configuration and the operations. `ignore_flags` exists for
experiments (bench/fuzz.py --ignore-flags) and is never used by the tests.

With ``anon=True`` (the runner was given a task_vma iterator: ``run_live(..., deep_fd=...)``) the
hidden state is compared too, for every VMA whose bounds and perms agree: the anon_vma identity
classes (which VMAs share an anon_vma, which have none; identities themselves differ between
kernel and model, so classes are compared after numbering them by first appearance) and the
fork-child status (an anon_vma whose anon_vma_chain is not singular). Kinds "anon_vma" and
"fork-child".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .core import SeqResult, Sequence, StepResult, VmaRow

DEFAULT_IGNORE: frozenset[str] = frozenset()


@dataclass
class Disagreement:
    seq: Sequence
    step: int  # index of the first differing step (0 = the initial window)
    kinds: list[str]  # "errno", "ret", "layout", "vmflags", "model-error", "oracle"
    kernel: StepResult | None
    model: StepResult | None
    before: StepResult | None  # the last step on which both agreed
    label: str = ""  # e.g. "live/6.19"
    details: list[str] = field(default_factory=list)

    def summary(self) -> str:
        op = self.seq.ops[self.step - 1] if 1 <= self.step <= len(self.seq.ops) else "(start)"
        return f"{self.seq.name}: step {self.step} `{op}`: {'+'.join(self.kinds)}"

    def format(self) -> str:
        lines = [f"DISAGREEMENT {self.label} {self.summary()}"]
        lines.append("  script:")
        for i, op in enumerate(self.seq.ops[: self.step], 1):
            mark = ">>" if i == self.step else "  "
            lines.append(f"   {mark}{i:3d} {op}")
        if len(self.seq.ops) > self.step:
            lines.append(f"        ... {len(self.seq.ops) - self.step} more op(s) not shown")
        if self.before is not None:
            lines.append(f"  agreed state before step {self.step}:")
            lines.append(self.before.maps_text("    "))
        for who, st in (("kernel", self.kernel), ("model ", self.model)):
            if st is None:
                lines.append(f"  {who}: (no step)")
                continue
            lines.append(f"  {who}: errno {st.errno} ret {st.ret}" + (f"  [{st.note}]" if st.note else ""))
            lines.append(st.maps_text("    "))
        lines.extend("  diff: " + d for d in self.details)
        lines.append("  replay: " + repr({"name": self.seq.name, "ops": list(self.seq.ops[: self.step])}))
        return "\n".join(lines)


def _flags(v: VmaRow, ignore: frozenset[str]) -> frozenset[str]:
    return v.flags - ignore


def _classes(vmas: list[VmaRow]) -> list[int]:
    """anon_vma identity classes: 0 = no anon_vma, else numbered by first appearance."""
    seen: dict[int, int] = {}
    out = []
    for v in vmas:
        a = v.anon or 0
        out.append(0 if a == 0 else seen.setdefault(a, len(seen) + 1))
    return out


def diff_hidden(kl: dict[tuple[int, int, str, str], VmaRow], ml: dict[tuple[int, int, str, str], VmaRow]) -> tuple[list[str], list[str]]:
    """Anon_vma classes and fork-child status of the VMAs present in both (see module docstring)."""
    keys = sorted(set(kl) & set(ml))
    kv = [kl[k] for k in keys]
    mv = [ml[k] for k in keys]
    if any(v.anon is None for v in kv):
        return ["oracle"], ["the kernel result carries no anon_vma state (runner without -d?)"]
    if any(v.anon is None for v in mv):
        return [], []  # a model without anon_vma identities (outside the public contract)
    kinds: list[str] = []
    details: list[str] = []
    kc, mc = _classes(kv), _classes(mv)
    if kc != mc:
        kinds.append("anon_vma")

        def show(c: list[int]) -> str:
            return " ".join(f"[{k[0]},{k[1]})={'-' if x == 0 else chr(ord('A') + (x - 1) % 26)}"
                            for k, x in zip(keys, c, strict=True))

        details.append(f"anon_vma classes: kernel {show(kc)}; model {show(mc)}")
    fk = [v.fork_child for v in kv]
    fm = [v.fork_child for v in mv]
    if fk != fm:
        kinds.append("fork-child")
        diff = [f"[{k[0]},{k[1]}) kernel {'fork child' if a else 'not'} (avc {x.avc}), model "
                f"{'fork child' if b else 'not'} (avc {y.avc})"
                for k, a, b, x, y in zip(keys, fk, fm, kv, mv, strict=True) if a != b]
        details.append("fork-child status: " + "; ".join(diff))
    return kinds, details


def diff_step(k: StepResult, m: StepResult, ignore: frozenset[str] = DEFAULT_IGNORE,
              anon: bool = False) -> tuple[list[str], list[str]]:
    kinds: list[str] = []
    details: list[str] = []
    if m.errno == -1 and m.note:
        return ["model-error"], [m.note]
    if k.errno != m.errno:
        kinds.append("errno")
        details.append(f"errno kernel {k.errno} model {m.errno}")
    if k.ret != m.ret and k.errno == 0 and m.errno == 0:
        kinds.append("ret")
        details.append(f"return kernel {k.ret} model {m.ret}")
    kl = {v.layout_key(): v for v in k.vmas}
    ml = {v.layout_key(): v for v in m.vmas}
    if set(kl) != set(ml):
        kinds.append("layout")
        for key in sorted(set(kl) - set(ml)):
            details.append(f"only in kernel: {kl[key]}")
        for key in sorted(set(ml) - set(kl)):
            details.append(f"only in model:  {ml[key]}")
    fl = []
    for key in sorted(set(kl) & set(ml)):
        kf, mf = _flags(kl[key], ignore), _flags(ml[key], ignore)
        if kf != mf:
            s, e, p, _ = key
            extra = []
            if kf - mf:
                extra.append("kernel only {" + " ".join(sorted(kf - mf)) + "}")
            if mf - kf:
                extra.append("model only {" + " ".join(sorted(mf - kf)) + "}")
            fl.append(f"VmFlags [{s},{e}) {p}: " + ", ".join(extra))
    if fl:
        kinds.append("vmflags")
        details.extend(fl)
    if anon:
        hk, hd = diff_hidden(kl, ml)
        kinds.extend(hk)
        details.extend(hd)
    return kinds, details


def compare(
    s: Sequence,
    kernel: SeqResult,
    model: SeqResult,
    ignore: Iterable[str] = DEFAULT_IGNORE,
    label: str = "",
    anon: bool = False,
) -> Disagreement | None:
    """None if kernel and model agree on every step, else the first disagreement. ``anon``:
    compare anon_vma classes and fork-child status too (the kernel result must carry them)."""
    ign = frozenset(ignore)
    if kernel.status != "ok" or len(kernel.steps) != len(s.ops) + 1:
        last = kernel.steps[-1] if kernel.steps else None
        return Disagreement(s, len(kernel.steps), ["oracle"], last, None, None, label,
                            [f"runner status {kernel.status}, {len(kernel.steps)} step(s) of {len(s.ops) + 1}"])
    before: StepResult | None = None
    for i, k in enumerate(kernel.steps):
        m = model.steps[i] if i < len(model.steps) else None
        if m is None:
            return Disagreement(s, i, ["model-error"], k, None, before, label, ["model stopped early"])
        kinds, details = diff_step(k, m, ign, anon)
        if kinds:
            return Disagreement(s, i, kinds, k, m, before, label, details)
        before = k
    return None


def compare_all(
    seqs: Iterable[Sequence],
    kernel: Iterable[SeqResult],
    model: Iterable[SeqResult],
    ignore: Iterable[str] = DEFAULT_IGNORE,
    label: str = "",
    anon: bool = False,
) -> list[Disagreement]:
    out = []
    for s, k, m in zip(seqs, kernel, model, strict=True):
        d = compare(s, k, m, ignore, label, anon)
        if d is not None:
            out.append(d)
    return out


def compare_expected(result: SeqResult, expected: list[tuple[int, int, str]]) -> list[str]:
    """Check the final layout of a result against an expected list of (start, end, perms)."""
    if result.status != "ok" or not result.steps:
        return [f"runner status {result.status}"]
    got = [v.key() for v in result.steps[-1].vmas]
    if got != expected:
        return [f"final layout {got} != expected {expected}"]
    return []
