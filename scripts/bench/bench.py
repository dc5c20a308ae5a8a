#!/usr/bin/env python3
"""fulcrum against dpdk-testpmd: same machine, same run, same pcap traffic, same core.

Run it through scripts/bench.sh, which checks that dpdk-testpmd is there, builds the release
binary and says what is measured (scripts/bench.sh --help). This program plans the runs,
runs each program, reads its rates, prints the table of medians and writes the JSON that
scripts/plot-bench draws.
"""
import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FULCRUM = os.path.join(ROOT, "target", "release", "fulcrum")
WORK = os.path.join(ROOT, "target", "bench")
TESTPMD_MODES = ["io", "macswap", "5tswap"]
SHARD = 131072  # most flows in one pcap port: the pool limit (see scripts/bench.sh)
MBUF_KB = 4     # EAL memory per mbuf of either program, with the pools' overheads


@dataclass
class Timing:
    """How long each run measures, after how much warm-up (seconds)."""
    seconds: float
    warmup: float


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="scripts/bench.sh")
    ap.add_argument("--quick", action="store_true",
                    help="4096 flows, 1 round of 1 s after 0.5 s warm-up")
    ap.add_argument("--flows", default=None, help='flow counts, e.g. "4096 1000000"')
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 2, --quick 1)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="seconds measured per run (default 3, --quick 1)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per run")
    ap.add_argument("--modes", default="l2dsr ipip gue", help="fulcrum's encap modes")
    ap.add_argument("--out", default=os.path.join(WORK, "results.json"),
                    help="the JSON of every run (default target/bench/results.json)")
    ap.add_argument("--no-build", action="store_true",
                    help="use target/release/fulcrum as it is (scripts/bench.sh builds)")
    ap.add_argument("--no-plot", action="store_true", help="do not run scripts/plot-bench")
    return ap.parse_args(argv)


