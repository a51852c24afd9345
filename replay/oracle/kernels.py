"""The kernels the qemu oracles boot: one pinned table, and the fetcher scripts/setup.sh runs.

Every row names an exact Debian cloud kernel package, so a result can be reproduced. The fetcher
never changes the host's apt configuration: it gives apt a private sources list (the host's own
Debian archive URI with the suites below added), private list, cache and status files, runs
`apt-get update` and `apt-get download` with them, and extracts only the vmlinuz into
.cache/kernels/vmlinuz-<label> (nothing is installed). A pinned package the archive no longer
serves is reported in one line, and the nearest served release of the same series is fetched in
its place; the guest's `uname -r` then picks the model's profile (replay/oracle/execute.py).

This module is stdlib-only so that set-up can run it before the venv exists:

    python3 replay/oracle/kernels.py fetch [--dest DIR] [LABEL ...]
    python3 replay/oracle/kernels.py list
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

# The suites of the Debian archive that hold the kernels newer than the host's own (bookworm).
EXTRA_SUITES = ("trixie-backports", "sid", "experimental")


@dataclass(frozen=True)
class PinnedKernel:
    label: str  # the name tests and bench/fuzz.py use (--kernel LABEL)
    version: str  # upstream release the package carries
    package: str  # exact Debian package that holds the vmlinuz
    why: str  # why this kernel is in the table

    @property
    def series(self) -> str:
        return ".".join(self.version.split(".")[:2])


# The pinned table (served by deb.debian.org on 2026-12-03).
KERNELS: tuple[PinnedKernel, ...] = (
    PinnedKernel("6.1", "6.1.192", "linux-image-6.1.0-57-cloud-amd64-unsigned",
                 "LTS; vma_merge() era, OLD anon rule, no mseal"),
    PinnedKernel("6.12", "6.12.118", "linux-image-6.12.118+deb12-cloud-amd64-unsigned",
                 "LTS; vma_merge_struct era, OLD anon rule"),
    PinnedKernel("6.16.12", "6.16.12", "linux-image-6.16.12+deb13-cloud-amd64",
                 "first release with the NEW anon rule and the mremap rewrite"),
    PinnedKernel("6.17.13", "6.17.13", "linux-image-6.17.13+deb13-cloud-amd64",
                 "mremap of multiple VMAs"),
    PinnedKernel("6.18.5", "6.18.5", "linux-image-6.18.5+deb13-cloud-amd64",
                 "6.18 LTS before the mremap anon_vma fix (6.18.8)"),
    PinnedKernel("6.18.15", "6.18.15", "linux-image-6.18.15+deb13-cloud-amd64",
                 "6.18 LTS after the mremap anon_vma fix"),
    PinnedKernel("6.19.14", "6.19.14", "linux-binary-6.19.14+deb13-cloud-amd64",
                 "sticky VMA flags"),
    PinnedKernel("7.0.13", "7.0.13", "linux-binary-7.0.13+deb13-cloud-amd64", "7.0"),
    PinnedKernel("7.1.13", "7.1.13", "linux-binary-7.1.13+deb13-cloud-amd64", "7.1"),
    PinnedKernel("7.2.13", "7.2.13", "linux-binary-7.2.13+deb14-cloud-amd64", "7.2"),
    PinnedKernel("7.3.4", "7.3.4", "linux-binary-7.3.4+deb13-cloud-amd64", "7.3"),
)
BY_LABEL: dict[str, PinnedKernel] = {k.label: k for k in KERNELS}
LABELS: tuple[str, ...] = tuple(BY_LABEL)

_REPO = Path(__file__).resolve().parent.parent.parent
_VMLINUZ_RE = re.compile(r"^\.?/?(boot/vmlinuz-[^/]+|usr/lib/modules/[^/]+/vmlinuz)$")
# The upstream release in a Debian kernel package name: linux-image-6.18.15+deb13-cloud-amd64.
_PKG_VERSION_RE = re.compile(r"^linux-(?:image|binary)-(\d+\.\d+)\.(\d+)\+deb\d+-cloud-amd64$")


def default_dest() -> Path:
    return Path(os.environ.get("VMATRACE_KERNELS", _REPO / ".cache" / "kernels"))


def say(msg: str) -> None:
    print(f"[kernels] {msg}", file=sys.stderr, flush=True)


def _host_archive_uri() -> str:
    """The host's Debian archive URI (deb822 or one-line sources), else deb.debian.org."""
    for p in [Path("/etc/apt/sources.list.d/debian.sources"), *Path("/etc/apt/sources.list.d")
              .glob("*.sources")]:
        try:
            text = p.read_text()
        except OSError:
            continue
        for block in text.split("\n\n"):
            m = re.search(r"^URIs:\s*(\S+)", block, re.M)
            if m and "security" not in m.group(1):
                return m.group(1).rstrip("/")
    try:
        for line in Path("/etc/apt/sources.list").read_text().splitlines():
            f = line.split()
            if len(f) >= 3 and f[0] == "deb" and "security" not in line:
                uri = next(x for x in f[1:] if "://" in x)
                return uri.rstrip("/")
    except (OSError, StopIteration):
        pass
    return "http://deb.debian.org/debian"


