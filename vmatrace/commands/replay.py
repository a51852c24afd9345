"""``vmatrace replay TRACE``: the trace through the model under several kernel profiles."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from vmatrace.base.errors import EXIT_DAMAGED, DamagedInput, VmatraceError, warn
from vmatrace.commands import _args

if TYPE_CHECKING:
    from replay.results import ReplayResult
    from vmatrace.base.trace import Trace

EXAMPLES = """
  vmatrace replay trace.vmat                       recording kernel, 6.15, and the fix counterfactual
  vmatrace replay trace.vmat --kernel 6.12 --kernel 6.19
  vmatrace replay trace.vmat --json > replay.json
  vmatrace replay trace.vmat --explain | less      every event's kernel path, with page diagrams
  vmatrace replay trace.vmat --kernel 6.19 --what-if merge_ignores_account=true
"""


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", metavar="TRACE")
    p.add_argument("--kernel", action="append", default=[], metavar="V",
                   help="replay under this kernel version or profile (repeatable; default: the recording "
                        "kernel's profile, 6.15 and the fix counterfactual)")
    p.add_argument("--what-if", action="append", default=[], metavar="NAME=VALUE",
                   help="also replay the first profile with this field changed (repeatable; fields in docs/replay.md)")
    p.add_argument("-j", "--jobs", type=_args.count, metavar="N", help="profiles replayed in parallel (default: CPUs)")


def add_parser(sub: Any) -> None:
    p = _args.parser(
        sub, "replay", help="replay a trace through the model; where the kernel differs, and what the 6.16 fix changes",
        description="Feed a recorded trace into the VMA merge model under several kernel profiles, compare "
                    "with every recorded snapshot region by region (fragmented / merged / other, each "
                    "with the events behind it and a probable cause), and count what the 6.16 anon-merge "
                    "fix (879bca0a2c4f) saves. Exit 3 when the trace is damaged or events were lost.",
        examples=EXAMPLES)
    add_common(p)
    p.add_argument("--json", action="store_true", help="the JSON contract on stdout (docs/replay.md)")
    p.add_argument("--explain", action="store_true",
                   help="print each event's kernel path with page diagrams (first profile only)")
    p.set_defaults(func=run)


def replay_from_args(args: argparse.Namespace, *, explain: bool = False) -> tuple[Trace, ReplayResult]:
    from replay.engine import default_profiles, replay_trace
    from vmatrace.base.trace import read_trace

    trace = read_trace(args.trace)
    specs, pair, notes = default_profiles(trace.meta, args.kernel, args.what_if)
    try:
        result = replay_trace(trace, specs, fix_pair=pair, explain=explain, jobs=args.jobs, notes=notes)
    except VmatraceError as e:
        if not trace.warnings:
            raise
        for w in trace.warnings:  # the damage is the likely cause: say it, and exit as damaged
            warn(w)
        raise DamagedInput(f"{e} (the trace is damaged: see the warnings above)") from None
    return trace, result


def exit_code(trace: Trace, result: ReplayResult) -> int:
    for w in trace.warnings:
        warn(w)
    return EXIT_DAMAGED if trace.warnings or result.lost_events else 0


def run(args: argparse.Namespace) -> int:
    from replay.results import to_json
    from vmatrace.replay_report import attribute, render_terminal
    from vmatrace.report import print_json

    trace, result = replay_from_args(args, explain=args.explain)
    if args.json:
        print_json(to_json(result))
    elif args.explain:
        for line in result.explanations:
            print(line)
        if len(result.explanations) >= 2000:
            print("... (the first 2000 events)")
    else:
        render_terminal(result, attribute(trace, result))
    return exit_code(trace, result)
