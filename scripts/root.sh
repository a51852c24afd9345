# Sourced by the scripts that need root. As root (a root shell, or through sudo) nothing happens.
# Otherwise the calling script runs again through sudo when sudo is installed, keeping the
# VMATRACE_* settings; a machine without sudo (a fresh Debian root box has none) gets one line
# saying how to run it instead.
#   as_root "$(readlink -f "$0")" "$@"
as_root() {
  [ "$(id -u)" = 0 ] && return 0
  if command -v sudo >/dev/null 2>&1; then
    exec sudo --preserve-env=VMATRACE_REQUIRE_LIVE,VMATRACE_DEMO_OUT,VMATRACE_KERNELS,PYTHON -- "$@"
  fi
  echo "$(basename "$1"): needs root and sudo is not installed: run it from a root shell" >&2
  exit 1
}
