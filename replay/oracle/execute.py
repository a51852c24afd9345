"""Build the static runner and run sequences on the live kernel or on an old kernel under qemu."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

from .core import (
    WINDOW_BASE,
    WINDOW_PAGES,
    OracleError,
    SeqResult,
    Sequence,
    parse_output,
    to_script,
)
from .kernels import LABELS

HERE = Path(__file__).resolve().parent
RUNNER_SRC = HERE / "runner.c"
_REPO = HERE.parent.parent
BEGIN = "=====VMATRACE-ORACLE-BEGIN====="
END = "=====VMATRACE-ORACLE-END====="
QEMU_KERNELS: tuple[str, ...] = LABELS  # the pinned table of replay/oracle/kernels.py


def cache_dir() -> Path:
    """$VMATRACE_ORACLE_CACHE, else <repo>/.cache/oracle in a checkout, else ~/.cache/vmatrace/oracle."""
    env = os.environ.get("VMATRACE_ORACLE_CACHE")
    if env:
        d = Path(env)
    elif (_REPO / "pyproject.toml").exists() and os.access(_REPO, os.W_OK):
        d = _REPO / ".cache" / "oracle"
    else:
        d = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vmatrace" / "oracle"
    d.mkdir(parents=True, exist_ok=True)
    return d


def kernel_image(kernel: str) -> Path:
    """vmlinuz of an old kernel, as extracted by scripts/setup.sh ($VMATRACE_KERNELS overrides)."""
    d = Path(os.environ.get("VMATRACE_KERNELS", _REPO / ".cache" / "kernels"))
    return d / f"vmlinuz-{kernel}"


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_runner(cc: str | None = None) -> Path:
    """Compile runner.c statically (once per source hash); returns the binary path."""
    cc = cc or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise OracleError("no C compiler (gcc) found: run scripts/setup.sh")
    src = RUNNER_SRC.read_bytes()
    flags = ["-static", "-O2", "-Wall"]
    key = hashlib.sha256(src + " ".join([cc, *flags]).encode()).hexdigest()[:16]
    out = cache_dir() / f"runner-{key}"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(dir=cache_dir()) as td:
        tmp = Path(td) / "runner"
        p = subprocess.run([cc, *flags, "-o", str(tmp), str(RUNNER_SRC)], capture_output=True, text=True)
        if p.returncode != 0:
            raise OracleError(f"building the runner failed:\n{p.stderr}")
        _atomic_write(out, tmp.read_bytes(), 0o755)
    return out


def _runner_args(base: int, pages: int) -> list[str]:
    return ["-b", f"{base:x}", "-w", str(pages)]


def have_cc() -> bool:
    return (shutil.which("gcc") or shutil.which("cc")) is not None


def run_live(
    seqs: Seq[Sequence], base: int = WINDOW_BASE, pages: int = WINDOW_PAGES, timeout: float = 600,
    engine: str = "auto", deep_fd: int | None = None, deep_rec_size: int = 0,
) -> list[SeqResult]:
    """Run every sequence on the running kernel (one runner process, one forked child each).

    engine: "c" (the static runner), "python" (replay/oracle/pyrunner.py, ctypes, ~30x slower)
    or "auto" (C when a compiler exists, else Python). ``deep_fd``: the fd of a loaded task_vma
    iterator program (``collectors.deep.DeepCollector.prog_fd``, its records ``deep_rec_size``
    bytes: ``.rec_size``; C runner only): every step then carries each VMA's anon_vma identity and
    anon_vma_chain length."""
    if not seqs:
        return []
    if deep_fd is not None:
        if deep_rec_size <= 0:
            raise OracleError("deep_fd needs deep_rec_size (DeepCollector.rec_size)")
        if engine == "python" or not have_cc():
            raise OracleError("the hidden-state comparison needs the C runner (gcc)")
        engine = "c"
    if engine == "python" or (engine == "auto" and not have_cc()):
        from .pyrunner import run_live_py

        return run_live_py(seqs, base, pages)
    runner = build_runner()
    deep = ["-d", f"{deep_fd},{deep_rec_size}"] if deep_fd is not None else []
    # the runner's files (open a/b/c) live on tmpfs, as in the qemu guests
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="vmatrace-oracle-", dir=shm) as td:
        p = subprocess.run(
            [str(runner), *_runner_args(base, pages), *deep],
            input=to_script(seqs),
            capture_output=True,
            text=True,
            timeout=timeout,
            pass_fds=(deep_fd,) if deep_fd is not None else (),
            cwd=td,
        )
    if p.returncode != 0 or "#done" not in p.stdout:
        raise OracleError(f"runner failed (rc {p.returncode}): {p.stderr[-2000:]}")
    return parse_output(p.stdout, seqs)


# ---- qemu -------------------------------------------------------------------------------------


def _cpio_newc(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A newc cpio archive. entries: (name, mode, data, rdev as (major<<8|minor))."""
    out = bytearray()
    ino = 1
    for name, mode, data, rdev in [*entries, ("TRAILER!!!", 0, b"", 0)]:
        nm = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{v:08x}"
            for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(nm), 0)
        )
        out += hdr.encode() + nm
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
        ino += 1
    return bytes(out)


