#!/usr/bin/env bash
# fulcrum's end-to-end tests: real kernel TCP and UDP between namespaces, through the real
# daemon (target/release/fulcrum) on a net_tap port, then on a virtio-user port behind a
# vhost-user peer. One line per test, then `e2e: N passed, M failed`; exits non-zero on any
# failure. The lab (scripts/lab.sh) is torn down on every exit, failed or interrupted.
#
#   scripts/e2e.sh [--mode tap|virtio|jumbo|all] [--only REGEX] [--keep]
#
# --only runs the tests whose names match (the daemon still starts); --keep leaves the lab up
# for a look afterwards (scripts/lab.sh down removes it). The lab is driven here; what the
# API and the clients answered is judged by scripts/lab/verdicts.py (one function per check).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${FL_LAB_DIR:-/run/fl-lab}
PY=${FL_PYTHON:-/usr/bin/python3}
CLIENT=$ROOT/scripts/lab/client.py
VERDICTS=$ROOT/scripts/lab/verdicts.py
MODE=all
ONLY=
KEEP=0
while [ $# -gt 0 ]; do
  case $1 in
    --mode) MODE=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: scripts/e2e.sh [--mode tap|virtio|jumbo|all] [--only REGEX] [--keep]" >&2; exit 2 ;;
  esac
done

VIP=192.0.2.10:80/tcp            # weights be1:be2:be3 = 1:2:3 in scripts/lab/fulcrum.toml.in
declare -A ADDR=([be1]=203.0.113.11 [be2]=203.0.113.12 [be3]=203.0.113.13 [be4]=203.0.113.14)
declare -A NAME=([203.0.113.11]=be1 [203.0.113.12]=be2 [203.0.113.13]=be3 [203.0.113.14]=be4)
PORT_TAP=flport0                 # the kernel side of fulcrum's port, in fl-lb
HC_INTERVAL_MS=500 HC_RISE=2 HC_FALL=3  # the lab config's health check of $VIP

PASSED=0
FAILED=0
START=$SECONDS

lab() { bash "$ROOT/scripts/lab.sh" "$@"; }
cleanup() {
  trap - EXIT INT TERM
  if [ "$KEEP" = 1 ]; then
    echo "e2e: --keep: lab left up (scripts/lab.sh down removes it)"
  else
    lab down >/dev/null 2>&1 || lab down
  fi
}
trap cleanup EXIT
trap 'echo "e2e: interrupted"; exit 130' INT TERM

pass() { PASSED=$((PASSED + 1)); printf 'e2e: PASS %-28s %s\n' "$1" "$2"; }
fail() { FAILED=$((FAILED + 1)); printf 'e2e: FAIL %-28s %s\n' "$1" "$2"; }
wanted() { [ -z "$ONLY" ] || [[ $1 =~ $ONLY ]]; }

