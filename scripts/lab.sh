#!/usr/bin/env bash
# fulcrum's end-to-end lab: clients, backends and the balancer in network namespaces.
#
#   scripts/lab.sh up                 build the topology and start the backends' servers
#                                     (FL_LAB_MTU=9000 scripts/lab.sh up: every link, the
#                                     port and the decapsulators at that MTU; default 1500)
#   scripts/lab.sh down               remove everything (also after a crash)
#   scripts/lab.sh status             what exists and runs
#   scripts/lab.sh start [tap|pcap|virtio] [CONFIG]
#                                     run fulcrum in fl-lb (virtio: behind a dpdk-testpmd
#                                     vhost-user peer); renders the lab config unless CONFIG
#   scripts/lab.sh stop [--all]       stop fulcrum (--all: and the vhost peer)
#   scripts/lab.sh config [tap|virtio] [OUT]   render the lab configuration
#   scripts/lab.sh cli ARGS...        the fulcrum CLI inside fl-lb (its API is 127.0.0.1:9180 there)
#   scripts/lab.sh server stop|start BACKEND [http|udp|decap]
#   scripts/lab.sh exec NAMESPACE CMD...
#
# Topology (documentation ranges only; nothing is connected to the host's own network):
#
#   fl-c1  203.0.113.100 2001:db8:1::100 ─┐
#   fl-c2  203.0.113.101 2001:db8:1::101 ─┤   fl-lb: bridge fl-br0 ── flport0 (net_tap: fulcrum's port)
#   fl-be1 203.0.113.11  2001:db8:1::11  ─┤                           fl-exc0 (exception TAP, 203.0.113.2
#   fl-be2 203.0.113.12  2001:db8:1::12  ─┤                                    2001:db8:1::2: the balancer's
#   fl-be3 203.0.113.13  2001:db8:1::13  ─┤                                    kernel, behind fulcrum)
#   fl-be4 203.0.113.14  2001:db8:1::14  ─┘   (be4 starts outside the configuration: tests add it)
#
# Clients route the VIPs (192.0.2.0/24, 2001:db8:10::/64) via the balancer's address and find
# its MAC by ARP/ND, which fulcrum hands to the kernel through its exception TAP. Backends hold
# the VIPs on lo (arp_ignore=1, arp_announce=2, rp_filter off) and answer clients directly:
# L2 DSR with the plain kernel; IPIP and GUE through scripts/lab/decap.py, because this
# kernel has no ipip/fou modules. fulcrum runs inside fl-lb, so its TAPs, its API and its
# health checks live there.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB=$ROOT/scripts/lab
DIR=${FL_LAB_DIR:-/run/fl-lab}
PY=${FL_PYTHON:-/usr/bin/python3}
BIN=${FULCRUM_BIN:-$ROOT/target/release/fulcrum}
PREFIX=fl-lab            # DPDK --file-prefix of fulcrum (dpdk-dumpcap needs the same)
PEER_PREFIX=fl-lab-vhost # and of the vhost-user peer
LB=fl-lb
BRIDGE=fl-br0
PORT_IFACE=flport0
PCAP_IFACE=flpcap0       # pcap mode: the veth net_pcap drives
EXC_IFACE=fl-exc0
PORT_MAC=02:f1:00:00:00:02
CLIENTS=(c1 c2)
BACKENDS=(be1 be2 be3 be4)
VIPS4=(192.0.2.10 192.0.2.11 192.0.2.12)
VIPS6=(2001:db8:10::10 2001:db8:10::11 2001:db8:10::12)

# The lab's MTU: chosen at `up` (FL_LAB_MTU), remembered for `start` and `config`.
lab_mtu() { cat "$DIR/mtu" 2>/dev/null || echo "${FL_LAB_MTU:-1500}"; }

