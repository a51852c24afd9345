"""The command line: help for every command, clear one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.conftest import ROOT, need, need_root, reap
from vmatrace.cli import build_parser

VMATRACE = [sys.executable, "-m", "vmatrace"]


def run(*args: str, user: int | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    cmd = [*VMATRACE, *args]
    if user is not None:
        setpriv = shutil.which("setpriv")
        need(setpriv is not None, "needs setpriv (util-linux) to drop privileges")
        assert setpriv is not None
        cmd = [setpriv, f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, **kw)  # type: ignore[call-overload]


def assert_one_line_error(p: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def workload() -> Iterator[dict[str, Any]]:
    p = subprocess.Popen([sys.executable, "-m", "vmatrace.workloads.fragment", "--many", "300"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert p.stdout is not None
    info = json.loads(p.stdout.readline())
    yield info
    reap(p)


def test_every_command_has_help() -> None:
    parser = build_parser([])
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = sorted(sub.choices)  # type: ignore[arg-type]
    assert {"snapshot", "top", "doctor", "info"} <= set(commands)
    # a verb on the command line builds only its own parser; a typo or -h first builds them all
    only = next(a for a in build_parser(["snapshot", "1"])._actions if a.dest == "command")
    assert sorted(only.choices) == ["snapshot"]  # type: ignore[arg-type]
    for argv in (["snapshto", "1"], ["-h", "snapshot"], ["--version"]):
        every = next(a for a in build_parser(argv)._actions if a.dest == "command")
        assert sorted(every.choices) == commands, argv  # type: ignore[arg-type]
    typo = run("snapshto", "1")
    assert typo.returncode == 2 and "invalid choice" in typo.stderr and "snapshot" in typo.stderr
    for c in ["", *commands]:
        p = run(*([c] if c else []), "--help")
        assert p.returncode == 0, (c, p.stderr)
        assert "usage: vmatrace" in p.stdout and "example" in p.stdout, c


def test_snapshot_json_and_files(workload: dict[str, Any], tmp_path: Path) -> None:
    p = run("snapshot", str(workload["pid"]), "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["pid"] == workload["pid"] and d["vma_count"] == len(d["vmas"]) >= 300
    assert d["max_map_count"] > 0 and d["complete"] is True
    assert d["invisible_fragmentation"]["extra_vmas"] >= 4
    assert set(d["vmas"][0]) == {"start", "end", "perms", "offset", "dev", "inode", "path", "rss_kb",
                                 "pss_kb", "anonymous_kb", "swap_kb", "vmflags"}
    out = tmp_path / "s.parquet"
    assert run("snapshot", str(workload["pid"]), "-o", str(out)).returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert pl.read_parquet(out).height == d["vma_count"]
    again = run("snapshot", str(workload["pid"]), "-o", str(out))
    assert_one_line_error(again, "exists", "--force")
    assert run("snapshot", str(workload["pid"]), "-o", str(out), "--force").returncode == 0
    table = run("snapshot", str(workload["pid"]))
    assert table.returncode == 0 and "invisible fragmentation" in table.stdout and "right has lo" in table.stdout


def test_snapshot_errors() -> None:
    assert_one_line_error(run("snapshot", "4194303"), "no process with PID 4194303")
    assert_one_line_error(run("snapshot", "2"), "kernel thread")
    bad = run("snapshot", "abc")
    assert bad.returncode == 2 and "not a PID" in bad.stderr and "Traceback" not in bad.stderr
    for args, needle in ((["top", "-n", "-3"], "not a positive number"),
                         (["info", "x", "--snapshot", "-1"], "not a snapshot id"),
                         (["info", "x", "--snapshot", "99999999999"], "not a snapshot id")):
        r = run(*args)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


def test_snapshot_without_smaps_does_not_guess(workload: dict[str, Any]) -> None:
    p = run("snapshot", str(workload["pid"]), "--json", "--no-smaps")
    assert p.returncode == 0, p.stderr
    runs = json.loads(p.stdout)["invisible_fragmentation"]["runs"]
    lo, hi = workload["locked"]
    splits = [s for r in runs for s in r["splits"] if lo < s["addr"] < hi]
    assert len(splits) == 2 and all(s["reason"] == "unknown" for s in splits)


def test_other_users_process_as_non_root(workload: dict[str, Any]) -> None:
    need_root()  # to drop to another user we must start as root
    p = run("snapshot", str(workload["pid"]), user=65534)
    assert_one_line_error(p, "permission denied")


def test_top_as_root_sees_the_workload(workload: dict[str, Any]) -> None:
    need_root()
    p = run("top", "-n", "50", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["processes_read"] > 3 and d["total_vmas"] > 0
    pids = [e["pid"] for e in d["top"]]
    assert workload["pid"] in pids  # 300+ VMAs: among the top fifty on this machine
    e = next(e for e in d["top"] if e["pid"] == workload["pid"])
    assert e["vmas"] >= 300 and 0 < e["share_of_max_map_count"] < 1
    assert e["invisible_extra_vmas"] >= 4 and e["reasons"]["vmflags"] >= 3 and e["reasons"]["anon_vma"] >= 1


def test_top_as_non_root_says_what_it_skipped() -> None:
    need_root()
    p = run("top", "--json", user=65534)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert any("other users" in k for k in d["skipped"])
    assert all(e["user"] in (None, "nobody") for e in d["top"])


def test_doctor_exit_status_follows_checks() -> None:
    p = run("doctor", "--json")
    d = json.loads(p.stdout)
    names = {c["name"] for c in d["checks"]}
    assert {"privileges", "bcc", "kernel headers", "tracefs", "tracepoints", "BTF", "PROCMAP_QUERY",
            "vm.overcommit_memory", "vm.max_map_count"} <= names
    assert (p.returncode == 0) == d["record_can_work"]
    need(d["record_can_work"], "record cannot work here: " + "; ".join(
        c["detail"] for c in d["checks"] if not c["ok"] and c["required"]))
    need_root()
    nobody = run("doctor", "--json", user=65534)
    assert nobody.returncode == 1
    priv = next(c for c in json.loads(nobody.stdout)["checks"] if c["name"] == "privileges")
    assert not priv["ok"] and "sudo" in priv["fix"]


@pytest.mark.parametrize("json_out", [False, True])
def test_closed_stdout_ends_quietly_with_sigpipe_status(json_out: bool) -> None:
    """`vmatrace snapshot PID | head`: a reader that is gone is not an error worth a message;
    the exit status is 128 + SIGPIPE (rich's own handler would exit 1)."""
    r, w = os.pipe()
    os.close(r)  # no reader: the first write fails with EPIPE
    try:
        p = subprocess.run([*VMATRACE, "snapshot", str(os.getpid()), *(["--json"] if json_out else [])],
                           stdout=w, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=60)
    finally:
        os.close(w)
    assert p.returncode == 141, p.stderr
    assert p.stderr == ""


# ---- every verb's error path: one line, the README's exit code, no traceback ----------------------


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real trace: two snapshots of this test process and two events."""
    from tests.conftest import write_small_trace

    return write_small_trace(tmp_path_factory.mktemp("cli") / "t.vmat")


@pytest.fixture(scope="module")
def overlapping_trace(small_trace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trace with its first snapshot's first VMA stretched over the second: every chunk reads
    fine, but the model refuses the state when the replay builds its address space from it."""
    t = tmp_path_factory.mktemp("cli") / "overlap.vmat"
    subprocess.run(["cp", "-a", str(small_trace), str(t)], check=True)
    part = t / "snapshots" / "part-000000.parquet"
    df = pl.read_parquet(part)
    df.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(df["end"][1], pl.UInt64))
                    .otherwise(pl.col("end")).alias("end")).write_parquet(part)
    return t


