#!/usr/bin/env bash
# The main job on the bundled workload: set everything up (idempotent), then show what vmatrace
# sees in a process with known invisible fragmentation, and the system-wide census.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "demo.sh: run as root (sudo scripts/demo.sh)" >&2; exit 1; fi
bash scripts/setup.sh
V=.venv/bin/vmatrace
OUT=${VMATRACE_DEMO_OUT:-out}
mkdir -p "$OUT"
[ -n "${SUDO_UID:-}" ] && chown "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$OUT"

echo "== vmatrace doctor"
$V doctor || true

echo "== the bundled workload (vmatrace/workloads/fragment.py)"
coproc WL { exec .venv/bin/python -m vmatrace.workloads.fragment --fork; }
read -r info <&"${WL[0]}"
pid=$(.venv/bin/python -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$info")
child=$(.venv/bin/python -c 'import json,sys; print(json.loads(sys.argv[1])["child_pid"])' "$info")
echo "workload PID $pid (fork child $child): $info"

echo "== vmatrace snapshot $pid"
$V snapshot "$pid"
$V snapshot "$pid" -o "$OUT/snapshot-$pid.parquet" --force
echo "== vmatrace snapshot $child (the fork child)"
$V snapshot "$child" | tail -n 12

echo "== vmatrace top -n 5"
$V top -n 5
kill "$WL_PID" 2>/dev/null || true
wait 2>/dev/null || true
