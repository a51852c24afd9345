"""One definition of each UAPI constant, VM_* flag bit and event kind in the whole tree.

The raw Linux values (PROT_*, MAP_*, MADV_*, MREMAP_*, MLOCK_*, MCL_*, PR_*, CLONE_*, ...) live in
vmatrace/base/uapi.py, the VM_* bits in vmatrace/base/vmflags.py, the event kinds in
vmatrace/base/events.py; every other module imports them. This test reads every module's source
(no import) and fails when a constant of those families is assigned at module level in two
modules, or when an event kind's name is spelled out as a string tuple outside the base layer.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vmatrace", "collectors", "replay", "bench")
FAMILIES = re.compile(
    r"^(PROT|MAP|MADV|MREMAP|MLOCK|MCL|MS|PR|CLONE|SIG|VM|MFD|SHM|IPC|O|AT|EV|KIND|SYS|NR)_[A-Z0-9_]+$")


def _module_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        value = getattr(node, "value", None)
        if isinstance(value, ast.Attribute | ast.Name | ast.Tuple) and all(
                isinstance(v, ast.Attribute | ast.Name)
                for v in (value.elts if isinstance(value, ast.Tuple) else [value])):
            continue  # an alias of a definition elsewhere (NAME = uapi.NAME), not a value
        for t in targets:
            for name in ([t] if isinstance(t, ast.Name) else
                         [e for e in t.elts if isinstance(e, ast.Name)] if isinstance(t, ast.Tuple)
                         else []):
                if FAMILIES.match(name.id):
                    out.add(name.id)
    return out


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def duplicates(paths: list[Path]) -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for p in paths:
        for name in _module_constants(p):
            where.setdefault(name, []).append(str(p.relative_to(ROOT)))
    return {k: v for k, v in sorted(where.items()) if len(v) > 1}


def test_no_constant_is_defined_twice() -> None:
    dups = duplicates(_sources())
    assert dups == {}, "defined in more than one module: " + "; ".join(
        f"{k}: {', '.join(v)}" for k, v in dups.items())


def test_event_kinds_are_listed_once() -> None:
    """No module but vmatrace/base/events.py lists the event kinds as a tuple or list of names."""
    from vmatrace.base.events import EVENT_KINDS

    kinds = set(EVENT_KINDS)
    offenders = []
    for p in _sources():
        if p == ROOT / "vmatrace" / "base" / "events.py":
            continue
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                names = {e.value for e in node.elts if isinstance(e, ast.Constant)
                         and isinstance(e.value, str)}
                if len(names & kinds) >= 8:  # a list of most kinds, not a few named ones
                    offenders.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], f"event kinds listed outside vmatrace/base/events.py: {offenders}"


def test_the_check_finds_a_planted_duplicate(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text("MAP_FIXED = 0x10\nOTHER = 1\n")
    b.write_text("from x import y\nMAP_FIXED: int = 16\nVM_READ, VM_WRITE = 1, 2\n")
    c.write_text("def f():\n    MAP_FIXED = 3\nVM_WRITE = 2\nVM_READ = u.VM_READ\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert duplicates([a, b, c]) == {"MAP_FIXED": ["a.py", "b.py"], "VM_WRITE": ["b.py", "c.py"]}
    finally:
        ROOT = saved