_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mkdir -p /tmp
/bin/busybox mount -t tmpfs tmpfs /tmp
/bin/busybox echo {begin}
/bin/busybox echo "#guest release $(/bin/busybox uname -r)"
/bin/busybox echo "#guest thp $(/bin/busybox cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || /bin/busybox echo unconfigured)"
/bin/busybox echo "#guest overcommit $(/bin/busybox cat /proc/sys/vm/overcommit_memory)"
/bin/busybox echo "#guest pku $(/bin/busybox grep -c -w ospke /proc/cpuinfo)"
/bin/busybox echo "#guest own $(/bin/busybox grep -m1 VmFlags /proc/self/smaps)"
cd /tmp
/runner {args} /script.txt
/bin/busybox echo rc=$?
/bin/busybox echo {end}
/bin/busybox poweroff -f
"""


@dataclass(frozen=True)
class GuestInfo:
    """What a booted guest says about itself: its release picks the model's profile, and its
    configuration (soft-dirty, THP, protection keys, overcommit) the model's options."""

    release: str
    thp: str  # "always" / "madvise" / "never", or "unconfigured" (no CONFIG_TRANSPARENT_HUGEPAGE)
    overcommit_memory: int
    pkeys: bool  # the CPU has protection keys and the kernel enabled them (ospke)
    soft_dirty: bool  # CONFIG_MEM_SOFT_DIRTY: a fresh VMA of the guest's own busybox shows `sd`

    @property
    def upstream(self) -> str:
        """"6.18.15+deb13-cloud-amd64" -> "6.18.15"."""
        return re.split(r"[-+~]", self.release, maxsplit=1)[0]

    def model_options(self) -> dict[str, object]:
        return {"soft_dirty": self.soft_dirty, "pkeys": self.pkeys,
                "thp": self.thp, "overcommit_memory": self.overcommit_memory}


def parse_guest(body: str) -> GuestInfo:
    vals: dict[str, str] = {}
    for line in body.splitlines():
        if line.startswith("#guest "):
            _, key, *rest = [*line.split(" ", 2), ""]
            vals[key] = rest[0].strip()
    if "release" not in vals:
        raise OracleError("the guest did not report its release")
    thp = vals.get("thp", "unconfigured")
    m = re.search(r"\[(\w+)\]", thp)
    return GuestInfo(
        release=vals["release"],
        thp=m.group(1) if m else "unconfigured",
        overcommit_memory=int(vals.get("overcommit", "0") or 0),
        pkeys=vals.get("pku", "0").strip() not in ("", "0"),
        soft_dirty="sd" in vals.get("own", "").split(),
    )


