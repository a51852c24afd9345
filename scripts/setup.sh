#!/usr/bin/env bash
# One-time (idempotent) set-up of a fresh Debian 12 machine of this kind, as root:
#   system packages (bcc, kernel headers, qemu, busybox, strace), the header links and the
#   tracefs mount bcc needs, the pinned Debian kernels for the qemu oracles, and the project venv.
# The README ("The two commands") says what each step installs and why; docs/oracle.md describes
# the qemu kernels.
set -euo pipefail
. "$(dirname "$0")/root.sh"
as_root "$(readlink -f "$0")" "$@"
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
say() { printf '[setup] %s\n' "$*"; }

# 1. Debian packages (libc6-dbg: the symbol tables of libc and ld.so for `record --stacks`;
#    chromium: the test that opens the HTML report in a real browser).
PKGS=(python3-bpfcc linux-headers-amd64 qemu-system-x86 busybox-static cpio strace gcc libc6-dev make
      libc6-dbg chromium)
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Kernel headers where bcc looks (both links are required) and tracefs.
KV=$(uname -r)
HDR=$(ls -d /usr/src/linux-headers-*-amd64 | sort -V | tail -1)
mkdir -p "/lib/modules/$KV"
[ -e "/lib/modules/$KV/build" ] || ln -sfn "$HDR" "/lib/modules/$KV/build"
[ -e "/lib/modules/$KV/source" ] || ln -sfn "${HDR%-amd64}-common" "/lib/modules/$KV/source"
if ! mountpoint -q /sys/kernel/tracing; then
  mount -t tracefs nodev /sys/kernel/tracing || say "warning: could not mount tracefs"
fi

# 3. The kernels of the qemu oracles, pinned in replay/oracle/kernels.py (6.1 .. 7.3): only the
#    vmlinuz is extracted into .cache/kernels; nothing is installed and the host's apt sources and
#    state are left alone (apt runs with a private sources list and state directory). A pinned
#    version the archive no longer serves is reported, and the nearest served release of its
#    series is fetched instead.
KDIR=$ROOT/.cache/kernels
mkdir -p "$KDIR"
python3 replay/oracle/kernels.py fetch --dest "$KDIR" || say "warning: some oracle kernels could not be fetched (see above)"

# 4. The venv: the project and its Python deps from PyPI; bcc linked in from Debian
#    (it is pure Python over libbcc.so through ctypes; a .pth would drag in all of dist-packages).
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ -e "$SITE/bcc" ] || ln -s /usr/lib/python3/dist-packages/bcc "$SITE/bcc"
stamp=.venv/.vmatrace-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "pip install -e .[dev]"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  # compat mode: the editable install is one path line in a .pth file, not an import hook that
  # every Python start-up in the venv would load (about 20 ms of CPU per command)
  .venv/bin/pip install -q -e '.[dev]' --config-settings editable_mode=compat
  touch "$stamp"
fi
# Byte-code for the project's own modules, as pip writes it for a regular install: an editable
# install writes none, and where PYTHONDONTWRITEBYTECODE is set every command would compile its
# modules again (about 20 ms of a snapshot's start-up). Python recompiles any file changed since.
.venv/bin/python -m compileall -q vmatrace collectors replay >/dev/null

# Files created by this root run belong to the invoking user when run through sudo.
if [ -n "${SUDO_UID:-}" ]; then
  chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" .venv .cache 2>/dev/null || true
  find vmatrace collectors replay -name __pycache__ -exec chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" {} + 2>/dev/null || true
fi
say "ready: $(.venv/bin/python -c 'import bcc, polars; print("bcc", bcc.__version__, "polars", polars.__version__)' 2>&1)"
