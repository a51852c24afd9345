#!/usr/bin/env bash
# The main job on the bundled workload: set everything up (idempotent), record the workload with
# eBPF, replay it through the model and write the report (terminal summary and offline HTML), then
# a live snapshot and the system-wide census.
set -euo pipefail
. "$(dirname "$0")/root.sh"
as_root "$(readlink -f "$0")" "$@"
cd "$(dirname "$0")/.."
bash scripts/setup.sh
V=.venv/bin/vmatrace
PY=.venv/bin/python
OUT=${VMATRACE_DEMO_OUT:-out}
mkdir -p "$OUT"
[ -n "${SUDO_UID:-}" ] && chown "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$OUT"
TRACE="$OUT/fragment.vmat"

echo "== vmatrace doctor"
$V doctor || true

echo
echo "== vmatrace record: the bundled workload (vmatrace/workloads/fragment.py), with a fork and"
echo "   8 cases that only the 6.16 anon-merge rule merges"
$V record --force -o "$TRACE" -- "$PY" -m vmatrace.workloads.fragment --anon-merge 8 --fork --hold 1 >/dev/null

echo
echo "== vmatrace info $TRACE"
$V info "$TRACE"

echo
echo "== vmatrace report $TRACE: the trace replayed through the model (recording kernel, 6.15, and the"
echo "   recording kernel without the fix), the fix counted, an offline HTML report"
$V report "$TRACE" -o "$OUT/report.html" --force

echo
echo "== vmatrace snapshot: the workload again, live"
coproc WL { exec "$PY" -m vmatrace.workloads.fragment; }
read -r info <&"${WL[0]}"
pid=$($PY -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$info")
$V snapshot "$pid" | sed -n "/^invisible fragmentation/,\$p"
$V snapshot "$pid" -o "$OUT/snapshot.parquet" --force

echo
echo "== vmatrace top -n 5"
$V top -n 5
kill "$WL_PID" 2>/dev/null || true
wait 2>/dev/null || true
echo
echo "outputs in $OUT/: $(ls "$OUT" | tr '\n' ' ')"
