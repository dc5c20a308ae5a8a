#!/usr/bin/env bash
# SYN flood through the real daemon: 10M spoofed SYNs at full rate (net_pcap replay, no
# pacing) with 1,000 established flows mixed in and a backend added halfway through the API.
# Prints the figures and PASS/FAIL (established flows kept their backend, no stall, counters
# add up, no mbuf left at exit). Not part of scripts/test.sh: it takes a few minutes.
#
#   scripts/flood.sh                               # 10M SYNs, 1,000 established, 1 Mi-flow table
#   scripts/flood.sh --flows 1000000 --conntrack-flows 1024   # a table too small: flows move
#   scripts/flood.sh --workdir /tmp/flood          # keep (and reuse) the generated pcap
#
# The generated pcap is about 0.8 GB per 10M frames (in a temporary directory unless
# --workdir is given); the output pcap as much again, deleted at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
echo "flood: building fulcrum (release)"
(cd "$ROOT" && cargo build --release --quiet --bin fulcrum)
exec python3 "$ROOT/scripts/reliability/flood.py" --fulcrum "$ROOT/target/release/fulcrum" "$@"
