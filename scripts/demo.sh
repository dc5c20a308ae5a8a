#!/usr/bin/env bash
# The README's first command: fulcrum balancing real traffic between network namespaces.
#
# Installs what is missing (scripts/setup.sh), builds, brings up the lab (scripts/lab.sh),
# starts fulcrum with three backends weighted 1:2:3, drives traffic with curl, wrk and the lab
# client, shows `fulcrum stats --watch`, drains one backend, stops another's server (the health
# check takes it out), prints a summary and removes everything again. About a minute after the
# build; Ctrl-C at any point tears the lab down.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=/usr/bin/python3
VIP=192.0.2.10:80/tcp
declare -A ADDR=([be1]=203.0.113.11 [be2]=203.0.113.12 [be3]=203.0.113.13)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; }
lab() { bash "$ROOT/scripts/lab.sh" "$@"; }
fulcrum() { show "fulcrum $*"; lab cli "$@"; }
client() { ip netns exec fl-c1 "$PY" "$ROOT/scripts/lab/client.py" "$@"; }
api() { ip netns exec fl-lb curl -s --max-time 3 "http://127.0.0.1:9180$1"; }

teardown() {
  trap - EXIT INT TERM
  step "tear down"
  lab down || true
}
trap teardown EXIT
trap 'echo; echo "demo: interrupted"; exit 130' INT TERM

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (network namespaces, hugepages): sudo bash scripts/demo.sh"
  exit 1
fi

step "setup: packages, hugepages (scripts/setup.sh)"
bash scripts/setup.sh

step "build (cargo build --release)"
cargo build --release --bin fulcrum 2>&1 | tail -n 2

step "lab: 2 clients, 4 backends, fulcrum's port on a bridge, all in namespaces (scripts/lab.sh up)"
lab down >/dev/null 2>&1 || true # a lab left over from an earlier run
lab up
lab start tap

step "fulcrum runs inside fl-lb; the CLI talks to its API there"
fulcrum backend list "$VIP"
for _ in 1 2 3; do
  show "curl http://192.0.2.10/   (from client fl-c1)"
  ip netns exec fl-c1 curl -s --max-time 3 http://192.0.2.10/
done

# per_backend TITLE JSON: a table of connections per backend against the configured weights.
per_backend() {
  "$PY" - "$1" "$2" "$(api "/v1/vips/${VIP//\//%2F}")" <<'EOF'
import json, sys
title, tally, vip = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])["vip"]
names = {"203.0.113.11": "be1", "203.0.113.12": "be2", "203.0.113.13": "be3", "203.0.113.14": "be4"}
answers, total = tally["answers"], max(1, sum(tally["answers"].values()))
weights = {names.get(b["address"], b["address"]): b for b in vip["backends"]}
wsum = max(1, sum(b["weight"] for b in vip["backends"] if b["state"] == "active"))
print(f"{title}: {sum(answers.values())} connections, {tally['errors']} failed, {tally['seconds']} s")
print(f"  {'backend':8} {'weight':>6} {'state':>9} {'health':>7} {'conns':>6} {'share':>7} {'target':>7}")
for name in sorted(set(weights) | set(answers)):
    b = weights.get(name, {})
    target = 100 * b.get("weight", 0) / wsum if b.get("state") == "active" else 0.0
    print(f"  {name:8} {b.get('weight', '-'):>6} {b.get('state', '-'):>9} {b.get('health', '-'):>7} "
          f"{answers.get(name, 0):>6} {100 * answers.get(name, 0) / total:>6.1f}% {target:>6.1f}%")
EOF
}

step "live: wrk (new connection per request) from fl-c2 while fulcrum stats --watch redraws"
show "wrk -t1 -c4 -d7s -H 'Connection: close' http://192.0.2.10/   (background, fl-c2)"
ip netns exec fl-c2 wrk -t1 -c4 -d7s -H 'Connection: close' http://192.0.2.10/ >"/run/fl-lab/wrk.out" 2>&1 &
WRK=$!
sleep 1
fulcrum stats --watch --count 5 --interval 1 || true
wait "$WRK" || true
grep -E 'Requests/sec|requests in' /run/fl-lab/wrk.out | sed 's/^ */  wrk: /'

step "600 new connections: each backend's share against its weight"
SPREAD=$(client tcp --vip 192.0.2.10 -n 600 --concurrency 8 --deadline 30)
per_backend "weights 1:2:3" "$SPREAD"

step "drain be2: its flows may finish, it gets no new ones"
fulcrum backend drain "$VIP" "${ADDR[be2]}"
DRAINED=$(client tcp --vip 192.0.2.10 -n 300 --concurrency 8 --deadline 30)
per_backend "be2 drained" "$DRAINED"

step "stop be3's web server: the health check (every 500 ms, fall 3) takes it out"
show "kill be3's http server"
lab server stop be3 http
be3_health() {
  api /v1/health | "$PY" -c 'import json, sys
d = json.load(sys.stdin)
print([b["status"] for v in d["vips"] if v["vip"] == sys.argv[1] for b in v["backends"] if b["address"] == sys.argv[2]])' "$VIP" "${ADDR[be3]}"
}
for _ in $(seq 1 40); do
  [ "$(be3_health)" = "['down']" ] && break
  sleep 0.25
done
fulcrum health "$VIP" || true
DOWN=$(client tcp --vip 192.0.2.10 -n 300 --concurrency 8 --deadline 30)
per_backend "be2 drained, be3 down" "$DOWN"

step "summary"
STATS=$(api /v1/stats)
"$PY" - "$SPREAD" "$DRAINED" "$DOWN" "$STATS" <<'EOF'
import json, sys
spread, drained, down, stats = (json.loads(a) for a in sys.argv[1:5])
def line(title, t):
    a = t["answers"]
    return f"  {title:24} " + "  ".join(f"{b} {a.get(b, 0):>3}" for b in ("be1", "be2", "be3")) + f"   failed {t['errors']}"
print("connections per backend (weights be1:be2:be3 = 1:2:3, i.e. 16.7% / 33.3% / 50%):")
print(line("all up", spread))
print(line("be2 drained", drained))
print(line("be2 drained, be3 down", down))
drops = {d["name"]: d["count"] for d in stats.get("drops", [])}
print("drops by reason: " + (", ".join(f"{k} {v}" for k, v in drops.items() if v) or "none"))
for p in stats.get("ports", []):
    print(f"port {p['name']}: rx {p['rx_packets']} packets, tx {p['tx_packets']}, to kernel {p['to_kernel_packets']}, from kernel {p['from_kernel_packets']}")
ct = stats.get("conntrack", {})
print(f"conntrack: {ct.get('flows', 0)} flows, {ct.get('inserts', 0)} inserted, {ct.get('hits', 0)} hits")
EOF
echo
echo "demo: done. Run the end-to-end tests with: bash scripts/e2e.sh"
