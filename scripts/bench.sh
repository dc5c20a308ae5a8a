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

exec python3 - "$ROOT" "$@" <<'PY'
import argparse, json, math, os, re, shutil, signal, statistics, subprocess, sys, time

root = sys.argv[1]
ap = argparse.ArgumentParser(prog="scripts/bench.sh")
ap.add_argument("--quick", action="store_true")
ap.add_argument("--flows", default=None, help='flow counts, e.g. "4096 1000000"')
ap.add_argument("--rounds", type=int, default=None)
ap.add_argument("--seconds", type=float, default=None)
ap.add_argument("--warmup", type=float, default=1.0)
ap.add_argument("--modes", default="l2dsr ipip gue")
ap.add_argument("--out", default=os.path.join(root, "target", "bench", "results.json"))
ap.add_argument("--no-build", action="store_true")
ap.add_argument("--no-plot", action="store_true")
a = ap.parse_args(sys.argv[2:])
flows_list = [int(f) for f in (a.flows or ("4096" if a.quick else "4096 1000000")).split()]
rounds = a.rounds or (1 if a.quick else 2)
seconds = a.seconds or (1.0 if a.quick else 3.0)
warmup = 0.5 if a.quick and a.warmup == 1.0 else a.warmup
modes = a.modes.split()
fulcrum = os.path.join(root, "target", "release", "fulcrum")
work = os.path.join(root, "target", "bench")
os.makedirs(os.path.join(work, "pcap"), exist_ok=True)
os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
TESTPMD_MODES = ["io", "macswap", "5tswap"]
SHARD = 131072  # most flows in one pcap port: the pool limit (see the header)
MBUF_KB = 4     # EAL memory per mbuf of either program, with the pools' overheads


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def pcaps(flows):
    """One pcap per port: a single one up to SHARD flows, else 8 equal shards."""
    ports = 1 if flows <= SHARD else 8
    if flows % ports:
        sys.exit(f"bench: {flows} flows do not split into {ports} equal pcap ports")
    per = flows // ports
    files = []
    for k in range(ports):
        path = os.path.join(work, "pcap", f"tcp64-{flows}-{k}.pcap")
        if not os.path.exists(path):
            subprocess.run([os.path.join(root, "scripts", "gen-traffic"), "--flows", str(per),
                            "--first-flow", str(k * per), "--out", path + ".tmp"], check=True,
                           stderr=subprocess.DEVNULL)
            os.rename(path + ".tmp", path)
        files.append(path)
    return files, max(per, 4096)


def memory_args(packets):
    """Hugepages (--in-memory) when the pools fit the free ones, else --no-huge."""
    need_mb = packets * MBUF_KB / 1024 + 512
    free_mb = 0
    for line in open("/proc/meminfo"):
        if line.startswith("HugePages_Free:"):
            free_mb = int(line.split()[1]) * 2
    if need_mb < free_mb * 0.8:
        return ["--in-memory"], "hugepages"
    return ["--no-huge", "-m", str(int(math.ceil(need_mb / 256) * 256))], "no-huge"


def thread_cpu_ns(pid, name="rte-worker-1"):
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                if open(f"/proc/{pid}/task/{tid}/comm").read().strip() in (name, "lcore-worker-1"):
                    return int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
            except OSError:
                continue
    except OSError:
        pass
    return None


def measured(samples):
    """The stats samples after the warm-up. Forwarding starts once the pcaps are loaded,
    which is when testpmd prints its first stats: the warm-up counts from there."""
    return [s for s in samples if s[0] - samples[0][0] >= warmup - 0.05] if samples else []