def pcaps(flows):
    """One pcap per port: a single one up to SHARD flows, else 8 equal shards."""
    ports = 1 if flows <= SHARD else 8
    if flows % ports:
        sys.exit(f"bench: {flows} flows do not split into {ports} equal pcap ports")
    per = flows // ports
    files = []
    for k in range(ports):
        path = os.path.join(WORK, "pcap", f"tcp64-{flows}-{k}.pcap")
        if not os.path.exists(path):
            subprocess.run([os.path.join(ROOT, "scripts", "gen-traffic"), "--flows", str(per),
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
    """Nanoseconds the forwarding thread of `pid` ran on a CPU (its schedstat), or None."""
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


def measured(samples, timing):
    """The stats samples after the warm-up. Forwarding starts once the pcaps are loaded,
    which is when testpmd prints its first stats: the warm-up counts from there."""
    return [s for s in samples if s[0] - samples[0][0] >= timing.warmup - 0.05] if samples else []


def run_testpmd(mode, files, per_port, mem, tag, timing):
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
    deadline = start + 60 + timing.warmup + timing.seconds
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
                window = measured(samples, timing)
                if len(window) >= 2 and samples[-1][0] - window[0][0] >= timing.seconds - 0.05:
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
    window = measured(samples, timing)
    if len(window) < 2 or window[0][2] is None or window[-1][2] is None:
        sys.stderr.write("".join(output[-30:]))
        raise RuntimeError(f"testpmd {mode}: no stats")
    (t0, n0, c0), (t1, n1, c1) = window[0], window[-1]
    cpu = (c1 - c0) / 1e9
    return {"rx_mpps": (n1 - n0) / (t1 - t0) / 1e6,
            "rx_mpps_on_cpu": (n1 - n0) / cpu / 1e6 if cpu > 0 else 0.0,
            "cpu_share": cpu / (t1 - t0), "seconds": t1 - t0}


def fulcrum_config(mode, files, per_port, mem, tag):
    """Writes the configuration of one fulcrum run into target/bench/; returns its path."""
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
    path = os.path.join(WORK, f"fulcrum-{mode}-{per_port * len(files)}.toml")
    open(path, "w").write("\n".join(lines) + "\n")
    return path


def run_fulcrum(mode, files, per_port, mem, tag, timing):
    cfg = fulcrum_config(mode, files, per_port, mem, tag)
    p = subprocess.run([FULCRUM, "bench", "--config", cfg, "--seconds", str(timing.seconds),
                        "--warmup", str(timing.warmup), "--json"], capture_output=True,
                       text=True, timeout=120 + timing.seconds)
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


def plan_runs(modes):
    """One round's runs, testpmd and fulcrum alternating: io, l2dsr, macswap, ipip, ..."""
    plan = []
    for tp, fm in zip(TESTPMD_MODES, modes + [None] * 3):
        plan.append(("testpmd", tp))
        if fm:
            plan.append(("fulcrum", fm))
    plan += [("fulcrum", m) for m in modes[3:]]
    return plan


def run_all(flows_list, modes, rounds, timing):
    """Every run of every round; returns the runs and the TSC rate fulcrum reported."""
    runs = []
    tsc_hz = None
    for flows in flows_list:
        files, per_port = pcaps(flows)
        mem, mem_name = memory_args(per_port * len(files))
        for rnd in range(rounds):
            for tool, mode in plan_runs(modes):
                tag = f"{tool}-{mode}-{os.getpid()}"
                run = run_testpmd if tool == "testpmd" else run_fulcrum
                r = run(mode, files, per_port, mem, tag, timing)
                r.update(tool=tool, mode=mode, flows=flows, ports=len(files), round=rnd,
                         memory=mem_name)
                tsc_hz = r.pop("tsc_hz", None) or tsc_hz
                runs.append(r)
                log(f"{flows:>8} flows  {tool:8} {mode:8} round {rnd}: {r['rx_mpps']:7.2f} Mpps, "
                    f"{r['rx_mpps_on_cpu']:7.2f} Mpps on-CPU ({100 * r['cpu_share']:.0f}% of core 1)")
    return runs, tsc_hz


def summarise(runs, flows_list, modes, tsc_hz):
    """The median of each program and mode over rounds, and its ratio to testpmd 5tswap."""
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
    return summary


def print_table(summary, rounds, timing, tsc_hz, elapsed):
    print(f"{'flows':>8}  {'program':16} {'Mpps':>7} {'Mpps on-CPU':>12} {'cycles/pkt':>11} "
          f"{'/ 5tswap':>9} {'/ 5tswap on-CPU':>16}")
    for s in summary:
        cyc = f"{s['cycles_per_packet_on_cpu']:.0f}" if s["cycles_per_packet_on_cpu"] else "-"
        print(f"{s['flows']:>8}  {s['tool'] + ' ' + s['mode']:16} {s['rx_mpps']:7.2f} "
              f"{s['rx_mpps_on_cpu']:12.2f} {cyc:>11} {s['ratio_to_5tswap']:9.2f} "
              f"{s['ratio_to_5tswap_on_cpu']:16.2f}")
    print(f"({rounds} round(s) of {timing.seconds:g} s after {timing.warmup:g} s warm-up, medians; "
          f"cycles at TSC {tsc_hz / 1e9 if tsc_hz else 0:.2f} GHz; {elapsed:.0f} s in all)")


def main(argv):
    a = parse_args(argv)
    flows_list = [int(f) for f in (a.flows or ("4096" if a.quick else "4096 1000000")).split()]
    rounds = a.rounds or (1 if a.quick else 2)
    timing = Timing(seconds=a.seconds or (1.0 if a.quick else 3.0),
                    warmup=0.5 if a.quick and a.warmup == 1.0 else a.warmup)
    modes = a.modes.split()
    os.makedirs(os.path.join(WORK, "pcap"), exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)

    began = time.monotonic()
    runs, tsc_hz = run_all(flows_list, modes, rounds, timing)
    summary = summarise(runs, flows_list, modes, tsc_hz)
    print_table(summary, rounds, timing, tsc_hz, time.monotonic() - began)

    result = {"machine": lscpu(), "tsc_hz": tsc_hz, "rounds": rounds, "seconds": timing.seconds,
              "warmup": timing.warmup,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "git": subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                                    capture_output=True, text=True).stdout.strip(),
              "summary": summary, "runs": runs}
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    log(f"results: {a.out}")
    if not a.no_plot:
        png = os.path.splitext(a.out)[0] + ".png"
        p = subprocess.run([os.path.join(ROOT, "scripts", "plot-bench"), a.out, "--out", png])
        if p.returncode == 0:
            log(f"plot: {png}")


if __name__ == "__main__":
    main(sys.argv[1:])