def is_static_elf(path: Path) -> bool:
    """A 64-bit little-endian ELF without a PT_INTERP program header (no dynamic loader)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return False
        phoff = struct.unpack_from("<Q", head, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def _busybox() -> Path:
    for c in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(c).resolve()
        if p.exists() and is_static_elf(p):
            return p
    raise OracleError("busybox-static not found: run scripts/setup.sh")


def build_initramfs(script: str, dest: Path, base: int = WINDOW_BASE, pages: int = WINDOW_PAGES) -> Path:
    init = _INIT.format(begin=BEGIN, end=END, args=" ".join(_runner_args(base, pages)))
    entries: list[tuple[str, int, bytes, int]] = [
        ("bin", 0o040755, b"", 0),
        ("dev", 0o040755, b"", 0),
        ("dev/console", 0o020600, b"", (5 << 8) | 1),
        ("proc", 0o040755, b"", 0),
        ("sys", 0o040755, b"", 0),
        ("bin/busybox", 0o100755, _busybox().read_bytes(), 0),
        ("bin/sh", 0o120777, b"busybox", 0),
        ("init", 0o100755, init.encode(), 0),
        ("runner", 0o100755, build_runner().read_bytes(), 0),
        ("script.txt", 0o100644, script.encode(), 0),
    ]
    dest.write_bytes(gzip.compress(_cpio_newc(entries), compresslevel=1))
    return dest


def qemu_available(kernel: str) -> tuple[bool, str]:
    if shutil.which("qemu-system-x86_64") is None:
        return False, "qemu-system-x86_64 not installed (scripts/setup.sh)"
    if not kernel_image(kernel).exists():
        return False, f"{kernel_image(kernel)} missing (scripts/setup.sh)"
    try:
        _busybox()
    except OracleError as e:
        return False, str(e)
    if not have_cc():
        return False, "no gcc"
    return True, ""


def qemu_console(kernel: str, script: str, timeout: float = 1200, base: int = WINDOW_BASE,
                 pages: int = WINDOW_PAGES) -> str:
    """Boot `kernel` (TCG) with the runner over `script`; returns the runner's output section."""
    if kernel not in QEMU_KERNELS:
        raise ValueError(f"no qemu kernel {kernel!r}; have {QEMU_KERNELS}")
    ok, why = qemu_available(kernel)
    if not ok:
        raise OracleError(why)
    with tempfile.TemporaryDirectory(prefix="vmatrace-qemu-") as td:
        initrd = build_initramfs(script, Path(td) / "initrd.gz", base, pages)
        cmd = [
            "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1",
            "-nographic", "-no-reboot", "-monitor", "none",
            "-kernel", str(kernel_image(kernel)), "-initrd", str(initrd),
            # no_timer_check: on a loaded host the emulated IO-APIC timer can look broken to the
            # boot-time check, which then panics ("IO-APIC + timer doesn't work!");
            # nowatchdog: a starved vCPU otherwise prints soft-lockup reports into the runner's
            # output, which then reads as a disagreement (seen once on 6.12 under load)
            "-append", "console=ttyS0 quiet loglevel=1 panic=-1 no_timer_check nowatchdog",
        ]  # fmt: skip
        for attempt in (1, 2):
            try:
                p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                   timeout=timeout)
            except subprocess.TimeoutExpired as e:
                raise OracleError(f"qemu {kernel} timed out after {timeout}s") from e
            text = p.stdout.decode(errors="replace").replace("\r", "")
            if BEGIN in text or attempt == 2:
                break  # a guest that never reached its /init (a boot panic) is booted once more
    if BEGIN not in text or END not in text:
        raise OracleError(f"qemu {kernel}: no complete output (rc {p.returncode}); tail:\n{text[-3000:]}")
    body = text.split(BEGIN, 1)[1].split(END, 1)[0]
    if "#done" not in body:
        raise OracleError(f"qemu {kernel}: runner did not finish; tail:\n{body[-3000:]}")
    return body


_GUESTS: dict[str, GuestInfo] = {}


def _console_cache(kernel: str, script: str) -> Path | None:
    """With $VMATRACE_QEMU_CACHE=DIR (bench/fuzz.py --cache), a guest's output is kept per
    (kernel package, runner, script): a long fuzz run can be compared again with a changed model
    without booting again. The tests never set it."""
    d = os.environ.get("VMATRACE_QEMU_CACHE")
    if not d:
        return None
    img = kernel_image(kernel)
    pkg = img.with_name(img.name + ".pkg")
    ident = pkg.read_text() if pkg.exists() else str(img.stat().st_size)
    key = hashlib.sha256("\0".join([ident, RUNNER_SRC.read_text(), _INIT, script]).encode())
    Path(d).mkdir(parents=True, exist_ok=True)
    return Path(d) / f"{kernel}-{key.hexdigest()[:20]}.txt.gz"


def run_qemu_guest(kernel: str, seqs: Seq[Sequence], timeout: float = 1200
                   ) -> tuple[GuestInfo, list[SeqResult]]:
    """Run every sequence on a pinned kernel (replay/oracle/kernels.py) in one qemu boot; also
    returns what the guest reported about itself."""
    script = to_script(seqs)
    cache = _console_cache(kernel, script)
    if cache is not None and cache.exists():
        body = gzip.decompress(cache.read_bytes()).decode()
    else:
        body = qemu_console(kernel, script, timeout)
        if cache is not None:
            _atomic_write(cache, gzip.compress(body.encode(), compresslevel=6))
    info = parse_guest(body)
    _GUESTS[kernel] = info
    return info, parse_output(body, seqs)


def run_qemu(kernel: str, seqs: Seq[Sequence], timeout: float = 1200) -> list[SeqResult]:
    """Run every sequence on a pinned kernel in one qemu boot."""
    if not seqs:
        return []
    return run_qemu_guest(kernel, seqs, timeout)[1]


def guest_info(kernel: str) -> GuestInfo:
    """The guest's self-description (one empty boot, unless a run already reported it)."""
    if kernel not in _GUESTS:
        run_qemu_guest(kernel, [])
    return _GUESTS[kernel]


def guest_model(kernel: str) -> tuple[str, dict[str, object]]:
    """(model profile, model options) of a pinned kernel, from what its guest reports."""
    info = guest_info(kernel)
    return info.upstream, info.model_options()