def run_testpmd(mode, files, per_port, mem, tag):
    vdevs = [f"--vdev=net_pcap{i},rx_pcap={f},infinite_rx=1" for i, f in enumerate(files)]
    mbufs = per_port * len(files) + 4096 * len(files) + 8192
    # Line-buffered: each stats line is timed when it arrives.
    cmd = (["stdbuf", "-oL", "dpdk-testpmd", "-l", "0,1", "--main-lcore", "0", "--no-pci",
            f"--file-prefix=fulcrum-bench-{tag}", "--log-level=lib.eal:error"] + mem + vdevs +
           ["--", f"--forward-mode={mode}", "--port-topology=loop", "--nb-cores=1",
            "--stats-period", "1", f"--total-num-mbufs={mbufs}", "--burst=32"])
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, errors="replace")
    start = time.monotonic()
    ports = len(files)
    rx, port, samples, output = {}, None, [], []
    deadline = start + 60 + warmup + seconds
    for line in p.stdout:
        output.append(line)
        m = re.search(r"NIC statistics for port (\d+)", line)
        if m:
            port = int(m.group(1))
        m = re.search(r"RX-packets:\s+(\d+)", line)
        if m and port is not None:
            rx[port] = int(m.group(1))
            if port == ports - 1 and len(rx) == ports:
                samples.append((time.monotonic(), sum(rx.values()), thread_cpu_ns(p.pid)))
                if len(measured(samples)) >= 2 and \
                        samples[-1][0] - measured(samples)[0][0] >= seconds - 0.05:
                    break
            port = None
        if time.monotonic() > deadline:
            break
    p.send_signal(signal.SIGINT)
    try:
        p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
    # testpmd leaves its EAL runtime directory behind; fulcrum removes its own.
    shutil.rmtree(f"/var/run/dpdk/fulcrum-bench-{tag}", ignore_errors=True)
    window = measured(samples)
    if len(window) < 2 or window[0][2] is None or window[-1][2] is None:
        sys.stderr.write("".join(output[-30:]))
        raise RuntimeError(f"testpmd {mode}: no stats")
    (t0, n0, c0), (t1, n1, c1) = window[0], window[-1]
    cpu = (c1 - c0) / 1e9
    return {"rx_mpps": (n1 - n0) / (t1 - t0) / 1e6,
            "rx_mpps_on_cpu": (n1 - n0) / cpu / 1e6 if cpu > 0 else 0.0,
            "cpu_share": cpu / (t1 - t0), "seconds": t1 - t0}


def fulcrum_config(mode, files, per_port, mem, tag):
    desc = 1024 if per_port <= 4096 else 32768
    lines = ["[dataplane]", "workers = 1",
             "eal_args = [" + ", ".join(json.dumps(x) for x in
                                        ["-l", "0,1", "--main-lcore", "0", "--no-pci",
                                         f"--file-prefix=fulcrum-bench-{tag}",
                                         "--log-level=lib.eal:error"] + mem) + "]",
             # Twice the flows, as docs/architecture.md advises, at least the default 1 Mi.
             f"conntrack_flows = {max(1 << 20, 1 << (2 * per_port * len(files) - 1).bit_length())}",
             "exception_path = false", ""]
    for i, f in enumerate(files):
        lines += ["[[port]]", f'device = "net_pcap{i},rx_pcap={f},infinite_rx=1"',
                  "mtu = 1500", 'address = "203.0.113.2"', 'gateway_mac = "02:00:00:00:00:01"',
                  f"rx_desc = {desc}", f"tx_desc = {desc}",
                  "promiscuous = true  # gen-traffic's frames are not to net_pcap's MAC", ""]
    lines += ["[control]", 'listen = "127.0.0.1:0"', "",
              "[[vip]]", 'address = "192.0.2.10:80"', 'protocol = "tcp"', f'encap = "{mode}"']
    for b in range(1, 4):
        lines += ["[[vip.backend]]", f'address = "198.51.100.{10 + b}"', f"weight = {b}"]
        if mode == "l2dsr":
            lines += [f'mac = "02:be:00:00:00:{b:02x}"']
    path = os.path.join(work, f"fulcrum-{mode}-{per_port * len(files)}.toml")
    open(path, "w").write("\n".join(lines) + "\n")
    return path


def run_fulcrum(mode, files, per_port, mem, tag):
    cfg = fulcrum_config(mode, files, per_port, mem, tag)
    p = subprocess.run([fulcrum, "bench", "--config", cfg, "--seconds", str(seconds),
                        "--warmup", str(warmup), "--json"], capture_output=True, text=True,
                       timeout=120 + seconds)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        raise RuntimeError(f"fulcrum {mode}: exit {p.returncode}")
    r = json.loads(p.stdout)
    return {"rx_mpps": r["rx_mpps"], "tx_mpps": r["tx_mpps"],
            "rx_mpps_on_cpu": r.get("rx_mpps_on_cpu", 0.0),
            "cpu_share": r.get("cpu_seconds", 0.0) / max(r["seconds"], 1e-9),
            "cycles_per_packet": r["cycles_per_packet"],
            "cycles_per_packet_on_cpu": r.get("cycles_per_packet_on_cpu", 0.0),
            "drops": r["drops"], "burst_cycles_p50": r["burst_cycles_p50"],
            "burst_cycles_p99": r["burst_cycles_p99"], "seconds": r["seconds"],
            "tsc_hz": r["tsc_hz"]}


