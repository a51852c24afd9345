#!/usr/bin/env bash
# The whole test suite: set-up (idempotent), lint, type check, tests.
# As root with VMATRACE_REQUIRE_LIVE=1 (what CI does), a skipped live test is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then
  bash scripts/setup.sh
elif [ ! -x .venv/bin/python ]; then
  echo "test.sh: no .venv yet: run 'sudo scripts/setup.sh' once (or run this script as root)" >&2
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
