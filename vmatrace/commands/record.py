"""``vmatrace record``: trace the address-space changes of a command or of running processes (bcc)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from vmatrace.commands import _args

if TYPE_CHECKING:
    from collectors.record import Options

EXAMPLES = """examples:
  sudo vmatrace record -- python3 -c 'import json'   # trace a command (run as you, not root)
  sudo vmatrace record -o t.vmat -p 1234 -d 10        # trace PID 1234 for 10 seconds
  sudo vmatrace record -p 1234 -p 1240 --interval 5   # two processes, a snapshot every 5 s
  sudo vmatrace record --stacks -- ./a.out            # with symbolized user stacks
  sudo vmatrace record --deep -p 1234 -d 10           # exact hidden state (anon_vma, fork child)
  sudo vmatrace record --no-faults -b 4096 -- make    # no page faults, 16 MiB ring buffer

Traced: mmap munmap mprotect pkey_mprotect mremap brk madvise process_madvise mlock mlock2
munlock mlockall munlockall mseal prctl(VMA options) shmat shmdt execve exit_group, fork/clone/
exec/exit of processes and threads, the first write fault to each page, maps snapshots at start,
exec, exit (before the address space is torn down) and every --interval seconds.

Overhead: about 1.3-1.4x on a loop of nothing but mmap+munmap calls (1.28x is the cost of having
syscall tracepoints attached at all); near zero for ordinary programs. See bench/bench_record.py.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "record",
        help="trace mmap/mprotect/munmap/... of a process tree with eBPF (root)",
        description="Record the address-space changes of a command or of running processes into a trace "
        "directory: every VMA-changing syscall with its arguments and result, forks/execs/exits, first "
        "write faults, and /proc maps snapshots. Ctrl-C ends the recording.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-o", "--output", metavar="TRACE", help="trace directory to create (default: vmatrace-<cmd|pid>-<time>.vmat)")
    p.add_argument("-p", "--pid", metavar="PID", type=_args.pid, action="append", default=[],
                   help="trace this running process (repeatable)")
    p.add_argument("-d", "--duration", metavar="SECONDS", type=_args.positive_float("a duration in seconds"), help="stop after this many seconds")
    p.add_argument("--interval", metavar="S", type=_args.positive_float("an interval in seconds"), help="take a maps snapshot of every process every S seconds")
    p.add_argument("--stacks", action="store_true", help="record user stacks of each event (symbolized at the end)")
    p.add_argument("--deep", action="store_true",
                   help="deep snapshots: also the hidden VMA state (anon_vma identity, fork child, anon "
                        "pgoff, open file, close hook) through a BPF task_vma iterator, at start, every "
                        "--interval and at exit; replay then starts from exact states (vmatrace doctor "
                        "says whether this kernel allows it)")
    p.add_argument("--no-faults", action="store_true", help="do not trace page faults")
    p.add_argument("--no-smaps", action="store_true", help="snapshots without smaps (faster, no RSS/VmFlags)")
    p.add_argument("-b", "--buffer-pages", metavar="PAGES", type=int, default=8192,
                   help="ring buffer size in pages, a power of two (default 8192 = 32 MiB)")
    p.add_argument("--as-root", action="store_true", help="run the command as root instead of the invoking (sudo) user")
    p.add_argument("--no-lock-order", action="store_true",
                   help="order calls by their return, not by mmap_lock acquisition (a bit cheaper)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing trace")
    p.add_argument("-q", "--quiet", action="store_true", help="no start line and summary")
    p.add_argument("--ebpf", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="command to run and trace")
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> Options:
    from collectors.record import Options

    cmd = list(args.command or [])
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    return Options(command=cmd, pids=list(args.pid), output=args.output, duration=args.duration,
                   interval=args.interval, stacks=args.stacks, deep=args.deep, faults=not args.no_faults,
                   smaps=not args.no_smaps, buffer_pages=args.buffer_pages, as_root=args.as_root,
                   lock_order=not args.no_lock_order, force=args.force, quiet=args.quiet)


def run(args: argparse.Namespace) -> int:
    from collectors.record import Recorder, bpf_text

    o = options_from_args(args)
    if getattr(args, "ebpf", False):
        print(bpf_text(o))
        return 0
    o.kernel_probe = kernel_probe()
    return Recorder(o).run()


def kernel_probe() -> dict[str, object] | None:
    """The running kernel's VMA behaviour as replay.live probes it (meta.kernel_probe), or None
    when it cannot be probed here (no C compiler for the probe runner, or a probe failed): an
    offline replay then falls back to the release table (docs/trace-format.md)."""
    from replay.live import probe_live
    from replay.oracle.core import OracleError

    try:
        info = probe_live()
    except (OracleError, RuntimeError, OSError) as e:
        from vmatrace.base.errors import warn

        warn(f"could not probe the kernel's VMA behaviour ({e}); a replay will use the release "
             "table")
        return None
    return {"profile": info.profile, "sticky": info.sticky, "new_anon_rule": info.new_anon_rule,
            "guard": info.has_guard, "mseal": info.has_mseal, "account_drop": info.account_drop,
            "mremap_fixed": info.mremap_fixed, "mseal_stale": info.mseal_stale,
            "mremap_checks_first": info.mremap_checks_first, "findings": list(info.findings)}
