"""ELF layout reconstruction against the real kernel: /proc/PID/maps of a process stopped at exec.

A child does PTRACE_TRACEME and execs: the kernel stops it with SIGTRAP right after execve
returns, before the interpreter has run a single instruction, so its maps are exactly what
the ELF loader built.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from collectors import elf
from collectors.strace_import import parse_strace, reconstruct_exec
from tests.conftest import need
from vmatrace.base.snapshot import parse_maps_text

ADDR_NO_RANDOMIZE = 0x0040000
BIG_BSS = "static char big[1 << 20];\nint main(void) { big[5] = 1; return big[7]; }\n"


def maps_at_exec(argv: list[str], *, no_aslr: bool) -> list[tuple]:
    """/proc/PID/maps rows of `argv` stopped right after its execve."""
    libc = ctypes.CDLL(None, use_errno=True)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            if no_aslr:
                libc.personality(ADDR_NO_RANDOMIZE)
            libc.ptrace(0, 0, 0, 0)  # PTRACE_TRACEME
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    try:
        _, status = os.waitpid(pid, 0)
        need(os.WIFSTOPPED(status), "ptrace(PTRACE_TRACEME) did not stop the child at exec")
        text = Path(f"/proc/{pid}/maps").read_text()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return parse_maps_text(text).select("start", "end", "perms", "offset", "dev", "inode", "path").rows()


def rows(vmas: list[elf.VmaRow]) -> list[tuple]:
    return [(r.start, r.end, r.perms, r.offset, r.dev, r.inode, r.path) for r in vmas]


def image_lines(maps: list[tuple], exe: str, interp: str | None) -> list[tuple]:
    """The executable's lines, the anonymous bss line right after them, and the interpreter's."""
    out = []
    for i, r in enumerate(maps):
        bss = r[6] is None and i > 0 and maps[i - 1][6] == exe and maps[i - 1][1] == r[0]
        if (r[6] is not None and r[6] in (exe, interp)) or bss:
            out.append(r)
    return out


@pytest.fixture
def programs(cbuild) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    return {
        "/usr/bin/true": Path("/usr/bin/true"),
        "pie-bss": cbuild(BIG_BSS, "bigpie", "-pie", "-fPIE"),
        "nopie-bss": cbuild(BIG_BSS, "bignopie", "-no-pie"),
        "static": cbuild(BIG_BSS, "bigstatic", "-static"),
        "static-pie": cbuild(BIG_BSS, "bigstaticpie", "-static-pie"),
    }


@pytest.mark.parametrize("which", ["/usr/bin/true", "pie-bss", "nopie-bss", "static", "static-pie"])
def test_reconstruction_from_strace_matches_maps_at_exec(which: str, programs: dict[str, Path],
                                                        tmp_path: Path) -> None:
    strace = shutil.which("strace")
    setarch = shutil.which("setarch")
    need(strace is not None and setarch is not None, "needs strace and setarch")
    assert strace is not None and setarch is not None
    prog = str(programs[which])
    # GIVEN strace of the program with ASLR off (same addresses as the stopped twin below)
    log = tmp_path / "log"
    subprocess.run([setarch, "-R", strace, "-f", "-X", "raw", "-e", "trace=%memory,execve", "-o", str(log), prog],
                   check=False, capture_output=True)
    parsed = parse_strace([log])
    assert len(parsed.execs) == 1
    # WHEN the layout is rebuilt from the ELF headers and the biases the log reveals
    rec = reconstruct_exec(parsed.execs[0])
    # THEN the executable's and interpreter's lines equal the kernel's, right after exec
    info = elf.read_elf(prog)
    assert bool(info.interp) == (not which.startswith("static"))
    interp = os.path.realpath(info.interp) if info.interp else None
    real = image_lines(maps_at_exec([prog], no_aslr=True), os.path.realpath(prog), interp)
    assert rows(rec.rows) == real
    assert not any("load bias" in u or "interpreter" in u for u in rec.unknown)
    # and the program break brk(NULL) reported is where the loader put it (no randomization;
    # a static PIE has no interpreter and its break starts at ELF_ET_DYN_BASE instead)
    if which != "static-pie":
        assert parsed.execs[0].brk == elf.brk_start(info, real[0][0] - info.segments[0].vaddr)
    if which != "/usr/bin/true":
        assert real[len(info.segments)][6] is None  # the bss beyond the file is an anonymous VMA


@pytest.mark.parametrize("which", ["pie-bss", "nopie-bss"])
def test_load_vmas_with_aslr_bases(which: str, programs: dict[str, Path]) -> None:
    # GIVEN a process stopped at exec with ASLR on: its bases read from the maps
    prog = str(programs[which])
    info = elf.read_elf(prog)
    assert info.interp
    interp = os.path.realpath(info.interp)
    real = image_lines(maps_at_exec([prog], no_aslr=False), os.path.realpath(prog), interp)
    exe_bias = real[0][0] - (info.segments[0].vaddr & ~0xFFF)
    iinfo = elf.read_elf(info.interp)
    ilines = [r for r in real if r[6] == interp]
    ibias = ilines[0][0] - (iinfo.segments[0].vaddr & ~0xFFF)
    # THEN load_vmas() at those bases gives every line, bss included
    assert (exe_bias == 0) == (which == "nopie-bss")
    want = rows(elf.load_vmas(info, exe_bias, path=os.path.realpath(prog))
                + elf.load_vmas(iinfo, ibias, path=interp))
    assert want == real
    # and the relro helpers invert each other
    rr = elf.relro_range(iinfo, ibias)
    assert rr is not None and elf.bias_from_relro(iinfo, *rr) == ibias
    assert elf.bias_from_relro(iinfo, rr[0] + 1, rr[1]) is None


def test_read_elf_errors(tmp_path: Path) -> None:
    from vmatrace.base.errors import VmatraceError

    with pytest.raises(VmatraceError, match="cannot read"):
        elf.read_elf(str(tmp_path / "missing"))
    (tmp_path / "notelf").write_text("#!/bin/sh\n")
    with pytest.raises(VmatraceError, match="not a readable ELF file"):
        elf.read_elf(str(tmp_path / "notelf"))


def test_reconstruction_under_another_root(tmp_path: Path) -> None:
    # GIVEN a log from "another machine" whose files are a copy under --root (symlinks kept)
    strace, setarch = shutil.which("strace"), shutil.which("setarch")
    need(strace is not None and setarch is not None, "needs strace and setarch")
    assert strace is not None and setarch is not None
    log = tmp_path / "log"
    subprocess.run([setarch, "-R", strace, "-f", "-e", "trace=%memory,execve", "-o", str(log), "/usr/bin/true"],
                   check=True, capture_output=True)
    root = tmp_path / "root"
    interp = elf.read_elf("/usr/bin/true").interp
    assert interp
    real_interp = os.path.realpath(interp)
    for f in ("/usr/bin/true", real_interp):
        (root / f.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / f.lstrip("/"))
    (root / interp.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    # an absolute link, as in a copied root file system: it means the copy's /, not ours
    os.symlink(real_interp, root / interp.lstrip("/"))
    os.rename(root / real_interp.lstrip("/"), root / (real_interp.lstrip("/") + ".copy"))
    os.symlink(os.path.basename(real_interp) + ".copy", root / real_interp.lstrip("/"))
    real_interp += ".copy"  # the copy's own real path differs from this machine's
    # WHEN reconstructed from the copy
    rec = reconstruct_exec(parse_strace([log]).execs[0], root=str(root))
    here = reconstruct_exec(parse_strace([log]).execs[0])
    # THEN the same VMAs, named as the traced machine names them, with the copies' inodes
    assert [(r.start, r.end, r.perms, r.offset) for r in rec.rows] == \
           [(r.start, r.end, r.perms, r.offset) for r in here.rows]
    assert {r.path for r in rec.rows} == {"/usr/bin/true", real_interp}
    assert {r.inode for r in rec.rows} == {os.stat(root / "usr/bin/true").st_ino,
                                           os.stat(root / real_interp.lstrip("/")).st_ino}
