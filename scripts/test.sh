#!/usr/bin/env bash
# The whole test suite: set-up (idempotent), lint, type check, tests.
# As root with VMATRACE_REQUIRE_LIVE=1 (what CI does), a skipped live test is a failure.
# Not root: through sudo when it is installed; without sudo, the suite runs as this user with the
# existing .venv (no set-up; the live tests skip, or fail under VMATRACE_REQUIRE_LIVE=1).
set -euo pipefail
. "$(dirname "$0")/root.sh"
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then as_root "$(readlink -f "$0")" "$@"; fi
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then
  bash scripts/setup.sh
elif [ ! -x .venv/bin/python ]; then
  echo "test.sh: no .venv yet and no sudo: run scripts/setup.sh once from a root shell" >&2
  exit 1
fi
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy
echo "== import layers"
.venv/bin/lint-imports --no-cache
echo "== pytest"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when no test ran: that is a failure here, never a pass
[ $rc -eq 5 ] && { echo "test.sh: no tests ran" >&2; exit 1; }
exit $rc
