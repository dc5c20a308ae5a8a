#!/usr/bin/env bash
# fulcrum against dpdk-testpmd: same machine, same run, same pcap traffic, same core.
#
#   scripts/bench.sh              # 4096 and 1,000,000 flows, 2 rounds of 3 s (about 4 min)
#   scripts/bench.sh --quick      # 4096 flows, 1 round of 1 s (under a minute)
#   scripts/bench.sh --flows 4096 --rounds 3 --seconds 5
#
# Each round alternates testpmd and fulcrum runs: testpmd io, fulcrum l2dsr, testpmd
# macswap, fulcrum ipip, testpmd 5tswap, fulcrum gue, once per flow count. Every process
# gets --no-pci, its own --file-prefix, its main lcore on core 0 and its one forwarding or
# worker lcore on core 1. Traffic comes from net_pcap with infinite_rx=1 (scripts/gen-traffic:
# 64-byte IPv4/TCP to one VIP); TX goes nowhere.
#
# Two rates are measured per run: packets per wall-clock second, and packets per second
# the forwarding thread actually ran on a CPU (its /proc schedstat), which stays meaningful
# when other work shares the machine. The table shows the median over rounds; the JSON
# (--out, default target/bench/results.json) keeps every run, for scripts/plot-bench.
#
# net_pcap's infinite_rx keeps every packet of the pcap in an mbuf, so a pcap can hold at
# most as many packets as the pool has mbufs. fulcrum sizes its pool from the ports'
# descriptor counts; for 1M flows the traffic is split into 8 pcap ports of 125,000 flows
# each and the descriptor counts are raised so the pool (1 Mi mbufs) holds them all.
# testpmd gets the same 8 ports (--port-topology=loop, one forwarding core).
#
# The runs, the table and the JSON are scripts/bench/bench.py's; this wrapper checks for
# dpdk-testpmd and builds fulcrum first (unless --no-build).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=1
for a in "$@"; do
  case "$a" in
    --no-build) BUILD=0 ;;
    -h | --help)
      sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
      echo
      echo "options: --quick  --flows \"N ...\"  --rounds R  --seconds S  --warmup W"
      echo "         --modes \"ipip gue l2dsr\"  --out FILE.json  --no-build  --no-plot"
      exit 0
      ;;
  esac
done

command -v dpdk-testpmd >/dev/null || {
  echo "bench: dpdk-testpmd not found (scripts/setup.sh installs DPDK)" >&2
  exit 1
}
if [ "$BUILD" = 1 ]; then
  (cd "$ROOT" && cargo build --release --quiet)
fi

exec "$ROOT/scripts/bench/bench.py" "$@"
