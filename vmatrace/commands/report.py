"""``vmatrace report TRACE``: the replay as a terminal summary and one self-contained HTML file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from vmatrace.commands import _args
from vmatrace.commands.replay import add_common, exit_code, replay_from_args


def add_parser(sub: Any) -> None:
    p = _args.parser(
        sub, "report", help="the replay as a terminal summary and an offline HTML report",
        description="Replay the trace (as `vmatrace replay` does) and write one HTML file that opens with no "
                    "network: VMA count over time (real and each profile, with vm.max_map_count when close), "
                    "the address space with divergences marked, the fix table, top call sites and ELF "
                    "segments, the divergence list, and a banner when events were lost.",
        examples="  vmatrace report trace.vmat -o report.html\n  vmatrace report trace.vmat --json")
    add_common(p)
    _args.add_output(p, "the HTML file to write (default: TRACE.html beside the trace)", metavar="HTML")
    p.add_argument("--json", action="store_true", help="the replay's JSON contract on stdout, no HTML")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from replay.results import to_json
    from vmatrace.analysis import max_map_count
    from vmatrace.base.safeio import chown_to_invoker, safe_create
    from vmatrace.replay_report import attribute, render_html, render_terminal
    from vmatrace.report import print_json

    trace, result = replay_from_args(args)
    if args.json:
        print_json(to_json(result))
        return exit_code(trace, result)
    att = attribute(trace, result)
    render_terminal(result, att)
    out = Path(args.output) if args.output else Path(str(trace.path).rstrip("/") + ".html")
    page = render_html(trace, result, att, trace.meta.get("max_map_count") or max_map_count())
    fd = safe_create(out, force=args.force)
    chown_to_invoker(fd)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"wrote {out}", file=sys.stderr)
    return exit_code(trace, result)