# (verb, argv after the verb with {trace}/{overlap}/{tmp} placeholders, exit code, text in the line)
ERROR_PATHS = [
    ("snapshot", ["not-a-pid"], 2, "not a PID"),
    ("snapshot", ["4194304"], 1, "no process with PID 4194304"),
    ("top", ["-n", "0"], 2, "not a positive number"),
    ("doctor", ["--no-such-flag"], 2, "unrecognized arguments"),
    ("record", ["-p", "0"], 2, "PID"),
    ("record", ["-p", "1", "--", "true"], 2, "-p"),
    ("import_strace", ["{tmp}/missing.log", "-o", "{tmp}/imp.vmat"], 1, "missing.log"),
    ("info", ["{tmp}/missing.vmat"], 1, "missing.vmat"),
    ("info", ["{trace}", "--snapshot", "7"], 1, "has no snapshot 7"),
    ("replay", ["{tmp}/missing.vmat"], 1, "missing.vmat"),
    ("replay", ["{trace}", "--kernel", "5.4"], 2, "--kernel 5.4"),
    ("replay", ["{trace}", "--what-if", "no_such_field=1"], 2, "not a profile field"),
    ("replay", ["{trace}", "-j", "0"], 2, "not a positive number"),
    ("replay", ["{overlap}"], 1, "overlapping VMAs"),  # the model refuses a state mid-replay
    ("report", ["{tmp}/missing.vmat"], 1, "missing.vmat"),
    ("report", ["{trace}", "-o", "{tmp}/exists.html"], 1, "exists"),
    ("report", ["{overlap}", "--json"], 1, "overlapping VMAs"),
]


def test_every_verb_has_an_error_path_test() -> None:
    from vmatrace.commands import COMMANDS

    assert {v for v, *_ in ERROR_PATHS} == set(COMMANDS)


@pytest.mark.parametrize(("verb", "argv", "code", "needle"), ERROR_PATHS,
                         ids=[f"{v}-{i}" for i, (v, *_) in enumerate(ERROR_PATHS)])
def test_error_paths_are_one_line_with_the_documented_code(
        verb: str, argv: list[str], code: int, needle: str, small_trace: Path,
        overlapping_trace: Path, tmp_path: Path) -> None:
    (tmp_path / "exists.html").write_text("someone's report")
    args = [a.format(trace=small_trace, overlap=overlapping_trace, tmp=tmp_path) for a in argv]
    p = run(verb.replace("_", "-"), *args)
    assert p.returncode == code, p.stderr
    assert_one_line_error(p, needle)
    assert p.stderr.startswith(("vmatrace: error: ", "vmatrace " + verb.replace("_", "-"))), p.stderr
    assert (tmp_path / "exists.html").read_text() == "someone's report"


def test_a_bug_inside_the_replay_is_one_line(small_trace: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The funnel's last resort, for an exception no library declares (a bug of the model or the
    engine). A real bug cannot be provoked on demand, so the replay is replaced by one that
    fails the way a bug would (the one stand-in of this file)."""
    import replay.engine
    from vmatrace.cli import main

    def broken(*_a: object, **_k: object) -> None:
        raise IndexError("list index out of range\nin the model")

    monkeypatch.setattr(replay.engine, "replay_trace", broken)
    monkeypatch.delenv("VMATRACE_DEBUG", raising=False)
    assert main(["replay", str(small_trace), "-j", "1"]) == 1
    err = capsys.readouterr().err
    assert err == ("vmatrace: error: internal error, please report it: IndexError: list index "
                   "out of range in the model (VMATRACE_DEBUG=1 shows the traceback)\n")
    monkeypatch.setenv("VMATRACE_DEBUG", "1")
    with pytest.raises(IndexError):
        main(["replay", str(small_trace), "-j", "1"])