class Apt:
    """apt-get/apt-cache with private state: the host's sources and state are never written."""

    def __init__(self, state: Path) -> None:
        self.state = state
        for d in ("lists/partial", "cache/archives/partial", "etc"):
            (state / d).mkdir(parents=True, exist_ok=True)
        uri = _host_archive_uri()
        keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
        # The host's own sources are read as well (the 6.1 and 6.12 kernels come from them).
        lines = [f"deb [signed-by={keyring}] {uri} {s} main" for s in EXTRA_SUITES]
        (state / "etc" / "sources.list").write_text("\n".join(lines) + "\n")
        parts = state / "etc" / "sources.list.d"
        parts.mkdir(exist_ok=True)
        for p in Path("/etc/apt/sources.list.d").glob("*"):
            if p.suffix in (".list", ".sources") and p.is_file():
                (parts / p.name).write_bytes(p.read_bytes())
        host_list = Path("/etc/apt/sources.list")
        if host_list.is_file():
            (parts / "host.list").write_bytes(host_list.read_bytes())
        (state / "status").write_text("")
        self.opts = [
            "-o", f"Dir::Etc::SourceList={state / 'etc' / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={parts}",
            "-o", f"Dir::State::Lists={state / 'lists'}",
            "-o", f"Dir::State::status={state / 'status'}",
            "-o", f"Dir::Cache={state / 'cache'}",
            "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root",
        ]  # fmt: skip

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        p = subprocess.run([tool, *self.opts, *args], capture_output=True, text=True, cwd=cwd)
        if p.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {p.stderr.strip()[-500:]}")
        return p.stdout

    def update(self) -> None:
        self.run("apt-get", "-qq", "update")

    def served(self, pattern: str) -> list[str]:
        out = self.run("apt-cache", "search", "--names-only", pattern)
        return [line.split()[0] for line in out.splitlines() if line.strip()]


def nearest_served(k: PinnedKernel, served: list[str]) -> str | None:
    """The served package of k's series whose release is closest to k's (newer wins a tie)."""
    want = int(k.version.split(".")[2])
    kind = "binary" if k.package.startswith("linux-binary-") else "image"
    best: tuple[int, int, str] | None = None
    for name in served:
        m = _PKG_VERSION_RE.match(name)
        if not m or m.group(1) != k.series or f"linux-{kind}-" not in name:
            continue
        patch = int(m.group(2))
        cand = (abs(patch - want), -patch, name)
        if best is None or cand < best:
            best = cand
    return best[2] if best else None


