"""Adversarial: output paths prepared by an attacker, for every verb that writes (as root).

`snapshot -o`, `import-strace -o` and `record -o` must never write through a symlink (dangling or
not), a FIFO, a device or a hard link, never replace something that is not a trace (even with
--force), and never leave a half-made output when they refuse.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.adversarial.common import one_error_line, vm
from tests.conftest import need_bcc, need_root

MMAP = "mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000"


def _log(tmp: Path) -> Path:
    p = tmp / "in.strace"
    p.write_text(f"100 {MMAP}\n100 +++ exited with 0 +++\n")
    return p


def _argv(verb: str, tmp: Path, out: Path, force: bool) -> list[str | Path]:
    f: list[str | Path] = ["--force"] if force else []
    if verb == "snapshot":
        return ["snapshot", str(os.getpid()), "-o", out, *f]
    if verb == "import-strace":
        return ["import-strace", _log(tmp), "-o", out, *f]
    need_bcc()
    return ["record", "-o", out, *f, "--", "/bin/true"]


def _attack(tmp: Path, kind: str) -> tuple[Path, Path | None, str]:
    """(output path, the victim that must stay untouched, words of the refusal)."""
    victim = tmp / "victim"
    victim.write_text("precious")
    out = tmp / "out"
    if kind == "symlink":
        out.symlink_to(victim)
        return out, victim, "symlink"
    if kind == "dangling-symlink":
        out.symlink_to(tmp / "created-through-link")
        return out, None, "symlink"
    if kind == "fifo":
        os.mkfifo(out)
        return out, None, ""
    if kind == "hard-link":
        os.link(victim, out)
        return out, victim, ""
    if kind == "device":
        return Path("/dev/null"), None, ""
    # a directory of someone's work
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    return out, out / "thesis.tex", ""


VERBS = ["snapshot", "import-strace", "record"]
KINDS = ["symlink", "dangling-symlink", "fifo", "hard-link", "device", "foreign-directory"]


# record shares TraceWriter's checks with import-strace: three kinds suffice for it (CI time)
CASES = [(v, k) for v in VERBS for k in KINDS if v != "record" or k in ("symlink", "fifo", "foreign-directory")]


@pytest.mark.live
@pytest.mark.parametrize(("verb", "kind"), CASES)
def test_output_attacks_are_refused(tmp_path: Path, verb: str, kind: str) -> None:
    need_root()
    out, victim, words = _attack(tmp_path, kind)
    before = victim.read_text() if victim else None
    p = vm(*_argv(verb, tmp_path, out, force=True), timeout=60)
    one_error_line(p, "error", *([words] if words else []))
    if victim is not None:
        assert victim.read_text() == before
    assert not (tmp_path / "created-through-link").exists()
    assert [x.name for x in tmp_path.iterdir() if ".tmp-" in x.name] == []  # no staging left


@pytest.mark.parametrize("verb", ["snapshot", "import-strace"])
def test_existing_output_needs_force(tmp_path: Path, verb: str) -> None:
    out = tmp_path / "out"
    assert vm(*_argv(verb, tmp_path, out, force=False)).returncode == 0
    one_error_line(vm(*_argv(verb, tmp_path, out, force=False)), "error", "exists", "--force")
    assert vm(*_argv(verb, tmp_path, out, force=True)).returncode == 0


def test_trace_with_a_stray_file_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert vm(*_argv("import-strace", tmp_path, out, force=False)).returncode == 0
    (out / "events" / "notes.txt").write_text("mine")
    one_error_line(vm(*_argv("import-strace", tmp_path, out, force=True)), "error", "notes.txt")
    assert (out / "events" / "notes.txt").read_text() == "mine"


@pytest.mark.live
def test_record_force_over_a_deeply_nested_meta_json(tmp_path: Path) -> None:
    need_bcc()
    out = tmp_path / "out"
    out.mkdir()
    (out / "meta.json").write_text("[" * 2000 + "]" * 2000)
    one_error_line(vm("record", "-o", out, "--force", "--", "/bin/true", timeout=60), "error", "not a vmatrace trace")
    assert (out / "meta.json").read_text().startswith("[[[")
