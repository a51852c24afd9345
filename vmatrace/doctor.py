"""``vmatrace doctor``: can ``record`` work here, and if not, the command that fixes it."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from collectors.procmaps import has_procmap_query

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39
TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
REQUIRED_TRACEPOINTS = (
    "syscalls/sys_enter_mmap", "syscalls/sys_exit_mmap", "syscalls/sys_enter_munmap", "syscalls/sys_enter_mprotect",
    "syscalls/sys_enter_mremap", "syscalls/sys_enter_brk", "syscalls/sys_enter_madvise", "syscalls/sys_enter_mlock",
    "syscalls/sys_enter_mseal", "sched/sched_process_fork", "sched/sched_process_exec", "sched/sched_process_exit",
    "exceptions/page_fault_user", "exceptions/page_fault_kernel",
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    required: bool = True  # needed by `record`; informational checks never fail the doctor


def _cap_eff() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def tracefs_root() -> str | None:
    for d in TRACEFS_DIRS:
        if os.path.isdir(os.path.join(d, "events")):
            return d
    return None


def _sysctl(name: str) -> str | None:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None


def run_checks() -> list[Check]:
    checks: list[Check] = []
    caps = _cap_eff()
    priv = os.geteuid() == 0 or (caps >> CAP_BPF & 1 and caps >> CAP_PERFMON & 1) or bool(caps >> CAP_SYS_ADMIN & 1)
    checks.append(Check("privileges", bool(priv),
                        "root" if os.geteuid() == 0 else ("CAP_BPF+CAP_PERFMON" if priv else "not root, no CAP_BPF+CAP_PERFMON"),
                        "sudo vmatrace ..."))
    try:
        import bcc

        checks.append(Check("bcc", True, f"bcc {getattr(bcc, '__version__', '?')} importable from this Python"))
    except Exception as e:  # bcc raises odd things when libbcc is missing
        checks.append(Check("bcc", False, f"import bcc failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                            "sudo scripts/setup.sh  (Debian python3-bpfcc, linked into the venv)"))
    kv = platform.release()
    build, source = f"/lib/modules/{kv}/build", f"/lib/modules/{kv}/source"
    hdr_ok = os.path.isfile(os.path.join(build, "Makefile")) and os.path.isdir(os.path.join(source, "include"))
    checks.append(Check("kernel headers", hdr_ok,
                        f"{build} -> {os.path.realpath(build)}" if hdr_ok else f"{build} and {source} must both exist",
                        "sudo scripts/setup.sh  (links Debian's linux-headers-amd64 there; BPF code uses only "
                        "tracepoint args and BTF offsets, so other-version headers are fine)"))
    root = tracefs_root()
    checks.append(Check("tracefs", root is not None, f"mounted at {root}" if root else "not mounted",
                        "sudo mount -t tracefs nodev /sys/kernel/tracing"))
    if root:
        missing = [t for t in REQUIRED_TRACEPOINTS if not os.path.isdir(os.path.join(root, "events", t))]
        checks.append(Check("tracepoints", not missing,
                            f"{len(REQUIRED_TRACEPOINTS)} needed tracepoints present" if not missing
                            else "missing: " + ", ".join(missing),
                            "a kernel with CONFIG_FTRACE_SYSCALLS=y and CONFIG_TRACEPOINTS=y"))
    else:
        checks.append(Check("tracepoints", False, "cannot check without tracefs",
                            "sudo mount -t tracefs nodev /sys/kernel/tracing"))
    btf = os.path.exists("/sys/kernel/btf/vmlinux")
    checks.append(Check("BTF", btf, "/sys/kernel/btf/vmlinux present (struct offsets)" if btf else "no kernel BTF",
                        "a kernel with CONFIG_DEBUG_INFO_BTF=y (only needed for struct offsets)", required=False))
    checks.append(_deep_check(bool(priv) and btf))
    pq = has_procmap_query()
    checks.append(Check("PROCMAP_QUERY", pq, "ioctl available (fast maps-only snapshots)" if pq
                        else "not available (Linux < 6.11): text /proc/PID/maps is used", None, required=False))
    oc = _sysctl("vm.overcommit_memory")
    oc_text = {"0": "heuristic", "1": "always", "2": "never (strict accounting: VM_ACCOUNT matters)"}.get(oc or "", "?")
    checks.append(Check("vm.overcommit_memory", True, f"{oc} ({oc_text})", None, required=False))
    mmc = _sysctl("vm.max_map_count")
    checks.append(Check("vm.max_map_count", True, f"{mmc} VMAs per process",
                        "sysctl -w vm.max_map_count=N to raise it", required=False))
    ps = _sysctl("kernel.yama.ptrace_scope")
    checks.append(Check("ptrace", ps in (None, "0", "1", "2") or os.geteuid() == 0,
                        f"yama ptrace_scope={ps}" if ps is not None else "no Yama",
                        "exit snapshots need ptrace: sysctl -w kernel.yama.ptrace_scope=1", required=False))
    return checks


def _deep_check(possible: bool) -> Check:
    """Deep snapshots (``snapshot --deep``, ``record --deep``): load the iterator and check its
    offsets against /proc. Informational: record works without them."""
    fix = "root, bcc, a kernel with CONFIG_DEBUG_INFO_BTF=y and BPF iterators (Linux 6.1+)"
    if not possible:
        return Check("deep snapshots", False, "need root and kernel BTF", fix, required=False)
    from collectors.deep import deep_available

    ok, detail = deep_available()
    return Check("deep snapshots", ok, detail, None if ok else fix, required=False)


def record_can_work(checks: list[Check]) -> bool:
    return all(c.ok for c in checks if c.required)
