"""``vmatrace doctor``: can ``record`` work on this machine, and the fix for what is missing."""

from __future__ import annotations

import argparse
from typing import Any

from vmatrace.commands import _args


def add_parser(sub: Any) -> None:
    d = _args.parser(
        sub, "doctor", help="check that this machine can record; print the fix for what is missing",
        description="Checks privileges, bcc, kernel headers, tracefs, tracepoints, BTF, PROCMAP_QUERY "
                    "and VM sysctls. Exit status 0 only when `vmatrace record` can work.",
        examples="  vmatrace doctor")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vmatrace.doctor import record_can_work, run_checks
    from vmatrace.report import print_json, render_checks

    checks = run_checks()
    ok = record_can_work(checks)
    if args.json:
        print_json({"record_can_work": ok, "checks": [c.__dict__ for c in checks]})
    else:
        render_checks(checks, ok)
    return 0 if ok else 1
