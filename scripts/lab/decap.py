#!/usr/bin/python3
"""Userspace IPIP / GUE decapsulator for a lab backend.

The lab's kernel has no ipip, sit, fou or gue modules, so a backend cannot take the outer
header off fulcrum's `ipip` and `gue` packets by itself. This process does it: it reads the
encapsulated packets addressed to the backend, strips the outer header(s) and writes the inner
IP packet to a TUN device. The kernel then receives the inner packet on that TUN as if it had
arrived on a wire, delivers it to the VIP on `lo`, and answers the client directly (DSR).

Inputs (what src/datapath/encap.rs emits):
  ipip over IPv4: IPv4 protocol 4 (IPv4 inner) or 41 (IPv6 inner)   -> raw IPv4 sockets
  ipip over IPv6: IPv6 next header 4 or 41                          -> raw IPv6 sockets
  gue:            UDP to GUE_PORT, variant 1 (no GUE header: the UDP payload is the inner IP
                  packet, its version nibble says which)            -> plain UDP sockets

Raw IPv4 sockets receive the outer IPv4 header too; raw IPv6 and UDP sockets give the payload
only. A raw socket for a protocol also stops the kernel from answering "protocol unreachable".

Counters go to STATUS_FILE (JSON) once a second, so tests can tell that traffic really took the
tunnel. Stops on SIGTERM/SIGINT.
"""

import argparse
import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    ifr = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    return fd


def inner_ok(pkt):
    """Only whole IP packets go to the TUN: the first nibble must be 4 or 6."""
    return len(pkt) >= 20 and (pkt[0] >> 4) in (4, 6)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tun", default="fl-tun0")
    ap.add_argument("--gue-port", type=int, default=6080)
    ap.add_argument("--status", required=True, help="JSON counters file")
    ap.add_argument("--mtu", type=int, default=1500, help="the TUN's MTU: the lab's")
    args = ap.parse_args()

    tun = open_tun(args.tun)
    # The inner packets' source (the client) is not reachable through the TUN: reverse-path
    # filtering must be off on it or the kernel drops them.
    subprocess.run(["sysctl", "-qw", f"net.ipv4.conf.{args.tun}.rp_filter=0"], check=False)
    subprocess.run(["ip", "link", "set", "dev", args.tun, "mtu", str(args.mtu), "up"], check=True)

    sockets = {}  # fd -> (socket, counter name, bytes of outer header to strip)
    for family, proto, name in (
        (socket.AF_INET, IPPROTO_IPIP, "ipip4_in4"),
        (socket.AF_INET, IPPROTO_IPV6, "ipip6_in4"),
        (socket.AF_INET6, IPPROTO_IPIP, "ipip4_in6"),
        (socket.AF_INET6, IPPROTO_IPV6, "ipip6_in6"),
    ):
        s = socket.socket(family, socket.SOCK_RAW, proto)
        sockets[s.fileno()] = (s, name, family == socket.AF_INET)
    u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u4.bind(("0.0.0.0", args.gue_port))
    sockets[u4.fileno()] = (u4, "gue_in4", False)
    u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    u6.bind(("::", args.gue_port))
    sockets[u6.fileno()] = (u6, "gue_in6", False)

    counters = {name: 0 for (_, name, _) in sockets.values()}
    counters["bad"] = 0
    running = [True]

    def stop(*_):
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def write_status():
        tmp = args.status + ".tmp"
        with open(tmp, "w") as f:
            json.dump(counters, f)
        os.replace(tmp, args.status)

    write_status()
    next_status = time.monotonic() + 1.0
    while running[0]:
        try:
            ready, _, _ = select.select(list(sockets), [], [], 0.5)
        except InterruptedError:
            continue
        for fd in ready:
            s, name, has_ipv4_header = sockets[fd]
            try:
                pkt = s.recv(65535)
            except OSError:
                continue
            if has_ipv4_header:
                ihl = (pkt[0] & 0x0F) * 4 if pkt else 0
                pkt = pkt[ihl:]
            if not inner_ok(pkt):
                counters["bad"] += 1
                continue
            try:
                os.write(tun, pkt)
                counters[name] += 1
            except OSError:
                counters["bad"] += 1
        if time.monotonic() >= next_status:
            write_status()
            next_status = time.monotonic() + 1.0
    write_status()
    return 0


if __name__ == "__main__":
    sys.exit(main())
