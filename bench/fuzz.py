#!/usr/bin/env python3
"""Differential fuzzer: random VMA operation sequences on real kernels vs the model.

    bench/fuzz.py [--live [--anon]] [--qemu 6.1|6.12] -n N [--seed S] [--length L]
                  [--profile P] [--show K] [--no-minimize] [--append] [--ignore-flags sd,..]

--anon (live, root + bcc): the runner also reads its own VMAs' anon_vma identity and anon_vma_chain
with a BPF task_vma iterator after every step, and anon_vma identity classes and fork-child status
are compared as well as layouts and flags.

For each target prints exactly one line "N sequences, M operations, K disagreements", then the
first --show disagreements (minimized unless --no-minimize): the script up to the differing step,
the agreed state before it, the kernel's and the model's errno and maps, and the differences.
--append adds the (minimized) disagreeing sequences to tests/fuzz_regressions.json.
Sequence i of seed S is always the same (replay one with --seed S --index i -n 1).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from replay.oracle.compare import Disagreement  # noqa: E402
from replay.oracle.execute import QEMU_KERNELS, run_live, run_qemu, run_qemu_guest  # noqa: E402
from replay.oracle.fuzz import GenConfig, Runner, gen_batch, minimize  # noqa: E402
from replay.oracle.model import apply_op, make_model, run_model  # noqa: E402

REGRESSIONS = ROOT / "tests" / "fuzz_regressions.json"


def load_regressions(path: Path = REGRESSIONS) -> list[dict[str, object]]:
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    assert isinstance(data, list)
    return data


def append_regressions(ds: list[Disagreement], kernel: str, profile: str, path: Path = REGRESSIONS) -> int:
    entries = load_regressions(path)
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for e in entries:
        ops = e["ops"]
        assert isinstance(ops, list)
        seen.add((str(e["kernel"]), tuple(str(o) for o in ops)))
    added = 0
    for d in ds:
        key = (kernel, tuple(d.seq.ops))
        if key in seen:
            continue
        seen.add(key)
        entries.append({
            "name": f"{kernel}-{d.seq.name}",
            "kernel": kernel,
            "profile": profile,
            "ops": list(d.seq.ops),
            "found": time.strftime("%Y-%m-%d"),
            "first_difference": d.summary(),
        })  # fmt: skip
        added += 1
    path.write_text(json.dumps(entries, indent=1) + "\n")
    return added


def model_explanation(profile: str, options: dict[str, object] | None, d: Disagreement) -> str:
    """Replay the sequence in the model up to the differing step and return the model's own
    explanation of that step (AddressSpace.last_explanation, outside the public contract:
    best effort, empty if unavailable)."""
    if d.step < 1:
        return ""
    try:
        mm = make_model(profile, dict(options) if options else None)
        for op in d.seq.ops[: d.step]:
            with contextlib.suppress(OSError):
                mm, _ = apply_op(mm, op)
        ex = getattr(mm, "last_explanation", None)
        return "" if ex is None else str(ex)
    except Exception as e:  # the explanation is a debugging aid only
        return f"(no explanation: {type(e).__name__}: {e})"


def _bucket(d: Disagreement) -> str:
    return (d.seq.ops[d.step - 1].split()[0] if d.step else "start") + ":" + "+".join(d.kinds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--live", action="store_true", help="fuzz the running kernel")
    ap.add_argument("--qemu", action="append", default=[], choices=QEMU_KERNELS,
                    help="fuzz a pinned kernel under qemu (replay/oracle/kernels.py)")
    ap.add_argument("--batch", type=int, default=2000, help="sequences per qemu boot")
    ap.add_argument("--cache", type=Path, help="keep each qemu boot's output here and reuse it "
                    "for the same kernel, runner and sequences (compare a changed model again)")
    ap.add_argument("-n", type=int, default=300, help="sequences per target")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--index", type=int, default=0, help="first sequence index")
    ap.add_argument("--length", type=int, default=12, help="operations per sequence")
    ap.add_argument("--profile", help="model profile (default: live -> 'live', qemu K -> K)")
    ap.add_argument("--show", type=int, default=3, help="disagreements to print")
    ap.add_argument("--no-minimize", action="store_true")
    ap.add_argument("--append", action="store_true", help="add disagreements to tests/fuzz_regressions.json")
    ap.add_argument("--ignore-flags", default="", help="comma list of VmFlags to ignore (experiments only)")
    ap.add_argument("--corpus", type=Path, default=REGRESSIONS, help="regression file for --append")
    ap.add_argument("--filter", default="", help="only disagreements whose op:kind contains this, e.g. mremap")
    ap.add_argument("--json", type=Path, help="write all disagreements as JSON here")
    ap.add_argument("--anon", action="store_true",
                    help="live: compare anon_vma identity classes and fork-child status too (root, bcc)")
    a = ap.parse_args(argv)
    deep = None
    if a.anon:
        from collectors.deep import DeepCollector

        deep = DeepCollector()
    targets = (["live"] if a.live or not a.qemu else []) + a.qemu
    if a.cache:
        import os

        os.environ["VMATRACE_QEMU_CACHE"] = str(a.cache.resolve())
    ignore = frozenset(x for x in a.ignore_flags.split(",") if x)
    rc = 0
    dump: list[dict[str, object]] = []
    for target in targets:
        cfg = GenConfig(length=a.length)
        seqs = gen_batch(a.seed, a.n, cfg, a.index)
        options: dict[str, object] | None = None
        t0 = time.monotonic()
        if target == "live":
            from replay.live import probe_live

            info = probe_live()
            cfg.allow_move = info.mremap_faulted_safe
            seqs = gen_batch(a.seed, a.n, cfg, a.index)
            profile = a.profile or "live"
            label = f"live(detected {info.profile})/model:{profile}" + (" +anon" if deep else "")
            run_k: Runner = (functools.partial(run_live, deep_fd=deep.prog_fd, deep_rec_size=deep.rec_size)
                             if deep else run_live)
            t0 = time.monotonic()
            kres = run_k(seqs)
        else:
            kres = []
            guest = None
            for i in range(0, len(seqs), max(a.batch, 1)):
                guest, part = run_qemu_guest(target, seqs[i : i + a.batch])
                kres.extend(part)
            if guest is None:
                from replay.oracle.execute import guest_info

                guest = guest_info(target)
            profile = a.profile or guest.upstream
            options = guest.model_options()
            label = f"qemu-{target}(guest {guest.release})/model:{profile}"
            run_k = functools.partial(run_qemu, target)
        run_m: Runner = functools.partial(run_model, profile, options=options)
        t1 = time.monotonic()
        mres = run_m(seqs)
        t2 = time.monotonic()
        from replay.oracle.compare import compare

        anon = deep is not None and target == "live"
        ds = [d for s, k, m in zip(seqs, kres, mres, strict=True)
              if (d := compare(s, k, m, ignore, label, anon))]
        nops = sum(len(s.ops) for s in seqs)
        print(f"== {label} seed {a.seed} length {a.length}")
        print(f"{len(seqs)} sequences, {nops} operations, {len(ds)} disagreements")
        print(f"   kernel {t1 - t0:.2f}s ({len(seqs) / max(t1 - t0, 1e-9):.0f} seq/s), model {t2 - t1:.2f}s",
              file=sys.stderr)
        oracle_bad = [d for d in ds if "oracle" in d.kinds]
        if oracle_bad:
            print(f"   {len(oracle_bad)} of them are runner failures (oracle), not model bugs")
        if a.filter:
            ds = [d for d in ds if a.filter in _bucket(d)]
            print(f"   {len(ds)} match --filter {a.filter!r}")
        if ds:
            rc = 1
            buckets: dict[str, list[Disagreement]] = {}
            for d in ds:
                buckets.setdefault(_bucket(d), []).append(d)
            print("   by op:kind: " + ", ".join(f"{k} {len(v)}" for k, v in
                                             sorted(buckets.items(), key=lambda x: -len(x[1]))))
            # show one of each bucket first (most frequent first), then fill up
            order = [v[0] for v in sorted(buckets.values(), key=len, reverse=True)]
            first = {id(d) for d in order}
            order += [d for d in ds if id(d) not in first]
            pick = ds if a.append else order[: max(a.show, 0)]
            shown = pick if a.no_minimize else minimize(pick, run_k, run_m, label, ignore, anon=anon)
            for d in shown[: a.show]:
                print()
                print(d.format())
                ex = model_explanation(profile, options, d)
                if ex:
                    lines = ex.splitlines()
                    print(f"  model's explanation of step {d.step}:")
                    print("\n".join("    " + x for x in lines[:20]) + ("\n    ..." if len(lines) > 20 else ""))
            if a.append:
                n = append_regressions(shown, target, profile, a.corpus)
                print(f"\nappended {n} new entr{'y' if n == 1 else 'ies'} to {a.corpus}")
            dump.extend({"target": target, "summary": d.summary(), "ops": list(d.seq.ops),
                         "details": d.details} for d in shown)
    if a.json:
        a.json.write_text(json.dumps(dump, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main())
