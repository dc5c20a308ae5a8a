#!/usr/bin/env bash
# Instructions per packet of the pipeline without DPDK, counted by valgrind: the same build
# gives the same count, on any machine. Only instructions inside Pipeline::process_burst are
# counted (callgrind --toggle-collect), so the harness around it (reloading the frames)
# does not move the figure.
#
#   scripts/instructions.sh                 # ipip, gue, l2dsr at 4096 and 1M flows
#   scripts/instructions.sh --json          # one JSON object per line
#   scripts/instructions.sh --modes ipip --flows 4096 --bursts 2000
#
# For each case it runs benches/instructions.rs twice, with BURSTS bursts of 32 packets and
# with none (both after the same warm-up), and divides the difference by 32 x BURSTS. 4096 flows use the
# default 1 Mi-flow conntrack table, 1M flows a 2 Mi-flow one (as benches/pipeline.rs).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODES="ipip gue l2dsr"
FLOWS="4096 1048576"
BURSTS=2000
JSON=0
while [ $# -gt 0 ]; do
  case "$1" in
    --json) JSON=1 ;;
    --modes) MODES=$2; shift ;;
    --flows) FLOWS=$2; shift ;;
    --bursts) BURSTS=$2; shift ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "instructions: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
command -v valgrind >/dev/null || {
  echo "instructions: valgrind not found (apt-get install valgrind)" >&2
  exit 1
}

echo "instructions: building benches/instructions.rs" >&2
BIN=$(cd "$ROOT" && cargo bench --bench instructions --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')
[ -x "$BIN" ] || { echo "instructions: build failed (cargo bench --bench instructions --no-run)" >&2; exit 1; }

count() { # MODE FLOWS CONNTRACK BURSTS -> total instructions
  local out
  out=$(valgrind --tool=callgrind --toggle-collect='*Pipeline*process_burst*' \
    --callgrind-out-file=/dev/null "$BIN" "$@" 2>&1) || {
    echo "$out" >&2
    return 1
  }
  echo "$out" | sed -n 's/.*Collected *: *\([0-9]*\).*/\1/p' | tail -1
}

for flows in $FLOWS; do
  if [ "$flows" -ge 1000000 ]; then ct=2097152; label=1M; else ct=1048576; label=$flows; fi
  for mode in $MODES; do
    echo "instructions: $mode, $label flows ($BURSTS bursts under valgrind)" >&2
    with=$(count "$mode" "$flows" "$ct" "$BURSTS")
    without=$(count "$mode" "$flows" "$ct" 0)
    per=$(python3 -c "print(f'{($with - $without) / (32 * $BURSTS):.1f}')")
    if [ "$JSON" = 1 ]; then
      echo "{\"case\": \"$mode-$label\", \"instructions_per_packet\": $per}"
    else
      printf '%-12s %8s instructions per packet\n' "$mode-$label" "$per"
    fi
  done
done
