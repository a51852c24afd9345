"""Data types of the oracle: sequences (operation scripts), results and the runner output parser.

A *sequence* is a named list of operation lines in the runner's script format (docs/oracle.md),
with addresses and lengths in pages relative to a private window. A *result* holds, for step 0 (the
empty window) and after every operation, the errno, the return value (mmap/mremap: the page of the
result) and the window's VMAs as smaps shows them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from vmatrace.base import uapi as U

PAGE = 4096
# Not 2 MiB aligned and only 64 pages long: no transparent huge page can ever fit in the window,
# so no THP read fault can assign an anon_vma and khugepaged never touches it.
WINDOW_BASE = 0x100000001000
WINDOW_PAGES = 64


# The op language's names for the raw Linux x86-64 values (one table of values: the base layer's).
PROT = {"r": U.PROT_READ, "w": U.PROT_WRITE, "x": U.PROT_EXEC}
MAP_FLAGS = {
    "shared": U.MAP_SHARED, "private": U.MAP_PRIVATE, "validate": U.MAP_SHARED_VALIDATE,
    "fixed": U.MAP_FIXED, "anon": U.MAP_ANONYMOUS, "growsdown": U.MAP_GROWSDOWN,
    "locked": U.MAP_LOCKED, "noreserve": U.MAP_NORESERVE, "populate": U.MAP_POPULATE,
    "stack": U.MAP_STACK, "hugetlb": U.MAP_HUGETLB, "noreplace": U.MAP_FIXED_NOREPLACE,
}  # fmt: skip
MADV = {name: getattr(U, "MADV_" + name.upper()) for name in (
    "normal", "random", "sequential", "willneed", "dontneed", "free", "dontfork", "dofork",
    "mergeable", "unmergeable", "hugepage", "nohugepage", "dontdump", "dodump", "wipeonfork",
    "keeponfork", "cold", "pageout", "populate_read", "populate_write", "remove",
    "dontneed_locked", "collapse", "guard_install", "guard_remove")}  # fmt: skip
MREMAP_FLAGS = {"maymove": U.MREMAP_MAYMOVE, "fixed": U.MREMAP_FIXED,
                "dontunmap": U.MREMAP_DONTUNMAP}
MLOCK_ONFAULT = U.MLOCK_ONFAULT


def prot_of(s: str) -> int:
    p = 0
    for c in s:
        if c in PROT:
            p |= PROT[c]
        elif c != "-":
            raise ValueError(f"bad protection {s!r}")
    return p


def flags_of(s: str, table: dict[str, int]) -> int:
    if s in ("", "-", "0"):
        return 0
    v = 0
    for t in s.split(","):
        if t not in table:
            raise ValueError(f"unknown flag {t!r}")
        v |= table[t]
    return v


def advice_of(s: str) -> int:
    return MADV[s] if s in MADV else int(s, 0)


def backing_of(path: str | None, pgoff: int) -> str:
    """The runner's "NAME+PGOFF" for a VMA with a file: the last path component (the one before
    " (deleted)"), spaces as "_"."""
    if not path:
        return ""
    head, sep, _ = path.partition(" (deleted)")
    name = head.rsplit("/", 1)[-1] + (sep if sep else "")
    return f"{name.replace(' ', '_')}+{pgoff}"


@dataclass(frozen=True)
class Sequence:
    """A named operation script. `ops` are runner lines such as "mprotect 0 5 r--"."""

    name: str
    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"sequence name must be one non-empty word: {self.name!r}")
        for op in self.ops:
            if "\n" in op or not op.strip() or op.strip() in ("end",) or op.startswith("seq "):
                raise ValueError(f"bad op line {op!r}")

    def to_script(self) -> str:
        return f"seq {self.name}\n" + "".join(op.strip() + "\n" for op in self.ops) + "end\n"

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "ops": list(self.ops)}

    @staticmethod
    def from_json(d: dict[str, object]) -> Sequence:
        ops = d["ops"]
        assert isinstance(ops, list)
        return Sequence(str(d["name"]), tuple(str(o) for o in ops))


def seq(name: str, *ops: str) -> Sequence:
    return Sequence(name, tuple(ops))


def to_script(seqs: Iterable[Sequence]) -> str:
    return "".join(s.to_script() for s in seqs)


@dataclass(frozen=True)
class VmaRow:
    start: int  # pages relative to the window base
    end: int
    perms: str  # "rw-p"
    flags: frozenset[str]  # smaps VmFlags mnemonics
    # hidden state, when known (the runner with a task_vma iterator; the model always):
    anon: int | None = None  # 0: no anon_vma; else an identity, stable within one sequence
    avc: int | None = None  # length of the anon_vma_chain (a fork child's is not 1)
    backing: str = ""  # a file VMA: "NAME+PGOFF" (last path component, page offset); anon: ""

    def __str__(self) -> str:
        hidden = ""
        if self.anon is not None:
            hidden = " anon#" + str(self.anon) if self.anon else " unfaulted"
            if self.anon and self.avc != 1:
                hidden += f" fork-child(avc {self.avc})"
        b = f" ={self.backing}" if self.backing else ""
        return f"[{self.start},{self.end}) {self.perms} {' '.join(sorted(self.flags))}{b}{hidden}"

    @property
    def fork_child(self) -> bool:
        """Has an anon_vma and an anon_vma_chain that is not singular (vma_is_fork_child())."""
        return bool(self.anon) and self.avc != 1

    def key(self) -> tuple[int, int, str]:
        return (self.start, self.end, self.perms)

    def layout_key(self) -> tuple[int, int, str, str]:
        return (self.start, self.end, self.perms, self.backing)


@dataclass
class StepResult:
    index: int  # 0 = before the first op
    op: str  # "" for step 0
    errno: int  # 0 = success; -1 = the model raised something that is not an OSError
    ret: int | str | None  # mmap/mremap: page relative to the window (or "x<hex>"); else None
    vmas: tuple[VmaRow, ...]
    note: str = ""  # model exception text, if any

    def maps_text(self, indent: str = "  ") -> str:
        if not self.vmas:
            return indent + "(no VMA in the window)"
        return "\n".join(indent + str(v) for v in self.vmas)


@dataclass
class SeqResult:
    name: str
    steps: list[StepResult] = field(default_factory=list)
    status: str = "ok"  # runner: ok / exit:N / signal:N / missing; model: ok / model-error

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "status": self.status,
            "steps": [
                {
                    "i": s.index,
                    "op": s.op,
                    "errno": s.errno,
                    "ret": s.ret,
                    "vmas": [[v.start, v.end, v.perms, sorted(v.flags), v.backing] for v in s.vmas],
                }
                for s in self.steps
            ],
        }


class OracleError(RuntimeError):
    """The runner or qemu did not produce a usable result."""


def _parse_ret(tok: str) -> int | str | None:
    if tok == "-":
        return None
    if tok.startswith("x"):
        return tok
    return int(tok)


def parse_output(text: str, seqs: Seq[Sequence]) -> list[SeqResult]:
    """Parse runner output (\\r\\n tolerated) into one SeqResult per input sequence, in order."""
    by_name: dict[str, Sequence] = {s.name: s for s in seqs}
    if len(by_name) != len(seqs):
        raise ValueError("sequence names must be unique within a batch")
    results: dict[str, SeqResult] = {}
    cur: SeqResult | None = None
    step: StepResult | None = None
    vmas: list[VmaRow] = []

    def close_step() -> None:
        nonlocal step, vmas
        if cur is not None and step is not None:
            step.vmas = tuple(vmas)
            cur.steps.append(step)
        step, vmas = None, []

    for raw in text.splitlines():
        line = raw.rstrip("\r").strip()
        if not line:
            continue
        if line.startswith("#seq "):
            close_step()
            name = line[5:].strip()
            cur = SeqResult(name)
            results[name] = cur
        elif line.startswith("#end "):
            close_step()
            parts = line.split()
            if cur is not None and len(parts) >= 3 and parts[1] == cur.name:
                cur.status = parts[2]
            cur = None
        elif cur is None:
            continue  # runner banner, kernel messages between sequences
        elif line.startswith("@ "):
            close_step()
            parts = line.split()
            i = int(parts[1])
            ops = by_name[cur.name].ops if cur.name in by_name else ()
            op = ops[i - 1] if 1 <= i <= len(ops) else ""
            step = StepResult(i, op, int(parts[2]), _parse_ret(parts[3]), ())
        elif line.startswith("% ") and step is not None:
            parts = line.split()  # % START END ANON AVC: hidden state of a VMA listed above
            try:
                s0, e0, an, avc = (int(x) for x in parts[1:5])
            except ValueError:
                continue
            for j, v in enumerate(vmas):
                if (v.start, v.end) == (s0, e0):
                    vmas[j] = VmaRow(v.start, v.end, v.perms, v.flags, an, avc, v.backing)
        elif line.startswith("!"):
            close_step()
            cur.status = "runner:" + line[1:].replace(" ", "_")
        elif step is not None:
            parts = line.split()
            try:
                rest = parts[3:]
                backing = next((t[1:] for t in rest if t.startswith("=")), "")
                vmas.append(VmaRow(int(parts[0]), int(parts[1]), parts[2],
                                frozenset(t for t in rest if not t.startswith("=")),
                                backing=backing))
            except (ValueError, IndexError):
                continue  # a stray console line; the comparison will show any damage
    close_step()
    out: list[SeqResult] = []
    for s in seqs:
        r = results.get(s.name)
        if r is None:
            r = SeqResult(s.name, [], "missing")
        out.append(r)
    return out


def dump_results(results: Iterable[SeqResult]) -> str:
    return json.dumps([r.to_json() for r in results], indent=1)
