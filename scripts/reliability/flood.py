#!/usr/bin/env python3
"""SYN flood against the real daemon, with established flows mixed in and a backend added
halfway. Run through scripts/flood.sh, which builds fulcrum first.

The traffic is a pcap replayed by net_pcap as fast as the worker takes it (no pacing): first
the established flows' SYN and ACK, then `--flows` spoofed SYNs, each from a new source
address and port, with one packet of an established flow after every `--gap` SYNs, round
robin, until the end. The VIP is ipip, so every output packet's outer destination names the
backend it went to. While it runs, the script polls GET /v1/stats every 50 ms (progress,
stalls) and adds a backend through the API once half of the traffic has been received. At
the end it stops the daemon with SIGTERM and checks:

  - every established flow kept the backend its SYN went to (`moved` must be 0);
  - no stall: no 50 ms poll without progress before the input was used up;
  - the counters add up: rx = tx + drops + to_kernel, and no mbuf is left in use at exit.

Addresses are documentation ranges and the traffic never leaves the pcap files.
"""
import argparse
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

LB_MAC = bytes.fromhex("027063617000")  # net_pcap's own MAC: the frames are for the port
CLIENT_MAC = bytes.fromhex("020000000001")
VIP = bytes([192, 0, 2, 10])
VIP_PORT = 80
BACKENDS = ["198.51.100.11", "198.51.100.12", "198.51.100.13", "198.51.100.14"]
ADDED = "198.51.100.15"

ETH = struct.Struct("!6s6sH")
IP = struct.Struct("!BBHHHBBH4s4s")
TCP = struct.Struct("!HHIIBBHHH")
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
RECORD = struct.Struct("<IIII")


def fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def words(b: bytes) -> int:
    return sum(struct.unpack("!%dH" % (len(b) // 2), b))


class Frames:
    """TCP/IPv4 frames to the VIP; only the source, ports and flags vary, so the checksums
    are computed from precomputed sums."""

    def __init__(self):
        self.ip_const = words(IP.pack(0x45, 0, 40, 0, 0x4000, 64, 6, 0, b"\0" * 4, VIP))
        # Pseudo header (destination, protocol, length) and the constant TCP words.
        self.tcp_const = words(VIP) + 6 + 20 + VIP_PORT + 0x5000 + 65535

    def frame(self, src: bytes, sport: int, flags: int, seq: int) -> bytes:
        s_src = words(src)
        ident = sport
        ip_sum = ~fold(self.ip_const + s_src + ident) & 0xFFFF
        tcp_sum = ~fold(self.tcp_const + s_src + sport + (seq >> 16) + (seq & 0xFFFF) + flags) & 0xFFFF
        return (
            ETH.pack(LB_MAC, CLIENT_MAC, 0x0800)
            + IP.pack(0x45, 0, 40, ident, 0x4000, 64, 6, ip_sum, src, VIP)
            + TCP.pack(sport, VIP_PORT, seq, 0, 0x50, flags, 65535, tcp_sum, 0)
            + b"\0" * 6  # Ethernet padding to the 60-byte minimum
        )


def flood_source(k: int):
    return bytes([203, 0, 113, k & 0xFF]), 1024 + (k >> 8)


def established_source(j: int):
    return bytes([192, 0, 2, 128 + (j & 0x7F)]), 40000 + (j >> 7)


def write_traffic(path: str, flows: int, established: int, gap: int) -> int:
    f = Frames()
    syn, ack = 0x02, 0x10
    count = 0
    with open(path, "wb") as out:
        out.write(PCAP_HEADER)
        buf = []

        def emit(fr: bytes):
            nonlocal count
            buf.append(RECORD.pack(count // 1_000_000, count % 1_000_000, len(fr), len(fr)))
            buf.append(fr)
            count += 1
            if len(buf) >= 20000:
                out.write(b"".join(buf))
                buf.clear()

        for j in range(established):
            src, sport = established_source(j)
            emit(f.frame(src, sport, syn, 1000))
        for j in range(established):
            src, sport = established_source(j)
            emit(f.frame(src, sport, ack, 1001))
        turn = 0
        for k in range(flows):
            src, sport = flood_source(k)
            emit(f.frame(src, sport, syn, k))
            if established and (k + 1) % gap == 0:
                j = turn % established
                src, sport = established_source(j)
                emit(f.frame(src, sport, ack, 1001 + turn // established))
                turn += 1
            if (k + 1) % 1_000_000 == 0:
                print(f"flood: wrote {k + 1:,} of {flows:,} flood SYNs", flush=True)
        out.write(b"".join(buf))
    return count


def read_established_backends(path: str):
    """For each established flow (client in 192.0.2.128/25), the outer destinations its
    packets were sent to, in order."""
    seen = {}
    prefix = bytes([192, 0, 2])
    with open(path, "rb") as f:
        f.read(24)
        rec = RECORD.size
        while True:
            h = f.read(rec)
            if len(h) < rec:
                break
            incl = RECORD.unpack(h)[2]
            fr = f.read(incl)
            # Ethernet 14, outer IPv4 20, inner IPv4: source at 12.
            if fr[46:49] != prefix:
                continue
            client = (fr[49], struct.unpack("!H", fr[54:56])[0])
            seen.setdefault(client, []).append(".".join(str(b) for b in fr[30:34]))
    return seen


def api_get(base: str, path: str):
    with urllib.request.urlopen(base + path, timeout=2) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fulcrum", required=True)
    ap.add_argument("--flows", type=int, default=10_000_000)
    ap.add_argument("--established", type=int, default=1000)
    ap.add_argument("--gap", type=int, default=100, help="flood SYNs between two established packets")
    ap.add_argument("--conntrack-flows", type=int, default=1_048_576)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object too")
    a = ap.parse_args()
    if a.flows < 2 or a.established > 16384 or a.gap < 1:
        sys.exit("flood: --flows must be at least 2, --established at most 16384, --gap at least 1")
    if a.flows > 256 * 64512:
        sys.exit("flood: --flows is at most 16,515,072 (256 sources x 64512 ports)")

    work = a.workdir or tempfile.mkdtemp(prefix="fulcrum-flood-")
    os.makedirs(work, exist_ok=True)
    pcap_in = os.path.join(work, f"flood-{a.flows}-{a.established}-{a.gap}.pcap")
    pcap_out = os.path.join(work, "out.pcap")
    exc_in = os.path.join(work, "exc-in.pcap")
    exc_out = os.path.join(work, "exc-out.pcap")
    if not os.path.exists(pcap_in):
        t = time.time()
        tmp = pcap_in + ".part"
        total = write_traffic(tmp, a.flows, a.established, a.gap)
        os.rename(tmp, pcap_in)
        print(f"flood: {total:,} frames in {pcap_in} ({time.time() - t:.0f} s)", flush=True)
    else:
        print(f"flood: reusing {pcap_in}", flush=True)
    total = (os.path.getsize(pcap_in) - 24) // (16 + 60)
    with open(exc_in, "wb") as f:
        f.write(PCAP_HEADER)
    for p in (pcap_out, exc_out):
        if os.path.exists(p):
            os.unlink(p)

    backends = "\n".join(f'[[vip.backend]]\naddress = "{b}"\n' for b in BACKENDS)
    config = f"""
[dataplane]
workers = 1
lcores = [1]
eal_args = ["--no-huge", "-m", "1024", "--file-prefix=fulcrum-flood-{os.getpid()}", "--log-level=lib.eal:error", "--log-level=pmd.net.pcap:error"]
conntrack_flows = {a.conntrack_flows}
conntrack_idle_timeout_secs = 300

[[port]]
device = "net_pcap0,rx_pcap={pcap_in},tx_pcap={pcap_out}"
address = "203.0.113.2"
gateway_mac = "02:00:00:00:00:02"
rx_desc = 4096
exception_device = "net_pcap1,rx_pcap={exc_in},tx_pcap={exc_out}"

[control]
listen = "127.0.0.1:0"

[[vip]]
address = "192.0.2.10:80"
protocol = "tcp"
encap = "ipip"
{backends}
"""
    cfg = os.path.join(work, "fulcrum.toml")
    with open(cfg, "w") as f:
        f.write(config)

    proc = subprocess.Popen([a.fulcrum, "run", "--config", cfg], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr_lines = []
    listening = threading.Event()
    base = {}

    def read_stderr():
        for line in proc.stderr:
            stderr_lines.append(line)
            m = re.search(r"control API listening on (\S+)", line)
            if m:
                base["url"] = "http://" + m.group(1)
            if "running:" in line:
                listening.set()

    threading.Thread(target=read_stderr, daemon=True).start()
    try:
        if not listening.wait(60) or "url" not in base:
            raise SystemExit("flood: fulcrum did not start:\n" + "".join(stderr_lines[-20:]))
        url = base["url"]
        print(f"flood: fulcrum pid {proc.pid} running, API {url}; replaying {total:,} frames", flush=True)
        samples = []
        added_at = None
        t0 = time.time()
        last_print = t0
        while True:
            time.sleep(0.05)
            st = api_get(url, "/v1/stats")
            rx = sum(p["rx_packets"] for p in st["ports"] if p["port"] == 0)
            now = time.time()
            samples.append((now - t0, rx))
            if added_at is None and rx >= total // 2:
                body = json.dumps({"address": ADDED, "weight": 1}).encode()
                req = urllib.request.Request(url + "/v1/vips/192.0.2.10:80%2Ftcp/backends", data=body, method="POST", headers={"Content-Type": "application/json"})
                urllib.request.urlopen(req, timeout=2).read()
                rx_after = sum(p["rx_packets"] for p in api_get(url, "/v1/stats")["ports"] if p["port"] == 0)
                added_at = (rx, rx_after)
                print(f"flood: added backend {ADDED} at {rx:,} frames received (change acknowledged at {rx_after:,})", flush=True)
            if now - last_print >= 1:
                print(f"flood: {rx:,} of {total:,} frames received", flush=True)
                last_print = now
            if rx >= total or now - t0 > 600:
                break
        elapsed = samples[-1][0]
        # A stall: a poll interval without progress while frames were still to come.
        longest = 0.0
        run_start = None
        for (t, rx), (t_prev, rx_prev) in zip(samples[1:], samples):
            if rx == rx_prev and rx < total:
                run_start = t_prev if run_start is None else run_start
                longest = max(longest, t - run_start)
            else:
                run_start = None
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    totals = None
    for line in reversed(out.splitlines()):
        try:
            totals = json.loads(line)
            break
        except ValueError:
            continue
    if totals is None:
        sys.exit("flood: no totals from fulcrum at exit; stderr:\n" + "".join(stderr_lines[-20:]))

    per_flow = read_established_backends(pcap_out)
    moved = sum(1 for dsts in per_flow.values() if len(set(dsts)) > 1)
    missing = a.established - len(per_flow)
    drops = sum(totals["drops"].values())
    rx, tx, kernel = totals["rx_packets"], totals["tx_packets"], totals["to_kernel_packets"]
    busy_pps = totals["busy_packets"] / elapsed if elapsed else 0
    figures = {
        "frames": total,
        "flood_syns": a.flows,
        "established": a.established,
        "conntrack_flows": a.conntrack_flows,
        "seconds": round(elapsed, 2),
        "mpps_wall": round(rx / elapsed / 1e6, 2) if elapsed else None,
        "backend_added_at_rx": added_at[0] if added_at else None,
        "established_moved": moved,
        "established_missing": missing,
        "longest_stall_s": round(longest, 3),
        "rx": rx,
        "tx": tx,
        "to_kernel": kernel,
        "drops": totals["drops"],
        "counters_add_up": rx == tx + drops + kernel,
        "evictions": totals["conntrack_evictions"],
        "confirmed_evictions": totals.get("conntrack_confirmed_evictions"),
        "conntrack_flows_at_end": totals["conntrack_flows"],
        "mempool_in_use_at_exit": totals.get("mempool_in_use_at_exit"),
        "exit_code": proc.returncode,
    }
    print("flood: results")
    for k, v in figures.items():
        print(f"  {k:24} {v}")
    if a.json:
        print(json.dumps(figures))
    ok = (
        moved == 0
        and missing == 0
        and figures["counters_add_up"]
        and figures["mempool_in_use_at_exit"] == 0
        and proc.returncode == 0
        and added_at is not None
        and longest < 1.0
    )
    print("flood: PASS" if ok else "flood: FAIL")
    if not a.workdir:
        for p in (pcap_out, exc_out):
            if os.path.exists(p):
                os.unlink(p)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