in_ns() { local ns=$1; shift; ip netns exec "fl-$ns" "$@"; }
cli() { in_ns lb timeout 15 "${FULCRUM_BIN:-$ROOT/target/release/fulcrum}" "$@"; }
api() { in_ns lb curl -s --max-time 3 "http://127.0.0.1:9180$1"; }
vip_path() { local v=${1//\//%2F}; echo "${v//[/%5B}" | sed 's/]/%5D/g'; }

# v NAME [ARG ...]: a judgement of scripts/lab/verdicts.py over the JSON on stdin.
v() { "$PY" "$VERDICTS" "$@"; }

# traffic CLIENT tcp|udp VIP N [extra client.py args]: JSON tally of answers by backend.
traffic() {
  local c=$1 proto=$2 vip=$3 n=$4
  shift 4
  in_ns "$c" "$PY" "$CLIENT" "$proto" --vip "$vip" -n "$n" --timeout 3 --deadline 60 "$@"
}

# The decapsulators' counter KEY summed over the backends.
decap_sum() { "$PY" "$VERDICTS" decap-sum "$1" "$DIR"; }

# Waits until every backend of every VIP has a next-hop MAC and $VIP's backends are all up.
wait_ready() {
  local i
  for ((i = 0; i < 100; i++)); do
    if api /v1/vips | v ready "$VIP" 2>/dev/null | grep -q True; then
      return 0
    fi
    sleep 0.2
  done
  echo "e2e: daemon not ready after 20 s: $(api /v1/vips | head -c 600)"
  return 1
}

start_daemon() { lab start "$1" >/dev/null && wait_ready; }

# The state of $VIP's backends as "be1:w=1:active:up be2:...".
vip_state() {
  api "/v1/vips/$(vip_path "$VIP")" | v vip-state
}

# --- the tests --------------------------------------------------------------------------

# 600 new connections from fixed source ports; shares within 5 points of the weights.
test_spread() {
  local name=$1 sport=$2 out
  out=$(traffic c1 tcp 192.0.2.10 600 --sport-base "$sport" --concurrency 8)
  local verdict
  verdict=$(v spread <<<"$out")
  if [[ $verdict == ok* ]]; then pass "$name" "${verdict#ok }"; else fail "$name" "${verdict#bad } $out"; fi
}

# Rate-limited downloads in the background, by id: stream_start ID CLIENT URL BYTES RATE SECS
# sets S_PID[ID], S_OUT[ID] and S_BACKEND[ID] (the backend's name, the body's first line).
declare -A S_PID S_OUT S_BACKEND S_RESULT
stream_start() {
  local id=$1 c=$2 url=$3 bytes=$4 rate=$5 secs=$6 out i
  out=$DIR/stream-$id.out
  rm -f "$out" "$out.result"
  in_ns "$c" curl -s -o "$out" --limit-rate "$rate" --max-time "$secs" \
    -w '%{http_code} %{size_download}' "$url/stream?bytes=$bytes" >"$out.result" 2>&1 &
  S_PID[$id]=$!
  S_OUT[$id]=$out
  echo "${S_PID[$id]}" >"$DIR/pids/stream-$id.pid"
  for ((i = 0; i < 50; i++)); do
    [ -s "$out" ] && head -c 8 "$out" | grep -q $'\n' && break
    sleep 0.1
  done
  S_BACKEND[$id]=$(head -n1 "$out" 2>/dev/null)
}

# stream_finish ID BYTES: waits; true when all BYTES came from the first backend, no error.
stream_finish() {
  local id=$1 bytes=$2 rc out=${S_OUT[$1]}
  wait "${S_PID[$id]}"
  rc=$?
  rm -f "$DIR/pids/stream-$id.pid"
  S_RESULT[$id]="stream $id: curl exit $rc, '$(cat "$out.result" 2>/dev/null)', from ${S_BACKEND[$id]:-nobody}"
  [ "$rc" = 0 ] && [ -n "${S_BACKEND[$id]}" ] && [ "$(cat "$out.result")" = "200 $bytes" ] \
    && [ "$(stat -c %s "$out")" = "$bytes" ] && [ "$(head -n1 "$out")" = "${S_BACKEND[$id]}" ]
}

# Two streams survive adding a backend, removing another and changing weights (the streams'
# backends drop to weight 1, so the new table moves much of their hash space elsewhere).
test_stickiness() {
  local name=$1 bytes=2400000 b removed='' keep='' changes=() busy
  stream_start a c2 http://192.0.2.10 "$bytes" 300k 40
  stream_start b c2 http://192.0.2.10 "$bytes" 300k 40
  busy=" ${S_BACKEND[a]} ${S_BACKEND[b]} "
  for b in be1 be2 be3; do
    if [[ $busy != *" $b "* ]]; then
      if [ -z "$removed" ]; then removed=$b; else keep=$b; fi
    fi
  done
  sleep 1
  cli backend add "$VIP" "${ADDR[be4]}" --weight 4 >/dev/null && changes+=("added be4 (weight 4)")
  sleep 1
  cli backend del "$VIP" "${ADDR[$removed]}" >/dev/null && changes+=("removed $removed")
  sleep 1
  local w=()
  for b in $(printf '%s\n' "${S_BACKEND[a]}" "${S_BACKEND[b]}" | sort -u); do
    cli backend weight "$VIP" "${ADDR[$b]}" 1 >/dev/null && w+=("$b=1")
  done
  if [ -n "$keep" ]; then cli backend weight "$VIP" "${ADDR[$keep]}" 5 >/dev/null && w+=("$keep=5"); fi
  [ ${#w[@]} -ge 2 ] && changes+=("weights ${w[*]}")
  local after ok=1
  after=$(traffic c1 tcp 192.0.2.10 60 --concurrency 4)
  stream_finish a "$bytes" || ok=0
  stream_finish b "$bytes" || ok=0
  if [ "$ok" = 1 ] && [ ${#changes[@]} = 3 ] && [ -n "$removed" ] \
    && [ "$(v errors <<<"$after")" = 0 ] \
    && [ "$(v answers-from "$removed" <<<"$after")" = 0 ]; then
    pass "$name" "2 streams (on ${S_BACKEND[a]}, ${S_BACKEND[b]}): $bytes bytes each, intact while: ${changes[*]}; 60 new conns $(v answers <<<"$after")"
  else
    fail "$name" "${S_RESULT[a]}; ${S_RESULT[b]}; changes: ${changes[*]:-none}; new conns $after; state $(vip_state)"
  fi
}

# Draining the stream's backend: the stream finishes, no new connection reaches it.
test_drain() {
  local name=$1 bytes=1500000 after
  stream_start d c2 http://192.0.2.10 "$bytes" 300k 30
  local drained=${S_BACKEND[d]}
  if [ -z "$drained" ] || ! cli backend drain "$VIP" "${ADDR[$drained]}" >/dev/null; then
    stream_finish d "$bytes"
    fail "$name" "no stream or fulcrum backend drain failed: ${S_RESULT[d]}"
    return
  fi
  sleep 0.5
  after=$(traffic c1 tcp 192.0.2.10 200 --concurrency 8)
  if stream_finish d "$bytes" && [ "$(v errors <<<"$after")" = 0 ] \
    && [ "$(v answers-from "$drained" <<<"$after")" = 0 ]; then
    pass "$name" "stream on drained $drained finished ($bytes bytes); 200 new conns: $(v answers <<<"$after"), none to $drained"
  else
    fail "$name" "${S_RESULT[d]}; new conns $after; state $(vip_state)"
  fi
  cli backend undrain "$VIP" "${ADDR[$drained]}" >/dev/null
}

# Stopping a backend's server takes it out after fall x interval; restarting brings it back.
test_health() {
  local name=$1 victim out back i down_after
  victim=$(api "/v1/vips/$(vip_path "$VIP")" | v first-active)
  victim=${NAME[$victim]:-}
  if [ -z "$victim" ]; then fail "$name" "no active backend to stop: $(vip_state)"; return; fi
  lab server stop "$victim" http
  local t0=$SECONDS
  sleep "$(awk "BEGIN {print ($HC_FALL * $HC_INTERVAL_MS + 700) / 1000}")"
  out=$(traffic c1 tcp 192.0.2.10 200 --concurrency 8)
  down_after=$(vip_state)
  lab server start "$victim" http
  sleep "$(awk "BEGIN {print ($HC_RISE * $HC_INTERVAL_MS + 900) / 1000}")"
  for ((i = 0; i < 20; i++)); do
    vip_state | grep -q "${ADDR[$victim]}:w=[0-9]*:active:up" && break
    sleep 0.25
  done
  back=$(traffic c1 tcp 192.0.2.10 200 --concurrency 8)
  if [ "$(v errors <<<"$out")" = 0 ] && [ "$(v answers-from "$victim" <<<"$out")" = 0 ] \
    && [ "$(v errors <<<"$back")" = 0 ] && [ "$(v answers-from "$victim" <<<"$back")" -gt 0 ]; then
    pass "$name" "$victim's server stopped: 200 conns, 0 failed, 0 to $victim (checked $((SECONDS - t0)) s later); restarted: $(v answers <<<"$back")"
  else
    fail "$name" "while down: $out [$down_after]; after restart: $back [$(vip_state)]"
  fi
}

test_udp() {
  local out
  out=$(traffic c1 udp 192.0.2.10 60 --sport-base 30000)
  if [ "$(v errors <<<"$out")" = 0 ] && [ "$(v backends-answering <<<"$out")" -ge 2 ]; then
    pass udp "60 requests to 192.0.2.10:53/udp answered: $(v answers <<<"$out")"
  else
    fail udp "$out"
  fi
}

test_ipv6() {
  local out
  out=$(traffic c1 tcp 2001:db8:10::10 60)
  if [ "$(v errors <<<"$out")" = 0 ] && [ "$(v backends-answering <<<"$out")" = 3 ]; then
    pass ipv6 "60 conns to [2001:db8:10::10]:80 (l2dsr): $(v answers <<<"$out")"
  else
    fail ipv6 "$out"
  fi
}

# MODE (ipip|gue): TCP over both families through the backends' decapsulator.
test_tunnel() {
  local mode=$1 v4 v6 k4 k6 b4 b6 o4 o6
  case $mode in
    ipip) v4=192.0.2.11 v6=2001:db8:10::11 k4=ipip4_in4 k6=ipip6_in6 ;;
    gue) v4=192.0.2.12 v6=2001:db8:10::12 k4=gue_in4 k6=gue_in6 ;;
  esac
  b4=$(decap_sum "$k4") b6=$(decap_sum "$k6")
  o4=$(traffic c1 tcp "$v4" 60)
  o6=$(traffic c1 tcp "$v6" 60)
  sleep 1.2 # the decapsulators write their counters once a second
  local d4=$(($(decap_sum "$k4") - b4)) d6=$(($(decap_sum "$k6") - b6))
  if [ "$(v errors <<<"$o4")" = 0 ] && [ "$(v errors <<<"$o6")" = 0 ] \
    && [ "$(v backends-answering <<<"$o4")" = 3 ] && [ "$(v backends-answering <<<"$o6")" = 3 ] \
    && [ "$d4" -ge 240 ] && [ "$d6" -ge 240 ]; then
    pass "$mode" "60+60 conns to $v4 and [$v6]: $(v answers <<<"$o4") / $(v answers <<<"$o6"); decapsulated $d4 IPv4 + $d6 IPv6 packets"
  else
    fail "$mode" "v4 $o4; v6 $o6; decapsulated $d4 + $d6"
  fi
}

# 1 MB uploads with full-size segments through ipip: fulcrum answers frag-needed / PTB,
# the client's kernel lowers its path MTU and the transfer completes.
test_pmtu() {
  local before after r4 r6 m4 m6
  head -c 1048576 /dev/zero >"$DIR/upload.bin"
  ip -n fl-c2 route flush cache >/dev/null 2>&1
  ip -n fl-c2 -6 route flush cache >/dev/null 2>&1
  before=$(api /v1/stats | v field icmp_too_big_sent)
  r4=$(in_ns c2 curl -s --max-time 20 --data-binary "@$DIR/upload.bin" http://192.0.2.11/upload)
  r6=$(in_ns c2 curl -s --max-time 20 --data-binary "@$DIR/upload.bin" "http://[2001:db8:10::11]/upload")
  after=$(api /v1/stats | v field icmp_too_big_sent)
  m4=$(ip -n fl-c2 route get 192.0.2.11 | grep -o 'mtu [0-9]*')
  m6=$(ip -n fl-c2 -6 route get 2001:db8:10::11 | grep -o 'mtu [0-9]*')
  if [[ $r4 == *"received 1048576 bytes"* ]] && [[ $r6 == *"received 1048576 bytes"* ]] \
    && [ "$m4" = "mtu 1480" ] && [ "$m6" = "mtu 1460" ] && [ "$after" -gt "$before" ]; then
    pass pmtu "1 MB POST over ipip, v4 and v6: '${r4%$'\n'}', '${r6%$'\n'}'; client PMTU $m4 / $m6; $((after - before)) too-big sent"
  else
    fail pmtu "v4 '$r4' ($m4), v6 '$r6' ($m6), too-big sent $before -> $after"
  fi
}

# A stream survives the daemon's restart: same Maglev table, fresh conntrack.
test_restart() {
  local bytes=2400000 mode=$1
  stream_start r c2 http://192.0.2.10 "$bytes" 300k 40
  sleep 1
  local t0=$SECONDS
  lab stop >/dev/null
  if ! start_daemon "$mode"; then
    stream_finish r "$bytes"
    fail restart "daemon did not come back; ${S_RESULT[r]}"
    return
  fi
  local gap=$((SECONDS - t0))
  if stream_finish r "$bytes"; then
    pass restart "stream on ${S_BACKEND[r]}: $bytes bytes intact across stop + start (${gap} s without fulcrum)"
  else
    fail restart "${S_RESULT[r]}"
  fi
}

# dpdk-dumpcap, a DPDK secondary process, captures the running port: both directions, so a
# SYN shows up as received (to the port's MAC) and as sent on (to a backend's MAC, l2dsr).
test_dumpcap() {
  local pcap=$DIR/capture.pcapng out
  if ! grep -qs ' /dev/hugepages hugetlbfs ' /proc/mounts; then
    fail dumpcap "needs hugepages (fulcrum runs --no-huge, which secondary processes cannot attach to)"
    return
  fi
  in_ns lb timeout 30 dpdk-dumpcap --file-prefix=fl-lab -i net_tap0 -f 'host 203.0.113.100' -w "$pcap" -c 150 -a duration:15 -q \
    >"$DIR/logs/dumpcap.log" 2>&1 &
  local pid=$! i
  echo "$pid" >"$DIR/pids/dumpcap.pid"
  for ((i = 0; i < 50; i++)); do
    grep -qi "capturing" "$DIR/logs/dumpcap.log" 2>/dev/null && break
    sleep 0.1
  done
  sleep 0.5
  in_ns c1 ping -c 3 -i 0.2 -W 1 203.0.113.2 >/dev/null
  traffic c1 tcp 192.0.2.10 40 --concurrency 2 >/dev/null
  wait "$pid"
  rm -f "$DIR/pids/dumpcap.pid"
  out=$(tcpdump -enr "$pcap" 2>/dev/null)
  local total syn_in syn_out echo_req echo_rep
  total=$(grep -c . <<<"$out")
  syn_in=$(grep -c '> 02:f1:00:00:00:02, .* > 192.0.2.10.80: Flags \[S\]' <<<"$out")
  syn_out=$(grep -c '02:f1:00:00:00:02 > 02:f1:00:00:00:0[bcd], .* > 192.0.2.10.80: Flags \[S\]' <<<"$out")
  echo_req=$(grep -c '203.0.113.100 > 203.0.113.2: ICMP echo request' <<<"$out")
  echo_rep=$(grep -c '203.0.113.2 > 203.0.113.100: ICMP echo reply' <<<"$out")
  if [ "$syn_in" -ge 10 ] && [ "$syn_out" -ge 10 ] && [ "$echo_req" -ge 1 ] && [ "$echo_rep" -ge 1 ]; then
    pass dumpcap "$(basename "$pcap"): $total packets; SYNs to the VIP: $syn_in received, $syn_out sent to backends' MACs; balancer ping: $echo_req requests, $echo_rep replies"
  else
    fail dumpcap "$total packets, SYNs $syn_in in / $syn_out out, echo $echo_req/$echo_rep; log: $(tail -3 "$DIR/logs/dumpcap.log" | tr '\n' ' ')"
  fi
}

# 2 MB uploads with 8000-byte TCP segments through every encap mode, IPv4 and IPv6, in a lab
# whose links, port and decapsulators are at MTU 9000: the backend's SHA-256 of what it
# received must match, and fulcrum must have sent the segments whole (frames over 8000 bytes
# leaving its port, counted by tcpdump on the kernel side of the port's TAP).
test_jumbo() {
  local spec mode vip out pid cap big summary=() bad=()
  for spec in "l2dsr 192.0.2.10" "ipip 192.0.2.11" "gue 192.0.2.12" \
    "l2dsr 2001:db8:10::10" "ipip 2001:db8:10::11" "gue 2001:db8:10::12"; do
    read -r mode vip <<<"$spec"
    cap=$DIR/jumbo-capture.txt
    # Directly, not through in_ns: $! must be tcpdump itself (ip netns exec execs it), and
    # a background job of a script ignores SIGINT, so it is stopped with SIGTERM.
    ip netns exec fl-lb tcpdump -i "$PORT_TAP" -Q in -nn -l "greater 8000" >"$cap" 2>"$cap.err" &
    pid=$!
    echo "$pid" >"$DIR/pids/tcpdump.pid"
    # Upload only once tcpdump captures: a fixed pause missed the first segments when
    # tcpdump was slow to start (173 of 250 counted).
    for _ in $(seq 50); do grep -q 'listening on' "$cap.err" 2>/dev/null && break; sleep 0.1; done
    out=$(in_ns c1 "$PY" "$ROOT/scripts/lab/upload.py" --vip "$vip" --bytes 2000000 --mss 8000)
    sleep 0.3
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -f "$DIR/pids/tcpdump.pid"
    big=$(grep -c . "$cap")
    if [ "$(v field ok <<<"$out")" = True ] && [ "$big" -ge 200 ]; then
      summary+=("$mode $vip: $(v field backend <<<"$out"), $big frames >8000 B")
    else
      bad+=("$mode $vip: $out; $big frames >8000 B")
    fi
  done
  if [ "${#bad[@]}" = 0 ]; then
    pass jumbo "MTU 9000, 2 MB uploads in 8000-byte segments, SHA-256 intact: $(IFS=';'; echo "${summary[*]}")"
  else
    fail jumbo "$(IFS=';'; echo "${bad[*]}")"
  fi
}

run_jumbo() {
  lab down >/dev/null 2>&1
  if ! FL_LAB_MTU=9000 lab up >/dev/null; then fail jumbo "lab up at MTU 9000 failed"; return; fi
  if ! start_daemon pcap; then fail start-jumbo "$(tail -5 "$DIR/logs/fulcrum.log" 2>/dev/null | tr '\n' ' ')"; return; fi
  test_jumbo
  lab stop >/dev/null
  local left
  left=$(grep '^{' "$DIR/logs/fulcrum.log" | tail -1 | v field mempool_in_use_at_exit 2>/dev/null)
  if [ "$left" = 0 ]; then
    pass jumbo-mempool "after SIGTERM at MTU 9000: every mbuf back in the pool"
  else
    fail jumbo-mempool "mempool_in_use_at_exit = '$left'"
  fi
  lab down >/dev/null 2>&1
  lab up >/dev/null || fail lab-up "lab up at MTU 1500 failed"
}

run_tap() {
  if ! start_daemon tap; then fail start-tap "$(tail -5 "$DIR/logs/fulcrum.log" 2>/dev/null | tr '\n' ' ')"; return; fi
  wanted spread && test_spread spread 20000
  wanted udp && test_udp
  wanted ipv6 && test_ipv6
  wanted ipip && test_tunnel ipip
  wanted gue && test_tunnel gue
  wanted pmtu && test_pmtu
  wanted dumpcap && test_dumpcap
  wanted restart && test_restart tap
  wanted stickiness && test_stickiness stickiness
  wanted drain && test_drain drain
  wanted health && test_health health
  lab stop >/dev/null
}

run_virtio() {
  if ! start_daemon virtio; then fail start-virtio "$(tail -5 "$DIR/logs/fulcrum.log" 2>/dev/null | tr '\n' ' ')"; return; fi
  wanted virtio-spread && test_spread virtio-spread 21000
  wanted virtio-stickiness && test_stickiness virtio-stickiness
  lab stop --all >/dev/null
}

main() {
  [ "$(id -u)" -eq 0 ] || { echo "e2e: needs root (network namespaces)"; exit 1; }
  [ -x "${FULCRUM_BIN:-$ROOT/target/release/fulcrum}" ] || { echo "e2e: build first: cargo build --release"; exit 1; }
  lab down >/dev/null 2>&1
  lab up >/dev/null || { echo "e2e: lab up failed"; exit 1; }
  case $MODE in
    tap) run_tap ;;
    virtio) run_virtio ;;
    jumbo) run_jumbo ;;
    all) run_tap; wanted jumbo && run_jumbo; run_virtio ;;
    *) echo "e2e: unknown mode $MODE"; exit 2 ;;
  esac
  if [ "$FAILED" -gt 0 ] && [ -f "$DIR/logs/fulcrum.log" ]; then
    # The lab (and its logs) is removed on exit: keep the daemon's last words in the output.
    echo "e2e: last lines of $DIR/logs/fulcrum.log:"
    tail -n 25 "$DIR/logs/fulcrum.log" | sed 's/^/    /'
  fi
  echo "e2e: took $((SECONDS - START)) s"
  echo "e2e: $PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ]
}

main
