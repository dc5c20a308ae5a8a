#!/usr/bin/python3
"""A lab backend's servers: they answer with the backend's name so tests can count.

  backend.py http --name be1 [--port 80]
      dual-stack HTTP on [::]:PORT (IPv4 through mapped addresses):
      GET /              -> "be1\n"
      GET /healthz       -> "ok be1\n"      (the health check's path)
      GET /stream?bytes=N -> N bytes: "be1\n" then filler, for long downloads (the client
                             limits the rate, e.g. curl --limit-rate)
      POST /upload       -> "be1 received N bytes\n" after reading the whole body
  backend.py udp --name be1 --bind 192.0.2.10 --bind 2001:db8:10::10 [--port 53]
      UDP echo that prefixes its name: "be1: <payload>". It binds the VIP addresses
      themselves so that replies leave from the VIP (a socket bound to the wildcard address
      would answer from the backend's own address, and the client would not recognise it).
"""

import argparse
import hashlib
import http.server
import signal
import socket
import select
import sys
import urllib.parse

CHUNK = 16384


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "fulcrum-lab"
    name = "be?"

    def log_message(self, fmt, *args):  # quiet: the tests count answers, not log lines
        pass

    def reply(self, body, status=200):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", self.name)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/":
            self.reply(f"{self.name}\n".encode())
        elif url.path == "/healthz":
            self.reply(f"ok {self.name}\n".encode())
        elif url.path == "/stream":
            query = urllib.parse.parse_qs(url.query)
            total = int(query.get("bytes", ["1048576"])[0])
            head = f"{self.name}\n".encode()
            total = max(total, len(head))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total))
            self.send_header("X-Backend", self.name)
            self.end_headers()
            self.wfile.write(head)
            left = total - len(head)
            filler = b"." * (CHUNK - 1) + b"\n"
            while left > 0:
                n = min(left, CHUNK)
                self.wfile.write(filler[:n])
                left -= n
        else:
            self.reply(b"not found\n", 404)

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/upload":
            self.reply(b"not found\n", 404)
            return
        left = int(self.headers.get("Content-Length", "0"))
        got = 0
        digest = hashlib.sha256()
        while left > 0:
            data = self.rfile.read(min(left, 65536))
            if not data:
                break
            digest.update(data)
            got += len(data)
            left -= len(data)
        self.reply(f"{self.name} received {got} bytes sha256 {digest.hexdigest()}\n".encode())


class DualStackServer(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def run_http(args):
    Handler.name = args.name
    # HTTP/1.1 keeps a connection open for several requests: curl's upload (Expect:
    # 100-continue) and the stream tests want it; the counters use new connections anyway.
    Handler.protocol_version = "HTTP/1.1"
    server = DualStackServer(("::", args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever(poll_interval=0.5)


def run_udp(args):
    socks = []
    for addr in args.bind:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, args.port))
        socks.append(s)
    prefix = f"{args.name}: ".encode()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        ready, _, _ = select.select(socks, [], [], 1.0)
        for s in ready:
            data, peer = s.recvfrom(65535)
            s.sendto(prefix + data, peer)


def main():
    ap = argparse.ArgumentParser(description="lab backend servers")
    sub = ap.add_subparsers(dest="what", required=True)
    h = sub.add_parser("http")
    h.add_argument("--name", required=True)
    h.add_argument("--port", type=int, default=80)
    u = sub.add_parser("udp")
    u.add_argument("--name", required=True)
    u.add_argument("--port", type=int, default=53)
    u.add_argument("--bind", action="append", required=True)
    args = ap.parse_args()
    if args.what == "http":
        run_http(args)
    else:
        run_udp(args)


if __name__ == "__main__":
    main()