def extract_vmlinuz(deb: Path, out: Path) -> str:
    """Write the deb's vmlinuz to `out`; returns its path inside the package."""
    tar_bytes = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                               check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tf:
        for m in tf.getmembers():
            if m.isfile() and _VMLINUZ_RE.match(m.name):
                f = tf.extractfile(m)
                assert f is not None
                tmp = out.with_name(out.name + ".tmp")
                tmp.write_bytes(f.read())
                os.replace(tmp, out)
                return m.name.lstrip("./")
    raise RuntimeError(f"{deb.name} holds no vmlinuz")


def fetch(labels: list[str], dest: Path) -> int:
    """Fetch the vmlinuz of every label that is missing from dest. Returns the number of failures."""
    dest.mkdir(parents=True, exist_ok=True)
    todo = [BY_LABEL[lb] for lb in labels if not _up_to_date(dest, BY_LABEL[lb])]
    if not todo:
        return 0
    failures = 0
    with tempfile.TemporaryDirectory(prefix="vmatrace-apt-") as td:
        os.chmod(td, 0o755)
        apt = Apt(Path(td) / "state")
        apt.update()
        for k in todo:
            pkg = k.package
            if not apt.served(f"^{re.escape(pkg)}$"):
                series_re = f"^linux-(image|binary)-{re.escape(k.series)}\\.[0-9]+\\+deb[0-9]+-cloud-amd64$"
                alt = nearest_served(k, apt.served(series_re))
                if alt is None:
                    say(f"kernel {k.label}: {pkg} is no longer served by the archive, and no "
                        f"other {k.series} release is: this oracle is unavailable")
                    failures += 1
                    continue
                say(f"kernel {k.label}: {pkg} is no longer served by the archive; using {alt}, "
                    f"the nearest served {k.series} release (update the pin in "
                    f"replay/oracle/kernels.py)")
                pkg = alt
            say(f"fetching {pkg} for the {k.label} oracle")
            work = Path(td) / k.label
            work.mkdir()
            os.chmod(work, 0o777)
            try:
                apt.run("apt-get", "-qq", "download", pkg, cwd=work)
                deb = next(work.glob("*.deb"))
                inner = extract_vmlinuz(deb, dest / f"vmlinuz-{k.label}")
            except (RuntimeError, StopIteration, subprocess.CalledProcessError) as e:
                say(f"kernel {k.label}: {e}")
                failures += 1
                continue
            fallback = "" if pkg == k.package else f" fallback-for {k.package}"
            (dest / f"vmlinuz-{k.label}.pkg").write_text(f"{pkg} {inner}{fallback}\n")
    return failures


def _up_to_date(dest: Path, k: PinnedKernel) -> bool:
    """vmlinuz-LABEL exists and came from the pinned package (or from a substitute for it)."""
    try:
        if not (dest / f"vmlinuz-{k.label}").is_file():
            return False
        words = (dest / f"vmlinuz-{k.label}.pkg").read_text().split()
    except OSError:
        return False
    return bool(words) and (words[0] == k.package or f"fallback-for {k.package}" in " ".join(words))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kernels.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="fetch the pinned kernels' vmlinuz (as root)")
    f.add_argument("--dest", type=Path, default=None)
    f.add_argument("labels", nargs="*", metavar="LABEL")
    sub.add_parser("list", help="print the pinned table")
    a = ap.parse_args(argv)
    if a.cmd == "list":
        for k in KERNELS:
            print(f"{k.label:8} {k.version:9} {k.package:50} {k.why}")
        return 0
    bad = [lb for lb in a.labels if lb not in BY_LABEL]
    if bad:
        print(f"kernels.py: error: unknown kernel label(s) {', '.join(bad)}; have "
              f"{', '.join(LABELS)}", file=sys.stderr)
        return 2
    try:
        failures = fetch(a.labels or list(LABELS), a.dest or default_dest())
    except (RuntimeError, OSError) as e:
        print(f"kernels.py: error: {e}", file=sys.stderr)
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
