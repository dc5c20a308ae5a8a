#!/usr/bin/python3
"""Lab upload: POST --bytes of seeded random data to a VIP's /upload with TCP segments of at
most --mss bytes, and check the backend's answer ("beN received N bytes sha256 HEX").

  upload.py --vip 192.0.2.11 --bytes 2000000 --mss 8000

Prints one JSON object: {"ok": bool, "backend": name, "sent": n, "reply": text, "seconds": s}.
"""
import argparse
import hashlib
import json
import random
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser(description="lab upload")
    ap.add_argument("--vip", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--bytes", type=int, default=2_000_000)
    ap.add_argument("--mss", type=int, default=0, help="TCP_MAXSEG before connecting (0: the kernel's)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=20.0)
    a = ap.parse_args()
    body = random.Random(a.seed).randbytes(a.bytes)
    fam = socket.AF_INET6 if ":" in a.vip else socket.AF_INET
    host = f"[{a.vip}]" if fam == socket.AF_INET6 else a.vip
    start = time.monotonic()
    reply = b""
    try:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(a.timeout)
        if a.mss:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, a.mss)
        s.connect((a.vip, a.port))
        head = f"POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        s.sendall(head.encode() + body)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        s.close()
    except OSError as e:
        reply = f"error: {e}".encode()
    text = reply.decode(errors="replace").split("\r\n\r\n", 1)[-1].strip()
    want = f"received {len(body)} bytes sha256 {hashlib.sha256(body).hexdigest()}"
    out = {
        "ok": text.endswith(want),
        "backend": text.split(" ", 1)[0] if text.endswith(want) else None,
        "sent": len(body),
        "reply": text[:200],
        "seconds": round(time.monotonic() - start, 2),
    }
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