def lscpu():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    keep = ("Model name", "CPU(s)", "Hypervisor vendor", "L1d cache", "L2 cache", "L3 cache")
    return {k.strip(): v.strip() for k, v in (l.split(":", 1) for l in out.splitlines() if ":" in l)
            if k.strip() in keep}


runs = []
began = time.monotonic()
tsc_hz = None
for flows in flows_list:
    files, per_port = pcaps(flows)
    mem, mem_name = memory_args(per_port * len(files))
    plan = []
    for tp, fm in zip(TESTPMD_MODES, modes + [None] * 3):
        plan.append(("testpmd", tp))
        if fm:
            plan.append(("fulcrum", fm))
    plan += [("fulcrum", m) for m in modes[3:]]
    for rnd in range(rounds):
        for tool, mode in plan:
            tag = f"{tool}-{mode}-{os.getpid()}"
            run = run_testpmd if tool == "testpmd" else run_fulcrum
            r = run(mode, files, per_port, mem, tag)
            r.update(tool=tool, mode=mode, flows=flows, ports=len(files), round=rnd,
                     memory=mem_name)
            tsc_hz = r.pop("tsc_hz", None) or tsc_hz
            runs.append(r)
            log(f"{flows:>8} flows  {tool:8} {mode:8} round {rnd}: {r['rx_mpps']:7.2f} Mpps, "
                f"{r['rx_mpps_on_cpu']:7.2f} Mpps on-CPU ({100 * r['cpu_share']:.0f}% of core 1)")


def median(tool, mode, flows, key):
    v = [r[key] for r in runs if (r["tool"], r["mode"], r["flows"]) == (tool, mode, flows)]
    return statistics.median(v) if v else float("nan")


summary = []
for flows in flows_list:
    ref_wall = median("testpmd", "5tswap", flows, "rx_mpps")
    ref_cpu = median("testpmd", "5tswap", flows, "rx_mpps_on_cpu")
    for tool, tmodes in (("testpmd", TESTPMD_MODES), ("fulcrum", modes)):
        for mode in tmodes:
            wall = median(tool, mode, flows, "rx_mpps")
            cpu = median(tool, mode, flows, "rx_mpps_on_cpu")
            summary.append({"tool": tool, "mode": mode, "flows": flows, "rx_mpps": wall,
                            "rx_mpps_on_cpu": cpu,
                            "cycles_per_packet_on_cpu": tsc_hz / (cpu * 1e6) if tsc_hz and cpu else None,
                            "ratio_to_5tswap": wall / ref_wall if ref_wall else None,
                            "ratio_to_5tswap_on_cpu": cpu / ref_cpu if ref_cpu else None})

print(f"{'flows':>8}  {'program':16} {'Mpps':>7} {'Mpps on-CPU':>12} {'cycles/pkt':>11} "
      f"{'/ 5tswap':>9} {'/ 5tswap on-CPU':>16}")
for s in summary:
    cyc = f"{s['cycles_per_packet_on_cpu']:.0f}" if s["cycles_per_packet_on_cpu"] else "-"
    print(f"{s['flows']:>8}  {s['tool'] + ' ' + s['mode']:16} {s['rx_mpps']:7.2f} "
          f"{s['rx_mpps_on_cpu']:12.2f} {cyc:>11} {s['ratio_to_5tswap']:9.2f} "
          f"{s['ratio_to_5tswap_on_cpu']:16.2f}")
elapsed = time.monotonic() - began
print(f"({rounds} round(s) of {seconds:g} s after {warmup:g} s warm-up, medians; "
      f"cycles at TSC {tsc_hz / 1e9 if tsc_hz else 0:.2f} GHz; {elapsed:.0f} s in all)")

result = {"machine": lscpu(), "tsc_hz": tsc_hz, "rounds": rounds, "seconds": seconds,
          "warmup": warmup, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
          "git": subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"],
                                capture_output=True, text=True).stdout.strip(),
          "summary": summary, "runs": runs}
with open(a.out, "w") as f:
    json.dump(result, f, indent=1)
log(f"results: {a.out}")
if not a.no_plot:
    png = os.path.splitext(a.out)[0] + ".png"
    p = subprocess.run([os.path.join(root, "scripts", "plot-bench"), a.out, "--out", png])
    if p.returncode == 0:
        log(f"plot: {png}")
PY
