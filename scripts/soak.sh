#!/usr/bin/env bash
# Soak: fulcrum in the lab for 30 minutes (or --seconds N) under mixed TCP/UDP/IPv6 traffic,
# one API change per second, and a backend whose HTTP server stops and starts every 20 s.
# Prints fulcrum's VmRSS curve (every 10 s), the traffic and change counts, and PASS/FAIL:
# the running state equals the acknowledged changes, no mbuf is in use after SIGTERM, and a
# restart with the same state file comes back with the same VIPs and backends.
# Not part of scripts/test.sh. Needs root (network namespaces); brings the lab up and down.
#
#   scripts/soak.sh                 # 1800 s
#   scripts/soak.sh --seconds 120   # a short run
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_ARG=1800
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) SECONDS_ARG=$2; shift 2 ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "soak: needs root (network namespaces)" >&2; exit 1; }
DIR=${FL_LAB_DIR:-/run/fl-lab}
WORK=$(mktemp -d /tmp/fulcrum-soak.XXXXXX)
LAB="$ROOT/scripts/lab.sh"
cleanup() {
  bash "$LAB" stop >/dev/null 2>&1 || true
  bash "$LAB" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "soak: building fulcrum (release)"
(cd "$ROOT" && cargo build --release --quiet --bin fulcrum)
bash "$LAB" down >/dev/null 2>&1 || true
bash "$LAB" up
bash "$LAB" config tap "$WORK/fulcrum.toml"
# Persist API changes, so the restart at the end can check they all reached the disk.
sed -i "s|^listen = \"127.0.0.1:9180\"|&\nstate_file = \"$WORK/state.json\"|" "$WORK/fulcrum.toml"
grep -q '^state_file' "$WORK/fulcrum.toml" || { echo "soak: could not add state_file" >&2; exit 1; }
bash "$LAB" start tap "$WORK/fulcrum.toml"
echo "soak: running for $SECONDS_ARG s; a line a minute (work directory $WORK)"
ip netns exec fl-lb /usr/bin/python3 "$ROOT/scripts/reliability/soak.py" \
  --seconds "$SECONDS_ARG" --lab "$LAB" --lab-dir "$ROOT/scripts/lab" \
  --config "$WORK/fulcrum.toml" --pid-file "$DIR/pids/fulcrum.pid" \
  --log-file "$DIR/logs/fulcrum.log" --workdir "$WORK"
