"""``vmatrace top``: a system-wide census of the processes with the most VMAs."""

from __future__ import annotations

import argparse
from typing import Any

from vmatrace.commands import _args


def add_parser(sub: Any) -> None:
    t = _args.parser(
        sub, "top", help="processes ranked by VMA count, with invisible fragmentation",
        description="A system-wide census: processes ranked by VMA count, their share of "
                    "vm.max_map_count, invisible-fragmentation extra VMAs and the worst region. As "
                    "root it sees every process, otherwise only yours, and says what it skipped.",
        examples="  sudo vmatrace top\n  vmatrace top -n 3 --json")
    t.add_argument("-n", type=_args.count, default=10, metavar="N", help="how many processes to list and analyse (10)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vmatrace.census import take_census
    from vmatrace.report import print_json, render_census

    c = take_census(args.n)
    if args.json:
        print_json({
            "max_map_count": c.max_map_count, "processes_read": c.seen, "total_vmas": c.total_vmas,
            "skipped": c.skipped, "top": [e.to_dict(c.max_map_count) for e in c.entries],
        })
    else:
        render_census(c)
    return 0
