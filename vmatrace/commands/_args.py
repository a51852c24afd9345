"""Argument types and flags shared by the verbs, so that each is spelled one way."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

PID_MAX_LIMIT = 2**22  # the kernel's PID_MAX_LIMIT on 64-bit


def int_in(lo: int, hi: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi], else a one-line usage error naming ``what``."""

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            v = lo - 1
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"not {what}: {s!r}")
        return v

    return parse


def positive_float(what: str) -> Callable[[str], float]:
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            v = -1.0
        if not v > 0 or v != v or v == float("inf"):
            raise argparse.ArgumentTypeError(f"not {what}: {s!r}")
        return v

    return parse


pid = int_in(1, PID_MAX_LIMIT, "a PID")
count = int_in(1, 2**31, "a positive number")
snapshot_id = int_in(0, 2**32 - 1, "a snapshot id (0 to 4294967295)")


def add_output(p: argparse.ArgumentParser, what: str, *, required: bool = False, metavar: str = "FILE",
               **kw: Any) -> None:
    """``-o/--output`` and ``-f/--force``, the same on every verb that writes a file."""
    p.add_argument("-o", "--output", metavar=metavar, required=required, help=what, **kw)
    p.add_argument("-f", "--force", action="store_true", help=f"overwrite an existing {metavar}")


def parser(sub: Any, name: str, *, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=description, epilog="examples:\n" + examples.strip("\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return p