say() { printf 'lab: %s\n' "$*"; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"; }

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
ns_exists() { [ -e "/run/netns/$1" ]; }

# Host numbers: c1 -> 100, c2 -> 101; beN -> 10+N.
host_id() {
  case $1 in
    c*) echo $((99 + ${1#c})) ;;
    be*) echo $((10 + ${1#be})) ;;
  esac
}
mac_of() { printf '02:f1:00:00:00:%02x' "$(host_id "$1")"; }

pidfile() { echo "$DIR/pids/$1.pid"; }
# A process that has exited but not yet been reaped (a zombie) counts as gone: processes of
# an earlier lab.sh run have been re-parented to init, which may reap them late.
running() {
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}
alive() { # NAME -> true when its pid file names a live process
  local f; f=$(pidfile "$1")
  [ -s "$f" ] && running "$(cat "$f")"
}

# start_bg NAME NAMESPACE CMD... : run CMD in NAMESPACE in the background, log and pid in $DIR.
start_bg() {
  local name=$1 ns=$2; shift 2
  if alive "$name"; then return 0; fi
  mkdir -p "$DIR/pids" "$DIR/logs"
  ip netns exec "$ns" "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
}

# stop_pid NAME [SECONDS]: TERM, wait, then KILL the process of a pid file we wrote.
stop_pid() {
  local name=$1 secs=${2:-5} f pid i
  f=$(pidfile "$name")
  [ -s "$f" ] || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  if running "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
      running "$pid" || break
      sleep 0.1
    done
    if running "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$f"
}

ensure_ns() {
  local ns=$1
  ns_exists "$ns" || ip netns add "$ns"
  ip -n "$ns" link set lo up
}

# veth NAME: fl-NAME in fl-lb (a bridge port) <-> eth0 in fl-NAME.
ensure_veth() {
  local name=$1 ns=fl-$1
  if ! ip -n "$LB" link show "fl-$name" >/dev/null 2>&1; then
    ip -n "$ns" link del eth0 2>/dev/null || true
    ip -n "$LB" link add "fl-$name" type veth peer name eth0 netns "$ns"
  fi
  # The bridge side is pure L2: no IPv6 link-local, no router solicitations.
  nsx "$LB" sysctl -qw "net.ipv6.conf.fl-$name.disable_ipv6=1"
  ip -n "$LB" link set "fl-$name" mtu "$(lab_mtu)" master "$BRIDGE" up
  ip -n "$ns" link set eth0 address "$(mac_of "$name")"
  ip -n "$ns" link set eth0 mtu "$(lab_mtu)" up
}

host_addresses() {
  local name=$1 ns=fl-$1 id
  id=$(host_id "$name")
  nsx "$ns" sysctl -qw net.ipv6.conf.eth0.accept_ra=0
  ip -n "$ns" addr replace "203.0.113.$id/24" dev eth0
  ip -n "$ns" -6 addr replace "2001:db8:1::$id/64" dev eth0 nodad
}

up_lb() {
  ensure_ns "$LB"
  # fl-lb's kernel is the balancer's own stack (behind the exception TAP). It routes nothing.
  nsx "$LB" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
  if ! ip -n "$LB" link show "$BRIDGE" >/dev/null 2>&1; then
    # No multicast snooping: ND's solicited-node multicast must reach fulcrum's port even
    # before anyone has sent an MLD report.
    ip -n "$LB" link add "$BRIDGE" type bridge mcast_snooping 0 stp_state 0 forward_delay 0
  fi
  # The bridge is the lab's switch, not a host: the kernel of fl-lb must reach the wire only
  # through fulcrum (its exception TAP). Without this the bridge device itself would answer
  # ARP for 203.0.113.2 (arp_ignore=0 answers for any local address on any interface) and
  # clients would send VIP traffic to the bridge instead of to fulcrum.
  nsx "$LB" sysctl -qw "net.ipv6.conf.$BRIDGE.disable_ipv6=1" "net.ipv4.conf.$BRIDGE.arp_ignore=8"
  ip -n "$LB" link set "$BRIDGE" address 02:f1:00:00:fe:00
  ip -n "$LB" link set "$BRIDGE" up
}

up_client() {
  local name=$1 ns=fl-$1
  ensure_ns "$ns"
  nsx "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
  ensure_veth "$name"
  host_addresses "$name"
  ip -n "$ns" route replace 192.0.2.0/24 via 203.0.113.2 dev eth0
  ip -n "$ns" -6 route replace 2001:db8:10::/64 via 2001:db8:1::2 dev eth0
}

up_backend() {
  local name=$1 ns=fl-$1 v
  ensure_ns "$ns"
  # DSR: the VIPs live on lo; never answer ARP for them on eth0, never use them as ARP source;
  # accept packets whose source is not routed back through the receiving interface (the TUN).
  nsx "$ns" sysctl -qw \
    net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
    net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
    net.ipv4.conf.lo.rp_filter=0
  ensure_veth "$name"
  nsx "$ns" sysctl -qw net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2 \
    net.ipv4.conf.eth0.rp_filter=0
  host_addresses "$name"
  for v in "${VIPS4[@]}"; do ip -n "$ns" addr replace "$v/32" dev lo; done
  for v in "${VIPS6[@]}"; do ip -n "$ns" -6 addr replace "$v/128" dev lo nodad; done
  start_server "$name" http
  start_server "$name" udp
  start_server "$name" decap
}

start_server() {
  local name=$1 what=$2 ns=fl-$1 binds=() v
  case $what in
    http) start_bg "$name.http" "$ns" "$PY" "$LAB/backend.py" http --name "$name" --port 80 ;;
    udp)
      for v in 192.0.2.10 2001:db8:10::10; do binds+=(--bind "$v"); done
      start_bg "$name.udp" "$ns" "$PY" "$LAB/backend.py" udp --name "$name" --port 53 "${binds[@]}"
      ;;
    decap)
      start_bg "$name.decap" "$ns" "$PY" "$LAB/decap.py" --tun fl-tun0 --gue-port 6080 --mtu "$(lab_mtu)" \
        --status "$DIR/$name.decap.json"
      ;;
    *) die "unknown server '$what' (http, udp or decap)" ;;
  esac
}

wait_servers() {
  local name i
  for name in "${BACKENDS[@]}"; do
    for ((i = 0; i < 50; i++)); do
      if nsx "fl-$name" bash -c 'exec 3<>/dev/tcp/203.0.113.'"$(host_id "$name")"'/80' 2>/dev/null \
        && [ -s "$DIR/$name.decap.json" ]; then
        break
      fi
      sleep 0.1
    done
    alive "$name.http" || die "http server of $name did not start: $(tail -3 "$DIR/logs/$name.http.log")"
    alive "$name.decap" || die "decapsulator of $name did not start: $(tail -3 "$DIR/logs/$name.decap.log")"
  done
}

cmd_up() {
  need_root
  command -v ip >/dev/null || die "iproute2 missing (bash scripts/setup.sh)"
  [ -x "$PY" ] || die "$PY missing (bash scripts/setup.sh)"
  mkdir -p "$DIR/pids" "$DIR/logs"
  local mtu=${FL_LAB_MTU:-1500}
  [[ $mtu =~ ^[0-9]+$ ]] && [ "$mtu" -ge 1280 ] && [ "$mtu" -le 9000 ] \
    || die "FL_LAB_MTU=$mtu: use 1280 to 9000"
  echo "$mtu" >"$DIR/mtu"
  up_lb
  local n
  for n in "${CLIENTS[@]}"; do up_client "$n"; done
  for n in "${BACKENDS[@]}"; do up_backend "$n"; done
  wait_servers
  say "up: namespaces $LB ${CLIENTS[*]/#/fl-} ${BACKENDS[*]/#/fl-}; state in $DIR"
}

# Everything we may have made, found by name, so that a crash leaves nothing behind.
cmd_down() {
  need_root
  local f name ns pid
  if [ -d "$DIR/pids" ]; then
    # fulcrum first (it owns the port), then its vhost peer, then the rest.
    for name in fulcrum dumpcap vhost-peer; do stop_pid "$name" 10; done
    for f in "$DIR"/pids/*.pid; do
      [ -e "$f" ] || continue
      name=$(basename "$f" .pid)
      stop_pid "$name" 3
    done
  fi
  # Stragglers still inside our namespaces (a test's curl, a crashed run's server): all of
  # them were started by this lab, found by their namespace, ended by pid.
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^fl-' || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      kill -TERM "$pid" 2>/dev/null || true
    done
  done
  sleep 0.3
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^fl-' || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      kill -KILL "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
  done
  # Links that escaped into the host namespace (none should), by our prefix.
  for name in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(fl-|flport)' || true); do
    ip link del "$name" 2>/dev/null || true
  done
  # DPDK leftovers of a crashed primary: runtime directories and hugepage files hold memory.
  rm -rf /var/run/dpdk/$PREFIX /var/run/dpdk/$PEER_PREFIX /var/run/dpdk/$PREFIX-* 2>/dev/null || true
  rm -f /dev/hugepages/${PREFIX}map_* /dev/hugepages/${PEER_PREFIX}map_* \
    /dev/hugepages/${PREFIX}-* 2>/dev/null || true
  rm -rf "$DIR"
  say "down: nothing left (namespaces fl-*, links fl*, processes, $DIR)"
}

cmd_status() {
  local ns name
  echo "namespaces: $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^fl-' | tr '\n' ' ')"
  if [ -d "$DIR/pids" ]; then
    for f in "$DIR"/pids/*.pid; do
      [ -e "$f" ] || continue
      name=$(basename "$f" .pid)
      if alive "$name"; then echo "running: $name (pid $(cat "$f"))"; else echo "dead: $name"; fi
    done
  fi
  if ns_exists "$LB"; then
    echo "bridge ports: $(ip -n "$LB" -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | tr '\n' ' ')"
    echo "exception TAP: $(ip -n "$LB" -br addr show "$EXC_IFACE" 2>/dev/null || echo absent)"
  fi
  [ -f "$DIR/mode" ] && echo "mode: $(cat "$DIR/mode")"
  return 0
}

hugepages_ok() {
  [ "$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)" -ge 256 ] \
    && grep -qs ' /dev/hugepages hugetlbfs ' /proc/mounts
}

# render MODE OUT
render_config() {
  local mode=$1 out=$2 device eal mac_line="mac = \"$PORT_MAC\""
  case $mode in
    tap)
      device="net_tap0,iface=$PORT_IFACE"
      if hugepages_ok; then
        # Hugepages (not --no-huge) so that dpdk-dumpcap, a secondary process, can attach.
        eal="\"--no-pci\", \"--file-prefix=$PREFIX\", \"-l\", \"0,1\""
      else
        eal="\"--no-pci\", \"--file-prefix=$PREFIX\", \"-l\", \"0,1\", \"--no-huge\", \"-m\", \"512\""
      fi
      ;;
    pcap)
      # net_pcap on one end of a veth pair whose other end is on the bridge: slower than a
      # TAP (libpcap per packet) but the one vdev here that takes jumbo frames; DPDK 22.11's
      # net_tap receives at most 1522-byte frames. The port's MAC is the veth's (phy_mac).
      device="net_pcap0,iface=$PCAP_IFACE,phy_mac=1"
      mac_line="# mac: the veth $PCAP_IFACE has $PORT_MAC (net_pcap takes it with phy_mac=1)"
      eal="\"--no-pci\", \"--file-prefix=$PREFIX\", \"-l\", \"0,1\", \"--no-huge\", \"-m\", \"512\""
      ;;
    virtio)
      hugepages_ok || die "virtio mode needs hugepages (bash scripts/setup.sh reserves them)"
      device="net_virtio_user0,path=$DIR/vhost0.sock,queues=1,mac=$PORT_MAC"
      mac_line="# mac: given to virtio-user as a devarg above"
      eal="\"--no-pci\", \"--file-prefix=$PREFIX\", \"-l\", \"0,1\", \"--single-file-segments\""
      ;;
    *) die "unknown mode '$mode' (tap, pcap or virtio)" ;;
  esac
  mkdir -p "$(dirname "$out")"
  sed -e "s|@DEVICE@|$device|" -e "s|@EAL_ARGS@|$eal|" -e "s|@PORT_MAC@|$mac_line|" \
    -e "s|@MTU@|$(lab_mtu)|" \
    "$LAB/fulcrum.toml.in" >"$out"
}

# Puts the port's TAP on the bridge as soon as it exists (fulcrum, or the vhost peer, makes
# it at start; it vanishes when that process exits). DPDK's net_tap gives the kernel side the
# port's MAC when fulcrum sets `mac`; on a bridge port that MAC would count as the bridge's
# own address and frames to the balancer would stop at the bridge instead of entering the
# TAP. So the kernel side (the "wire") gets a MAC of its own, once the port has started.
WIRE_MAC=02:f1:00:00:ff:00
attach_port() {
  local who=$1 i
  for ((i = 0; i < 300; i++)); do
    ip -n "$LB" link show "$PORT_IFACE" >/dev/null 2>&1 && break
    sleep 0.1
  done
  ip -n "$LB" link show "$PORT_IFACE" >/dev/null 2>&1 || return 1
  if [ "$who" = fulcrum ]; then
    # fulcrum addresses the exception TAP after it has started (and re-addressed) its ports.
    for ((i = 0; i < 300; i++)); do
      ip -n "$LB" addr show dev "$EXC_IFACE" 2>/dev/null | grep -q 'inet ' && break
      alive fulcrum || return 1
      sleep 0.1
    done
  fi
  wire_up
}

# The port's kernel side onto the bridge as the lab's wire, with a MAC of its own.
wire_up() {
  nsx "$LB" sysctl -qw "net.ipv6.conf.$PORT_IFACE.disable_ipv6=1" || true
  ip -n "$LB" link set "$PORT_IFACE" address "$WIRE_MAC" mtu "$(lab_mtu)"
  ip -n "$LB" link set "$PORT_IFACE" master "$BRIDGE"
  ip -n "$LB" link set "$PORT_IFACE" up
}

start_peer() {
  alive vhost-peer && return 0
  rm -f "$DIR/vhost0.sock"
  # A VM's NIC: vhost-user on one side, the lab's wire (a TAP on the bridge) on the other,
  # forwarded untouched (io mode). --stats-period keeps it running without a terminal.
  start_bg vhost-peer "$LB" dpdk-testpmd -l 0,1 --no-pci --file-prefix="$PEER_PREFIX" \
    --single-file-segments \
    --vdev "net_vhost0,iface=$DIR/vhost0.sock,queues=1" --vdev "net_tap0,iface=$PORT_IFACE" \
    -- --forward-mode=io --auto-start --stats-period=60 --total-num-mbufs=8192 \
    --rxq=1 --txq=1 --nb-cores=1
  local i
  for ((i = 0; i < 200; i++)); do
    [ -S "$DIR/vhost0.sock" ] && break
    alive vhost-peer || break
    sleep 0.1
  done
  [ -S "$DIR/vhost0.sock" ] || die "vhost peer did not start: $(tail -5 "$DIR/logs/vhost-peer.log")"
  attach_port peer || die "vhost peer made no $PORT_IFACE"
}

# pcap mode's wire: $PORT_IFACE on the bridge, its veth peer $PCAP_IFACE for net_pcap.
pcap_wire() {
  if ! ip -n "$LB" link show "$PCAP_IFACE" >/dev/null 2>&1; then
    ip -n "$LB" link add "$PORT_IFACE" type veth peer name "$PCAP_IFACE"
  fi
  nsx "$LB" sysctl -qw "net.ipv6.conf.$PCAP_IFACE.disable_ipv6=1"
  ip -n "$LB" link set "$PCAP_IFACE" address "$PORT_MAC" mtu "$(lab_mtu)" up
  wire_up
  # Segmentation and checksums done in software before a frame crosses the veth, so libpcap
  # never sees a super-frame or an unfinished checksum.
  local dev
  for dev in "$PORT_IFACE" "$PCAP_IFACE"; do
    nsx "$LB" ethtool -K "$dev" tso off gso off gro off tx off >/dev/null 2>&1 || true
  done
}

api_up() {
  nsx "$LB" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9180' 2>/dev/null
}

cmd_start() {
  need_root
  local mode=${1:-tap} cfg=${2:-}
  [ -x "$BIN" ] || die "$BIN missing: cargo build --release"
  ns_exists "$LB" || die "lab is down: scripts/lab.sh up"
  alive fulcrum && die "fulcrum already runs (pid $(cat "$(pidfile fulcrum)")): scripts/lab.sh stop"
  if [ -z "$cfg" ]; then
    cfg=$DIR/fulcrum.toml
    render_config "$mode" "$cfg"
  fi
  echo "$mode" >"$DIR/mode"
  if [ "$mode" = virtio ]; then start_peer; fi
  if [ "$mode" = pcap ]; then pcap_wire; fi
  # Keep the logs of earlier runs (the restart test starts fulcrum twice).
  if [ -f "$DIR/logs/fulcrum.log" ]; then
    cat "$DIR/logs/fulcrum.log" >>"$DIR/logs/fulcrum.earlier.log"
  fi
  start_bg fulcrum "$LB" env RUST_LOG="${RUST_LOG:-info}" "$BIN" run --config "$cfg"
  if [ "$mode" = tap ]; then
    if ! attach_port fulcrum; then
      tail -20 "$DIR/logs/fulcrum.log" >&2
      stop_pid fulcrum 5
      die "fulcrum did not start its port $PORT_IFACE (log: $DIR/logs/fulcrum.log)"
    fi
  fi
  local i
  for ((i = 0; i < 300; i++)); do
    alive fulcrum || break
    api_up && break
    sleep 0.1
  done
  if ! alive fulcrum || ! api_up; then
    tail -20 "$DIR/logs/fulcrum.log" >&2
    stop_pid fulcrum 5
    die "fulcrum did not come up (log: $DIR/logs/fulcrum.log)"
  fi
  # The balancer's kernel must be reachable through fulcrum before tests start: ARP and ND
  # for 203.0.113.2 / 2001:db8:1::2 go through the exception path.
  for ((i = 0; i < 100; i++)); do
    if nsx fl-c1 ping -c1 -W1 203.0.113.2 >/dev/null 2>&1 \
      && nsx fl-c1 ping -6 -c1 -W1 2001:db8:1::2 >/dev/null 2>&1; then
      break
    fi
    sleep 0.2
  done
  say "fulcrum running in $LB ($mode, pid $(cat "$(pidfile fulcrum)"), log $DIR/logs/fulcrum.log)"
}

cmd_stop() {
  need_root
  stop_pid fulcrum 10
  if [ "${1:-}" = --all ]; then stop_pid vhost-peer 5; fi
  say "fulcrum stopped"
}

cmd_server() {
  local action=${1:-} name=${2:-} what=${3:-http}
  [ -n "$name" ] || die "usage: lab.sh server stop|start BACKEND [http|udp|decap]"
  case $action in
    stop) stop_pid "$name.$what" 3 ;;
    start) start_server "$name" "$what" ;;
    *) die "usage: lab.sh server stop|start BACKEND [http|udp|decap]" ;;
  esac
}

main() {
  local cmd=${1:-}
  shift || true
  case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    config) render_config "${1:-tap}" "${2:-/dev/stdout}" ;;
    cli) nsx "$LB" "$BIN" "$@" ;;
    server) cmd_server "$@" ;;
    exec) nsx "fl-${1#fl-}" "${@:2}" ;;
    *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] || exit 2 ;;
  esac
}

main "$@"
